//! Request bodies of the agent API (`/v1/agent/service/register`, `/v1/agent/check/register`,
//! `/v1/agent/check/update`), as Consul's agent decodes them. Bodies go through
//! [`crate::catalog::canonical_keys`] first, so any spelling of a field name works.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::catalog::{Locality, ServiceAddress, Weights};

/// A Go duration given as a string (`"10s"`) or as nanoseconds, as Consul accepts both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GoDuration(pub Option<Duration>);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(GoDuration(None)),
            Value::String(s) if s.is_empty() => Ok(GoDuration(None)),
            Value::String(s) => crate::parse_duration(&s)
                .map(|d| GoDuration(Some(d)))
                .map_err(serde::de::Error::custom),
            Value::Number(n) => n
                .as_u64()
                .map(|ns| GoDuration(Some(Duration::from_nanos(ns))))
                .ok_or_else(|| serde::de::Error::custom("a duration must not be negative")),
            other => Err(serde::de::Error::custom(format!(
                "expected a duration such as \"10s\", got {other}"
            ))),
        }
    }
}

/// Body of `PUT /v1/agent/service/register` (Consul's `ServiceDefinition`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ServiceRegistration {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
    pub proxy: Option<Value>,
    pub connect: Option<ConnectDefinition>,
    pub check: Option<CheckRegistration>,
    pub checks: Vec<CheckRegistration>,
    pub locality: Option<Locality>,
    pub namespace: String,
    pub partition: String,
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct ConnectDefinition {
    pub native: bool,
    pub sidecar_service: Option<Box<ServiceRegistration>>,
}

/// A check as the agent takes it (Consul's `CheckDefinition` with its `CheckType`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct CheckRegistration {
    /// py-consul sends the check ID as `ID`; Consul takes either.
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub notes: String,
    pub status: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "TTL")]
    pub ttl: GoDuration,
    #[serde(rename = "HTTP")]
    pub http: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub method: String,
    pub body: String,
    #[serde(rename = "TLSSkipVerify")]
    pub tls_skip_verify: bool,
    #[serde(rename = "TLSServerName")]
    pub tls_server_name: String,
    pub disable_redirects: bool,
    #[serde(rename = "TCP")]
    pub tcp: String,
    #[serde(rename = "GRPC")]
    pub grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    pub interval: GoDuration,
    pub timeout: GoDuration,
    pub deregister_critical_service_after: GoDuration,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    pub failures_before_warning: u32,
    pub output_max_size: usize,
    // Kinds Berth does not run; accepted by the decoder so the refusal can name them.
    pub args: Vec<String>,
    pub script_args: Vec<String>,
    #[serde(rename = "DockerContainerID")]
    pub docker_container_id: String,
    pub shell: String,
    pub alias_node: String,
    pub alias_service: String,
    #[serde(rename = "H2PING")]
    pub h2ping: String,
    #[serde(rename = "H2PingUseTLS")]
    pub h2ping_use_tls: bool,
    #[serde(rename = "UDP")]
    pub udp: String,
    #[serde(rename = "OSService")]
    pub os_service: String,
    pub namespace: String,
    pub partition: String,
    pub token: String,
}

/// Body of `PUT /v1/agent/check/update/<id>`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct CheckUpdate {
    pub status: String,
    pub output: String,
}

/// One entry of `PUT /v1/agent/checks/update` (Berth's own): many TTL checks in one request,
/// applied together or not at all, and synced to the catalog once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct CheckStatusUpdate {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub status: String,
    pub output: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::canonical_keys;
    use serde_json::json;

    #[test]
    fn py_consul_and_go_spellings_decode_alike() {
        let v = canonical_keys(json!({
            "name": "web", "id": "web-1", "port": 80,
            "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 80}},
            "connect": {"sidecar_service": {}},
            "check": {"http": "http://x", "interval": "1s", "timeout": 2_000_000_000u64},
            "checks": [{"ttl": "10s", "check_id": "c2"}]
        }));
        let r: ServiceRegistration = serde_json::from_value(v).unwrap();
        assert_eq!(r.tagged_addresses["lan"].address, "10.0.0.1");
        assert!(r.connect.unwrap().sidecar_service.is_some());
        let c = r.check.unwrap();
        assert_eq!(c.interval.0, Some(Duration::from_secs(1)));
        assert_eq!(c.timeout.0, Some(Duration::from_secs(2)));
        assert_eq!(r.checks[0].check_id, "c2");
        assert_eq!(r.checks[0].ttl.0, Some(Duration::from_secs(10)));
        let bad: Result<CheckRegistration, _> =
            serde_json::from_value(canonical_keys(json!({"TTL": "ten seconds"})));
        assert!(bad.unwrap_err().to_string().contains("invalid duration"));
    }
}
