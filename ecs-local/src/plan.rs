//! What `run` fixes about each container before anything starts: its IDs, environment,
//! resolved program, volumes, health check, dependencies and limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use berth_ecs::metadata::Limits;

use crate::container::{Mount, Spec};
use crate::health::HealthConfig;
use crate::net::{self, TaskNet};
use crate::task::{ContainerPlan, Ctx};
use crate::taskdef::{self, ContainerDefinition, TaskDefinition};

/// Variables of the daemon's environment a container must not inherit: the daemon's own
/// credentials and endpoints that belong to another task.
const STRIPPED_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
    "BERTH_ECS_LOCAL_DIR",
];

pub fn container_base_env() -> Vec<(String, String)> {
    without_credentials(std::env::vars())
}

fn without_credentials(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter(|(k, _)| !STRIPPED_ENV.contains(&k.as_str()))
        .collect()
}

pub struct TaskParts {
    pub id: String,
    pub arn: String,
    pub cluster_arn: String,
    pub revision: String,
    pub registered: bool,
    pub net: TaskNet,
    pub def: TaskDefinition,
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    env.retain(|(n, _)| n != k);
    env.push((k.to_string(), v.to_string()));
}

/// A container's environment: the daemon's (without credentials), the region, the task
/// definition's `environment`, then what the ECS agent sets, which a task cannot override.
pub fn container_env(
    base: &[(String, String)],
    region: &str,
    c: &ContainerDefinition,
    docker_id: &str,
    creds_id: Option<&str>,
) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    env.retain(|(k, _)| k != "OLDPWD");
    set(&mut env, "AWS_REGION", region);
    set(&mut env, "AWS_DEFAULT_REGION", region);
    set(
        &mut env,
        "PWD",
        c.working_directory.as_deref().unwrap_or("/"),
    );
    for kv in &c.environment {
        set(&mut env, &kv.name, &kv.value);
    }
    let meta = format!("http://{}", net::ENDPOINT_IP);
    set(
        &mut env,
        "ECS_CONTAINER_METADATA_URI_V4",
        &format!("{meta}/v4/{docker_id}"),
    );
    set(
        &mut env,
        "ECS_CONTAINER_METADATA_URI",
        &format!("{meta}/v3/{docker_id}"),
    );
    set(&mut env, "AWS_EXECUTION_ENV", "AWS_ECS_FARGATE");
    if let Some(id) = creds_id {
        set(
            &mut env,
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            &format!("/v2/credentials/{id}"),
        );
    }
    env
}

/// Fixes everything about the containers that `run` decides: IDs, environment, the
/// resolved program, volumes and limits.
pub fn plans(
    ctx: &Ctx,
    p: &TaskParts,
    dir: &Path,
    creds_id: Option<&str>,
) -> anyhow::Result<Vec<ContainerPlan>> {
    let def = &p.def;
    let mut volumes = HashMap::new();
    for v in &def.volumes {
        let path = match v.host.as_ref().and_then(|h| h.source_path.as_ref()) {
            Some(sp) => PathBuf::from(sp),
            None => dir.join("volumes").join(&v.name),
        };
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating volume {} at {}", v.name, path.display()))?;
        volumes.insert(v.name.as_str(), path);
    }
    let mut out = Vec::new();
    for c in &def.container_definitions {
        let docker_id = format!("{}-{}", p.id, uuid::Uuid::new_v4().as_u128() as u32);
        let cwd = PathBuf::from(c.working_directory.as_deref().unwrap_or("/"));
        let env = container_env(&ctx.base_env, &ctx.region, c, &docker_id, creds_id);
        let mut argv = c.argv();
        if let Some(first) = argv.first_mut()
            && !first.contains('/')
        {
            let path = c.path_env().unwrap_or(&ctx.daemon_path);
            let found = taskdef::resolve_program(first, path, &cwd).with_context(|| {
                format!(
                    "container {:?}: command {first:?} not found on PATH",
                    c.name
                )
            })?;
            *first = found.display().to_string();
        }
        let mounts = c
            .mount_points
            .iter()
            .filter_map(|m| {
                Some(Mount {
                    source: volumes.get(m.source_volume.as_str())?.clone(),
                    target: PathBuf::from(&m.container_path),
                    read_only: m.read_only,
                })
            })
            .collect();
        let health = match &c.health_check {
            Some(h) => Some((
                HealthConfig::from(h),
                h.argv()
                    .map_err(|e| anyhow::anyhow!("container {:?}: healthCheck {e}", c.name))?,
            )),
            None => None,
        };
        let depends_on = c
            .depends_on
            .iter()
            .filter_map(|d| {
                let i = def
                    .container_definitions
                    .iter()
                    .position(|o| o.name == d.container_name)?;
                Some((i, d.condition))
            })
            .collect();
        out.push(ContainerPlan {
            name: c.name.clone(),
            container_arn: format!(
                "arn:aws:ecs:{}:{}:container/{}/{}/{}",
                ctx.region,
                ctx.account,
                p.cluster_arn.rsplit('/').next().unwrap_or_default(),
                p.id,
                uuid::Uuid::new_v4()
            ),
            docker_id,
            image: c.image.clone(),
            essential: c.is_essential(),
            spec: Spec {
                argv,
                env,
                cwd,
                mounts,
            },
            log: dir.join(format!("{}.log", c.name)),
            stop_timeout: Duration::from_secs(c.stop_timeout.unwrap_or(30))
                .min(ctx.max_stop_timeout),
            health,
            depends_on,
            labels: c.docker_labels.clone(),
            limits: Limits {
                cpu: c.cpu.unwrap_or(0) as f64,
                memory: c.memory.or(c.memory_reservation).unwrap_or(0),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(env: &str) -> ContainerDefinition {
        let text = format!(
            r#"{{"family": "f", "containerDefinitions": [{{"name": "a", "command": ["x"], "environment": {env}}}]}}"#
        );
        taskdef::parse(&text)
            .unwrap()
            .container_definitions
            .remove(0)
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn containers_get_the_ecs_variables_and_never_the_daemons_credentials() {
        let daemon = [
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "t"),
            ("AWS_PROFILE", "p"),
            ("PATH", "/bin"),
            ("AWS_REGION", "eu-west-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let daemon = without_credentials(daemon);
        let c = def(
            r#"[{"name": "FOO", "value": "bar"}, {"name": "ECS_CONTAINER_METADATA_URI_V4", "value": "x"}]"#,
        );
        let env = container_env(&daemon, "us-east-1", &c, "tid-1", Some("u-1"));
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            assert_eq!(get(&env, k), None, "{k}");
        }
        assert_eq!(get(&env, "PATH"), Some("/bin"));
        assert_eq!(get(&env, "AWS_REGION"), Some("us-east-1"));
        assert_eq!(get(&env, "AWS_DEFAULT_REGION"), Some("us-east-1"));
        assert_eq!(get(&env, "FOO"), Some("bar"));
        assert_eq!(get(&env, "AWS_EXECUTION_ENV"), Some("AWS_ECS_FARGATE"));
        assert_eq!(
            get(&env, "ECS_CONTAINER_METADATA_URI_V4"),
            Some("http://169.254.170.2/v4/tid-1")
        );
        assert_eq!(
            get(&env, "ECS_CONTAINER_METADATA_URI"),
            Some("http://169.254.170.2/v3/tid-1")
        );
        assert_eq!(
            get(&env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            Some("/v2/credentials/u-1")
        );
        assert_eq!(env.iter().filter(|(k, _)| k == "AWS_REGION").count(), 1);
        let no_role = container_env(&daemon, "us-east-1", &c, "tid-1", None);
        assert_eq!(
            get(&no_role, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            None
        );
    }
}
