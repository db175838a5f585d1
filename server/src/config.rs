//! `berth-server` configuration. Precedence: flags, then config files (later files win), then
//! `BERTH_*` environment variables, then defaults. Everything here is pure: the process
//! environment and files are read by the caller and passed in, so every rule is unit-tested.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::tls::TlsSettings;

pub const DEFAULT_RPC_PORT: u16 = 8300;

#[derive(Parser, Debug, Default)]
#[command(
    name = "berth-server",
    version,
    about = "Berth server: Raft-replicated catalog, KV, ACLs and mesh CA with a Consul-compatible HTTP API",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub flags: Flags,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the TLS material that `tls { ... }` points at.
    #[command(subcommand)]
    Tls(TlsCommand),
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Certificate authorities.
    #[command(subcommand)]
    Ca(TlsCaCommand),
    /// Server and client certificates signed by the CA.
    #[command(subcommand)]
    Cert(TlsCertCommand),
}

#[derive(Subcommand, Debug)]
pub enum TlsCaCommand {
    /// Write berth-agent-ca.pem and berth-agent-ca-key.pem.
    Create {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1825)]
        days: u32,
        #[arg(long, default_value = "berth")]
        domain: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TlsCertCommand {
    /// Write <dc>-server-<domain>-<n>.pem (or -client-) and its key.
    Create(CertArgs),
}

#[derive(Args, Debug)]
pub struct CertArgs {
    #[arg(long, conflicts_with = "client", required_unless_present = "client")]
    pub server: bool,
    #[arg(long)]
    pub client: bool,
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[arg(long, default_value = "dc1")]
    pub dc: String,
    #[arg(long, default_value = "berth")]
    pub domain: String,
    #[arg(long)]
    pub ca: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[arg(long = "additional-dnsname")]
    pub additional_dnsname: Vec<String>,
    #[arg(long = "additional-ipaddress")]
    pub additional_ipaddress: Vec<IpAddr>,
}

/// Run flags. Each has a config-file key and a `BERTH_*` variable of the same name.
#[derive(Args, Debug, Default, Clone)]
pub struct Flags {
    /// One in-memory server: bootstrap-expect 1, HTTP 127.0.0.1:8500, RPC 127.0.0.1:8300.
    #[arg(long)]
    pub dev: bool,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node name (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    #[arg(long, value_name = "DC")]
    pub datacenter: Option<String>,
    /// HTTP API address ("off" disables). Default 0.0.0.0:8500.
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<String>,
    /// HTTPS API address (needs `tls`). Default off.
    #[arg(long, value_name = "IP:PORT")]
    pub https_addr: Option<String>,
    /// RPC address: Raft, forwarding, agents. Default 0.0.0.0:8300.
    #[arg(long, value_name = "IP:PORT")]
    pub rpc_addr: Option<String>,
    /// Address other servers reach this one's RPC port at.
    #[arg(long, value_name = "IP[:PORT]")]
    pub advertise: Option<String>,
    /// Servers to wait for before bootstrapping the cluster.
    #[arg(long, value_name = "N")]
    pub bootstrap_expect: Option<u32>,
    /// Another server's RPC address (port 8300 when omitted). Repeatable.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub retry_join: Vec<String>,
    /// Pause between join attempts (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub retry_interval: Option<String>,
    /// HCL or JSON config file. Repeatable; later files override earlier ones.
    #[arg(long, value_name = "FILE")]
    pub config_file: Vec<PathBuf>,
    /// trace, debug, info, warn or error (default info).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Log entries since the last snapshot that trigger a new one (default 8192).
    #[arg(long, value_name = "N")]
    pub raft_snapshot_threshold: Option<u64>,
    /// Log entries kept behind a snapshot for slow followers (default 2048).
    #[arg(long, value_name = "N")]
    pub raft_trailing_logs: Option<u64>,
    /// The catalog service the servers register as (default `consul`, the name Consul's
    /// clients and tools look servers up by).
    #[arg(long, value_name = "NAME")]
    pub server_service_name: Option<String>,
}

/// A config file, or the environment, before merging. Keys as in Consul where Consul has them.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub dev: Option<bool>,
    pub data_dir: Option<PathBuf>,
    #[serde(alias = "node")]
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub http_addr: Option<String>,
    pub https_addr: Option<String>,
    pub rpc_addr: Option<String>,
    #[serde(alias = "advertise")]
    pub advertise_addr: Option<String>,
    pub bootstrap_expect: Option<u32>,
    pub retry_join: Option<Vec<String>>,
    pub retry_interval: Option<String>,
    pub log_level: Option<String>,
    pub log_json: Option<bool>,
    pub raft_snapshot_threshold: Option<u64>,
    pub raft_trailing_logs: Option<u64>,
    pub server_service_name: Option<String>,
    pub tls: Option<TlsSettings>,
    pub acl: Option<AclSettings>,
}

/// `acl { ... }` as in Consul's agent configuration.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AclSettings {
    pub enabled: Option<bool>,
    pub default_policy: Option<String>,
    pub enable_token_persistence: Option<bool>,
    pub tokens: Option<AclTokenSettings>,
}

#[derive(Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AclTokenSettings {
    /// Consul's older name, `master`, is accepted too.
    #[serde(alias = "master")]
    pub initial_management: Option<String>,
    pub agent: Option<String>,
    pub default: Option<String>,
}

impl std::fmt::Debug for AclTokenSettings {
    // Secrets never reach logs or debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<String>| if o.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("AclTokenSettings")
            .field("initial_management", &set(&self.initial_management))
            .field("agent", &set(&self.agent))
            .field("default", &set(&self.default))
            .finish()
    }
}

/// The resolved ACL configuration.
#[derive(Clone, Default, PartialEq)]
pub struct AclConfig {
    pub enabled: bool,
    /// `default_policy = "allow"`.
    pub default_allow: bool,
    pub token_persistence: bool,
    pub initial_management: Option<String>,
    pub agent_token: Option<String>,
    pub default_token: Option<String>,
}

impl std::fmt::Debug for AclConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclConfig")
            .field("enabled", &self.enabled)
            .field("default_allow", &self.default_allow)
            .field("token_persistence", &self.token_persistence)
            .field(
                "initial_management",
                &self.initial_management.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl FileConfig {
    /// `other`'s keys win.
    fn overlay(self, other: FileConfig) -> FileConfig {
        FileConfig {
            dev: other.dev.or(self.dev),
            data_dir: other.data_dir.or(self.data_dir),
            node_name: other.node_name.or(self.node_name),
            datacenter: other.datacenter.or(self.datacenter),
            http_addr: other.http_addr.or(self.http_addr),
            https_addr: other.https_addr.or(self.https_addr),
            rpc_addr: other.rpc_addr.or(self.rpc_addr),
            advertise_addr: other.advertise_addr.or(self.advertise_addr),
            bootstrap_expect: other.bootstrap_expect.or(self.bootstrap_expect),
            retry_join: other.retry_join.or(self.retry_join),
            retry_interval: other.retry_interval.or(self.retry_interval),
            log_level: other.log_level.or(self.log_level),
            log_json: other.log_json.or(self.log_json),
            raft_snapshot_threshold: other
                .raft_snapshot_threshold
                .or(self.raft_snapshot_threshold),
            raft_trailing_logs: other.raft_trailing_logs.or(self.raft_trailing_logs),
            server_service_name: other.server_service_name.or(self.server_service_name),
            tls: other.tls.or(self.tls),
            acl: match (self.acl, other.acl) {
                (Some(a), Some(b)) => Some(AclSettings {
                    enabled: b.enabled.or(a.enabled),
                    default_policy: b.default_policy.or(a.default_policy),
                    enable_token_persistence: b
                        .enable_token_persistence
                        .or(a.enable_token_persistence),
                    tokens: match (a.tokens, b.tokens) {
                        (Some(x), Some(y)) => Some(AclTokenSettings {
                            initial_management: y.initial_management.or(x.initial_management),
                            agent: y.agent.or(x.agent),
                            default: y.default.or(x.default),
                        }),
                        (x, y) => y.or(x),
                    },
                }),
                (a, b) => b.or(a),
            },
        }
    }

    fn from_flags(f: &Flags) -> FileConfig {
        FileConfig {
            dev: f.dev.then_some(true),
            data_dir: f.data_dir.clone(),
            node_name: f.node.clone(),
            datacenter: f.datacenter.clone(),
            http_addr: f.http_addr.clone(),
            https_addr: f.https_addr.clone(),
            rpc_addr: f.rpc_addr.clone(),
            advertise_addr: f.advertise.clone(),
            bootstrap_expect: f.bootstrap_expect,
            retry_join: (!f.retry_join.is_empty()).then(|| f.retry_join.clone()),
            retry_interval: f.retry_interval.clone(),
            log_level: f.log_level.clone(),
            log_json: f.log_json.then_some(true),
            raft_snapshot_threshold: f.raft_snapshot_threshold,
            raft_trailing_logs: f.raft_trailing_logs,
            server_service_name: f.server_service_name.clone(),
            tls: None,
            acl: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("environment {var}: {message}")]
    Env { var: String, message: String },
    #[error("{0}")]
    File(String),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Reads `BERTH_*` variables into a [`FileConfig`]. Lists are comma-separated.
pub fn from_env(env: &HashMap<String, String>) -> Result<FileConfig, ConfigError> {
    fn get<'a>(env: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
        env.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
    fn parse<T: std::str::FromStr>(
        env: &HashMap<String, String>,
        k: &str,
        what: &str,
    ) -> Result<Option<T>, ConfigError> {
        get(env, k)
            .map(|v| {
                v.parse().map_err(|_| ConfigError::Env {
                    var: k.to_string(),
                    message: format!("expected {what}, got {v:?}"),
                })
            })
            .transpose()
    }
    let list = |k: &str| {
        get(env, k).map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    };
    let s = |k: &str| get(env, k).map(str::to_string);
    let tls = {
        let t = TlsSettings {
            ca_file: get(env, "BERTH_TLS_CA_FILE").map(PathBuf::from),
            cert_file: get(env, "BERTH_TLS_CERT_FILE").map(PathBuf::from),
            key_file: get(env, "BERTH_TLS_KEY_FILE").map(PathBuf::from),
            verify_incoming: parse(env, "BERTH_TLS_VERIFY_INCOMING", "true or false")?
                .unwrap_or(false),
            verify_outgoing: parse(env, "BERTH_TLS_VERIFY_OUTGOING", "true or false")?
                .unwrap_or(false),
            verify_server_hostname: parse(
                env,
                "BERTH_TLS_VERIFY_SERVER_HOSTNAME",
                "true or false",
            )?
            .unwrap_or(false),
        };
        (t != TlsSettings::default()).then_some(t)
    };
    Ok(FileConfig {
        dev: parse(env, "BERTH_DEV", "true or false")?,
        data_dir: get(env, "BERTH_DATA_DIR").map(PathBuf::from),
        node_name: s("BERTH_NODE"),
        datacenter: s("BERTH_DATACENTER"),
        http_addr: s("BERTH_HTTP_ADDR"),
        https_addr: s("BERTH_HTTPS_ADDR"),
        rpc_addr: s("BERTH_RPC_ADDR"),
        advertise_addr: s("BERTH_ADVERTISE"),
        bootstrap_expect: parse(env, "BERTH_BOOTSTRAP_EXPECT", "a whole number")?,
        retry_join: list("BERTH_RETRY_JOIN"),
        retry_interval: s("BERTH_RETRY_INTERVAL"),
        log_level: s("BERTH_LOG_LEVEL"),
        log_json: parse(env, "BERTH_LOG_JSON", "true or false")?,
        raft_snapshot_threshold: parse(env, "BERTH_RAFT_SNAPSHOT_THRESHOLD", "a whole number")?,
        raft_trailing_logs: parse(env, "BERTH_RAFT_TRAILING_LOGS", "a whole number")?,
        server_service_name: s("BERTH_SERVER_SERVICE_NAME"),
        tls,
        acl: {
            let tokens = AclTokenSettings {
                initial_management: s("BERTH_ACL_INITIAL_MANAGEMENT_TOKEN"),
                agent: s("BERTH_ACL_AGENT_TOKEN"),
                default: s("BERTH_ACL_DEFAULT_TOKEN"),
            };
            let a = AclSettings {
                enabled: parse(env, "BERTH_ACL_ENABLED", "true or false")?,
                default_policy: s("BERTH_ACL_DEFAULT_POLICY"),
                enable_token_persistence: parse(
                    env,
                    "BERTH_ACL_ENABLE_TOKEN_PERSISTENCE",
                    "true or false",
                )?,
                tokens: (tokens != AclTokenSettings::default()).then_some(tokens),
            };
            (a != AclSettings::default()).then_some(a)
        },
    })
}

/// Config files named by `BERTH_CONFIG_FILE` (comma-separated) come before those of `-config-file`.
pub fn config_files(flags: &Flags, env: &HashMap<String, String>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = env
        .get("BERTH_CONFIG_FILE")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    files.extend(flags.config_file.iter().cloned());
    files
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub dev: bool,
    pub data_dir: Option<PathBuf>,
    pub node_name: String,
    pub datacenter: String,
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    pub rpc_addr: SocketAddr,
    /// `IP:PORT` other servers use to reach this one's RPC port.
    pub advertise: SocketAddr,
    pub bootstrap_expect: u32,
    pub retry_join: Vec<String>,
    pub retry_interval: Duration,
    pub log_level: String,
    pub log_json: bool,
    pub snapshot_threshold: u64,
    pub trailing_logs: u64,
    pub server_service_name: String,
    pub tls: TlsSettings,
    pub acl: AclConfig,
}

fn addr(key: &'static str, v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if v.is_empty() || v == "off" {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| ConfigError::Invalid {
        key,
        message: format!("expected IP:PORT, got {v:?}"),
    })
}

/// Adds the default RPC port to a `-retry-join` entry that has none.
pub fn with_rpc_port(host: &str) -> String {
    if host.parse::<SocketAddr>().is_ok() {
        return host.to_string();
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return SocketAddr::new(ip, DEFAULT_RPC_PORT).to_string();
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() && !bare.contains("::") => host.to_string(),
        _ => format!("{host}:{DEFAULT_RPC_PORT}"),
    }
}

/// Merges the layers and checks the result. `hostname` and `first_private_ip` are passed in so
/// that this stays a pure function.
pub fn resolve(
    flags: &Flags,
    files: Vec<FileConfig>,
    env: FileConfig,
    hostname: &str,
    first_private_ip: Option<IpAddr>,
) -> Result<Config, ConfigError> {
    let mut merged = env;
    for f in files {
        merged = merged.overlay(f);
    }
    let m = merged.overlay(FileConfig::from_flags(flags));
    let dev = m.dev.unwrap_or(false);
    let (http_default, rpc_default) = if dev {
        ("127.0.0.1:8500", "127.0.0.1:8300")
    } else {
        ("0.0.0.0:8500", "0.0.0.0:8300")
    };
    let http_addr = addr("http_addr", m.http_addr.as_deref().unwrap_or(http_default))?;
    let https_addr = addr("https_addr", m.https_addr.as_deref().unwrap_or(""))?;
    let rpc_addr = addr("rpc_addr", m.rpc_addr.as_deref().unwrap_or(rpc_default))?.ok_or(
        ConfigError::Invalid {
            key: "rpc_addr",
            message: "the RPC address cannot be off".to_string(),
        },
    )?;
    let advertise = match m.advertise_addr.as_deref() {
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(sa) => sa,
            Err(_) => SocketAddr::new(
                a.parse::<IpAddr>().map_err(|_| ConfigError::Invalid {
                    key: "advertise_addr",
                    message: format!("expected IP or IP:PORT, got {a:?}"),
                })?,
                rpc_addr.port(),
            ),
        },
        None if !rpc_addr.ip().is_unspecified() => rpc_addr,
        None => SocketAddr::new(
            first_private_ip.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            rpc_addr.port(),
        ),
    };
    if advertise.ip().is_unspecified() {
        return Err(ConfigError::Invalid {
            key: "advertise_addr",
            message: "must be a routable address, not 0.0.0.0".to_string(),
        });
    }
    if !dev && m.data_dir.is_none() {
        return Err(ConfigError::Invalid {
            key: "data_dir",
            message: "required (or run with -dev for an in-memory server)".to_string(),
        });
    }
    if let Some(entries) = &m.retry_join {
        berth_cloud_join::validate(entries).map_err(|e| ConfigError::Invalid {
            key: "retry_join",
            message: e.to_string(),
        })?;
    }
    let bootstrap_expect = if dev {
        1
    } else {
        m.bootstrap_expect.unwrap_or(0)
    };
    let retry_interval = berth_api::parse_duration(m.retry_interval.as_deref().unwrap_or("1s"))
        .map_err(|e| ConfigError::Invalid {
            key: "retry_interval",
            message: e.to_string(),
        })?;
    let log_level = m.log_level.unwrap_or_else(|| "info".to_string());
    if !["trace", "debug", "info", "warn", "error"]
        .contains(&log_level.to_ascii_lowercase().as_str())
    {
        return Err(ConfigError::Invalid {
            key: "log_level",
            message: format!("expected trace, debug, info, warn or error, got {log_level:?}"),
        });
    }
    let tls = m.tls.unwrap_or_default();
    if https_addr.is_some() && !tls.enabled() {
        return Err(ConfigError::Invalid {
            key: "https_addr",
            message: "needs tls { cert_file, key_file }".to_string(),
        });
    }
    let server_service_name = m
        .server_service_name
        .unwrap_or_else(|| "consul".to_string());
    if server_service_name.is_empty()
        || !server_service_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::Invalid {
            key: "server_service_name",
            message: format!("expected letters, digits, '-' or '_', got {server_service_name:?}"),
        });
    }
    let acl = {
        let a = m.acl.unwrap_or_default();
        let default_allow = match a.default_policy.as_deref().unwrap_or("allow") {
            "allow" => true,
            "deny" => false,
            other => {
                return Err(ConfigError::Invalid {
                    key: "acl.default_policy",
                    message: format!("expected \"allow\" or \"deny\", got {other:?}"),
                });
            }
        };
        let tokens = a.tokens.unwrap_or_default();
        AclConfig {
            enabled: a.enabled.unwrap_or(false),
            default_allow,
            token_persistence: a.enable_token_persistence.unwrap_or(false),
            initial_management: tokens.initial_management.filter(|t| !t.is_empty()),
            agent_token: tokens.agent.filter(|t| !t.is_empty()),
            default_token: tokens.default.filter(|t| !t.is_empty()),
        }
    };
    let snapshot_threshold = m.raft_snapshot_threshold.unwrap_or(8192);
    if snapshot_threshold == 0 {
        return Err(ConfigError::Invalid {
            key: "raft_snapshot_threshold",
            message: "must be at least 1".to_string(),
        });
    }
    Ok(Config {
        dev,
        data_dir: if dev { None } else { m.data_dir },
        node_name: m.node_name.unwrap_or_else(|| hostname.to_string()),
        datacenter: m.datacenter.unwrap_or_else(|| "dc1".to_string()),
        http_addr,
        https_addr,
        rpc_addr,
        advertise,
        bootstrap_expect,
        retry_join: m
            .retry_join
            .unwrap_or_default()
            .iter()
            .map(|h| {
                // Cloud entries are resolved (with the default port) on every retry.
                if berth_cloud_join::is_cloud(h) {
                    h.clone()
                } else {
                    with_rpc_port(h)
                }
            })
            .collect(),
        retry_interval,
        log_level,
        log_json: m.log_json.unwrap_or(false),
        snapshot_threshold,
        trailing_logs: m.raft_trailing_logs.unwrap_or(2048),
        server_service_name,
        tls,
        acl,
    })
}

/// Loads each file, failing on the first bad one.
pub fn load_files(paths: &[PathBuf]) -> Result<Vec<FileConfig>, ConfigError> {
    paths
        .iter()
        .map(|p: &PathBuf| {
            berth_api::config::load_file::<FileConfig>(Path::new(p))
                .map_err(|e| ConfigError::File(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["berth-server"];
        v.extend_from_slice(args);
        let argv = berth_api::cli::normalize_args(v.iter().map(std::ffi::OsString::from));
        Cli::try_parse_from(argv).unwrap().flags
    }

    fn env(pairs: &[(&str, &str)]) -> FileConfig {
        from_env(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn dev_defaults_to_loopback_and_self_bootstrap() {
        let c = resolve(&flags(&["-dev"]), vec![], FileConfig::default(), "h", None).unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:8500".parse().unwrap()));
        assert_eq!(c.rpc_addr, "127.0.0.1:8300".parse().unwrap());
        assert_eq!(c.advertise, c.rpc_addr);
        assert_eq!((c.bootstrap_expect, c.data_dir.is_none()), (1, true));
        assert_eq!((c.node_name.as_str(), c.datacenter.as_str()), ("h", "dc1"));
    }

    #[test]
    fn flags_beat_files_beat_env() {
        let e = env(&[
            ("BERTH_NODE", "from-env"),
            ("BERTH_DATACENTER", "env-dc"),
            ("BERTH_DATA_DIR", "/env"),
        ]);
        let file = FileConfig {
            node_name: Some("from-file".into()),
            ..Default::default()
        };
        let c = resolve(
            &flags(&["-node", "from-flag"]),
            vec![file.clone()],
            e.clone(),
            "h",
            None,
        )
        .unwrap();
        assert_eq!(c.node_name, "from-flag");
        let c = resolve(&flags(&[]), vec![file], e.clone(), "h", None).unwrap();
        assert_eq!(
            (c.node_name.as_str(), c.datacenter.as_str()),
            ("from-file", "env-dc")
        );
        let c = resolve(&flags(&[]), vec![], e, "h", None).unwrap();
        assert_eq!(c.node_name, "from-env");
    }

    #[test]
    fn later_files_override_earlier_ones() {
        let a = FileConfig {
            datacenter: Some("a".into()),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let b = FileConfig {
            datacenter: Some("b".into()),
            ..Default::default()
        };
        let c = resolve(&flags(&[]), vec![a, b], FileConfig::default(), "h", None).unwrap();
        assert_eq!(c.datacenter, "b");
    }

    #[test]
    fn retry_join_gets_the_default_port_and_env_lists_split() {
        let c = resolve(
            &flags(&[
                "-data-dir",
                "/d",
                "-retry-join",
                "10.0.0.1",
                "--retry-join",
                "h:9",
            ]),
            vec![],
            FileConfig::default(),
            "h",
            None,
        )
        .unwrap();
        assert_eq!(c.retry_join, vec!["10.0.0.1:8300", "h:9"]);
        let e = env(&[("BERTH_RETRY_JOIN", "a, b:1"), ("BERTH_DATA_DIR", "/d")]);
        let c = resolve(&flags(&[]), vec![], e, "h", None).unwrap();
        assert_eq!(c.retry_join, vec!["a:8300", "b:1"]);
        assert_eq!(with_rpc_port("server.example"), "server.example:8300");
    }

    #[test]
    fn advertise_defaults_to_a_private_ip_when_bound_to_all() {
        let c = resolve(
            &flags(&["-data-dir", "/d"]),
            vec![],
            FileConfig::default(),
            "h",
            Some("10.1.2.3".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(c.advertise, "10.1.2.3:8300".parse().unwrap());
        let c = resolve(
            &flags(&["-data-dir", "/d", "-advertise", "10.9.9.9"]),
            vec![],
            FileConfig::default(),
            "h",
            None,
        )
        .unwrap();
        assert_eq!(c.advertise, "10.9.9.9:8300".parse().unwrap());
    }

    #[test]
    fn bad_values_are_named() {
        let e = resolve(
            &flags(&["-dev", "-http-addr", "nope"]),
            vec![],
            FileConfig::default(),
            "h",
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("http_addr: expected IP:PORT"),
            "{e}"
        );
        let e = resolve(&flags(&[]), vec![], FileConfig::default(), "h", None).unwrap_err();
        assert!(e.to_string().starts_with("data_dir: required"), "{e}");
        let e = from_env(&[("BERTH_BOOTSTRAP_EXPECT".to_string(), "three".to_string())].into())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment BERTH_BOOTSTRAP_EXPECT: expected a whole number, got \"three\""
        );
        let e = resolve(
            &flags(&["-dev", "-log-level", "loud"]),
            vec![],
            FileConfig::default(),
            "h",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("log_level:"), "{e}");
    }

    #[test]
    fn file_keys_parse_from_hcl_with_consul_aliases() {
        let f: FileConfig = berth_api::config::parse_str(
            Path::new("x.hcl"),
            "node_name = \"n\"\nadvertise = \"10.0.0.1\"\nretry_join = [\"a\"]\nbootstrap_expect = 3\ntls {\n  verify_incoming = true\n}\n",
        )
        .unwrap();
        assert_eq!(f.node_name.as_deref(), Some("n"));
        assert_eq!(f.advertise_addr.as_deref(), Some("10.0.0.1"));
        assert_eq!(f.bootstrap_expect, Some(3));
        assert!(f.tls.unwrap().verify_incoming);
        let e = berth_api::config::parse_str::<FileConfig>(
            Path::new("x.hcl"),
            "bootstrap_expect = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("key `bootstrap_expect`") && e.contains("expected u32"),
            "{e}"
        );
    }
}
