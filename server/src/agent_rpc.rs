//! What client agents (`berth agent`) ask of the servers over the RPC port, each call carrying
//! a token that the server checks: resolving a token to its authorizer (agents enforce ACLs
//! on their local API with it), waiting for the ACL tables to change (to drop their cache),
//! and anti-entropy writes of the agent's node, services and checks.

use std::time::Duration;

use berth_acl::{Access, Identity, Resource};
use berth_api::catalog::{CatalogOp, NodeRecord};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::node::Node;
use crate::rpc::{self, Envelope};
use crate::state::Table;
use crate::state::watch::WatchTarget;

pub const ACL_RESOLVE: &str = "agent.acl_resolve";
pub const ACL_WAIT: &str = "agent.acl_wait";
pub const CATALOG_APPLY: &str = "agent.catalog_apply";
pub const CATALOG_NODE: &str = "agent.catalog_node";
/// A client agent says it is alive; the leader turns its node's `serfHealth` critical when
/// it stops.
pub const HEARTBEAT: &str = "agent.heartbeat";

/// How often agents send heartbeats, and how long the leader waits before it calls one dead.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
pub const AGENT_DEAD_AFTER: Duration = Duration::from_secs(10);

/// A token as an agent needs it: its identity, when it expires, and the ACL index it was
/// resolved at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    pub identity: Identity,
    pub expires_ms: Option<u64>,
    pub acl_index: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitRequest {
    pub index: u64,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// Each operation with the token it is made with (the service's registration token, or
    /// the agent's own).
    pub ops: Vec<(Option<String>, CatalogOp)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRequest {
    pub token: Option<String>,
    pub node: String,
}

fn check(id: &Identity, r: Resource, name: &str, want: Access) -> Result<(), String> {
    id.check(r, name, want).map_err(|e| e.to_string())
}

/// Whether the token may make the operation, as Consul's catalog endpoints decide.
fn authorize(node: &Node, id: &Identity, op: &CatalogOp) -> Result<(), String> {
    match op {
        CatalogOp::Register(reg) => {
            let existing = node
                .store
                .read()
                .catalog
                .get(&reg.node.node)
                .map(|r| r.node.clone());
            // A node whose entry would not change needs no node:write.
            let node_changes = !reg.skip_node_update && existing.as_ref() != Some(&reg.node);
            if node_changes {
                check(id, Resource::Node, &reg.node.node, Access::Write)?;
            }
            if let Some(s) = &reg.service {
                check(id, Resource::Service, &s.service, Access::Write)?;
            }
            for c in &reg.checks {
                if c.service_id.is_empty() {
                    check(id, Resource::Node, &reg.node.node, Access::Write)?;
                } else {
                    check(id, Resource::Service, &c.service_name, Access::Write)?;
                }
            }
            Ok(())
        }
        CatalogOp::Deregister {
            node: n,
            service_id,
            check_id,
        } => {
            // The node's own token may clear anything on its node (a task's agent removes
            // what its task left behind); otherwise the service's write right is needed.
            if check(id, Resource::Node, n, Access::Write).is_ok() {
                return Ok(());
            }
            let st = node.store.read();
            let rec = st.catalog.get(n);
            let service = match (service_id, check_id) {
                (Some(sid), _) => rec
                    .and_then(|r| r.services.get(sid))
                    .map(|s| s.service.clone()),
                (None, Some(cid)) => rec
                    .and_then(|r| r.checks.get(cid))
                    .map(|c| c.service_name.clone())
                    .filter(|s| !s.is_empty()),
                (None, None) => None,
            };
            match service {
                Some(name) => check(id, Resource::Service, &name, Access::Write),
                None => check(id, Resource::Node, n, Access::Write),
            }
        }
    }
}

fn resolve(node: &Node, token: Option<&str>) -> Result<std::sync::Arc<Identity>, String> {
    node.identity(token).map_err(|e| e.to_string())
}

pub async fn handle(node: &Node, env: Envelope) -> Result<Envelope, Status> {
    match env.kind.as_str() {
        ACL_RESOLVE => {
            let secret: Option<String> = rpc::parse(&env)?;
            let acl_index = node.store.read().index(Table::Acl);
            let r = resolve(node, secret.as_deref()).map(|id| Resolved {
                identity: (*id).clone(),
                expires_ms: secret
                    .as_deref()
                    .and_then(|s| node.store.read().acl.token_by_secret(s).cloned())
                    .and_then(|t| t.expiration_time)
                    .and_then(|t| crate::acl::parse_rfc3339(&t)),
                acl_index,
            });
            rpc::json_reply(&r)
        }
        ACL_WAIT => {
            let w: WaitRequest = rpc::parse(&env)?;
            let deadline =
                tokio::time::Instant::now() + Duration::from_millis(w.wait_ms.min(60_000));
            loop {
                let mut rx = node
                    .store
                    .watches
                    .subscribe(&WatchTarget::Table(Table::Acl));
                let idx = node.store.read().index(Table::Acl);
                if idx != w.index {
                    return rpc::json_reply(&idx);
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => return rpc::json_reply(&idx),
                }
            }
        }
        CATALOG_APPLY => {
            let req: ApplyRequest = rpc::parse(&env)?;
            let mut ops = Vec::with_capacity(req.ops.len());
            for (token, op) in req.ops {
                let id = match resolve(node, token.as_deref()) {
                    Ok(id) => id,
                    Err(e) => return rpc::json_reply(&Err::<(), String>(e)),
                };
                if let Err(e) = authorize(node, &id, &op) {
                    return rpc::json_reply(&Err::<(), String>(e));
                }
                ops.push(op);
            }
            let r = node.catalog_apply(ops).await.map_err(|e| e.to_string());
            rpc::json_reply(&r)
        }
        CATALOG_NODE => {
            let req: NodeRequest = rpc::parse(&env)?;
            let r: Result<Option<NodeRecord>, String> = match resolve(node, req.token.as_deref()) {
                Err(e) => Err(e),
                Ok(id) => match check(&id, Resource::Node, &req.node, Access::Read) {
                    Err(e) => Err(e),
                    Ok(()) => node
                        .catalog_node(&req.node)
                        .await
                        .map_err(|e| e.to_string()),
                },
            };
            rpc::json_reply(&r)
        }
        HEARTBEAT => {
            let req: NodeRequest = rpc::parse(&env)?;
            let r = match resolve(node, req.token.as_deref())
                .and_then(|id| check(&id, Resource::Node, &req.node, Access::Write))
            {
                Err(e) => Err(e),
                Ok(()) if node.is_leader() => {
                    node.agent_heartbeats
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(req.node, std::time::Instant::now());
                    Ok(())
                }
                Ok(()) => match node.leader() {
                    None => Err("No cluster leader".to_string()),
                    Some((_, leader)) => node
                        .clients
                        .call_json::<_, Result<(), String>>(
                            &leader.rpc_addr,
                            HEARTBEAT,
                            &req,
                            Duration::from_secs(5),
                        )
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r),
                },
            };
            rpc::json_reply(&r)
        }
        other => Err(Status::unimplemented(format!("unknown RPC kind {other:?}"))),
    }
}

/// On the leader: each client agent's node carries a `serfHealth` check, passing while its
/// heartbeats arrive and critical once they stop for [`AGENT_DEAD_AFTER`], which takes its
/// services out of `?passing` reads. Writes only changes.
pub async fn liveness_loop(node: std::sync::Arc<Node>) {
    let mut was_leader = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let leader = node.is_leader();
        if !leader {
            was_leader = false;
            continue;
        }
        let now = std::time::Instant::now();
        let mut ops = Vec::new();
        {
            let st = node.store.read();
            let mut beats = node
                .agent_heartbeats
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !was_leader {
                // A new leader has heard nobody yet: agents it inherits get a full period.
                for (name, rec) in &st.catalog {
                    if rec.checks.get(SERF).is_some_and(|c| c.notes == AGENT_NOTE) {
                        beats.entry(name.clone()).or_insert(now);
                    }
                }
            }
            beats.retain(|n, _| st.catalog.contains_key(n));
            for (name, seen) in beats.iter() {
                let alive = now.duration_since(*seen) < AGENT_DEAD_AFTER;
                let Some(rec) = st.catalog.get(name) else {
                    continue;
                };
                let want = if alive { "passing" } else { "critical" };
                if rec
                    .checks
                    .get(SERF)
                    .is_some_and(|c| c.status == want && c.notes == AGENT_NOTE)
                {
                    continue;
                }
                ops.push(CatalogOp::Register(Box::new(
                    berth_api::catalog::Registration {
                        node: rec.node.clone(),
                        skip_node_update: true,
                        service: None,
                        checks: vec![berth_api::catalog::HealthCheck {
                            node: name.clone(),
                            check_id: SERF.to_string(),
                            name: "Serf Health Status".to_string(),
                            status: want.to_string(),
                            notes: AGENT_NOTE.to_string(),
                            output: if alive {
                                "Agent alive and reachable"
                            } else {
                                "Agent not live or unreachable"
                            }
                            .to_string(),
                            definition: serde_json::Value::Object(Default::default()),
                            ..Default::default()
                        }],
                    },
                )));
            }
        }
        was_leader = true;
        if !ops.is_empty()
            && let Err(e) = node.catalog_apply(ops).await
        {
            tracing::debug!(error = %e, "agent liveness update deferred");
        }
    }
}

const SERF: &str = crate::cluster::SERF_CHECK;
/// Marks the `serfHealth` checks this loop owns (the servers' own belong to the server loop).
const AGENT_NOTE: &str = "client agent heartbeat";
