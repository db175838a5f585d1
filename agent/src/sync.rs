//! Anti-entropy: makes the catalog's entry for this node equal the agent's local view.
//!
//! Each round reads the node's catalog record, computes the operations that make it match
//! (register what is missing or different, deregister what is gone), and commits them in one
//! batch. A round runs on every local change and every `sync_interval`; a failed round is
//! retried with backoff. Reserved services and checks (owned by the server itself) are left
//! alone, as Consul's agent leaves `consul` and `serfHealth` alone.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Duration;

use berth_api::catalog::{AgentService, CatalogOp, HealthCheck, Node, NodeRecord, Registration};

use crate::{Agent, CatalogError};

/// The local view that a sync round pushes.
pub struct Desired<'a> {
    pub node: &'a Node,
    pub manage_node: bool,
    pub services: BTreeMap<String, AgentService>,
    pub checks: BTreeMap<String, HealthCheck>,
    pub reserved_services: &'a [String],
    pub reserved_checks: &'a [String],
}

fn unindexed_service(s: &AgentService) -> AgentService {
    AgentService {
        create_index: 0,
        modify_index: 0,
        ..s.clone()
    }
}

fn unindexed_check(c: &HealthCheck) -> HealthCheck {
    HealthCheck {
        create_index: 0,
        modify_index: 0,
        ..c.clone()
    }
}

fn same_node(a: &Node, b: &Node) -> bool {
    (&a.id, &a.address, &a.tagged_addresses, &a.meta, &a.locality)
        == (&b.id, &b.address, &b.tagged_addresses, &b.meta, &b.locality)
}

/// The operations that turn `current` into the desired view. Pure, for testing.
pub fn plan(want: &Desired<'_>, current: Option<&NodeRecord>) -> Vec<CatalogOp> {
    let mut ops = Vec::new();
    let node_name = &want.node.node;
    let reg = |service: Option<AgentService>, checks: Vec<HealthCheck>, skip: bool| {
        CatalogOp::Register(Box::new(Registration {
            node: want.node.clone(),
            skip_node_update: skip,
            service,
            checks,
        }))
    };
    let node_ok = current.is_some_and(|r| same_node(&r.node, want.node));
    if want.manage_node && !node_ok {
        ops.push(reg(None, Vec::new(), false));
    }
    let empty_services = BTreeMap::new();
    let empty_checks = BTreeMap::new();
    let (cur_services, cur_checks) = current
        .map(|r| (&r.services, &r.checks))
        .unwrap_or((&empty_services, &empty_checks));

    // The wanted checks of one service (or of the node, for "") that the catalog lacks.
    let stale_checks = |service_id: &str| -> Vec<HealthCheck> {
        want.checks
            .values()
            .filter(|c| c.service_id == service_id)
            .filter(|c| {
                cur_checks
                    .get(&c.check_id)
                    .is_none_or(|cur| unindexed_check(cur) != **c)
            })
            .cloned()
            .collect()
    };
    for (id, svc) in &want.services {
        let checks_of = stale_checks(id);
        let service_differs = cur_services
            .get(id)
            .is_none_or(|cur| unindexed_service(cur) != *svc);
        if service_differs {
            ops.push(reg(Some(svc.clone()), checks_of, true));
        } else if !checks_of.is_empty() {
            ops.push(reg(None, checks_of, true));
        }
    }
    let node_checks = stale_checks("");
    if !node_checks.is_empty() {
        ops.push(reg(None, node_checks, true));
    }

    let mut gone_services = Vec::new();
    for id in cur_services.keys() {
        if !want.services.contains_key(id) && !want.reserved_services.contains(id) {
            gone_services.push(id.clone());
            ops.push(CatalogOp::Deregister {
                node: node_name.clone(),
                service_id: Some(id.clone()),
                check_id: None,
            });
        }
    }
    for (id, c) in cur_checks {
        let owned_by_gone_service = gone_services.contains(&c.service_id);
        if !want.checks.contains_key(id)
            && !want.reserved_checks.contains(id)
            && !want.reserved_services.contains(&c.service_id)
            && !owned_by_gone_service
        {
            ops.push(CatalogOp::Deregister {
                node: node_name.clone(),
                service_id: None,
                check_id: Some(id.clone()),
            });
        }
    }
    ops
}

impl Agent {
    /// One anti-entropy round.
    pub async fn sync_once(&self) -> Result<usize, CatalogError> {
        let current = self.catalog.node_record(&self.cfg.node.node).await?;
        let (services, checks) = {
            let st = self.state();
            (
                st.services
                    .iter()
                    .map(|(k, v)| (k.clone(), v.service.clone()))
                    .collect(),
                st.checks
                    .iter()
                    .map(|(k, v)| (k.clone(), v.check.clone()))
                    .collect(),
            )
        };
        let want = Desired {
            node: &self.cfg.node,
            manage_node: self.cfg.manage_node,
            services,
            checks,
            reserved_services: &self.cfg.reserved_services,
            reserved_checks: &self.cfg.reserved_checks,
        };
        let ops = plan(&want, current.as_ref());
        let n = ops.len();
        if n > 0 {
            self.catalog.apply(ops).await?;
            self.metrics.incr("berth.agent.sync.writes", n as u64);
        }
        Ok(n)
    }
}

/// Runs anti-entropy for as long as the agent lives.
pub async fn sync_loop(agent: Weak<Agent>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(a) = agent.upgrade() else { return };
        let generation = a.state().generation();
        match a.sync_once().await {
            Ok(_) => {
                a.synced.send_if_modified(|g| {
                    let newer = generation > *g;
                    if newer {
                        *g = generation;
                    }
                    newer
                });
                backoff = Duration::from_millis(100);
                let interval = a.cfg.sync_interval;
                // Holds the notifier, not the agent, while it waits.
                let dirty = a.dirty.clone();
                drop(a);
                let _ = tokio::time::timeout(interval, dirty.notified()).await;
            }
            Err(e) => {
                a.metrics.incr("berth.agent.sync.failures", 1);
                // Failing while a cluster elects its first leader is normal; persisting is not.
                if backoff >= Duration::from_secs(2) {
                    tracing::warn!(error = %e, retry_in = ?backoff, "anti-entropy sync failed");
                } else {
                    tracing::debug!(error = %e, retry_in = ?backoff, "anti-entropy sync failed");
                }
                drop(a);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::catalog::PASSING;

    fn node() -> Node {
        Node {
            node: "n1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            ..Default::default()
        }
    }

    fn svc(id: &str) -> AgentService {
        AgentService {
            id: id.into(),
            service: id.into(),
            ..Default::default()
        }
    }

    fn check(id: &str, service: &str, status: &str) -> HealthCheck {
        HealthCheck {
            node: "n1".into(),
            check_id: id.into(),
            service_id: service.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    #[test]
    fn plan_registers_missing_and_removes_stale_but_not_reserved() {
        let n = node();
        let reserved_s = vec!["consul".to_string()];
        let reserved_c = vec!["serfHealth".to_string()];
        let want = Desired {
            node: &n,
            manage_node: true,
            services: [("web".to_string(), svc("web"))].into(),
            checks: [("c1".to_string(), check("c1", "web", PASSING))].into(),
            reserved_services: &reserved_s,
            reserved_checks: &reserved_c,
        };
        let ops = plan(&want, None);
        assert_eq!(ops.len(), 2, "node, then service with its check: {ops:?}");

        let mut current = NodeRecord {
            node: n.clone(),
            services: [
                (
                    "web".to_string(),
                    AgentService {
                        modify_index: 7,
                        ..svc("web")
                    },
                ),
                ("old".to_string(), svc("old")),
                ("consul".to_string(), svc("consul")),
            ]
            .into(),
            checks: [
                ("c1".to_string(), check("c1", "web", PASSING)),
                ("old-c".to_string(), check("old-c", "old", PASSING)),
                ("serfHealth".to_string(), check("serfHealth", "", PASSING)),
                ("stray".to_string(), check("stray", "", PASSING)),
            ]
            .into(),
        };
        let ops = plan(&want, Some(&current));
        assert_eq!(
            ops,
            vec![
                CatalogOp::Deregister {
                    node: "n1".into(),
                    service_id: Some("old".into()),
                    check_id: None
                },
                CatalogOp::Deregister {
                    node: "n1".into(),
                    service_id: None,
                    check_id: Some("stray".into())
                },
            ]
        );
        current.services.remove("old");
        current.checks.remove("old-c");
        current.checks.remove("stray");
        assert!(
            plan(&want, Some(&current)).is_empty(),
            "in sync: nothing to write"
        );
        current
            .checks
            .insert("c1".into(), check("c1", "web", "critical"));
        assert_eq!(
            plan(&want, Some(&current)).len(),
            1,
            "a status change is pushed"
        );
    }
}
