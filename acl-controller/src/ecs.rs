//! What ECS says is alive in the cluster: ListTasks (every page, desired RUNNING and
//! STOPPED) then DescribeTasks in batches of 100 with tags.
//!
//! Tasks that are stopping (desired STOPPED, last status not yet STOPPED) count as alive:
//! they are still draining and logging out by themselves, and deleting their tokens then
//! would cut their proxy off mid-drain.

use std::collections::{BTreeSet, HashSet};
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

/// The cluster's tasks as ECS described them.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// IDs of tasks that are not STOPPED.
    pub alive: HashSet<String>,
    /// Tasks listed (either desired status).
    pub listed: usize,
    pub describe_calls: usize,
    /// Alive tasks tagged `berth/mesh=true` (the mesh-task module's tag).
    pub mesh_tasks: usize,
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

    async fn list(&self, cluster: &str, desired: DesiredStatus) -> Result<Vec<String>, EcsError> {
        self.client
            .list_tasks()
            .cluster(cluster)
            .desired_status(desired)
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

    pub async fn snapshot(&self, cluster: &str) -> Result<Snapshot, EcsError> {
        let mut arns: BTreeSet<String> = BTreeSet::new();
        arns.extend(self.list(cluster, DesiredStatus::Running).await?);
        arns.extend(self.list(cluster, DesiredStatus::Stopped).await?);
        let arns: Vec<String> = arns.into_iter().collect();
        let calls = AtomicUsize::new(0);
        let batches: Vec<Described> = futures::stream::iter(arns.chunks(DESCRIBE_BATCH))
            .map(|batch| {
                calls.fetch_add(1, Ordering::Relaxed);
                self.describe(cluster, batch)
            })
            .buffer_unordered(DESCRIBE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut snap = Snapshot {
            listed: arns.len(),
            describe_calls: calls.into_inner(),
            ..Snapshot::default()
        };
        let mut failures = Vec::new();
        for b in batches {
            snap.mesh_tasks += b.mesh;
            snap.alive.extend(b.alive);
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
            if !is_alive(t.last_status()) {
                continue;
            }
            let Some(arn) = t.task_arn() else { continue };
            d.alive.push(task_id(arn).to_string());
            if t.tags()
                .iter()
                .any(|g| g.key() == Some("berth/mesh") && g.value() == Some("true"))
            {
                d.mesh += 1;
            }
        }
        for f in out.failures() {
            // A task that aged out between the list and the describe is simply gone; any
            // other failure leaves us not knowing, and not knowing must not delete.
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

#[derive(Default)]
struct Described {
    alive: Vec<String>,
    mesh: usize,
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
    }
}
