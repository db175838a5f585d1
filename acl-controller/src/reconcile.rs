//! One reconcile: read what the servers hold for this cluster's tasks, ask ECS which tasks
//! are alive, remove what belongs to the others.
//!
//! The servers are read before ECS is asked. A task exists in ECS before any of its
//! containers can log in, so anything read first whose task is missing from the later
//! listing belongs to a task that had already stopped; read the other way round, a task that
//! started in between would lose its fresh tokens.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Api, ApiError, escape};
use crate::ecs::{Ecs, EcsError};

/// Removals in flight at once.
const REMOVE_CONCURRENCY: usize = 16;
const LOGIN_PREFIX: &str = "token created via login: ";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct TokenRow {
    #[serde(rename = "AccessorID")]
    pub accessor_id: String,
    pub description: String,
    pub auth_method: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct InstanceRow {
    pub node: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeRow {
    pub node: String,
    pub meta: BTreeMap<String, String>,
}

/// The meta a login token was created with: the servers keep it, as Consul does, in the
/// description. `None` for a token that no login made.
pub fn login_meta(t: &TokenRow) -> Option<BTreeMap<String, String>> {
    if t.auth_method.is_empty() {
        return None;
    }
    let raw = t.description.strip_prefix(LOGIN_PREFIX)?;
    serde_json::from_str(raw).ok()
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRemoval {
    pub accessor_id: String,
    pub auth_method: String,
    pub task_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRemoval {
    pub node: String,
    pub service_id: String,
    pub task_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRemoval {
    pub node: String,
    pub task_id: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub tokens: Vec<TokenRemoval>,
    pub services: Vec<ServiceRemoval>,
    pub nodes: Vec<NodeRemoval>,
}

/// The IDs of this cluster's tasks that the servers hold something for: the tasks to ask
/// ECS about.
pub fn referenced(
    cluster_arn: &str,
    tokens: &[TokenRow],
    instances: &[InstanceRow],
    nodes: &[NodeRow],
) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut take = |cluster: Option<&String>, task: Option<&String>| {
        if let Some(t) = task.filter(|t| !t.is_empty())
            && cluster.map(String::as_str) == Some(cluster_arn)
        {
            ids.insert(t.clone());
        }
    };
    for t in tokens {
        if let Some(m) = login_meta(t) {
            take(
                m.get(berth_ecs::META_CLUSTER),
                m.get(berth_ecs::META_TASK_ID),
            );
        }
    }
    for i in instances {
        take(i.service_meta.get("cluster"), i.service_meta.get("task-id"));
    }
    for n in nodes {
        take(n.meta.get("cluster"), n.meta.get("task-id"));
    }
    ids
}

/// What to remove (pure): login tokens, service instances and nodes that name this cluster
/// and a task that is not alive. Tokens without a login, or of another cluster, never.
pub fn plan(
    cluster_arn: &str,
    alive: &HashSet<String>,
    tokens: &[TokenRow],
    instances: &[InstanceRow],
    nodes: &[NodeRow],
) -> Plan {
    let gone = |meta_cluster: Option<&String>, task: Option<&String>| -> Option<String> {
        let task = task.filter(|t| !t.is_empty())?;
        (meta_cluster.map(String::as_str) == Some(cluster_arn) && !alive.contains(task))
            .then(|| task.clone())
    };
    let mut p = Plan::default();
    for t in tokens {
        let Some(meta) = login_meta(t) else { continue };
        if let Some(task_id) = gone(
            meta.get(berth_ecs::META_CLUSTER),
            meta.get(berth_ecs::META_TASK_ID),
        ) {
            p.tokens.push(TokenRemoval {
                accessor_id: t.accessor_id.clone(),
                auth_method: t.auth_method.clone(),
                task_id,
            });
        }
    }
    for i in instances {
        if let Some(task_id) = gone(i.service_meta.get("cluster"), i.service_meta.get("task-id")) {
            p.services.push(ServiceRemoval {
                node: i.node.clone(),
                service_id: i.service_id.clone(),
                task_id,
            });
        }
    }
    for n in nodes {
        if let Some(task_id) = gone(n.meta.get("cluster"), n.meta.get("task-id")) {
            p.nodes.push(NodeRemoval {
                node: n.node.clone(),
                task_id,
            });
        }
    }
    p
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Ecs(#[from] EcsError),
    #[error("reading the servers: {0}")]
    Read(ApiError),
    #[error("unexpected answer from {path}: {reason}")]
    Decode { path: String, reason: String },
    #[error("{failed} removal(s) failed, the first: {first}")]
    Remove { failed: usize, first: ApiError },
    #[error("lost the controller lock; stopped before removing anything more")]
    NotLeader,
}

#[derive(Debug, Default)]
pub struct Report {
    pub tasks_listed: usize,
    pub tasks_referenced: usize,
    pub tasks_described: usize,
    pub describe_calls: usize,
    pub tokens_seen: usize,
    pub tokens_removed: usize,
    pub services_removed: usize,
    pub nodes_removed: usize,
    pub read_servers: Duration,
    pub read_ecs: Duration,
    pub remove: Duration,
    pub total: Duration,
}

async fn read<T: serde::de::DeserializeOwned>(api: &Api, path: &str) -> Result<T, ReconcileError> {
    let v = api.get(path).await.map_err(ReconcileError::Read)?;
    serde_json::from_value(v).map_err(|e| ReconcileError::Decode {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

/// Service instances whose meta names this cluster.
async fn instances(api: &Api, cluster_arn: &str) -> Result<Vec<InstanceRow>, ReconcileError> {
    let names: BTreeMap<String, Value> = read(api, "/v1/catalog/services").await?;
    let filter = escape(&format!("ServiceMeta.cluster == {}", json!(cluster_arn)));
    let per_name = futures::stream::iter(names.keys())
        .map(|name| {
            let path = format!("/v1/catalog/service/{}?filter={filter}", escape(name));
            async move { read::<Vec<InstanceRow>>(api, &path).await }
        })
        .buffer_unordered(REMOVE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut out = Vec::new();
    for r in per_name {
        out.extend(r?);
    }
    Ok(out)
}

/// Reconciles once. `leading` is asked before anything is removed, so a controller that
/// lost its lock mid-way stops.
pub async fn once(
    api: &Api,
    ecs: &Ecs,
    cluster_arn: &str,
    leading: &dyn Fn() -> bool,
) -> Result<Report, ReconcileError> {
    let start = Instant::now();
    let tokens: Vec<TokenRow> = read(api, "/v1/acl/tokens").await?;
    let instances = instances(api, cluster_arn).await?;
    let nodes: Vec<NodeRow> = read(
        api,
        &format!(
            "/v1/catalog/nodes?node-meta={}",
            escape(&format!("cluster:{cluster_arn}"))
        ),
    )
    .await?;
    let read_servers = start.elapsed();
    let asked = referenced(cluster_arn, &tokens, &instances, &nodes);
    let snap = ecs.snapshot(cluster_arn, &asked).await?;
    let read_ecs = start.elapsed() - read_servers;
    let p = plan(cluster_arn, &snap.alive, &tokens, &instances, &nodes);
    if !leading() {
        return Err(ReconcileError::NotLeader);
    }
    let why = |task: &str| {
        snap.gone
            .get(task)
            .cloned()
            .unwrap_or_else(|| format!("task {task} is not in {cluster_arn} any more"))
    };

    let mut failed: Vec<ApiError> = Vec::new();
    let token_results = futures::stream::iter(&p.tokens)
        .map(|t| async move {
            let r = api
                .delete(&format!("/v1/acl/token/{}", escape(&t.accessor_id)))
                .await;
            (t, r)
        })
        .buffer_unordered(REMOVE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    let mut report = Report::default();
    for (t, r) in token_results {
        match r {
            Ok(found) => {
                report.tokens_removed += usize::from(found);
                tracing::info!(
                    accessor = %t.accessor_id,
                    method = %t.auth_method,
                    task = %t.task_id,
                    reason = %why(&t.task_id),
                    "deleted login token"
                );
            }
            Err(e) => failed.push(e),
        }
    }
    if !leading() {
        return Err(ReconcileError::NotLeader);
    }
    let service_results = futures::stream::iter(&p.services)
        .map(|s| async move {
            let r = api
                .put(
                    "/v1/catalog/deregister",
                    &json!({"Node": s.node, "ServiceID": s.service_id}),
                )
                .await;
            (s, r)
        })
        .buffer_unordered(REMOVE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (s, r) in service_results {
        match r {
            Ok(_) => {
                report.services_removed += 1;
                tracing::info!(
                    service = %s.service_id,
                    node = %s.node,
                    task = %s.task_id,
                    reason = %why(&s.task_id),
                    "deregistered service"
                );
            }
            Err(e) => failed.push(e),
        }
    }
    for n in &p.nodes {
        if !leading() {
            return Err(ReconcileError::NotLeader);
        }
        match api
            .put("/v1/catalog/deregister", &json!({"Node": n.node}))
            .await
        {
            Ok(_) => {
                report.nodes_removed += 1;
                tracing::info!(node = %n.node, task = %n.task_id, reason = %why(&n.task_id), "deregistered node");
            }
            Err(e) => failed.push(e),
        }
    }
    report.tasks_listed = snap.listed;
    report.tasks_referenced = asked.len();
    report.tasks_described = snap.described;
    report.describe_calls = snap.describe_calls;
    report.tokens_seen = tokens.len();
    report.read_servers = read_servers;
    report.read_ecs = read_ecs;
    report.total = start.elapsed();
    report.remove = report.total - read_servers - read_ecs;
    let n = failed.len();
    if let Some(first) = failed.into_iter().next() {
        return Err(ReconcileError::Remove { failed: n, first });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/mesh";
    const OTHER: &str = "arn:aws:ecs:us-east-1:123456789012:cluster/other";

    fn token(id: &str, method: &str, cluster: &str, task: &str) -> TokenRow {
        TokenRow {
            accessor_id: id.into(),
            auth_method: method.into(),
            description: format!(
                "{LOGIN_PREFIX}{}",
                json!({"berth/cluster": cluster, "berth/task-id": task})
            ),
        }
    }

    fn instance(id: &str, cluster: &str, task: &str) -> InstanceRow {
        InstanceRow {
            node: task.into(),
            service_id: id.into(),
            service_name: "api".into(),
            service_meta: [("cluster", cluster), ("task-id", task)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn removes_only_what_this_clusters_stopped_tasks_left() {
        let alive: HashSet<String> = ["t1".to_string()].into();
        let tokens = vec![
            token("a", "berth-ecs-service", C, "t1"),
            token("b", "berth-ecs-service", C, "t2"),
            token("c", "berth-ecs-client", C, "t2"),
            // Another cluster's task, even one this cluster does not know.
            token("d", "berth-ecs-service", OTHER, "t3"),
            // Made by hand, with a description that imitates a login's.
            token("e", "", C, "t2"),
            // A login without the task meta (another kind of workload).
            TokenRow {
                accessor_id: "f".into(),
                auth_method: "jwt".into(),
                description: format!("{LOGIN_PREFIX}{{}}"),
            },
            TokenRow {
                accessor_id: "g".into(),
                auth_method: "jwt".into(),
                description: "something else".into(),
            },
        ];
        let instances = vec![
            instance("api-t1", C, "t1"),
            instance("api-t2", C, "t2"),
            instance("api-t2-sidecar-proxy", C, "t2"),
            instance("api-t3", OTHER, "t3"),
            InstanceRow {
                node: "n".into(),
                service_id: "plain".into(),
                ..InstanceRow::default()
            },
        ];
        let nodes = vec![
            NodeRow {
                node: "t2".into(),
                meta: instance("", C, "t2").service_meta,
            },
            NodeRow {
                node: "t1".into(),
                meta: instance("", C, "t1").service_meta,
            },
            NodeRow {
                node: "server-1".into(),
                meta: BTreeMap::new(),
            },
        ];
        let asked: Vec<String> = referenced(C, &tokens, &instances, &nodes)
            .into_iter()
            .collect();
        // Tokens "d" (another cluster), "e" (by hand), "f"/"g" (no task) name no task here.
        assert_eq!(asked, ["t1", "t2"]);
        let p = plan(C, &alive, &tokens, &instances, &nodes);
        let ids: Vec<&str> = p.tokens.iter().map(|t| t.accessor_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(p.tokens.iter().all(|t| t.task_id == "t2"));
        let svcs: Vec<&str> = p.services.iter().map(|s| s.service_id.as_str()).collect();
        assert_eq!(svcs, ["api-t2", "api-t2-sidecar-proxy"]);
        assert_eq!(
            p.nodes,
            [NodeRemoval {
                node: "t2".into(),
                task_id: "t2".into()
            }]
        );
    }

    #[test]
    fn nothing_goes_while_every_task_is_alive() {
        let alive: HashSet<String> = ["t1".to_string(), "t2".to_string()].into();
        let p = plan(
            C,
            &alive,
            &[token("b", "m", C, "t2")],
            &[instance("api-t2", C, "t2")],
            &[],
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn login_meta_needs_a_login_and_json() {
        assert!(login_meta(&token("x", "", C, "t")).is_none());
        let mut t = token("x", "m", C, "t");
        assert_eq!(login_meta(&t).unwrap()["berth/task-id"], "t");
        t.description = format!("{LOGIN_PREFIX}not json");
        assert!(login_meta(&t).is_none());
    }
}
