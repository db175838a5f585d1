//! `/v1/status`, `/v1/operator/raft` and the server's own `/v1/agent` endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json as j;

use berth_api::types::{AgentMember, MEMBER_ALIVE, MEMBER_FAILED, RaftConfiguration, RaftServer};

use berth_acl::{Access, Resource};

use super::{ApiError, Id, Mode, Query, ReadOpts, filtered_by_acls, json, with_meta};
use crate::node::Node;
use crate::raft::types::NodeInfo;

/// The Consul API level Berth implements; clients such as py-consul gate features on it.
pub const CONSUL_COMPAT_VERSION: &str = "1.21.0";
/// A peer not heard from for this long is reported failed.
const PEER_FAILED_AFTER: Duration = Duration::from_secs(10);

pub async fn leader(State(node): State<Arc<Node>>) -> Response {
    json(&node.leader().map(|(_, n)| n.rpc_addr).unwrap_or_default())
}

pub async fn peers(State(node): State<Arc<Node>>) -> Response {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let addrs: Vec<String> = membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|n| n.rpc_addr.clone()))
        .collect();
    json(&addrs)
}

pub async fn raft_configuration(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.check(Resource::Operator, "", Access::Read)?;
    let opts = ReadOpts::parse(&Query::parse(raw.as_deref()))?;
    if opts.mode == Mode::Consistent {
        node.linearize().await?;
    }
    let m = node.metrics();
    let stored = m.membership_config.clone();
    let membership = stored.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let servers = membership
        .nodes()
        .map(|(id, n)| RaftServer {
            id: n.uuid.clone(),
            node: n.name.clone(),
            address: n.rpc_addr.clone(),
            leader: m.current_leader == Some(*id),
            protocol_version: "3".to_string(),
            voter: voters.contains(id),
        })
        .collect();
    let index = stored.log_id().map(|l| l.index).unwrap_or(0);
    Ok(with_meta(
        &node,
        opts.mode,
        index,
        json(&RaftConfiguration { servers, index }),
    ))
}

/// Finds a member of the Raft configuration by UUID or RPC address.
fn find_server(
    node: &Node,
    id: Option<&str>,
    address: Option<&str>,
) -> Result<(u64, NodeInfo), ApiError> {
    let m = node.metrics();
    let membership = m.membership_config.membership();
    let found = membership
        .nodes()
        .find(|(_, n)| id.is_some_and(|i| n.uuid == i) || address.is_some_and(|a| n.rpc_addr == a))
        .map(|(i, n)| (*i, n.clone()));
    found.ok_or_else(|| match (id, address) {
        (Some(i), _) => ApiError::bad_request(format!("id {i:?} was not found in the Raft configuration")),
        (_, Some(a)) => ApiError::bad_request(format!("address {a:?} was not found in the Raft configuration")),
        _ => ApiError::bad_request("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"),
    })
}

pub async fn remove_peer(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.check(Resource::Operator, "", Access::Write)?;
    let q = Query::parse(raw.as_deref());
    let (id, info) = find_server(&node, q.value("id"), q.value("address"))?;
    node.remove_server(id).await?;
    tracing::info!(node = %info.name, addr = %info.rpc_addr, "removed server from the Raft configuration");
    Ok(json(&true))
}

pub async fn transfer_leader(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    acl.check(Resource::Operator, "", Access::Write)?;
    let q = Query::parse(raw.as_deref());
    let target = match q.value("id") {
        Some(uuid) => find_server(&node, Some(uuid), None)?.0,
        None => {
            let m = node.metrics();
            let other = m
                .membership_config
                .membership()
                .voter_ids()
                .find(|v| *v != node.id);
            other
                .ok_or_else(|| ApiError::bad_request("no other voter to transfer leadership to"))?
        }
    };
    if target == node.id {
        return Err(ApiError::bad_request(
            "cannot transfer leadership to the current leader",
        ));
    }
    node.transfer_leadership(target).await?;
    Ok(json(&j!({ "Success": true })))
}

fn member_of(node: &Node, info: &NodeInfo, status: u8) -> AgentMember {
    let (addr, port) = match info.rpc_addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => (sa.ip().to_string(), sa.port()),
        Err(_) => (info.rpc_addr.clone(), 0),
    };
    let tags: BTreeMap<String, String> = [
        ("role", "consul".to_string()),
        ("dc", node.cfg.datacenter.clone()),
        ("id", info.uuid.clone()),
        ("port", port.to_string()),
        ("build", env!("CARGO_PKG_VERSION").to_string()),
        ("vsn", "2".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    AgentMember {
        name: info.name.clone(),
        addr,
        port,
        tags,
        status,
    }
}

pub async fn members(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
    RawQuery(raw): RawQuery,
) -> Response {
    // The WAN pool holds only servers, named `<node>.<datacenter>`.
    let wan = Query::parse(raw.as_deref()).has("wan");
    let peers: Vec<_> = node
        .peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, p)| (*id, p.clone()))
        .collect();
    let list: Vec<AgentMember> = peers
        .iter()
        .map(|(id, p)| {
            let alive =
                *id == node.id || p.last_seen.is_some_and(|t| t.elapsed() < PEER_FAILED_AFTER);
            let mut m = member_of(
                &node,
                &p.info,
                if alive { MEMBER_ALIVE } else { MEMBER_FAILED },
            );
            if wan {
                m.name = format!("{}.{}", m.name, node.cfg.datacenter);
            }
            m
        })
        .collect();
    let before = list.len();
    let list: Vec<AgentMember> = list
        .into_iter()
        .filter(|m| {
            acl.can(
                Resource::Node,
                m.name.split('.').next().unwrap_or_default(),
                Access::Read,
            )
        })
        .collect();
    filtered_by_acls(json(&list), list.len() < before)
}

pub async fn agent_self(
    State(node): State<Arc<Node>>,
    axum::Extension(acl): Id,
) -> Result<Response, ApiError> {
    acl.check(Resource::Agent, &node.cfg.node_name, Access::Read)?;
    let m = node.metrics();
    let state = format!("{:?}", m.state);
    let raft = j!({
        "state": state,
        "term": m.current_term.to_string(),
        "last_log_index": m.last_log_index.unwrap_or(0).to_string(),
        "applied_index": m.last_applied.map(|l| l.index).unwrap_or(0).to_string(),
        "last_snapshot_index": node.store.last_snapshot_index.load(Ordering::Relaxed).to_string(),
        "snapshot_installs": node.store.snapshot_installs.load(Ordering::Relaxed).to_string(),
        "num_peers": m.membership_config.membership().voter_ids().filter(|v| *v != node.id).count().to_string(),
        "leader_addr": node.leader().map(|(_, n)| n.rpc_addr).unwrap_or_default(),
    });
    Ok(json(&j!({
        "Config": {
            "Datacenter": node.cfg.datacenter,
            "PrimaryDatacenter": node.cfg.datacenter,
            "NodeName": node.cfg.node_name,
            "NodeID": node.info.uuid,
            "Server": true,
            "Version": CONSUL_COMPAT_VERSION,
            "BerthVersion": env!("CARGO_PKG_VERSION"),
            "Revision": "berth",
        },
        "Member": member_of(&node, &node.info, MEMBER_ALIVE),
        "Stats": {
            "raft": raft,
            "consul": {
                "server": "true",
                "leader": node.is_leader().to_string(),
                "leader_addr": node.leader().map(|(_, n)| n.rpc_addr).unwrap_or_default(),
                "bootstrap": (node.cfg.bootstrap_expect == 1).to_string(),
                "known_datacenters": "1",
            },
        },
        "Meta": {},
        // Servers serve no xDS; client agents do (`berth agent -xds-addr`).
        "xDS": {"SupportedProxies": {"envoy": ["1.35", "1.34", "1.33", "1.32"]}, "Port": -1, "Ports": {"Plaintext": -1, "TLS": -1}},
        // Berth has no network coordinates (no Serf); Consul's shape with a zero vector.
        "Coord": {"Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "Error": 1.5, "Adjustment": 0.0, "Height": 1e-5},
        "DebugConfig": debug_config(&node),
    })))
}

/// The resolved configuration, without secrets (Berth's config holds only file paths).
fn debug_config(node: &Node) -> serde_json::Value {
    let c = &node.cfg;
    j!({
        "Datacenter": c.datacenter,
        "NodeName": c.node_name,
        "DataDir": c.data_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
        "DevMode": c.dev,
        "HTTPAddr": c.http_addr.map(|a| a.to_string()).unwrap_or_default(),
        "HTTPSAddr": c.https_addr.map(|a| a.to_string()).unwrap_or_default(),
        "RPCBindAddr": c.rpc_addr.to_string(),
        "RPCAdvertiseAddr": c.advertise.to_string(),
        "BootstrapExpect": c.bootstrap_expect,
        "RetryJoinLAN": c.retry_join,
        "LogLevel": c.log_level,
        "LogJSON": c.log_json,
        "ServerMode": true,
        "TLS": {
            "CAFile": c.tls.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "CertFile": c.tls.cert_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "VerifyIncoming": c.tls.verify_incoming,
            "VerifyOutgoing": c.tls.verify_outgoing,
            "VerifyServerHostname": c.tls.verify_server_hostname,
        },
    })
}
