//! The agent's settings: flags > config files (HCL or JSON, later files win) > `BERTH_*`
//! environment > defaults. Pure: the environment and the files' contents are passed in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

#[derive(Args, Debug, Default, Clone)]
pub struct AgentArgs {
    /// A server's RPC address (HOST[:PORT], port 8300 by default); repeatable.
    /// Config key `retry_join`, env BERTH_RETRY_JOIN (comma-separated).
    #[arg(long = "retry-join")]
    pub retry_join: Vec<String>,
    /// The agent API [default: 127.0.0.1:8500]. Key `http_addr`, env BERTH_AGENT_HTTP_ADDR.
    #[arg(long = "http-addr")]
    pub http_addr: Option<String>,
    /// Delta xDS for the task's Envoy [default: 127.0.0.1:8502]. Key `xds_addr`, env
    /// BERTH_XDS_ADDR.
    #[arg(long = "xds-addr")]
    pub xds_addr: Option<String>,
    /// The address the catalog shows for this node [default: the task IP from ECS task
    /// metadata, else the first private IPv4]. Key `advertise_addr`, env BERTH_ADVERTISE.
    #[arg(long = "advertise")]
    pub advertise: Option<String>,
    /// The node name [default: the host name]. Key `node_name`, env BERTH_NODE_NAME.
    #[arg(long = "node")]
    pub node: Option<String>,
    /// [default: dc1]. Key `datacenter`, env BERTH_DATACENTER.
    #[arg(long = "datacenter")]
    pub datacenter: Option<String>,
    /// The agent's own token (node writes); services use the token they registered with.
    /// Key `token`, env BERTH_AGENT_TOKEN.
    #[arg(long = "token")]
    pub token: Option<String>,
    /// Key `token_file`, env BERTH_AGENT_TOKEN_FILE.
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,
    /// CA that signed the servers' RPC certificates: the RPC connection then uses TLS.
    /// Key `ca_file`, env BERTH_CACERT.
    #[arg(long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    /// The agent's client certificate and key, for servers with `verify_incoming`.
    /// Keys `cert_file` / `key_file`, env BERTH_CLIENT_CERT / BERTH_CLIENT_KEY.
    #[arg(long = "cert-file", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    #[arg(long = "key-file", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// [default: info]. Key `log_level`, env BERTH_LOG_LEVEL.
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// Where the agent keeps its services, checks and their tokens across restarts
    /// (`local-state.json`, mode 0600). Key `data_dir`, env BERTH_AGENT_DATA_DIR.
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// A config file (HCL or JSON); repeatable. Env BERTH_AGENT_CONFIG_FILE (comma-separated).
    #[arg(long = "config-file")]
    pub config_file: Vec<PathBuf>,
}

/// One layer of settings, as a config file or the environment gives it.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Layer {
    pub retry_join: Option<Vec<String>>,
    pub http_addr: Option<String>,
    pub xds_addr: Option<String>,
    pub advertise_addr: Option<String>,
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub log_level: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Layer {
    pub fn over(self, top: Layer) -> Layer {
        Layer {
            retry_join: top.retry_join.or(self.retry_join),
            http_addr: top.http_addr.or(self.http_addr),
            xds_addr: top.xds_addr.or(self.xds_addr),
            advertise_addr: top.advertise_addr.or(self.advertise_addr),
            node_name: top.node_name.or(self.node_name),
            datacenter: top.datacenter.or(self.datacenter),
            token: top.token.or(self.token),
            token_file: top.token_file.or(self.token_file),
            ca_file: top.ca_file.or(self.ca_file),
            cert_file: top.cert_file.or(self.cert_file),
            key_file: top.key_file.or(self.key_file),
            log_level: top.log_level.or(self.log_level),
            data_dir: top.data_dir.or(self.data_dir),
        }
    }

    fn from_flags(a: &AgentArgs) -> Layer {
        Layer {
            retry_join: (!a.retry_join.is_empty()).then(|| a.retry_join.clone()),
            http_addr: a.http_addr.clone(),
            xds_addr: a.xds_addr.clone(),
            advertise_addr: a.advertise.clone(),
            node_name: a.node.clone(),
            datacenter: a.datacenter.clone(),
            token: a.token.clone(),
            token_file: a.token_file.clone(),
            ca_file: a.ca_file.clone(),
            cert_file: a.cert_file.clone(),
            key_file: a.key_file.clone(),
            log_level: a.log_level.clone(),
            data_dir: a.data_dir.clone(),
        }
    }
}

/// The `BERTH_*` variables the agent reads.
pub fn from_env(env: &HashMap<String, String>) -> Layer {
    let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    Layer {
        retry_join: get("BERTH_RETRY_JOIN").map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        }),
        http_addr: get("BERTH_AGENT_HTTP_ADDR"),
        xds_addr: get("BERTH_XDS_ADDR"),
        advertise_addr: get("BERTH_ADVERTISE"),
        node_name: get("BERTH_NODE_NAME"),
        datacenter: get("BERTH_DATACENTER"),
        token: get("BERTH_AGENT_TOKEN"),
        token_file: get("BERTH_AGENT_TOKEN_FILE").map(PathBuf::from),
        ca_file: get("BERTH_CACERT").map(PathBuf::from),
        cert_file: get("BERTH_CLIENT_CERT").map(PathBuf::from),
        key_file: get("BERTH_CLIENT_KEY").map(PathBuf::from),
        log_level: get("BERTH_LOG_LEVEL"),
        data_dir: get("BERTH_AGENT_DATA_DIR").map(PathBuf::from),
    }
}

/// Config files named by flags, else by the environment.
pub fn config_files(a: &AgentArgs, env: &HashMap<String, String>) -> Vec<PathBuf> {
    if !a.config_file.is_empty() {
        return a.config_file.clone();
    }
    env.get("BERTH_AGENT_CONFIG_FILE")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| PathBuf::from(s.trim()))
                .collect()
        })
        .unwrap_or_default()
}

/// What the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub retry_join: Vec<String>,
    pub http_addr: SocketAddr,
    pub xds_addr: SocketAddr,
    pub advertise: Option<IpAddr>,
    pub node: Option<String>,
    pub datacenter: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub log_level: String,
    pub data_dir: Option<PathBuf>,
}

fn addr(key: &str, v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{key}: {v:?} is not an IP:PORT address"))
}

pub fn resolve(a: &AgentArgs, files: Vec<Layer>, env: Layer) -> Result<Settings, String> {
    let mut m = env;
    for f in files {
        m = m.over(f);
    }
    let m = m.over(Layer::from_flags(a));
    let retry_join = m.retry_join.unwrap_or_default();
    if retry_join.is_empty() {
        return Err(
            "no servers to join: give -retry-join (or retry_join, BERTH_RETRY_JOIN)".into(),
        );
    }
    berth_cloud_join::validate(&retry_join).map_err(|e| e.to_string())?;
    if m.cert_file.is_some() != m.key_file.is_some() {
        return Err("cert_file and key_file go together".into());
    }
    if m.cert_file.is_some() && m.ca_file.is_none() {
        return Err("a client certificate needs ca_file to verify the servers".into());
    }
    let advertise = match m.advertise_addr {
        None => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| format!("advertise: {v:?} is not an IP address"))?,
        ),
    };
    Ok(Settings {
        retry_join,
        http_addr: addr(
            "http_addr",
            m.http_addr.as_deref().unwrap_or("127.0.0.1:8500"),
        )?,
        xds_addr: addr(
            "xds_addr",
            m.xds_addr.as_deref().unwrap_or("127.0.0.1:8502"),
        )?,
        advertise,
        node: m.node_name,
        datacenter: m.datacenter.unwrap_or_else(|| "dc1".into()),
        token: m.token,
        token_file: m.token_file,
        ca_file: m.ca_file,
        cert_file: m.cert_file,
        key_file: m.key_file,
        log_level: m.log_level.unwrap_or_else(|| "info".into()),
        data_dir: m.data_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flags_beat_files_beat_env() {
        let e = from_env(&env(&[
            ("BERTH_RETRY_JOIN", "10.0.0.1, 10.0.0.2"),
            ("BERTH_DATACENTER", "east"),
            ("BERTH_XDS_ADDR", "127.0.0.1:9000"),
            ("BERTH_LOG_LEVEL", "warn"),
        ]));
        let f1: Layer = berth_api::config::parse_str(
            Path::new("a.hcl"),
            "datacenter = \"west\"\nxds_addr = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        let f2: Layer = berth_api::config::parse_str(
            Path::new("b.json"),
            r#"{"xds_addr": "127.0.0.1:9002", "node_name": "n1"}"#,
        )
        .unwrap();
        let flags = AgentArgs {
            node: Some("from-flag".into()),
            ..Default::default()
        };
        let s = resolve(&flags, vec![f1, f2], e).unwrap();
        assert_eq!(s.retry_join, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(s.datacenter, "west");
        assert_eq!(s.xds_addr, "127.0.0.1:9002".parse().unwrap());
        assert_eq!(s.node.as_deref(), Some("from-flag"));
        assert_eq!(s.log_level, "warn");
        assert_eq!(s.http_addr, "127.0.0.1:8500".parse().unwrap());
    }

    #[test]
    fn bad_settings_name_what_is_wrong() {
        let none = resolve(&AgentArgs::default(), vec![], Layer::default()).unwrap_err();
        assert!(none.contains("no servers to join"), "{none}");
        let flags = AgentArgs {
            retry_join: vec!["s".into()],
            http_addr: Some("localhost".into()),
            ..Default::default()
        };
        let e = resolve(&flags, vec![], Layer::default()).unwrap_err();
        assert!(e.contains("http_addr"), "{e}");
        let flags = AgentArgs {
            retry_join: vec!["s".into()],
            advertise: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(
            resolve(&flags, vec![], Layer::default())
                .unwrap_err()
                .contains("advertise")
        );
        let typo =
            berth_api::config::parse_str::<Layer>(Path::new("c.hcl"), "retry_joins = [\"x\"]\n");
        assert!(typo.is_err());
    }

    #[test]
    fn config_files_come_from_flags_or_env() {
        let a = AgentArgs::default();
        assert_eq!(
            config_files(&a, &env(&[("BERTH_AGENT_CONFIG_FILE", "/a.hcl,/b.json")])),
            vec![PathBuf::from("/a.hcl"), PathBuf::from("/b.json")]
        );
    }
}
