//! Background work of every server: finding the other servers and bootstrapping the cluster
//! (`-bootstrap-expect` + `-retry-join`), and, on the leader, expiring session TTLs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::raft::types::raft_id;
use crate::rpc::{self, Hello, HelloReply};
use crate::state::{CatalogOp, Command, Registration, SessionOp};

/// Servers outside the Raft configuration that have been silent this long are forgotten
/// (removed with `DELETE /v1/operator/raft/peer`, or never joined).
const PRUNE_DEPARTED_AFTER: Duration = Duration::from_secs(300);

/// How often a formed cluster asks the cloud for its servers again.
const CLOUD_REFRESH: Duration = Duration::from_secs(30);

/// Sessions live at least their TTL; Consul waits up to twice that before invalidating.
pub const SESSION_TTL_MULTIPLIER: u32 = 2;

/// Forms the cluster and keeps the peer list fresh, forever.
///
/// Bootstrapping: once a server knows exactly `bootstrap_expect` servers and none of them
/// reports an existing cluster, the one with the lowest ID initializes Raft with all of them.
/// A server that finds an existing cluster asks it to be added as a voter instead.
pub async fn discovery_loop(node: Arc<Node>) {
    let me = node.cfg.advertise.to_string();
    let mut warned_too_many = false;
    let clouds = node
        .cfg
        .retry_join
        .iter()
        .any(|e| berth_cloud_join::is_cloud(e));
    let mut resolved: Option<(std::time::Instant, Vec<String>)> = None;
    loop {
        // Cloud auto-join asks EC2 on every retry while the cluster forms, then every
        // CLOUD_REFRESH: enough to find replaced servers without a DescribeInstances a second.
        let initialized = node.raft.is_initialized().await.unwrap_or(true);
        let stale = resolved
            .as_ref()
            .is_none_or(|(at, _)| !initialized || at.elapsed() >= CLOUD_REFRESH);
        if clouds && stale {
            let found =
                berth_cloud_join::expand(&node.cfg.retry_join, crate::config::DEFAULT_RPC_PORT)
                    .await;
            resolved = Some((std::time::Instant::now(), found));
        }
        let join: &[String] = match &resolved {
            Some((_, r)) => r,
            None => &node.cfg.retry_join,
        };
        let mut targets: BTreeSet<String> = join.iter().cloned().collect();
        targets.extend(node.known_peers().into_iter().map(|p| p.rpc_addr));
        targets.remove(&me);
        let hello = Hello {
            from: node.info.clone(),
            datacenter: node.cfg.datacenter.clone(),
            known: node.known_peers(),
        };
        let calls = targets.iter().map(|t| {
            let node = node.clone();
            let hello = hello.clone();
            async move {
                let r = node
                    .clients
                    .call_json::<_, HelloReply>(
                        t,
                        rpc::CLUSTER_HELLO,
                        &hello,
                        Duration::from_secs(2),
                    )
                    .await;
                (t.clone(), r)
            }
        });
        let mut formed_at = None;
        for (target, reply) in futures::future::join_all(calls).await {
            match reply {
                Ok(r) => {
                    let mut all = r.known.clone();
                    all.push(r.me.clone());
                    node.learn_from(&all, &r.me);
                    if r.formed {
                        formed_at = Some(r.me.rpc_addr.clone());
                    }
                }
                Err(e) => tracing::debug!(%target, error = %e, "server not reachable"),
            }
        }
        node.prune_departed(PRUNE_DEPARTED_AFTER);
        let initialized = node.raft.is_initialized().await.unwrap_or(true);
        if !initialized {
            if let Some(addr) = formed_at {
                match node
                    .clients
                    .call_json::<_, bool>(
                        &addr,
                        rpc::CLUSTER_JOIN,
                        &node.info,
                        Duration::from_secs(60),
                    )
                    .await
                {
                    Ok(_) => tracing::info!(via = %addr, "joined the cluster"),
                    Err(e) => tracing::warn!(via = %addr, error = %e, "join failed; retrying"),
                }
            } else if node.cfg.bootstrap_expect > 0 {
                let known = node.known_peers();
                let expect = node.cfg.bootstrap_expect as usize;
                if known.len() == expect {
                    let lowest = known
                        .iter()
                        .filter_map(|p| uuid::Uuid::parse_str(&p.uuid).ok().map(|u| raft_id(&u)))
                        .min();
                    if lowest == Some(node.id) {
                        bootstrap(&node, known).await;
                    }
                } else if known.len() > expect && !warned_too_many {
                    warned_too_many = true;
                    tracing::error!(
                        known = known.len(),
                        expect,
                        "more servers than bootstrap-expect found; not bootstrapping (fix -bootstrap-expect)"
                    );
                }
            }
        }
        tokio::time::sleep(node.cfg.retry_interval).await;
    }
}

/// Initializes Raft with `members` as voters.
pub async fn bootstrap(node: &Node, members: Vec<crate::raft::types::NodeInfo>) {
    let map: std::collections::BTreeMap<u64, _> = members
        .into_iter()
        .filter_map(|p| {
            uuid::Uuid::parse_str(&p.uuid)
                .ok()
                .map(|u| (raft_id(&u), p))
        })
        .collect();
    let names: Vec<String> = map.values().map(|p| p.name.clone()).collect();
    match node.raft.initialize(map).await {
        Ok(()) => tracing::info!(servers = ?names, "bootstrapped a new cluster"),
        Err(e) => tracing::warn!(error = %e, "bootstrap skipped"),
    }
}

/// On the leader, invalidates sessions whose TTL ran out.
pub async fn session_ttl_loop(node: Arc<Node>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !node.is_leader() {
            node.session_timers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            continue;
        }
        let now = Instant::now();
        let expired: Vec<String> = {
            let state = node.store.read();
            let mut timers = node
                .session_timers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            timers.retain(|id, _| state.sessions.contains_key(id));
            for s in state.sessions.values() {
                if let Some(ttl) = session_ttl(&s.ttl) {
                    timers
                        .entry(s.id.clone())
                        .or_insert(now + ttl * SESSION_TTL_MULTIPLIER);
                }
            }
            timers
                .iter()
                .filter(|(_, d)| **d <= now)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in expired {
            tracing::info!(session = %id, "session TTL expired; invalidating");
            if node
                .write(Command::Session(SessionOp::Destroy { id: id.clone() }))
                .await
                .is_ok()
            {
                node.session_timers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
        }
    }
}

pub fn session_ttl(ttl: &str) -> Option<Duration> {
    if ttl.is_empty() {
        return None;
    }
    berth_api::parse_duration(ttl).ok().filter(|d| !d.is_zero())
}

/// Restarts a session's TTL (a renew, on the leader).
pub fn reset_session_timer(node: &Node, id: &str, ttl: &str) {
    if let Some(ttl) = session_ttl(ttl) {
        node.session_timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.to_string(),
                Instant::now() + ttl * SESSION_TTL_MULTIPLIER,
            );
    }
}

/// Name under which the servers register themselves: clients and tools look them up by it.
pub const SERF_CHECK: &str = "serfHealth";
/// A server not heard from for this long has its `serfHealth` turned critical.
const SERVER_FAILED_AFTER: Duration = Duration::from_secs(10);

/// What the catalog should say about one server: its node, the `consul` service on its RPC
/// port and its liveness check.
fn server_registration(
    info: &crate::raft::types::NodeInfo,
    datacenter: &str,
    service: &str,
    alive: bool,
) -> Option<Registration> {
    use berth_api::catalog::{AgentService, CRITICAL, HealthCheck, Node, PASSING};
    let addr: std::net::SocketAddr = info.rpc_addr.parse().ok()?;
    let status = if alive { PASSING } else { CRITICAL };
    Some(Registration {
        node: Node {
            id: info.uuid.clone(),
            node: info.name.clone(),
            address: addr.ip().to_string(),
            datacenter: datacenter.to_string(),
            ..Default::default()
        },
        skip_node_update: false,
        service: Some(AgentService {
            id: service.to_string(),
            service: service.to_string(),
            port: addr.port(),
            ..Default::default()
        }),
        checks: vec![HealthCheck {
            node: info.name.clone(),
            check_id: SERF_CHECK.to_string(),
            name: "Serf Health Status".to_string(),
            status: status.to_string(),
            output: if alive {
                "Agent alive and reachable"
            } else {
                "Agent not live or unreachable"
            }
            .to_string(),
            definition: serde_json::Value::Object(Default::default()),
            ..Default::default()
        }],
    })
}

/// On the leader, keeps every server registered in the catalog as Consul's leader does: node,
/// `consul` service and `serfHealth` (passing while the server answers, critical when it
/// stops). Writes only what differs, so an idle cluster commits nothing.
pub async fn server_catalog_loop(node: Arc<Node>) {
    let mut metrics = node.raft.metrics();
    let service_name = node.cfg.server_service_name.as_str();
    loop {
        // Right after a change of leader or membership, otherwise twice a second for liveness.
        let _ = tokio::time::timeout(Duration::from_millis(500), metrics.changed()).await;
        if !node.is_leader() {
            continue;
        }
        let m = node.metrics();
        let members: Vec<(u64, crate::raft::types::NodeInfo)> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        let seen: std::collections::HashMap<u64, Option<Instant>> = node
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, p)| (*id, p.last_seen))
            .collect();
        let mut wanted = Vec::new();
        for (id, info) in &members {
            let alive = *id == node.id
                || seen
                    .get(id)
                    .copied()
                    .flatten()
                    .is_some_and(|t| t.elapsed() < SERVER_FAILED_AFTER);
            let Some(reg) = server_registration(info, &node.cfg.datacenter, service_name, alive)
            else {
                continue;
            };
            let current = {
                let st = node.store.read();
                st.catalog.get(&info.name).map(|r| {
                    let same_node = r.node.id == reg.node.id && r.node.address == reg.node.address;
                    let svc = r.services.get(service_name).map(|s| s.port);
                    let check = r.checks.get(SERF_CHECK).map(|c| c.status.clone());
                    (same_node, svc, check)
                })
            };
            let want_port = reg.service.as_ref().map(|s| s.port);
            let want_status = reg.checks.first().map(|c| c.status.clone());
            let up_to_date =
                current.is_some_and(|(n, p, c)| n && p == want_port && c == want_status);
            if !up_to_date {
                wanted.push(Command::Catalog(CatalogOp::Register(Box::new(reg))));
            }
        }
        // Servers removed from Raft lose their `consul` registration.
        let names: std::collections::HashSet<&str> =
            members.iter().map(|(_, n)| n.name.as_str()).collect();
        let stale: Vec<String> = node
            .store
            .read()
            .service_instances(service_name)
            .into_iter()
            .filter(|(n, _)| !names.contains(n.node.as_str()))
            .map(|(n, _)| n.node.clone())
            .collect();
        for name in stale {
            wanted.push(Command::Catalog(CatalogOp::Deregister {
                node: name.clone(),
                service_id: Some(service_name.to_string()),
                check_id: None,
            }));
            wanted.push(Command::Catalog(CatalogOp::Deregister {
                node: name,
                service_id: None,
                check_id: Some(SERF_CHECK.to_string()),
            }));
        }
        for cmd in wanted {
            if let Err(e) = node.write(cmd).await {
                tracing::debug!(error = %e, "server catalog registration deferred");
            }
        }
    }
}
