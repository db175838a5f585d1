//! Connect (the service mesh) as Consul's `/v1` API shows it: CA roots and configuration,
//! config entries (`service-defaults`, `proxy-defaults`, `service-intentions`) and the
//! intentions view on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One trusted root of the mesh CA (`GET /v1/connect/ca/roots`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CaRoot {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub serial_number: u64,
    #[serde(rename = "SigningKeyID")]
    pub signing_key_id: String,
    pub external_trust_domain: String,
    pub not_before: String,
    pub not_after: String,
    pub root_cert: String,
    /// Certificates that chain this root to older ones (the cross-signed root after a
    /// rotation), sent with leaves so that peers which trust only the old root accept them.
    pub intermediate_certs: Vec<String>,
    pub active: bool,
    pub private_key_type: String,
    pub private_key_bits: u32,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CaRoots {
    #[serde(rename = "ActiveRootID")]
    pub active_root_id: String,
    pub trust_domain: String,
    pub roots: Vec<CaRoot>,
}

/// `GET|PUT /v1/connect/ca/configuration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CaConfiguration {
    pub provider: String,
    #[serde(rename = "ClusterID")]
    pub cluster_id: String,
    pub config: Value,
    pub state: Option<BTreeMap<String, String>>,
    pub force_without_cross_signing: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A leaf certificate as the agent's `/v1/agent/connect/ca/leaf/<service>` returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IssuedCert {
    pub serial_number: String,
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    #[serde(rename = "PrivateKeyPEM")]
    pub private_key_pem: String,
    pub service: String,
    #[serde(rename = "ServiceURI")]
    pub service_uri: String,
    pub valid_after: String,
    pub valid_before: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// Body of Berth's CSR signing call (`PUT /v1/connect/ca/sign`, used by client agents).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SignRequest {
    #[serde(rename = "CSR")]
    pub csr: String,
    /// The service the certificate is for; the token must have `service:write` on it.
    pub service: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HeaderPermission {
    pub name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub present: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub suffix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub regex: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HttpPermission {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_exact: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_prefix: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path_regex: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header: Vec<HeaderPermission>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IntentionPermission {
    pub action: String,
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpPermission>,
}

/// One source of a `service-intentions` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SourceIntention {
    pub name: String,
    /// `allow` or `deny`; empty when `Permissions` are given (L7).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    pub precedence: u32,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(rename = "LegacyID", skip_serializing_if = "String::is_empty")]
    pub legacy_id: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub legacy_meta: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub legacy_create_time: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub legacy_update_time: String,
}

/// A config entry of any supported kind; kind-specific fields are validated by the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConfigEntry {
    pub kind: String,
    pub name: String,
    /// service-defaults: tcp, http, http2 or grpc.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// proxy-defaults: free-form proxy configuration (`protocol` is read from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// service-intentions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<SourceIntention>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The legacy intentions API's view of one source of a `service-intentions` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Intention {
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub source_ns: String,
    pub source_name: String,
    pub destination_ns: String,
    pub destination_name: String,
    pub source_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<IntentionPermission>,
    pub precedence: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}
