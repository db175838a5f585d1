//! Catalog and health shapes: what `/v1/catalog/*`, `/v1/health/*` and `/v1/agent/*` speak.
//!
//! Clients send field names in any case (py-consul sends `name`, Consul's Go client `Name`), so
//! request bodies go through [`canonical_keys`] before they are deserialized.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PASSING: &str = "passing";
pub const WARNING: &str = "warning";
pub const CRITICAL: &str = "critical";
pub const MAINTENANCE: &str = "maintenance";

/// Fields whose values are user data (maps of arbitrary keys, or objects Berth passes through)
/// and must keep their keys as written.
const OPAQUE: &[&str] = &[
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "TaggedAddresses",
    "Header",
    "Config",
    "Definition",
];

/// Every field name Berth reads from a request body, by its lowercase form.
const FIELDS: &[&str] = &[
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "NodeMeta",
    "Meta",
    "Service",
    "Services",
    "Check",
    "Checks",
    "SkipNodeUpdate",
    "Locality",
    "Region",
    "Zone",
    "Tags",
    "Port",
    "Kind",
    "Proxy",
    "Connect",
    "Weights",
    "Passing",
    "Warning",
    "EnableTagOverride",
    "CheckID",
    "Name",
    "Notes",
    "Status",
    "Output",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Type",
    "Definition",
    "Interval",
    "Timeout",
    "TTL",
    "HTTP",
    "TCP",
    "GRPC",
    "GRPCUseTLS",
    "Method",
    "Header",
    "Body",
    "TLSSkipVerify",
    "TLSServerName",
    "DeregisterCriticalServiceAfter",
    "SuccessBeforePassing",
    "FailuresBeforeCritical",
    "FailuresBeforeWarning",
    "Namespace",
    "Partition",
    "PeerName",
    "SidecarService",
    "Native",
    "LocalServiceAddress",
    "LocalServicePort",
    "DestinationServiceName",
    "DestinationServiceID",
    "Upstreams",
    "Token",
    "ReplaceExistingChecks",
    "DestinationName",
    "DestinationType",
    "DestinationNamespace",
    "DestinationPartition",
    "DestinationPeer",
    "LocalBindAddress",
    "LocalBindPort",
    "LocalBindSocketPath",
    "Config",
    "Mode",
    "Expose",
    "MeshGateway",
    "TransparentProxy",
    "Paths",
    "Path",
    "LocalPathPort",
    "ListenerPort",
    "Protocol",
    "Args",
    "ScriptArgs",
    "DockerContainerID",
    "Shell",
    "AliasNode",
    "AliasService",
    "H2PING",
    "H2PingUseTLS",
    "UDP",
    "OSService",
    "DisableRedirects",
    "OutputMaxSize",
    "Status",
    "SocketPath",
    "DeregisterCriticalServiceAfter",
];

fn same_field(canonical: &str, given: &str) -> bool {
    // Consul's agent endpoints also take snake_case (`check_id`, `sidecar_service`).
    let mut g = given.chars().filter(|c| *c != '_');
    canonical
        .chars()
        .all(|c| g.next().is_some_and(|x| x.eq_ignore_ascii_case(&c)))
        && g.next().is_none()
}

/// Rewrites the keys of every object to their canonical PascalCase spelling, leaving the
/// contents of user-data fields ([`OPAQUE`]) untouched. Unknown keys are kept as they are, so
/// a misspelt field still reaches the decoder and is reported.
pub fn canonical_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = FIELDS
                        .iter()
                        .find(|f| same_field(f, &k))
                        .map(|f| f.to_string())
                        .unwrap_or(k);
                    let v = if OPAQUE.contains(&key.as_str()) {
                        v
                    } else {
                        canonical_keys(v)
                    };
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_keys).collect()),
        other => other,
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Locality {
    pub region: String,
    pub zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceAddress {
    // Inside `TaggedAddresses`, whose keys are user data, so field names are matched here.
    #[serde(alias = "address", alias = "ADDRESS")]
    pub address: String,
    #[serde(alias = "port", alias = "PORT")]
    pub port: u16,
}

/// A node of the catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A service instance as the agent API shows it (`/v1/agent/services`, `Services` of a node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AgentService {
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A check as the catalog and health API show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub definition: Value,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Body of `PUT /v1/catalog/register`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct RegisterRequest {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub locality: Option<Locality>,
    pub service: Option<ServiceDefinition>,
    pub check: Option<CheckDefinition>,
    pub checks: Vec<CheckDefinition>,
    pub skip_node_update: bool,
    pub namespace: String,
    pub partition: String,
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceDefinition {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
    pub proxy: Option<Value>,
    pub connect: Option<Value>,
    pub locality: Option<Locality>,
    pub namespace: String,
    pub partition: String,
    pub peer_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct CheckDefinition {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub notes: String,
    pub status: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    pub definition: Option<Value>,
    pub interval: String,
    pub timeout: String,
    pub namespace: String,
    pub partition: String,
}

/// Body of `PUT /v1/catalog/deregister`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct DeregisterRequest {
    pub node: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub datacenter: String,
    pub namespace: String,
    pub partition: String,
    pub token: String,
}

/// One row of `/v1/catalog/service/<name>`: node and service fields side by side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub service_weights: Weights,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub service_enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_proxy: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_connect: Option<Value>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One row of `/v1/health/service/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: AgentService,
    pub checks: Vec<HealthCheck>,
}

/// One node with everything registered on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: Node,
    pub services: BTreeMap<String, AgentService>,
    pub checks: BTreeMap<String, HealthCheck>,
}

/// A registration, already defaulted and validated by the HTTP layer; what a catalog write
/// (or an agent's anti-entropy) commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub node: Node,
    pub skip_node_update: bool,
    pub service: Option<AgentService>,
    pub checks: Vec<HealthCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogOp {
    Register(Box<Registration>),
    Deregister {
        node: String,
        service_id: Option<String>,
        check_id: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_become_canonical_but_user_maps_keep_theirs() {
        let v = canonical_keys(json!({
            "node": "n1", "address": "10.0.0.1",
            "nodemeta": {"team": "a", "id": "kept"},
            "service": {"service": "web", "id": "web1", "port": 80, "meta": {"port": "x"}},
            "checks": [{"checkid": "c1", "serviceid": "web1", "status": "passing"}],
            "mystery": 1
        }));
        assert_eq!(v["Node"], "n1");
        assert_eq!(v["NodeMeta"], json!({"team": "a", "id": "kept"}));
        assert_eq!(v["Service"]["ID"], "web1");
        assert_eq!(v["Service"]["Meta"], json!({"port": "x"}));
        assert_eq!(v["Checks"][0]["CheckID"], "c1");
        assert_eq!(v["Checks"][0]["ServiceID"], "web1");
        assert_eq!(
            v["mystery"], 1,
            "unknown keys stay, for the decoder to reject"
        );
        let r: Result<RegisterRequest, _> = serde_json::from_value(v);
        assert!(r.unwrap_err().to_string().contains("mystery"));
    }
}
