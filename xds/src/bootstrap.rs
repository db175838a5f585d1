//! The Envoy bootstrap that points a sidecar at its agent's ADS server.

use std::net::SocketAddr;

use serde_json::{Value, json};

/// Name of the bootstrap's static cluster that reaches the agent.
pub const AGENT_CLUSTER: &str = "berth-agent";

/// A bootstrap for the proxy `proxy_id` of service `cluster`: everything but the agent's
/// address comes over delta ADS.
pub fn bootstrap_json(
    proxy_id: &str,
    cluster: &str,
    xds_addr: SocketAddr,
    admin_bind: SocketAddr,
    token: Option<&str>,
) -> Value {
    let mut grpc = json!({
        "envoy_grpc": { "cluster_name": AGENT_CLUSTER },
        // The 0.5 s..30 s default backoff leaves a proxy disconnected for up to half a
        // minute after an agent restart; the agent is local, so retry it often.
        "retry_policy": {
            "retry_back_off": { "base_interval": "0.25s", "max_interval": "2s" }
        }
    });
    if let Some(t) = token {
        grpc["initial_metadata"] = json!([{ "key": "x-consul-token", "value": t }]);
    }
    // Without a bound, Envoy waits 15 s per type for an agent that is not up yet before it
    // reports ready.
    let config_source = json!({
        "ads": {},
        "resource_api_version": "V3",
        "initial_fetch_timeout": "5s"
    });
    json!({
        "node": { "id": proxy_id, "cluster": cluster },
        "admin": { "address": socket(admin_bind) },
        "static_resources": {
            "clusters": [{
                "name": AGENT_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {} }
                    }
                },
                "load_assignment": {
                    "cluster_name": AGENT_CLUSTER,
                    "endpoints": [{
                        "lb_endpoints": [{ "endpoint": { "address": socket(xds_addr) } }]
                    }]
                }
            }]
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc]
            },
            "lds_config": config_source.clone(),
            "cds_config": config_source
        }
    })
}

fn socket(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_points_at_the_agent() {
        let b = bootstrap_json(
            "web-sidecar-1",
            "web",
            "127.0.0.1:8502".parse().expect("addr"),
            "127.0.0.1:19000".parse().expect("addr"),
            Some("tok"),
        );
        assert_eq!(b["node"]["id"], "web-sidecar-1");
        assert_eq!(b["node"]["cluster"], "web");
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 19000);
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "DELTA_GRPC");
        let svc = &ads["grpc_services"][0];
        assert_eq!(svc["envoy_grpc"]["cluster_name"], AGENT_CLUSTER);
        assert_eq!(svc["initial_metadata"][0]["key"], "x-consul-token");
        assert_eq!(svc["initial_metadata"][0]["value"], "tok");
        for t in ["lds_config", "cds_config"] {
            let c = &b["dynamic_resources"][t];
            assert_eq!(c["ads"], json!({}));
            assert_eq!(c["resource_api_version"], "V3");
            assert_eq!(c["initial_fetch_timeout"], "5s");
        }
        let agent = &b["static_resources"]["clusters"][0];
        assert_eq!(agent["name"], AGENT_CLUSTER);
        let addr = &agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"];
        assert_eq!(addr["address"], "127.0.0.1");
        assert_eq!(addr["port_value"], 8502);
        assert!(
            agent["typed_extension_protocol_options"]
                ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
                ["http2_protocol_options"]
                .is_object()
        );
    }

    #[test]
    fn no_token_no_metadata() {
        let b = bootstrap_json(
            "p",
            "s",
            "[::1]:8502".parse().expect("addr"),
            "127.0.0.1:19000".parse().expect("addr"),
            None,
        );
        let svc = &b["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert!(svc.get("initial_metadata").is_none());
        assert_eq!(
            b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                [0]["endpoint"]["address"]["socket_address"]["address"],
            "::1"
        );
    }
}
