//! `berth agent` inside an ECS task: when `BERTH_ECS_CONFIG_JSON` is set, the task's
//! configuration and metadata supply what flags would (the servers' RPC addresses, the task
//! IP to advertise, the task ID as node name), and the agent logs in with the client auth
//! method before it joins, keeping the token (0600) in `bootstrapDir/agent-token`.

use std::time::Duration;

use anyhow::Context;
use berth_ecs::metadata::MetadataClient;
use berth_ecs::{TaskConfig, TaskMetadata};

use super::settings::Layer;

pub struct EcsTask {
    pub cfg: TaskConfig,
    pub task: TaskMetadata,
}

/// The ECS task this agent runs in, if it runs in one.
pub async fn detect(env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<EcsTask>> {
    if env(berth_ecs::CONFIG_ENV).is_none() {
        return Ok(None);
    }
    let cfg = berth_ecs::start(env).map_err(|e| crate::Usage(e.to_string()))?;
    let meta = berth_ecs::metadata::endpoint(env).map(MetadataClient::new)?;
    let task = meta.task_with_retry(Duration::from_secs(10)).await?;
    anyhow::ensure!(
        !task.task_arn.is_empty(),
        "the task metadata has no TaskARN"
    );
    Ok(Some(EcsTask { cfg, task }))
}

/// The settings an ECS task implies; the environment, config files and flags go over them.
pub fn layer(t: &EcsTask) -> Layer {
    Layer {
        retry_join: Some(t.cfg.rpc_addrs()),
        advertise_addr: t.task.task_ip().map(|ip| ip.to_string()),
        node_name: Some(t.task.task_id().to_string()),
        ca_file: t
            .cfg
            .servers
            .rpc
            .tls
            .then(|| t.cfg.servers.rpc.ca_cert_file.clone())
            .flatten(),
        log_level: Some(t.cfg.log_level.clone()),
        ..Layer::default()
    }
}

/// The node's meta in a task: the ACL controller removes the nodes of tasks that are gone by
/// it, as it removes their services (same keys as the services' meta).
pub fn node_meta(t: &EcsTask) -> std::collections::BTreeMap<String, String> {
    [
        ("task-id".to_string(), t.task.task_id().to_string()),
        ("cluster".to_string(), t.task.cluster_arn()),
    ]
    .into()
}

/// Logs in with the client auth method; the token is written to `bootstrapDir`.
pub async fn login(t: &EcsTask) -> anyhow::Result<String> {
    let servers = berth_ecs::servers::ServersHttp::new(&t.cfg)?;
    let tok = berth_ecs::login::login(
        &servers,
        &t.cfg.login.client_method,
        &berth_ecs::login::iam_options(&t.cfg, &t.task),
        &berth_ecs::login::login_meta(&t.cfg, &t.task),
        berth_ecs::login::Patience::default(),
    )
    .await?;
    std::fs::create_dir_all(&t.cfg.bootstrap_dir).with_context(|| {
        format!(
            "cannot create bootstrapDir {}",
            t.cfg.bootstrap_dir.display()
        )
    })?;
    let path = t.cfg.token_file(berth_ecs::AGENT_TOKEN_FILE);
    crate::login::write_secret_file(&path, &tok.secret_id)?;
    tracing::info!(accessor = %tok.accessor_id, method = %t.cfg.login.client_method, "logged in");
    Ok(tok.secret_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_supplies_servers_address_and_node_name() {
        let cfg = TaskConfig::parse(
            r#"{"servers": {"hosts": ["10.0.0.9", "10.0.0.10:9300"], "rpc": {"tls": true, "caCertFile": "/berth/ca.pem"}}}"#,
        )
        .unwrap();
        let task: TaskMetadata = serde_json::from_value(serde_json::json!({
            "TaskARN": "arn:aws:ecs:us-east-1:1:task/c/abc",
            "Containers": [{"Networks": [{"IPv4Addresses": ["10.1.2.3"]}]}]
        }))
        .unwrap();
        let t = EcsTask { cfg, task };
        let meta = node_meta(&t);
        assert_eq!(meta["task-id"], "abc");
        assert_eq!(meta["cluster"], "arn:aws:ecs:us-east-1:1:cluster/c");
        let l = layer(&t);
        assert_eq!(l.retry_join.unwrap(), ["10.0.0.9:8300", "10.0.0.10:9300"]);
        assert_eq!(l.advertise_addr.as_deref(), Some("10.1.2.3"));
        assert_eq!(l.node_name.as_deref(), Some("abc"));
        assert_eq!(
            l.ca_file.unwrap(),
            std::path::PathBuf::from("/berth/ca.pem")
        );
    }
}
