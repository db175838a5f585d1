//! The pieces that `berth agent` (in a task), `berth-mesh-init`, `berth-health-sync`,
//! `berth-envoy-entrypoint` and `berth-ecs-local` agree on: the task metadata v4 documents
//! (read by the first four, served by the last), the task configuration
//! `BERTH_ECS_CONFIG_JSON`, and naming (which containers are Berth's, service and check IDs).

pub mod agent;
pub mod ca;
pub mod config;
pub mod login;
pub mod metadata;
pub mod servers;

pub use config::{ConfigError, TaskConfig};
pub use metadata::{ContainerMetadata, MetadataError, TaskMetadata};

/// The variable that holds the task configuration.
pub const CONFIG_ENV: &str = "BERTH_ECS_CONFIG_JSON";
/// The variable ECS sets to the container's metadata endpoint.
pub const METADATA_ENV: &str = "ECS_CONTAINER_METADATA_URI_V4";

/// Containers whose name starts with this are Berth's; every other `NORMAL` container is
/// the application's.
pub const BERTH_PREFIX: &str = "berth-";
pub const AGENT_CONTAINER: &str = "berth-agent";
pub const MESH_INIT_CONTAINER: &str = "berth-mesh-init";
pub const PROXY_CONTAINER: &str = "berth-proxy";
pub const HEALTH_SYNC_CONTAINER: &str = "berth-health-sync";

/// Files in `bootstrapDir`.
pub const SERVICE_TOKEN_FILE: &str = "service-token";
pub const AGENT_TOKEN_FILE: &str = "agent-token";
pub const ENVOY_BOOTSTRAP_FILE: &str = "envoy-bootstrap.json";

/// Token meta keys written at login and read by the controller.
pub const META_TASK_ID: &str = "berth/task-id";
pub const META_CLUSTER: &str = "berth/cluster";

/// The service instance of one task: `<name>-<taskID>`.
pub fn service_id(name: &str, task_id: &str) -> String {
    format!("{name}-{task_id}")
}

pub fn proxy_id(service_id: &str) -> String {
    format!("{service_id}-sidecar-proxy")
}

/// The check that mirrors one container's ECS health.
pub fn check_id(service_id: &str, container: &str) -> String {
    format!("{service_id}-{container}")
}

pub use berth_api::error_chain;

/// Why a Berth container cannot start from its environment (exit 2, as a usage error).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
}

/// What every Berth container of a task does first: parse `BERTH_ECS_CONFIG_JSON` and put
/// the servers' CA (`BERTH_CA_CERT_PEM`) where that configuration says.
pub fn start(env: &impl Fn(&str) -> Option<String>) -> Result<TaskConfig, StartError> {
    let cfg = TaskConfig::from_env(env)?;
    ca::install(&cfg, env(ca::CA_ENV).as_deref())?;
    Ok(cfg)
}
