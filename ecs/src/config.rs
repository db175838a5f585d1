//! `BERTH_ECS_CONFIG_JSON`: the task's mesh configuration, one JSON document that every
//! Berth container of the task reads. It is published as a JSON Schema
//! (`ecs/berth-ecs-config.schema.json`); parsing is strict in the same way (unknown fields
//! and wrong types are refused, naming the field), and a test keeps the two in step.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TaskConfig {
    /// The shared volume: tokens, the Envoy bootstrap, the copied binaries.
    pub bootstrap_dir: PathBuf,
    pub log_level: String,
    pub servers: Servers,
    pub login: Login,
    pub service: Service,
    pub proxy: Proxy,
    /// Containers whose ECS health becomes a check of the service.
    pub health_sync_containers: Vec<String>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            bootstrap_dir: PathBuf::from("/berth"),
            log_level: "info".into(),
            servers: Servers::default(),
            login: Login::default(),
            service: Service::default(),
            proxy: Proxy::default(),
            health_sync_containers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Servers {
    /// Server addresses (IPs or DNS names, e.g. an internal load balancer's).
    pub hosts: Vec<String>,
    pub http: HttpSettings,
    pub rpc: RpcSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpSettings {
    pub port: u16,
    pub https: bool,
    /// CA that signed the servers' HTTPS certificates (default: the system roots).
    pub ca_cert_file: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            port: 8500,
            https: false,
            ca_cert_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RpcSettings {
    pub port: u16,
    pub tls: bool,
    pub ca_cert_file: Option<PathBuf>,
}

impl Default for RpcSettings {
    fn default() -> Self {
        RpcSettings {
            port: 8300,
            tls: false,
            ca_cert_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Login {
    /// With ACLs on: log in with the task role (aws-iam auth methods).
    pub enabled: bool,
    /// The services' auth method (mesh-init).
    pub method: String,
    /// The client agents' auth method (`berth agent`).
    pub client_method: String,
    /// Also sign `iam:GetRole`, for methods with `EnableIAMEntityDetails`.
    pub include_entity: bool,
    /// Extra token meta; `berth/task-id` and `berth/cluster` are always set.
    pub meta: BTreeMap<String, String>,
    pub region: Option<String>,
    pub sts_endpoint: Option<String>,
    /// Berth's addition: where the signed `iam:GetRole` goes (default the global endpoint).
    pub iam_endpoint: Option<String>,
    pub server_id_header_value: Option<String>,
}

impl Default for Login {
    fn default() -> Self {
        Login {
            enabled: false,
            method: "berth-ecs-service".into(),
            client_method: "berth-ecs-client".into(),
            include_entity: true,
            meta: BTreeMap::new(),
            region: None,
            sts_endpoint: None,
            iam_endpoint: None,
            server_id_header_value: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Service {
    /// Default: the task family, lower-cased.
    pub name: Option<String>,
    /// The application's port (the proxy's local app).
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub weights: Option<Weights>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Proxy {
    pub public_listener_port: u16,
    pub upstreams: Vec<Upstream>,
    /// Opaque proxy config (`Proxy.Config` of the registration), e.g. `protocol`.
    pub config: BTreeMap<String, Value>,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            public_listener_port: 20000,
            upstreams: Vec::new(),
            config: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Upstream {
    pub destination_name: String,
    pub local_bind_address: Option<String>,
    pub local_bind_port: u16,
    pub datacenter: Option<String>,
    pub config: BTreeMap<String, Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("BERTH_ECS_CONFIG_JSON is not set")]
    NotSet,
    #[error("BERTH_ECS_CONFIG_JSON: {0}")]
    Invalid(String),
}

impl TaskConfig {
    /// Parses and validates the document; every error names the field.
    pub fn parse(text: &str) -> Result<TaskConfig, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::NotSet);
        }
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::Invalid(format!("not valid JSON: {e}")))?;
        let Value::Object(_) = &doc else {
            return Err(ConfigError::Invalid(
                "the document must be a JSON object".into(),
            ));
        };
        // serde accepts a struct written as an array; only objects are documents here.
        reject_arrays_for_objects(&doc)?;
        let cfg: TaskConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid(format!("{path}: {}", e.into_inner()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// From an environment lookup (pure for tests).
    pub fn from_env(env: &impl Fn(&str) -> Option<String>) -> Result<TaskConfig, ConfigError> {
        match env(crate::CONFIG_ENV) {
            Some(v) => TaskConfig::parse(&v),
            None => Err(ConfigError::NotSet),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.servers.hosts.is_empty() {
            return bad("servers.hosts: at least one server address is needed".into());
        }
        if let Some(h) = self
            .servers
            .hosts
            .iter()
            .find(|h| h.trim().is_empty() || h.contains('/'))
        {
            return bad(format!("servers.hosts: {h:?} is not a host name or IP"));
        }
        if !self.bootstrap_dir.is_absolute() {
            return bad(format!(
                "bootstrapDir: {} is not an absolute path",
                self.bootstrap_dir.display()
            ));
        }
        if !["trace", "debug", "info", "warn", "error"].contains(&self.log_level.as_str()) {
            return bad(format!(
                "logLevel: {:?} is not one of trace, debug, info, warn, error",
                self.log_level
            ));
        }
        if let Some(n) = &self.service.name
            && !valid_name(n)
        {
            return bad(format!(
                "service.name: {n:?} must be lower-case letters, digits and dashes"
            ));
        }
        if self.login.enabled
            && (self.login.method.is_empty() || self.login.client_method.is_empty())
        {
            return bad("login.method and login.clientMethod must not be empty".into());
        }
        let mut ports = std::collections::BTreeSet::new();
        for (i, u) in self.proxy.upstreams.iter().enumerate() {
            if u.destination_name.is_empty() {
                return bad(format!("proxy.upstreams[{i}].destinationName is missing"));
            }
            if u.local_bind_port == 0 {
                return bad(format!("proxy.upstreams[{i}].localBindPort is missing"));
            }
            if !ports.insert(u.local_bind_port) {
                return bad(format!(
                    "proxy.upstreams[{i}].localBindPort {} is used twice",
                    u.local_bind_port
                ));
            }
        }
        if self.proxy.public_listener_port == 0 {
            return bad("proxy.publicListenerPort must not be 0".into());
        }
        Ok(())
    }

    /// The service name: given, else the task family lower-cased.
    pub fn service_name(&self, family: &str) -> String {
        self.service
            .name
            .clone()
            .unwrap_or_else(|| family.to_ascii_lowercase())
    }

    /// `host:port` of each server's HTTP API, and the scheme.
    pub fn http_bases(&self) -> Vec<String> {
        let scheme = if self.servers.http.https {
            "https"
        } else {
            "http"
        };
        self.servers
            .hosts
            .iter()
            .map(|h| format!("{scheme}://{}", host_port(h, self.servers.http.port)))
            .collect()
    }

    /// `host:port` of each server's RPC port.
    pub fn rpc_addrs(&self) -> Vec<String> {
        self.servers
            .hosts
            .iter()
            .map(|h| host_port(h, self.servers.rpc.port))
            .collect()
    }

    pub fn token_file(&self, name: &str) -> PathBuf {
        self.bootstrap_dir.join(name)
    }
}

/// The objects of the schema (the top level, `servers`, `servers.http`, `login`, ...) must
/// be JSON objects; serde would also take them as arrays of their fields.
fn reject_arrays_for_objects(doc: &Value) -> Result<(), ConfigError> {
    const OBJECTS: &[&str] = &[
        "/servers",
        "/servers/http",
        "/servers/rpc",
        "/login",
        "/service",
        "/service/weights",
        "/proxy",
    ];
    for p in OBJECTS {
        if let Some(Value::Array(_)) = doc.pointer(p) {
            let field = p.trim_start_matches('/').replace('/', ".");
            return Err(ConfigError::Invalid(format!(
                "{field}: invalid type: array, expected an object"
            )));
        }
    }
    if let Some(Value::Array(ups)) = doc.pointer("/proxy/upstreams")
        && let Some(i) = ups.iter().position(Value::is_array)
    {
        return Err(ConfigError::Invalid(format!(
            "proxy.upstreams[{i}]: invalid type: array, expected an object"
        )));
    }
    Ok(())
}

fn host_port(h: &str, port: u16) -> String {
    // A host that already names its port (`host:port`, `[v6]:port`) keeps it.
    if h.starts_with('[') && h.contains("]:") || (h.matches(':').count() == 1) {
        return h.to_string();
    }
    if h.contains(':') {
        return format!("[{h}]:{port}");
    }
    format!("{h}:{port}")
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = include_str!("../berth-ecs-config.schema.json");

    fn minimal() -> Value {
        json!({"servers": {"hosts": ["10.0.0.5"]}, "service": {"port": 9090}})
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = TaskConfig::parse(&minimal().to_string()).unwrap();
        assert_eq!(c.bootstrap_dir, PathBuf::from("/berth"));
        assert_eq!(c.proxy.public_listener_port, 20000);
        assert_eq!(c.login.method, "berth-ecs-service");
        assert_eq!(c.login.client_method, "berth-ecs-client");
        assert_eq!(c.service_name("WebApp"), "webapp");
        assert_eq!(c.http_bases(), ["http://10.0.0.5:8500"]);
        assert_eq!(c.rpc_addrs(), ["10.0.0.5:8300"]);
    }

    #[test]
    fn every_error_names_its_field() {
        let cases = [
            (
                json!({"servers": {"hosts": ["a"]}, "colour": 1}),
                "unknown field `colour`",
            ),
            (
                json!({"servers": {"hosts": ["a"], "http": {"port": "x"}}}),
                "servers.http.port: invalid type",
            ),
            (
                json!({"servers": {"hosts": ["a"]}, "proxy": {"upstreams": [{"destinationName": "api", "localBindPort": 1234, "bogus": 1}]}}),
                "proxy.upstreams[0].bogus: unknown field `bogus`",
            ),
            (
                json!({"servers": {"hosts": []}}),
                "servers.hosts: at least one",
            ),
            (json!({}), "servers.hosts"),
            (
                json!({"servers": {"hosts": ["a"]}, "proxy": {"upstreams": [{"destinationName": "api"}]}}),
                "proxy.upstreams[0].localBindPort is missing",
            ),
            (
                json!({"servers": {"hosts": ["a"]}, "service": {"name": "Web App"}}),
                "service.name",
            ),
            (
                json!({"servers": {"hosts": ["a"]}, "bootstrapDir": "rel"}),
                "bootstrapDir",
            ),
            (
                json!({"servers": {"hosts": ["a"]}, "healthSyncContainers": "app"}),
                "healthSyncContainers: invalid type",
            ),
            (json!([1]), "must be a JSON object"),
            (json!({"servers": ["a"]}), "servers: invalid type: array"),
        ];
        for (doc, want) in cases {
            let e = TaskConfig::parse(&doc.to_string()).unwrap_err().to_string();
            assert!(e.starts_with("BERTH_ECS_CONFIG_JSON: "), "{e}");
            assert!(e.contains(want), "{doc}: {e}");
        }
        assert_eq!(TaskConfig::parse(" "), Err(ConfigError::NotSet));
        let e = TaskConfig::parse("{\"servers\": ").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn hosts_may_name_their_port() {
        assert_eq!(host_port("10.0.0.1", 8500), "10.0.0.1:8500");
        assert_eq!(host_port("10.0.0.1:9500", 8500), "10.0.0.1:9500");
        assert_eq!(host_port("fd00::1", 8500), "[fd00::1]:8500");
        assert_eq!(host_port("[fd00::1]:1", 8500), "[fd00::1]:1");
        assert_eq!(host_port("servers.internal", 8300), "servers.internal:8300");
    }

    /// Walks the published schema beside a fully populated config: the schema names exactly
    /// the fields the parser knows, at every level, and forbids any other.
    #[test]
    fn the_published_schema_matches_the_parser() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let mut full = TaskConfig::default();
        full.servers.http.ca_cert_file = Some("/x".into());
        full.servers.rpc.ca_cert_file = Some("/x".into());
        full.login.region = Some("r".into());
        full.login.sts_endpoint = Some("s".into());
        full.login.iam_endpoint = Some("i".into());
        full.login.server_id_header_value = Some("v".into());
        full.service.name = Some("n".into());
        full.service.weights = Some(Weights {
            passing: 1,
            warning: 1,
        });
        full.proxy.upstreams.push(Upstream {
            local_bind_address: Some("127.0.0.1".into()),
            datacenter: Some("dc1".into()),
            ..Default::default()
        });
        let doc = serde_json::to_value(&full).unwrap();
        fn walk(schema: &Value, doc: &Value, path: &str) {
            match doc {
                Value::Object(m) => {
                    let props = schema["properties"].as_object();
                    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                        let props = props.unwrap_or_else(|| panic!("{path}: no properties"));
                        let mut want: Vec<&String> = props.keys().collect();
                        let mut have: Vec<&String> = m.keys().collect();
                        want.sort();
                        have.sort();
                        assert_eq!(want, have, "schema and parser differ at {path}");
                        for (k, v) in m {
                            walk(&props[k], v, &format!("{path}.{k}"));
                        }
                    }
                }
                Value::Array(a) => {
                    if let Some(first) = a.first() {
                        walk(&schema["items"], first, &format!("{path}[]"));
                    }
                }
                _ => {}
            }
        }
        walk(&schema, &doc, "$");
        assert_eq!(schema["required"], json!(["servers"]));
    }

    #[test]
    fn the_env_lookup_is_injected() {
        assert_eq!(TaskConfig::from_env(&|_| None), Err(ConfigError::NotSet));
        let doc = minimal().to_string();
        assert!(TaskConfig::from_env(&|k| (k == crate::CONFIG_ENV).then(|| doc.clone())).is_ok());
    }
}
