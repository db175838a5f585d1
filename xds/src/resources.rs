//! One sidecar's snapshot as Envoy resources (LDS, CDS, EDS, SDS).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HealthStatus,
    Http2ProtocolOptions, SocketAddress, TrafficDirection, TransportSocket, address, config_source,
    data_source, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsCertificate, TlsParameters, UpstreamTlsContext, common_tls_context,
    secret, subject_alt_name_matcher, tls_parameters,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration};
use envoy_types::util::pack_any;

use crate::{Endpoint, ProxySnapshot, Upstream, rbac, sni, spiffe_id, type_url};

/// Envoy resources by name, one map per xDS type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    pub listeners: BTreeMap<String, Any>,
    pub clusters: BTreeMap<String, Any>,
    pub endpoints: BTreeMap<String, Any>,
    pub secrets: BTreeMap<String, Any>,
}

impl Resources {
    /// The map holding resources of `type_url`, if it is one of the four Berth serves.
    pub fn of_type(&self, type_url: &str) -> Option<&BTreeMap<String, Any>> {
        match type_url {
            type_url::LISTENER => Some(&self.listeners),
            type_url::CLUSTER => Some(&self.clusters),
            type_url::ENDPOINT => Some(&self.endpoints),
            type_url::SECRET => Some(&self.secrets),
            _ => None,
        }
    }
}

/// Name of the public listener.
pub fn public_listener_name(addr: SocketAddr) -> String {
    format!("public_listener:{}:{}", addr.ip(), addr.port())
}

/// Name of an upstream's outbound listener.
pub fn outbound_listener_name(u: &Upstream) -> String {
    format!(
        "{}:{}:{}",
        u.destination,
        u.local_bind.ip(),
        u.local_bind.port()
    )
}

/// Name of the cluster that reaches the proxied application.
pub fn local_app_cluster() -> &'static str {
    "local_app"
}

/// The SDS name of the proxy's certificate; stable across rotations so listeners and
/// clusters that reference it never change when only the certificate does.
pub fn leaf_secret_name(s: &ProxySnapshot) -> String {
    format!("leaf:{}", s.service)
}

/// The SDS name of the trusted CA bundle.
pub fn roots_secret_name(s: &ProxySnapshot) -> String {
    format!("roots:{}", s.trust_domain)
}

/// Every resource the proxy needs, keyed by resource name.
pub fn build(s: &ProxySnapshot) -> Resources {
    let mut r = Resources::default();
    let public = public_listener(s);
    r.listeners.insert(public.name.clone(), pack_any(public));
    for u in &s.upstreams {
        let l = outbound_listener(u, &s.trust_domain);
        r.listeners.insert(l.name.clone(), pack_any(l));
    }

    let local = local_app(s);
    r.clusters.insert(local.name.clone(), pack_any(local));
    for u in &s.upstreams {
        let c = upstream_cluster(s, u);
        r.clusters.insert(c.name.clone(), pack_any(c));
        let cla = load_assignment(
            &sni(&u.destination, &u.datacenter, &s.trust_domain),
            &u.endpoints,
        );
        r.endpoints.insert(cla.cluster_name.clone(), pack_any(cla));
    }

    let leaf = Secret {
        name: leaf_secret_name(s),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(&s.leaf.cert_pem)),
            private_key: Some(inline(&s.leaf.key_pem)),
            ..Default::default()
        })),
    };
    r.secrets.insert(leaf.name.clone(), pack_any(leaf));
    let mut bundle = String::new();
    for pem in &s.roots {
        bundle.push_str(pem.trim_end());
        bundle.push('\n');
    }
    let roots = Secret {
        name: roots_secret_name(s),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(&bundle)),
                ..Default::default()
            },
        )),
    };
    r.secrets.insert(roots.name.clone(), pack_any(roots));
    r
}

fn inline(s: &str) -> DataSource {
    DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_owned())),
        ..Default::default()
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

fn seconds(n: i64) -> Duration {
    Duration {
        seconds: n,
        nanos: 0,
    }
}

/// TLS 1.3 only: Envoy's upstream default caps at 1.2, and every Berth sidecar speaks 1.3.
fn tls13() -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        tls_maximum_protocol_version: tls_parameters::TlsProtocol::TlSv13 as i32,
        ..Default::default()
    }
}

fn uri_san(matcher: string_matcher::MatchPattern) -> SubjectAltNameMatcher {
    SubjectAltNameMatcher {
        san_type: subject_alt_name_matcher::SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(matcher),
            ignore_case: false,
        }),
        ..Default::default()
    }
}

/// Certificate from the leaf secret, trust from the roots secret, plus a SAN check that only
/// lives here so that rotating either secret leaves this context untouched.
fn common_tls(s: &ProxySnapshot, san: SubjectAltNameMatcher, alpn: &[&str]) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(tls13()),
        tls_certificate_sds_secret_configs: vec![sds(leaf_secret_name(s))],
        alpn_protocols: alpn.iter().map(|p| (*p).to_owned()).collect(),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: vec![san],
                        ..Default::default()
                    }),
                    validation_context_sds_secret_config: Some(sds(roots_secret_name(s))),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn public_listener(s: &ProxySnapshot) -> Listener {
    let any_mesh_identity = uri_san(string_matcher::MatchPattern::Prefix(format!(
        "spiffe://{}/",
        s.trust_domain
    )));
    let alpn: &[&str] = if s.protocol.is_http() {
        &["h2", "http/1.1"]
    } else {
        &[]
    };
    let tls = DownstreamTlsContext {
        common_tls_context: Some(common_tls(s, any_mesh_identity, alpn)),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    };
    let filters = if s.protocol.is_http() {
        let hcm = http_manager(
            "public_listener",
            local_app_cluster(),
            vec![
                http_filter("envoy.filters.http.rbac", rbac::http_filter_config(s)),
                router(),
            ],
            true,
        );
        vec![network_filter(
            "envoy.filters.network.http_connection_manager",
            pack_any(hcm),
        )]
    } else {
        vec![
            network_filter("envoy.filters.network.rbac", rbac::network_filter_config(s)),
            tcp_proxy_filter("public_listener", local_app_cluster()),
        ]
    };
    Listener {
        name: public_listener_name(s.public_listener),
        address: Some(socket(s.public_listener)),
        // The proxy's entrypoint drains inbound listeners only when its task stops
        // (`/drain_listeners?inboundonly`): upstream calls of the app keep working meanwhile.
        traffic_direction: TrafficDirection::Inbound as i32,
        filter_chains: vec![FilterChain {
            filters,
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.tls".into(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn outbound_listener(u: &Upstream, trust_domain: &str) -> Listener {
    let cluster = sni(&u.destination, &u.datacenter, trust_domain);
    let prefix = format!("upstream.{}", u.destination);
    let filters = if u.protocol.is_http() {
        let hcm = http_manager(&prefix, &cluster, vec![router()], false);
        vec![network_filter(
            "envoy.filters.network.http_connection_manager",
            pack_any(hcm),
        )]
    } else {
        vec![tcp_proxy_filter(&prefix, &cluster)]
    };
    Listener {
        name: outbound_listener_name(u),
        address: Some(socket(u.local_bind)),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            filters,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let t = TcpProxy {
        stat_prefix: stat_prefix.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    network_filter("envoy.filters.network.tcp_proxy", pack_any(t))
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn router() -> HttpFilter {
    http_filter("envoy.filters.http.router", pack_any(Router::default()))
}

fn http_manager(
    stat_prefix: &str,
    cluster: &str,
    http_filters: Vec<HttpFilter>,
    inbound: bool,
) -> HttpConnectionManager {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            // Long-lived streams (gRPC, watches) must not be cut by the 15 s default.
            timeout: Some(seconds(0)),
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.into(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: stat_prefix.into(),
                virtual_hosts: vec![VirtualHost {
                    name: stat_prefix.into(),
                    domains: vec!["*".into()],
                    routes: vec![route],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters,
        ..Default::default()
    };
    if inbound {
        // The application learns the caller's identity from the header, and a caller cannot
        // forge it: whatever it sent is replaced.
        hcm.forward_client_cert_details =
            http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
        hcm.set_current_client_cert_details =
            Some(http_connection_manager::SetCurrentClientCertDetails {
                uri: true,
                ..Default::default()
            });
    }
    hcm
}

fn h2_options() -> std::collections::HashMap<String, Any> {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    [(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
        pack_any(opts),
    )]
    .into_iter()
    .collect()
}

fn local_app(s: &ProxySnapshot) -> Cluster {
    let endpoint = Endpoint {
        address: s.local_app.ip(),
        port: s.local_app.port(),
        healthy: true,
    };
    Cluster {
        name: local_app_cluster().into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(seconds(5)),
        load_assignment: Some(load_assignment(local_app_cluster(), &[endpoint])),
        typed_extension_protocol_options: if s.protocol.app_speaks_h2() {
            h2_options()
        } else {
            Default::default()
        },
        ..Default::default()
    }
}

fn upstream_cluster(s: &ProxySnapshot, u: &Upstream) -> Cluster {
    let name = sni(&u.destination, &u.datacenter, &s.trust_domain);
    let destination = uri_san(string_matcher::MatchPattern::Exact(spiffe_id(
        &s.trust_domain,
        &u.datacenter,
        &u.destination,
    )));
    let alpn: &[&str] = if u.protocol.is_http() { &["h2"] } else { &[] };
    let tls = UpstreamTlsContext {
        common_tls_context: Some(common_tls(s, destination, alpn)),
        sni: name.clone(),
        ..Default::default()
    };
    Cluster {
        name,
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(seconds(5)),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        }),
        // HTTP/2 between sidecars multiplexes every request over one connection, whatever
        // the application speaks.
        typed_extension_protocol_options: if u.protocol.is_http() {
            h2_options()
        } else {
            Default::default()
        },
        ..Default::default()
    }
}

fn load_assignment(cluster: &str, endpoints: &[Endpoint]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints
                .iter()
                .map(|e| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
                        address: Some(socket(SocketAddr::new(e.address, e.port))),
                        ..Default::default()
                    })),
                    health_status: if e.healthy {
                        HealthStatus::Healthy as i32
                    } else {
                        HealthStatus::Unhealthy as i32
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Intention, IntentionAction, Leaf, Protocol};
    use prost::{Message, Name};

    const TD: &str = "11111111-2222-3333-4444-555555555555.berth";

    fn snap(protocol: Protocol) -> ProxySnapshot {
        ProxySnapshot {
            proxy_id: "web-sidecar".into(),
            service: "web".into(),
            datacenter: "dc1".into(),
            trust_domain: TD.into(),
            public_listener: "10.0.0.2:20000".parse().expect("addr"),
            local_app: "127.0.0.1:8080".parse().expect("addr"),
            protocol,
            leaf: Leaf {
                cert_pem: "CERT".into(),
                key_pem: "KEY".into(),
            },
            roots: vec!["ROOT1\n".into(), "ROOT2".into()],
            intentions: vec![Intention {
                source: "api".into(),
                action: Some(IntentionAction::Allow),
                permissions: vec![],
            }],
            default_allow: false,
            upstreams: vec![
                Upstream {
                    destination: "api".into(),
                    datacenter: "dc1".into(),
                    local_bind: "127.0.0.1:9191".parse().expect("addr"),
                    protocol,
                    endpoints: vec![
                        Endpoint {
                            address: "10.0.0.3".parse().expect("ip"),
                            port: 20000,
                            healthy: true,
                        },
                        Endpoint {
                            address: "10.0.0.4".parse().expect("ip"),
                            port: 20000,
                            healthy: false,
                        },
                    ],
                },
                Upstream {
                    destination: "db".into(),
                    datacenter: "dc2".into(),
                    local_bind: "127.0.0.1:5432".parse().expect("addr"),
                    protocol: Protocol::Tcp,
                    endpoints: vec![],
                },
            ],
        }
    }

    fn unpack<M: Message + Name + Default>(a: &Any) -> M {
        assert_eq!(a.type_url, M::type_url());
        M::decode(a.value.as_slice()).expect("decodes")
    }

    fn typed(t: &Option<transport_socket::ConfigType>) -> &Any {
        match t {
            Some(transport_socket::ConfigType::TypedConfig(a)) => a,
            other => panic!("no typed config: {other:?}"),
        }
    }

    fn filter_any(f: &Filter) -> &Any {
        match &f.config_type {
            Some(filter::ConfigType::TypedConfig(a)) => a,
            other => panic!("no typed config: {other:?}"),
        }
    }

    fn sds_names(c: &CommonTlsContext) -> (String, String, Vec<SubjectAltNameMatcher>) {
        let leaf = c.tls_certificate_sds_secret_configs[0].name.clone();
        match &c.validation_context_type {
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) => (
                leaf,
                v.validation_context_sds_secret_config
                    .as_ref()
                    .expect("roots sds")
                    .name
                    .clone(),
                v.default_validation_context
                    .as_ref()
                    .expect("default")
                    .match_typed_subject_alt_names
                    .clone(),
            ),
            other => panic!("unexpected validation context {other:?}"),
        }
    }

    fn assert_tls13(c: &CommonTlsContext) {
        let p = c.tls_params.as_ref().expect("params");
        let v13 = tls_parameters::TlsProtocol::TlSv13 as i32;
        assert_eq!(p.tls_minimum_protocol_version, v13);
        assert_eq!(p.tls_maximum_protocol_version, v13);
    }

    #[test]
    fn names_and_counts() {
        let r = build(&snap(Protocol::Http));
        let listeners: Vec<&str> = r.listeners.keys().map(String::as_str).collect();
        assert_eq!(
            listeners,
            [
                "api:127.0.0.1:9191",
                "db:127.0.0.1:5432",
                "public_listener:10.0.0.2:20000"
            ]
        );
        let clusters: Vec<&str> = r.clusters.keys().map(String::as_str).collect();
        assert_eq!(
            clusters,
            [
                format!("api.default.dc1.internal.{TD}"),
                format!("db.default.dc2.internal.{TD}"),
                "local_app".into()
            ]
        );
        assert_eq!(r.endpoints.len(), 2);
        let secrets: Vec<&str> = r.secrets.keys().map(String::as_str).collect();
        assert_eq!(secrets, ["leaf:web".to_owned(), format!("roots:{TD}")]);
    }

    #[test]
    fn public_listener_requires_mesh_client_certs() {
        let s = snap(Protocol::Tcp);
        let r = build(&s);
        let l: Listener = unpack(&r.listeners["public_listener:10.0.0.2:20000"]);
        let chain = &l.filter_chains[0];
        let ts = chain.transport_socket.as_ref().expect("tls");
        assert_eq!(ts.name, "envoy.transport_sockets.tls");
        let tls: DownstreamTlsContext = unpack(typed(&ts.config_type));
        assert_eq!(
            tls.require_client_certificate,
            Some(BoolValue { value: true })
        );
        let common = tls.common_tls_context.expect("common");
        assert_tls13(&common);
        let (leaf, roots, sans) = sds_names(&common);
        assert_eq!(leaf, leaf_secret_name(&s));
        assert_eq!(roots, roots_secret_name(&s));
        assert_eq!(
            sans[0].san_type,
            subject_alt_name_matcher::SanType::Uri as i32
        );
        assert_eq!(
            sans[0].matcher.as_ref().expect("m").match_pattern,
            Some(string_matcher::MatchPattern::Prefix(format!(
                "spiffe://{TD}/"
            )))
        );
        // tcp: network RBAC first, then the proxy to the app.
        let names: Vec<&str> = chain.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "envoy.filters.network.rbac",
                "envoy.filters.network.tcp_proxy"
            ]
        );
        let tp: TcpProxy = unpack(filter_any(&chain.filters[1]));
        assert_eq!(
            tp.cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster("local_app".into()))
        );
    }

    #[test]
    fn http_public_listener_has_rbac_router_and_xfcc() {
        let r = build(&snap(Protocol::Http));
        let l: Listener = unpack(&r.listeners["public_listener:10.0.0.2:20000"]);
        let chain = &l.filter_chains[0];
        assert_eq!(chain.filters.len(), 1);
        let hcm: HttpConnectionManager = unpack(filter_any(&chain.filters[0]));
        let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["envoy.filters.http.rbac", "envoy.filters.http.router"]
        );
        assert_eq!(
            hcm.forward_client_cert_details,
            http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32
        );
        assert!(hcm.set_current_client_cert_details.expect("set").uri);
        let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier
        else {
            panic!("inline routes expected");
        };
        let Some(route::Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
            panic!("route action expected");
        };
        assert_eq!(
            ra.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster("local_app".into()))
        );
        let ts = chain.transport_socket.as_ref().expect("tls");
        let tls: DownstreamTlsContext = unpack(typed(&ts.config_type));
        assert_eq!(
            tls.common_tls_context.expect("c").alpn_protocols,
            ["h2", "http/1.1"]
        );
    }

    #[test]
    fn outbound_listeners_route_to_the_sni_cluster() {
        let r = build(&snap(Protocol::Http));
        let api: Listener = unpack(&r.listeners["api:127.0.0.1:9191"]);
        let Some(address::Address::SocketAddress(sa)) = api.address.and_then(|a| a.address) else {
            panic!("socket address expected");
        };
        assert_eq!(sa.address, "127.0.0.1");
        assert_eq!(
            sa.port_specifier,
            Some(socket_address::PortSpecifier::PortValue(9191))
        );
        let chain = &api.filter_chains[0];
        assert!(chain.transport_socket.is_none());
        let hcm: HttpConnectionManager = unpack(filter_any(&chain.filters[0]));
        let Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) = hcm.route_specifier
        else {
            panic!("inline routes expected");
        };
        let Some(route::Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
            panic!("route action expected");
        };
        assert_eq!(
            ra.cluster_specifier,
            Some(route_action::ClusterSpecifier::Cluster(format!(
                "api.default.dc1.internal.{TD}"
            )))
        );
        let db: Listener = unpack(&r.listeners["db:127.0.0.1:5432"]);
        let tp: TcpProxy = unpack(filter_any(&db.filter_chains[0].filters[0]));
        assert_eq!(
            tp.cluster_specifier,
            Some(tcp_proxy::ClusterSpecifier::Cluster(format!(
                "db.default.dc2.internal.{TD}"
            )))
        );
    }

    #[test]
    fn upstream_clusters_are_eds_with_mtls_to_the_destination() {
        let s = snap(Protocol::Http);
        let r = build(&s);
        let name = format!("api.default.dc1.internal.{TD}");
        let c: Cluster = unpack(&r.clusters[&name]);
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32
            ))
        );
        let eds = c
            .eds_cluster_config
            .expect("eds")
            .eds_config
            .expect("source");
        assert_eq!(
            eds.config_source_specifier,
            Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {}
            ))
        );
        let ts = c.transport_socket.as_ref().expect("tls");
        let tls: UpstreamTlsContext = unpack(typed(&ts.config_type));
        assert_eq!(tls.sni, name);
        let common = tls.common_tls_context.expect("common");
        assert_tls13(&common);
        let (leaf, roots, sans) = sds_names(&common);
        assert_eq!((leaf, roots), (leaf_secret_name(&s), roots_secret_name(&s)));
        assert_eq!(
            sans[0].matcher.as_ref().expect("m").match_pattern,
            Some(string_matcher::MatchPattern::Exact(format!(
                "spiffe://{TD}/ns/default/dc/dc1/svc/api"
            )))
        );
        let opts: HttpProtocolOptions = unpack(
            &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"],
        );
        assert!(matches!(
            opts.upstream_protocol_options,
            Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(_))
        ));
        // A tcp upstream gets no HTTP options.
        let db: Cluster = unpack(&r.clusters[&format!("db.default.dc2.internal.{TD}")]);
        assert!(db.typed_extension_protocol_options.is_empty());
    }

    #[test]
    fn local_app_is_static_and_h2_only_for_h2_apps() {
        for (p, h2) in [
            (Protocol::Tcp, false),
            (Protocol::Http, false),
            (Protocol::Http2, true),
            (Protocol::Grpc, true),
        ] {
            let r = build(&snap(p));
            let c: Cluster = unpack(&r.clusters["local_app"]);
            assert_eq!(
                c.cluster_discovery_type,
                Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Static as i32
                ))
            );
            assert_eq!(c.typed_extension_protocol_options.is_empty(), !h2, "{p:?}");
            let cla = c.load_assignment.expect("cla");
            let Some(lb_endpoint::HostIdentifier::Endpoint(e)) =
                &cla.endpoints[0].lb_endpoints[0].host_identifier
            else {
                panic!("endpoint expected");
            };
            let Some(address::Address::SocketAddress(sa)) =
                e.address.as_ref().and_then(|a| a.address.clone())
            else {
                panic!("socket address expected");
            };
            assert_eq!(
                sa.port_specifier,
                Some(socket_address::PortSpecifier::PortValue(8080))
            );
        }
    }

    #[test]
    fn critical_endpoints_are_unhealthy() {
        let r = build(&snap(Protocol::Http));
        let cla: ClusterLoadAssignment =
            unpack(&r.endpoints[&format!("api.default.dc1.internal.{TD}")]);
        let statuses: Vec<i32> = cla.endpoints[0]
            .lb_endpoints
            .iter()
            .map(|e| e.health_status)
            .collect();
        assert_eq!(
            statuses,
            [HealthStatus::Healthy as i32, HealthStatus::Unhealthy as i32]
        );
        let db: ClusterLoadAssignment =
            unpack(&r.endpoints[&format!("db.default.dc2.internal.{TD}")]);
        assert!(db.endpoints[0].lb_endpoints.is_empty());
    }

    #[test]
    fn secrets_carry_leaf_and_bundle() {
        let s = snap(Protocol::Tcp);
        let r = build(&s);
        let leaf: Secret = unpack(&r.secrets["leaf:web"]);
        let Some(secret::Type::TlsCertificate(c)) = leaf.r#type else {
            panic!("certificate expected");
        };
        assert_eq!(c.certificate_chain, Some(inline("CERT")));
        assert_eq!(c.private_key, Some(inline("KEY")));
        let roots: Secret = unpack(&r.secrets[&roots_secret_name(&s)]);
        let Some(secret::Type::ValidationContext(v)) = roots.r#type else {
            panic!("validation context expected");
        };
        assert_eq!(v.trusted_ca, Some(inline("ROOT1\nROOT2\n")));
    }

    #[test]
    fn rotation_changes_only_secrets() {
        let a = snap(Protocol::Http);
        let mut b = a.clone();
        b.leaf.cert_pem = "CERT2".into();
        b.roots.push("ROOT3".into());
        let (ra, rb) = (build(&a), build(&b));
        assert_eq!(ra.listeners, rb.listeners);
        assert_eq!(ra.clusters, rb.clusters);
        assert_eq!(ra.endpoints, rb.endpoints);
        assert_ne!(ra.secrets, rb.secrets);
        assert_eq!(build(&a), ra, "build is deterministic");
    }
}
