//! `/metrics` in Prometheus text: reconcile durations and outcomes, what was removed, ECS
//! API errors, and whether this controller is the active one.

use std::sync::{Arc, Mutex};

use berth_api::metrics::Registry;
use tokio::sync::watch;

use crate::reconcile::{ReconcileError, Report};

#[derive(Default, Clone, Copy)]
struct Last {
    duration_seconds: f64,
    tasks_referenced: f64,
    success_unix: f64,
}

pub struct Metrics {
    registry: Registry,
    last: Arc<Mutex<Last>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const RECONCILES: &str = "berth.acl_controller.reconciles";
const DURATION: &str = "berth.acl_controller.reconcile_duration_ms";
const TOKENS: &str = "berth.acl_controller.tokens_removed";
const SERVICES: &str = "berth.acl_controller.services_removed";
const NODES: &str = "berth.acl_controller.nodes_removed";
const ECS_ERRORS: &str = "berth.acl_controller.ecs_errors";

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            last: Arc::default(),
        };
        // Counters exist from the start, so a scrape before the first removal reads 0.
        for (name, labels) in [
            (RECONCILES, vec![("result", "ok")]),
            (RECONCILES, vec![("result", "error")]),
            (TOKENS, vec![]),
            (SERVICES, vec![]),
            (NODES, vec![]),
            (ECS_ERRORS, vec![("operation", "ListTasks")]),
            (ECS_ERRORS, vec![("operation", "DescribeTasks")]),
        ] {
            m.registry.incr_labeled(name, owned(&labels), 0);
        }
        let last = m.last.clone();
        m.registry.add_gauge_source(Box::new(move || {
            let l = *lock(&last);
            vec![
                (
                    "berth.acl_controller.last_reconcile_seconds".into(),
                    Vec::new(),
                    l.duration_seconds,
                ),
                (
                    "berth.acl_controller.tasks_referenced".into(),
                    Vec::new(),
                    l.tasks_referenced,
                ),
                (
                    "berth.acl_controller.last_success_timestamp_seconds".into(),
                    Vec::new(),
                    l.success_unix,
                ),
            ]
        }));
        m
    }

    pub fn set_leader_source(&self, leading: watch::Receiver<bool>) {
        self.registry.add_gauge_source(Box::new(move || {
            vec![(
                "berth.acl_controller.active".into(),
                Vec::new(),
                f64::from(u8::from(*leading.borrow())),
            )]
        }));
    }

    pub fn record(&self, r: &Result<Report, ReconcileError>) {
        match r {
            Ok(rep) => {
                self.registry
                    .incr_labeled(RECONCILES, owned(&[("result", "ok")]), 1);
                self.registry.observe(DURATION, Vec::new(), rep.total);
                self.registry.incr(TOKENS, rep.tokens_removed as u64);
                self.registry.incr(SERVICES, rep.services_removed as u64);
                self.registry.incr(NODES, rep.nodes_removed as u64);
                let mut l = lock(&self.last);
                l.duration_seconds = rep.total.as_secs_f64();
                l.tasks_referenced = rep.tasks_referenced as f64;
                l.success_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
            }
            Err(e) => {
                self.registry
                    .incr_labeled(RECONCILES, owned(&[("result", "error")]), 1);
                if let ReconcileError::Ecs(e) = e {
                    self.registry.incr_labeled(
                        ECS_ERRORS,
                        owned(&[("operation", e.operation())]),
                        1,
                    );
                }
            }
        }
    }

    pub fn render(&self) -> String {
        self.registry.render_prometheus()
    }
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn serve(listener: tokio::net::TcpListener, m: Arc<Metrics>) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = m.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the /metrics listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::EcsError;

    #[test]
    fn records_outcomes_removals_and_ecs_errors() {
        let m = Metrics::new();
        let zero = m.render();
        assert!(
            zero.contains("berth_acl_controller_tokens_removed_total 0"),
            "{zero}"
        );
        m.record(&Ok(Report {
            tokens_removed: 3,
            services_removed: 2,
            nodes_removed: 1,
            tasks_referenced: 7,
            total: std::time::Duration::from_millis(250),
            ..Report::default()
        }));
        m.record(&Err(ReconcileError::Ecs(EcsError::Call {
            operation: "ListTasks",
            reason: "connection refused".into(),
        })));
        let t = m.render();
        for line in [
            "berth_acl_controller_tokens_removed_total 3",
            "berth_acl_controller_services_removed_total 2",
            "berth_acl_controller_nodes_removed_total 1",
            "berth_acl_controller_reconciles_total{result=\"ok\"} 1",
            "berth_acl_controller_reconciles_total{result=\"error\"} 1",
            "berth_acl_controller_ecs_errors_total{operation=\"ListTasks\"} 1",
            "berth_acl_controller_ecs_errors_total{operation=\"DescribeTasks\"} 0",
            "berth_acl_controller_reconcile_duration_ms_sum 250",
            "berth_acl_controller_reconcile_duration_ms_count 1",
            "berth_acl_controller_last_reconcile_seconds 0.25",
            "berth_acl_controller_tasks_referenced 7",
        ] {
            assert!(t.contains(line), "{line} in\n{t}");
        }
    }
}
