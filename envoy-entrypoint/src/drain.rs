//! What happens between the proxy container's SIGTERM and Envoy's: the inbound listeners
//! drain while the application finishes, because the application's last requests (and its
//! calls to upstreams) still go through Envoy.

use std::ffi::OsString;
use std::time::Duration;

use berth_ecs::TaskMetadata;
use berth_ecs::metadata::MetadataClient;
use tokio::time::Instant;

use crate::admin::{self, HostPort};

#[derive(Debug, Clone)]
pub struct Settings {
    pub admin_addr: Option<HostPort>,
    /// How long the metadata endpoint may fail in a row before we stop waiting for it.
    pub metadata_patience: Duration,
    pub poll: Duration,
}

/// The application containers that have not stopped yet, by name. An empty list means
/// Envoy may stop: a task without application containers has nothing to wait for.
pub fn apps_not_stopped(task: &TaskMetadata) -> Vec<String> {
    task.app_containers()
        .filter(|c| !c.known_status.eq_ignore_ascii_case("STOPPED"))
        .map(|c| c.name.clone())
        .collect()
}

/// Starts the drain and returns when Envoy should get its SIGTERM.
pub async fn drain_and_wait(settings: &Settings, command: &[OsString]) {
    let admin = admin::resolve(settings.admin_addr.as_ref(), command);
    match admin::start_drain(&admin).await {
        Ok(()) => tracing::info!(admin = %admin, "Envoy is draining its inbound listeners"),
        // Not fatal: Envoy still serves, and stopping it early would cut the app off.
        Err(e) => tracing::warn!("cannot start Envoy's drain: {e}"),
    }
    let client = match MetadataClient::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("{e}: cannot tell when the application has stopped, so Envoy stops now");
            return;
        }
    };
    wait_for_apps(&client, settings).await;
}

async fn wait_for_apps(client: &MetadataClient, settings: &Settings) {
    let mut failing_since: Option<Instant> = None;
    let mut last_waiting: Option<Vec<String>> = None;
    loop {
        match client.task().await {
            Ok(task) => {
                failing_since = None;
                let waiting = apps_not_stopped(&task);
                if waiting.is_empty() {
                    tracing::info!("every application container has stopped");
                    return;
                }
                if last_waiting.as_ref() != Some(&waiting) {
                    tracing::info!(containers = ?waiting, "Envoy keeps serving until these stop");
                    last_waiting = Some(waiting);
                }
            }
            Err(e) => {
                let since = match failing_since {
                    Some(since) => since,
                    None => {
                        // Once per outage, not on every poll.
                        tracing::warn!("{e}; retrying for up to {:?}", settings.metadata_patience);
                        *failing_since.insert(Instant::now())
                    }
                };
                if since.elapsed() >= settings.metadata_patience {
                    tracing::warn!(
                        "{e}; gave up after {:?} of failures, Envoy stops now",
                        settings.metadata_patience
                    );
                    return;
                }
            }
        }
        tokio::time::sleep(settings.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_ecs::ContainerMetadata;

    fn task(containers: &[(&str, &str, &str)]) -> TaskMetadata {
        TaskMetadata {
            containers: containers
                .iter()
                .map(|(name, kind, status)| ContainerMetadata {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    known_status: status.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn envoy_waits_for_every_app_container() {
        let t = task(&[
            ("berth-proxy", "NORMAL", "RUNNING"),
            ("berth-agent", "NORMAL", "RUNNING"),
            ("web", "NORMAL", "RUNNING"),
            ("worker", "NORMAL", "PENDING"),
            ("~internal~ecs~pause", "CNI_PAUSE", "RUNNING"),
        ]);
        assert_eq!(apps_not_stopped(&t), ["web", "worker"]);
        let t = task(&[
            ("berth-proxy", "NORMAL", "RUNNING"),
            ("web", "NORMAL", "STOPPED"),
            ("worker", "NORMAL", "RUNNING"),
        ]);
        assert_eq!(apps_not_stopped(&t), ["worker"]);
    }

    #[test]
    fn envoy_may_stop_once_the_apps_have() {
        let t = task(&[
            ("berth-proxy", "NORMAL", "RUNNING"),
            ("web", "NORMAL", "STOPPED"),
            ("worker", "NORMAL", "stopped"),
            ("~internal~ecs~pause", "CNI_PAUSE", "RUNNING"),
        ]);
        assert!(apps_not_stopped(&t).is_empty());
        // Only Berth's own containers: nothing to wait for.
        assert!(apps_not_stopped(&task(&[("berth-proxy", "NORMAL", "RUNNING")])).is_empty());
    }
}
