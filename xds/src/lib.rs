//! The data-plane half of the Berth client agent.
//!
//! [`build`] turns a [`ProxySnapshot`] (everything one sidecar needs to know) into Envoy
//! resources; [`service`] serves them to Envoy over delta ADS, pushing only what changed.
//! The agent owns the snapshots and hands them over through a [`SnapshotSource`].

mod bootstrap;
pub mod delta;
mod rbac;
mod resources;
mod server;

use std::net::{IpAddr, SocketAddr};

pub use bootstrap::bootstrap_json;
pub use resources::{
    Resources, build, leaf_secret_name, local_app_cluster, outbound_listener_name,
    public_listener_name, roots_secret_name,
};
pub use server::{AdsServer, SnapshotSource, XdsEvent, service};

/// Envoy's protobuf types, re-exported so callers (and tests) decode resources with the same
/// definitions this crate encodes them with.
pub use envoy_types;

/// Type URLs of the four resource kinds Berth serves.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// A service's application protocol, as in Consul's `service-defaults` `Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Http,
    Http2,
    Grpc,
}

impl Protocol {
    /// Whether the proxy terminates HTTP (and so can apply L7 intentions and speak HTTP/2
    /// between sidecars).
    pub fn is_http(self) -> bool {
        !matches!(self, Protocol::Tcp)
    }

    /// Whether the application itself speaks HTTP/2 (prior knowledge, no TLS).
    pub fn app_speaks_h2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

/// The proxy's own certificate and private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

/// One instance of an upstream service: where its sidecar's public listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: u16,
    /// False when any of its checks is critical; Envoy then keeps it but sends no traffic.
    pub healthy: bool,
}

/// An explicit upstream of the proxied service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub destination: String,
    pub datacenter: String,
    pub local_bind: SocketAddr,
    pub protocol: Protocol,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntentionAction {
    Allow,
    Deny,
}

/// The request half of an L7 permission; every set field must match (AND), an empty match
/// matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpMatch {
    pub path_exact: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Vec<String>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderMatch {
    pub name: String,
    pub present: bool,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub regex: Option<String>,
    pub invert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub action: IntentionAction,
    pub http: HttpMatch,
}

/// One source's intention, already in precedence order (first match wins), as the server
/// computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intention {
    /// A service name, or `*` for every service of the trust domain.
    pub source: String,
    /// The L4 decision; `None` means the L7 `permissions` decide.
    pub action: Option<IntentionAction>,
    /// L7 permissions in order; a request matching none of them gets the default decision.
    pub permissions: Vec<Permission>,
}

/// Everything one sidecar proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySnapshot {
    pub proxy_id: String,
    /// The destination service the sidecar fronts.
    pub service: String,
    pub datacenter: String,
    /// The cluster's trust domain, e.g. `7f3c...-uuid.berth`.
    pub trust_domain: String,
    pub public_listener: SocketAddr,
    pub local_app: SocketAddr,
    pub protocol: Protocol,
    pub leaf: Leaf,
    /// CA certificates, PEM.
    pub roots: Vec<String>,
    pub intentions: Vec<Intention>,
    /// The decision for a source no intention matches.
    pub default_allow: bool,
    pub upstreams: Vec<Upstream>,
}

/// The SPIFFE ID a service's leaf certificate carries as its URI SAN.
pub fn spiffe_id(trust_domain: &str, datacenter: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/ns/default/dc/{datacenter}/svc/{service}")
}

/// The TLS server name (and EDS cluster name) under which a service's sidecars are reached.
pub fn sni(service: &str, datacenter: &str, trust_domain: &str) -> String {
    format!("{service}.default.{datacenter}.internal.{trust_domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_consul() {
        assert_eq!(
            spiffe_id("abc.berth", "dc1", "web"),
            "spiffe://abc.berth/ns/default/dc/dc1/svc/web"
        );
        assert_eq!(
            sni("api", "dc1", "abc.berth"),
            "api.default.dc1.internal.abc.berth"
        );
    }
}
