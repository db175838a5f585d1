//! The registrations of one task, built from its configuration and metadata (pure).

use serde_json::{Map, Value, json};

use berth_ecs::{TaskConfig, TaskMetadata};

/// A TTL long enough never to run out: health-sync owns these checks' status, and stopping
/// it stops the task (it is essential), which removes them.
pub const SYNCED_CHECK_TTL: &str = "87600h";

pub struct Registrations {
    pub service_id: String,
    pub proxy_id: String,
    pub service: Value,
    pub proxy: Value,
}

fn synced_check(owner: &str, container: &str) -> Value {
    json!({
        "CheckID": berth_ecs::check_id(owner, container),
        "Name": format!("ECS health of container {container}"),
        "Notes": "Mirrored from ECS task metadata by berth-health-sync.",
        "TTL": SYNCED_CHECK_TTL,
        "Status": "critical",
    })
}

pub fn build(cfg: &TaskConfig, task: &TaskMetadata) -> Registrations {
    let name = cfg.service_name(&task.family);
    let service_id = berth_ecs::service_id(&name, task.task_id());
    let proxy_id = berth_ecs::proxy_id(&service_id);
    let address = task.task_ip().map(|ip| ip.to_string()).unwrap_or_default();
    let mut meta: Map<String, Value> = cfg
        .service
        .meta
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    meta.insert("task-id".into(), json!(task.task_id()));
    meta.insert("task-arn".into(), json!(task.task_arn));
    meta.insert("cluster".into(), json!(task.cluster_arn()));

    let mut service = json!({
        "ID": service_id,
        "Name": name,
        "Port": cfg.service.port,
        "Address": address,
        "Tags": cfg.service.tags,
        "Meta": meta,
        "Checks": cfg
            .health_sync_containers
            .iter()
            .map(|c| synced_check(&service_id, c))
            .collect::<Vec<_>>(),
    });
    if let Some(w) = &cfg.service.weights {
        service["Weights"] = json!({"Passing": w.passing, "Warning": w.warning});
    }

    let upstreams: Vec<Value> = cfg
        .proxy
        .upstreams
        .iter()
        .map(|u| {
            let mut v = json!({
                "DestinationType": "service",
                "DestinationName": u.destination_name,
                "LocalBindAddress": u.local_bind_address.as_deref().unwrap_or("127.0.0.1"),
                "LocalBindPort": u.local_bind_port,
            });
            if let Some(dc) = &u.datacenter {
                v["Datacenter"] = json!(dc);
            }
            if !u.config.is_empty() {
                v["Config"] = json!(u.config);
            }
            v
        })
        .collect();
    let proxy = json!({
        "Kind": "connect-proxy",
        "ID": proxy_id,
        "Name": format!("{name}-sidecar-proxy"),
        "Port": cfg.proxy.public_listener_port,
        "Address": address,
        "Tags": cfg.service.tags,
        "Meta": meta,
        "Proxy": {
            "DestinationServiceName": name,
            "DestinationServiceID": service_id,
            "LocalServiceAddress": "127.0.0.1",
            "LocalServicePort": cfg.service.port,
            "Upstreams": upstreams,
            "Config": cfg.proxy.config,
        },
        // The proxy container's own health (Envoy ready), so that peers send nothing to a
        // proxy that has no configuration yet.
        "Checks": [synced_check(&proxy_id, berth_ecs::PROXY_CONTAINER)],
    });
    Registrations {
        service_id,
        proxy_id,
        service,
        proxy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_proxy_carry_the_task() {
        let cfg = TaskConfig::parse(
            r#"{"servers": {"hosts": ["s"]}, "service": {"port": 9090, "tags": ["v1"], "meta": {"team": "a"}},
                "proxy": {"upstreams": [{"destinationName": "api", "localBindPort": 1234}]},
                "healthSyncContainers": ["app"]}"#,
        )
        .unwrap();
        let task: TaskMetadata = serde_json::from_value(json!({
            "Cluster": "prod", "TaskARN": "arn:aws:ecs:us-east-1:1:task/prod/t1", "Family": "Web",
            "Containers": [{"Name": "app", "Networks": [{"IPv4Addresses": ["10.1.0.2"]}]}]
        }))
        .unwrap();
        let r = build(&cfg, &task);
        assert_eq!(r.service_id, "web-t1");
        assert_eq!(r.proxy_id, "web-t1-sidecar-proxy");
        assert_eq!(r.service["Name"], "web");
        assert_eq!(r.service["Address"], "10.1.0.2");
        assert_eq!(r.service["Meta"]["task-id"], "t1");
        assert_eq!(
            r.service["Meta"]["task-arn"],
            "arn:aws:ecs:us-east-1:1:task/prod/t1"
        );
        assert_eq!(
            r.service["Meta"]["cluster"],
            "arn:aws:ecs:us-east-1:1:cluster/prod"
        );
        assert_eq!(r.service["Meta"]["team"], "a");
        assert_eq!(r.service["Checks"][0]["CheckID"], "web-t1-app");
        assert_eq!(r.service["Checks"][0]["Status"], "critical");
        assert_eq!(r.proxy["Port"], 20000);
        assert_eq!(r.proxy["Proxy"]["DestinationServiceID"], "web-t1");
        assert_eq!(r.proxy["Proxy"]["LocalServicePort"], 9090);
        assert_eq!(
            r.proxy["Proxy"]["Upstreams"][0]["LocalBindAddress"],
            "127.0.0.1"
        );
        assert_eq!(
            r.proxy["Checks"][0]["CheckID"],
            "web-t1-sidecar-proxy-berth-proxy"
        );
    }
}
