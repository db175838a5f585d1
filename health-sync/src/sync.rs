//! What the checks should say, from one task metadata document (pure).

use std::collections::BTreeMap;

use berth_api::agent::CheckStatusUpdate;
use berth_ecs::{TaskConfig, TaskMetadata};

/// The checks health-sync owns: `(check ID, container)`.
pub fn owned_checks(cfg: &TaskConfig, task: &TaskMetadata) -> Vec<(String, String)> {
    let service_id = berth_ecs::service_id(&cfg.service_name(&task.family), task.task_id());
    let proxy_id = berth_ecs::proxy_id(&service_id);
    let mut v: Vec<(String, String)> = cfg
        .health_sync_containers
        .iter()
        .map(|c| (berth_ecs::check_id(&service_id, c), c.clone()))
        .collect();
    v.push((
        berth_ecs::check_id(&proxy_id, berth_ecs::PROXY_CONTAINER),
        berth_ecs::PROXY_CONTAINER.to_string(),
    ));
    v
}

/// `HEALTHY` is passing; UNHEALTHY, UNKNOWN, no health at all, a stopped or a missing
/// container are critical.
pub fn status_of(task: &TaskMetadata, container: &str) -> (&'static str, String) {
    let Some(c) = task.container(container) else {
        return (
            "critical",
            format!("container {container} is not in the task"),
        );
    };
    if c.known_status == "STOPPED" {
        return ("critical", format!("container {container} has stopped"));
    }
    match c.health.as_ref().map(|h| h.status.as_str()) {
        Some("HEALTHY") => ("passing", format!("ECS health of {container}: HEALTHY")),
        Some(s) if !s.is_empty() => ("critical", format!("ECS health of {container}: {s}")),
        _ => (
            "critical",
            format!("container {container} reports no health (it needs an ECS healthCheck)"),
        ),
    }
}

/// The updates that one poll needs: only checks whose status or output differ from what
/// was last written.
pub fn changes(
    owned: &[(String, String)],
    task: &TaskMetadata,
    written: &BTreeMap<String, (String, String)>,
) -> Vec<CheckStatusUpdate> {
    owned
        .iter()
        .filter_map(|(id, container)| {
            let (status, output) = status_of(task, container);
            let now = (status.to_string(), output);
            (written.get(id) != Some(&now)).then(|| CheckStatusUpdate {
                check_id: id.clone(),
                status: now.0,
                output: now.1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_ecs::metadata::{ContainerMetadata, Health};

    fn task(app_health: Option<&str>, with_proxy: bool) -> TaskMetadata {
        let c = |name: &str, h: Option<&str>| ContainerMetadata {
            name: name.into(),
            kind: "NORMAL".into(),
            known_status: "RUNNING".into(),
            health: h.map(|s| Health {
                status: s.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut containers = vec![c("app", app_health)];
        if with_proxy {
            containers.push(c("berth-proxy", Some("HEALTHY")));
        }
        TaskMetadata {
            family: "web".into(),
            task_arn: "arn:aws:ecs:us-east-1:1:task/c/t1".into(),
            containers,
            ..Default::default()
        }
    }

    #[test]
    fn ecs_health_maps_to_check_status() {
        assert_eq!(status_of(&task(Some("HEALTHY"), true), "app").0, "passing");
        for h in [Some("UNHEALTHY"), Some("UNKNOWN"), Some(""), None] {
            assert_eq!(status_of(&task(h, true), "app").0, "critical", "{h:?}");
        }
        assert_eq!(status_of(&task(None, true), "gone").0, "critical");
        let mut t = task(Some("HEALTHY"), true);
        t.containers[0].known_status = "STOPPED".into();
        assert_eq!(status_of(&t, "app").0, "critical");
    }

    #[test]
    fn only_changes_are_written() {
        let cfg =
            TaskConfig::parse(r#"{"servers": {"hosts": ["s"]}, "healthSyncContainers": ["app"]}"#)
                .unwrap();
        let t = task(Some("HEALTHY"), true);
        let owned = owned_checks(&cfg, &t);
        assert_eq!(
            owned,
            [
                ("web-t1-app".to_string(), "app".to_string()),
                (
                    "web-t1-sidecar-proxy-berth-proxy".to_string(),
                    "berth-proxy".to_string()
                )
            ]
        );
        let mut written = BTreeMap::new();
        let first = changes(&owned, &t, &written);
        assert_eq!(first.len(), 2, "the first poll writes every check");
        for u in first {
            written.insert(u.check_id, (u.status, u.output));
        }
        assert!(changes(&owned, &t, &written).is_empty());
        let sick = task(Some("UNHEALTHY"), true);
        let c = changes(&owned, &sick, &written);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].check_id.as_str(), c[0].status.as_str()),
            ("web-t1-app", "critical")
        );
        let c = changes(&owned, &task(Some("HEALTHY"), false), &written);
        assert_eq!(
            c[0].check_id, "web-t1-sidecar-proxy-berth-proxy",
            "a missing proxy is critical"
        );
    }
}
