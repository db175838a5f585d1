//! Which of the tasks the servers know of are alive, by ECS: ListTasks of the tasks meant to
//! run (every page), then DescribeTasks (batches of 100, tags included) of only the tasks
//! the servers name that the list left out. Those are stopping, stopped, or gone so long
//! that ECS forgot them; only the last two count as gone. Steady state makes no
//! DescribeTasks call at all, and no reconcile makes more than ceil(tasks/100).
//!
//! Stopping tasks (desired STOPPED, last status not yet STOPPED) count as alive: they are
//! draining and log out by themselves, and deleting their tokens then would cut their proxy
//! off mid-drain.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use futures::{StreamExt, TryStreamExt};

/// DescribeTasks takes at most this many tasks.
pub const DESCRIBE_BATCH: usize = 100;
/// DescribeTasks calls in flight at once.
const DESCRIBE_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error("ECS {operation} failed: {reason}")]
    Call {
        operation: &'static str,
        reason: String,
    },
    #[error("ECS DescribeTasks could not describe {count} task(s): {reasons}")]
    Failures { count: usize, reasons: String },
}

impl EcsError {
    pub fn operation(&self) -> &'static str {
        match self {
            EcsError::Call { operation, .. } => operation,
            EcsError::Failures { .. } => "DescribeTasks",
        }
    }
}

/// What ECS said about the tasks asked after.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// IDs of tasks meant to run (ListTasks), and of those described as not yet STOPPED.
    pub alive: HashSet<String>,
    /// Why each described task that is not alive is gone.
    pub gone: HashMap<String, String>,
    /// Tasks ListTasks returned.
    pub listed: usize,
    /// Tasks described, and the calls that took.
    pub described: usize,
    pub describe_calls: usize,
}

pub struct Ecs {
    client: aws_sdk_ecs::Client,
}

/// The last segment of a task ARN (`arn:...:task/CLUSTER/ID`), which is its ID.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Whether a task in this last status may still hold tokens legitimately.
pub fn is_alive(last_status: Option<&str>) -> bool {
    !matches!(last_status, Some("STOPPED") | Some("DELETED"))
}

impl Ecs {
    pub async fn new(region: &str, endpoint: Option<&str>) -> Ecs {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .timeout_config(timeouts)
            .load()
            .await;
        let mut conf = aws_sdk_ecs::config::Builder::from(&sdk);
        if let Some(e) = endpoint {
            conf = conf.endpoint_url(e);
        }
        Ecs {
            client: aws_sdk_ecs::Client::from_conf(conf.build()),
        }
    }

    async fn list_running(&self, cluster: &str) -> Result<Vec<String>, EcsError> {
        self.client
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Running)
            .max_results(100)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| EcsError::Call {
                operation: "ListTasks",
                reason: berth_ecs::error_chain(&e),
            })
    }

    /// Which of `referenced` (task IDs the servers hold something for) are alive.
    pub async fn snapshot(
        &self,
        cluster_arn: &str,
        referenced: &BTreeSet<String>,
    ) -> Result<Snapshot, EcsError> {
        let running = self.list_running(cluster_arn).await?;
        let mut snap = Snapshot {
            listed: running.len(),
            alive: running.iter().map(|a| task_id(a).to_string()).collect(),
            ..Snapshot::default()
        };
        let ask: Vec<String> = referenced
            .iter()
            .filter(|id| !snap.alive.contains(*id))
            .map(|id| task_arn(cluster_arn, id))
            .collect();
        let calls = AtomicUsize::new(0);
        let batches: Vec<Described> = futures::stream::iter(ask.chunks(DESCRIBE_BATCH))
            .map(|batch| {
                calls.fetch_add(1, Ordering::Relaxed);
                self.describe(cluster_arn, batch)
            })
            .buffer_unordered(DESCRIBE_CONCURRENCY)
            .try_collect()
            .await?;
        snap.described = ask.len();
        snap.describe_calls = calls.into_inner();
        let mut failures = Vec::new();
        for b in batches {
            snap.alive.extend(b.alive);
            snap.gone.extend(b.gone);
            failures.extend(b.failures);
        }
        if !failures.is_empty() {
            return Err(EcsError::Failures {
                count: failures.len(),
                reasons: failures.join(", "),
            });
        }
        Ok(snap)
    }

    async fn describe(&self, cluster: &str, batch: &[String]) -> Result<Described, EcsError> {
        let out = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(batch.to_vec()))
            .include(TaskField::Tags)
            .send()
            .await
            .map_err(|e| EcsError::Call {
                operation: "DescribeTasks",
                reason: berth_ecs::error_chain(&e),
            })?;
        let mut d = Described::default();
        for t in out.tasks() {
            let Some(arn) = t.task_arn() else { continue };
            let id = task_id(arn).to_string();
            if is_alive(t.last_status()) {
                d.alive.push(id);
                continue;
            }
            let service = t
                .tags()
                .iter()
                .find(|g| g.key() == Some("berth/service-name"))
                .and_then(|g| g.value())
                .map(|s| format!(" (service {s})"))
                .unwrap_or_default();
            let why = t.stopped_reason().unwrap_or("no reason given");
            d.gone
                .insert(id.clone(), format!("task {id}{service} STOPPED: {why}"));
        }
        for f in out.failures() {
            // MISSING: ECS forgot the task (it stopped long ago), so it is gone. Any other
            // failure leaves us not knowing, and not knowing must not delete.
            if f.reason() != Some("MISSING") {
                d.failures.push(format!(
                    "{}: {}",
                    f.arn().unwrap_or("?"),
                    f.reason().unwrap_or("no reason")
                ));
            }
        }
        Ok(d)
    }
}

/// A task's ARN from its cluster's ARN and its ID (`...:cluster/NAME` → `...:task/NAME/ID`).
pub fn task_arn(cluster_arn: &str, id: &str) -> String {
    match cluster_arn.split_once(":cluster/") {
        Some((head, name)) => format!("{head}:task/{name}/{id}"),
        None => id.to_string(),
    }
}

#[derive(Default)]
struct Described {
    alive: Vec<String>,
    gone: HashMap<String, String>,
    failures: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stopped_tasks_are_gone() {
        for s in [
            "PROVISIONING",
            "PENDING",
            "RUNNING",
            "DEACTIVATING",
            "STOPPING",
        ] {
            assert!(is_alive(Some(s)), "{s}");
        }
        assert!(is_alive(None));
        assert!(!is_alive(Some("STOPPED")));
        assert!(!is_alive(Some("DELETED")));
    }

    #[test]
    fn a_task_id_is_the_arn_tail() {
        assert_eq!(
            task_id("arn:aws:ecs:us-east-1:123456789012:task/mesh/0f3c"),
            "0f3c"
        );
        assert_eq!(task_id("0f3c"), "0f3c");
        assert_eq!(
            task_arn("arn:aws:ecs:us-east-1:123456789012:cluster/mesh", "0f3c"),
            "arn:aws:ecs:us-east-1:123456789012:task/mesh/0f3c"
        );
    }
}
