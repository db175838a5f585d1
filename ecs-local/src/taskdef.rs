//! Task definitions in the JSON shape `aws ecs register-task-definition --cli-input-json`
//! takes. Fields berth-ecs-local has no use for (logConfiguration, portMappings, ...) are
//! accepted and ignored, as ECS would still take the file; a known field of the wrong type
//! is an error naming its path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TaskDefError {
    #[error("not valid JSON: {0}")]
    Syntax(String),
    #[error("{path}: {reason}")]
    Field { path: String, reason: String },
    #[error("containerDefinitions is empty")]
    NoContainers,
    #[error("container name {0:?} is not valid (1-255 letters, digits, '-' or '_')")]
    BadName(String),
    #[error("container {0:?} is defined twice")]
    DuplicateContainer(String),
    #[error("no container is essential: a task needs at least one")]
    NoEssential,
    #[error("networkMode {0:?} is not supported: berth-ecs-local runs awsvpc tasks only")]
    NetworkMode(String),
    #[error("container {0:?} has neither entryPoint nor command (there is no image to supply one)")]
    NoCommand(String),
    #[error("container {container:?}: command {program:?} not found on PATH")]
    CommandNotFound { container: String, program: String },
    #[error("container {container:?} dependsOn unknown container {dependency:?}")]
    UnknownDependency {
        container: String,
        dependency: String,
    },
    #[error("container {0:?} dependsOn itself")]
    DependsOnSelf(String),
    #[error(
        "container {container:?} dependsOn essential container {dependency:?} with condition {condition}: only non-essential containers can be COMPLETE or SUCCESS dependencies"
    )]
    EssentialCompletion {
        container: String,
        dependency: String,
        condition: Condition,
    },
    #[error(
        "container {container:?} dependsOn {dependency:?} HEALTHY but {dependency:?} has no healthCheck"
    )]
    HealthyWithoutCheck {
        container: String,
        dependency: String,
    },
    #[error("dependsOn has a cycle through container {0:?}")]
    Cycle(String),
    #[error("container {container:?} mounts unknown volume {volume:?}")]
    UnknownVolume { container: String, volume: String },
    #[error("container {container:?}: containerPath {path:?} must be absolute")]
    RelativeMount { container: String, path: String },
    #[error("volume {0:?} is defined twice")]
    DuplicateVolume(String),
    #[error("container {container:?}: healthCheck.command {reason}")]
    BadHealthCheck { container: String, reason: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    pub family: String,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub network_mode: Option<String>,
    #[serde(default)]
    pub requires_compatibilities: Vec<String>,
    pub cpu: Option<Amount>,
    pub memory: Option<Amount>,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// The CLI's JSON has task `cpu`/`memory` as strings ("256", "1 vCPU", "2 GB"); numbers are
/// accepted too.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Amount {
    Number(u64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDefinition {
    pub name: String,
    #[serde(default)]
    pub image: String,
    pub essential: Option<bool>,
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
    pub working_directory: Option<String>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    pub health_check: Option<HealthCheck>,
    pub stop_timeout: Option<u64>,
    pub cpu: Option<u64>,
    pub memory: Option<u64>,
    pub memory_reservation: Option<u64>,
    #[serde(default)]
    pub docker_labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KeyValue {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub source_volume: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub container_name: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Condition {
    Start,
    Complete,
    Success,
    Healthy,
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Condition::Start => "START",
            Condition::Complete => "COMPLETE",
            Condition::Success => "SUCCESS",
            Condition::Healthy => "HEALTHY",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub command: Vec<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub retries: Option<u32>,
    pub start_period: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub host: Option<HostVolume>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostVolume {
    pub source_path: Option<String>,
}

impl ContainerDefinition {
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// `entryPoint` followed by `command`, as Docker joins them.
    pub fn argv(&self) -> Vec<String> {
        let mut v = self.entry_point.clone().unwrap_or_default();
        v.extend(self.command.clone().unwrap_or_default());
        v
    }

    /// The PATH the container's first word is looked up on.
    pub fn path_env(&self) -> Option<&str> {
        self.environment
            .iter()
            .rev()
            .find(|kv| kv.name == "PATH")
            .map(|kv| kv.value.as_str())
    }
}

impl HealthCheck {
    /// The probe's argv: `CMD` runs its words, `CMD-SHELL` its string under `/bin/sh -c`.
    pub fn argv(&self) -> Result<Vec<String>, String> {
        match self.command.split_first() {
            Some((k, rest)) if k == "CMD" && !rest.is_empty() => Ok(rest.to_vec()),
            Some((k, rest)) if k == "CMD-SHELL" && rest.len() == 1 => {
                Ok(vec!["/bin/sh".into(), "-c".into(), rest[0].clone()])
            }
            Some((k, _)) if k == "CMD-SHELL" => {
                Err("CMD-SHELL takes exactly one string".to_string())
            }
            Some((k, _)) if k == "CMD" => Err("CMD needs a program".to_string()),
            _ => Err("must start with \"CMD\" or \"CMD-SHELL\"".to_string()),
        }
    }
}

impl TaskDefinition {
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// Fargate's task limits: vCPUs (1024 units each) and MiB.
    pub fn limits(&self) -> (f64, u64) {
        let cpu = self.cpu.as_ref().and_then(|a| a.units(1024)).unwrap_or(0);
        let mem = self
            .memory
            .as_ref()
            .and_then(|a| a.units(1024))
            .unwrap_or(0);
        (cpu as f64 / 1024.0, mem)
    }
}

impl Amount {
    /// Parses "256", 256, "1 vCPU", "2 GB" into units (cpu units or MiB); `per` is the
    /// number of units in one vCPU / GB.
    pub fn units(&self, per: u64) -> Option<u64> {
        match self {
            Amount::Number(n) => Some(*n),
            Amount::Text(s) => {
                let s = s.trim();
                if let Ok(n) = s.parse::<u64>() {
                    return Some(n);
                }
                let lower = s.to_ascii_lowercase();
                let num = lower
                    .trim_end_matches("vcpu")
                    .trim_end_matches("gb")
                    .trim()
                    .parse::<f64>()
                    .ok()?;
                Some((num * per as f64) as u64)
            }
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(s) => s.clone(),
        }
    }
}

/// Parses and checks everything that does not depend on the machine (see
/// [`check_programs`] for that).
pub fn parse(text: &str) -> Result<TaskDefinition, TaskDefError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let def: TaskDefinition = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        if inner.is_syntax() || inner.is_eof() {
            TaskDefError::Syntax(inner.to_string())
        } else {
            let path = e.path().to_string();
            TaskDefError::Field {
                path: if path == "." {
                    "task definition".to_string()
                } else {
                    path
                },
                reason: inner.to_string(),
            }
        }
    })?;
    validate(&def)?;
    Ok(def)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn validate(def: &TaskDefinition) -> Result<(), TaskDefError> {
    if let Some(m) = &def.network_mode
        && m != "awsvpc"
    {
        return Err(TaskDefError::NetworkMode(m.clone()));
    }
    if def.container_definitions.is_empty() {
        return Err(TaskDefError::NoContainers);
    }
    let mut volumes = HashSet::new();
    for v in &def.volumes {
        if !volumes.insert(v.name.as_str()) {
            return Err(TaskDefError::DuplicateVolume(v.name.clone()));
        }
    }
    let mut names = HashSet::new();
    for c in &def.container_definitions {
        if !valid_name(&c.name) {
            return Err(TaskDefError::BadName(c.name.clone()));
        }
        if !names.insert(c.name.as_str()) {
            return Err(TaskDefError::DuplicateContainer(c.name.clone()));
        }
    }
    if !def.container_definitions.iter().any(|c| c.is_essential()) {
        return Err(TaskDefError::NoEssential);
    }
    for c in &def.container_definitions {
        if c.argv().is_empty() {
            return Err(TaskDefError::NoCommand(c.name.clone()));
        }
        for m in &c.mount_points {
            if !volumes.contains(m.source_volume.as_str()) {
                return Err(TaskDefError::UnknownVolume {
                    container: c.name.clone(),
                    volume: m.source_volume.clone(),
                });
            }
            if !m.container_path.starts_with('/') {
                return Err(TaskDefError::RelativeMount {
                    container: c.name.clone(),
                    path: m.container_path.clone(),
                });
            }
        }
        if let Some(h) = &c.health_check {
            h.argv().map_err(|reason| TaskDefError::BadHealthCheck {
                container: c.name.clone(),
                reason,
            })?;
        }
        for d in &c.depends_on {
            if d.container_name == c.name {
                return Err(TaskDefError::DependsOnSelf(c.name.clone()));
            }
            let Some(dep) = def.container(&d.container_name) else {
                return Err(TaskDefError::UnknownDependency {
                    container: c.name.clone(),
                    dependency: d.container_name.clone(),
                });
            };
            match d.condition {
                Condition::Complete | Condition::Success if dep.is_essential() => {
                    return Err(TaskDefError::EssentialCompletion {
                        container: c.name.clone(),
                        dependency: d.container_name.clone(),
                        condition: d.condition,
                    });
                }
                Condition::Healthy if dep.health_check.is_none() => {
                    return Err(TaskDefError::HealthyWithoutCheck {
                        container: c.name.clone(),
                        dependency: d.container_name.clone(),
                    });
                }
                _ => {}
            }
        }
    }
    check_cycles(def)
}

fn check_cycles(def: &TaskDefinition) -> Result<(), TaskDefError> {
    let deps: HashMap<&str, Vec<&str>> = def
        .container_definitions
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.depends_on
                    .iter()
                    .map(|d| d.container_name.as_str())
                    .collect(),
            )
        })
        .collect();
    // 0 unvisited, 1 on the current path, 2 done.
    let mut mark: HashMap<&str, u8> = HashMap::new();
    fn visit<'a>(
        n: &'a str,
        deps: &HashMap<&'a str, Vec<&'a str>>,
        mark: &mut HashMap<&'a str, u8>,
    ) -> Result<(), TaskDefError> {
        match mark.get(n) {
            Some(1) => return Err(TaskDefError::Cycle(n.to_string())),
            Some(2) => return Ok(()),
            _ => {}
        }
        mark.insert(n, 1);
        for d in deps.get(n).into_iter().flatten() {
            visit(d, deps, mark)?;
        }
        mark.insert(n, 2);
        Ok(())
    }
    for c in &def.container_definitions {
        visit(&c.name, &deps, &mut mark)?;
    }
    Ok(())
}

/// Looks `program` up the way execvp would, on `path` (a PATH value).
pub fn resolve_program(program: &str, path: &str, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = cwd.join(program);
        return p.exists().then_some(p);
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every container's first word must exist: on PATH (the container's PATH if its
/// environment sets one, else `daemon_path`), or, for a path, on the host unless it lies
/// under one of the container's mount points (a volume another container fills, as
/// mesh-init fills `/berth`).
pub fn check_programs(def: &TaskDefinition, daemon_path: &str) -> Result<(), TaskDefError> {
    for c in &def.container_definitions {
        let argv = c.argv();
        let Some(program) = argv.first() else {
            return Err(TaskDefError::NoCommand(c.name.clone()));
        };
        let cwd = Path::new(c.working_directory.as_deref().unwrap_or("/"));
        let path = c.path_env().unwrap_or(daemon_path);
        let under_mount = program.starts_with('/')
            && c.mount_points
                .iter()
                .any(|m| Path::new(program).starts_with(&m.container_path));
        if !under_mount && resolve_program(program, path, cwd).is_none() {
            return Err(TaskDefError::CommandNotFound {
                container: c.name.clone(),
                program: program.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(containers: &str) -> String {
        format!(r#"{{"family": "f", "containerDefinitions": {containers}}}"#)
    }

    #[test]
    fn parses_a_cli_input_json_file_and_ignores_fields_it_does_not_use() {
        let d = parse(
            r#"{"family": "web", "networkMode": "awsvpc", "cpu": "256", "memory": "1 GB",
            "requiresCompatibilities": ["FARGATE"], "taskRoleArn": "arn:aws:iam::1:role/r",
            "volumes": [{"name": "data"}],
            "containerDefinitions": [{"name": "app", "image": "x", "command": ["sleep", "1"],
              "logConfiguration": {"logDriver": "awslogs"}, "portMappings": [{"containerPort": 80}],
              "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": true}],
              "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 1}}]}"#,
        )
        .unwrap();
        assert_eq!(d.limits(), (0.25, 1024));
        let c = &d.container_definitions[0];
        assert!(c.is_essential());
        assert!(c.mount_points[0].read_only);
        assert_eq!(
            c.health_check.as_ref().unwrap().argv().unwrap(),
            ["/bin/sh", "-c", "true"]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(parse("{nope"), Err(TaskDefError::Syntax(_))));
        let e = parse(&def(
            r#"[{"name": "a", "essential": "yes", "command": ["x"]}]"#,
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("containerDefinitions[0].essential: invalid type"),
            "{e}"
        );
        let e = parse(r#"{"containerDefinitions": []}"#).unwrap_err();
        assert!(e.to_string().contains("family"), "{e}");
        assert_eq!(
            parse(&def(
                r#"[{"name": "a", "command": ["x"], "dependsOn": [{"containerName": "b", "condition": "START"}]}]"#
            ))
            .unwrap_err(),
            TaskDefError::UnknownDependency {
                container: "a".into(),
                dependency: "b".into()
            }
        );
        let e = parse(&def(
            r#"[{"name": "a", "command": ["x"], "dependsOn": [{"containerName": "b", "condition": "LATER"}]}, {"name": "b", "command": ["x"]}]"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("condition"), "{e}");
        assert_eq!(parse(&def("[]")).unwrap_err(), TaskDefError::NoContainers);
        assert_eq!(
            parse(&def(r#"[{"name": "a"}]"#)).unwrap_err(),
            TaskDefError::NoCommand("a".into())
        );
    }

    #[test]
    fn rejects_what_ecs_rejects() {
        let essential_success = def(
            r#"[{"name": "a", "command": ["x"], "dependsOn": [{"containerName": "b", "condition": "SUCCESS"}]},
                {"name": "b", "command": ["x"]}]"#,
        );
        assert!(matches!(
            parse(&essential_success),
            Err(TaskDefError::EssentialCompletion { .. })
        ));
        let healthy_without_check = def(
            r#"[{"name": "a", "command": ["x"], "dependsOn": [{"containerName": "b", "condition": "HEALTHY"}]},
                {"name": "b", "command": ["x"]}]"#,
        );
        assert!(matches!(
            parse(&healthy_without_check),
            Err(TaskDefError::HealthyWithoutCheck { .. })
        ));
        let cycle = def(
            r#"[{"name": "a", "command": ["x"], "dependsOn": [{"containerName": "b", "condition": "START"}]},
                {"name": "b", "command": ["x"], "dependsOn": [{"containerName": "a", "condition": "START"}]}]"#,
        );
        assert!(matches!(parse(&cycle), Err(TaskDefError::Cycle(_))));
        let none_essential = def(r#"[{"name": "a", "command": ["x"], "essential": false}]"#);
        assert_eq!(
            parse(&none_essential).unwrap_err(),
            TaskDefError::NoEssential
        );
        let bridge = r#"{"family": "f", "networkMode": "bridge", "containerDefinitions": [{"name": "a", "command": ["x"]}]}"#;
        assert!(matches!(parse(bridge), Err(TaskDefError::NetworkMode(_))));
        let unknown_volume = def(
            r#"[{"name": "a", "command": ["x"], "mountPoints": [{"sourceVolume": "v", "containerPath": "/v"}]}]"#,
        );
        assert!(matches!(
            parse(&unknown_volume),
            Err(TaskDefError::UnknownVolume { .. })
        ));
        let bad_check =
            def(r#"[{"name": "a", "command": ["x"], "healthCheck": {"command": ["true"]}}]"#);
        assert!(matches!(
            parse(&bad_check),
            Err(TaskDefError::BadHealthCheck { .. })
        ));
    }

    #[test]
    fn programs_are_found_on_the_containers_path_or_under_its_mounts() {
        let d = parse(&def(
            r#"[{"name": "a", "entryPoint": ["sh", "-c"], "command": ["true"]},
                {"name": "b", "command": ["/berth/tool"], "mountPoints": [{"sourceVolume": "v", "containerPath": "/berth"}]}]"#,
        )
        .replace(r#""containerDefinitions""#, r#""volumes": [{"name": "v"}], "containerDefinitions""#))
        .unwrap();
        check_programs(&d, "/usr/bin:/bin").unwrap();
        assert!(matches!(
            check_programs(&d, "/nonexistent"),
            Err(TaskDefError::CommandNotFound { .. })
        ));
        let missing = parse(&def(
            r#"[{"name": "a", "command": ["no-such-program-here"]}]"#,
        ))
        .unwrap();
        assert_eq!(
            check_programs(&missing, "/usr/bin:/bin").unwrap_err(),
            TaskDefError::CommandNotFound {
                container: "a".into(),
                program: "no-such-program-here".into()
            }
        );
        let with_path = parse(&def(
            r#"[{"name": "a", "command": ["sh"], "environment": [{"name": "PATH", "value": "/nonexistent"}]}]"#,
        ))
        .unwrap();
        assert!(check_programs(&with_path, "/usr/bin:/bin").is_err());
    }
}
