//! Registering local tasks with an ECS API (moto in tests): the cluster, the task
//! definition and a RunTask whose ARN the local task then carries.

use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Compatibility, ContainerDefinition, KeyValuePair, LaunchType,
    NetworkConfiguration, NetworkMode, Tag,
};

use crate::taskdef::TaskDefinition;

#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    #[error("ECS {call}: {reason}")]
    Call { call: &'static str, reason: String },
    #[error("ECS RunTask started no task: {0}")]
    NoTask(String),
}

fn call_err<E: std::error::Error>(call: &'static str) -> impl Fn(E) -> EcsError {
    move |e| EcsError::Call {
        call,
        reason: crate::sdk_error::chain(&e),
    }
}

#[derive(Clone)]
pub struct Ecs {
    client: aws_sdk_ecs::Client,
    subnets: Vec<String>,
    security_groups: Vec<String>,
}

pub struct Registered {
    pub task_arn: String,
    pub cluster_arn: String,
    pub revision: String,
}

impl Ecs {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        endpoint: &str,
        subnets: Vec<String>,
        security_groups: Vec<String>,
    ) -> Ecs {
        let conf = aws_sdk_ecs::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build();
        Ecs {
            client: aws_sdk_ecs::Client::from_conf(conf),
            subnets,
            security_groups,
        }
    }

    pub async fn register_and_run(
        &self,
        cluster: &str,
        def: &TaskDefinition,
    ) -> Result<Registered, EcsError> {
        let found = self
            .client
            .describe_clusters()
            .clusters(cluster)
            .send()
            .await
            .map_err(call_err("DescribeClusters"))?;
        let active = found
            .clusters()
            .iter()
            .find(|c| c.status() == Some("ACTIVE"))
            .and_then(|c| c.cluster_arn().map(str::to_string));
        let cluster_arn = match active {
            Some(a) => a,
            None => self
                .client
                .create_cluster()
                .cluster_name(cluster)
                .send()
                .await
                .map_err(call_err("CreateCluster"))?
                .cluster
                .and_then(|c| c.cluster_arn)
                .unwrap_or_default(),
        };
        // moto (5.2.5) fails RunTask with a 500 when a container has neither memory nor
        // memoryReservation, which Fargate allows: such containers get an even share.
        let (_, task_memory) = def.limits();
        let share = (task_memory / def.container_definitions.len().max(1) as u64).max(6) as i32;
        let containers = def
            .container_definitions
            .iter()
            .map(|c| {
                let reservation = match (c.memory, c.memory_reservation) {
                    (None, None) => Some(share),
                    (_, r) => r.map(|r| r as i32),
                };
                ContainerDefinition::builder()
                    .set_cpu(c.cpu.map(|v| v as i32))
                    .set_memory(c.memory.map(|v| v as i32))
                    .set_memory_reservation(reservation)
                    .name(&c.name)
                    .image(if c.image.is_empty() {
                        "local"
                    } else {
                        &c.image
                    })
                    .essential(c.is_essential())
                    .set_command(c.command.clone())
                    .set_entry_point(c.entry_point.clone())
                    .set_environment(Some(
                        c.environment
                            .iter()
                            .map(|kv| {
                                KeyValuePair::builder()
                                    .name(&kv.name)
                                    .value(&kv.value)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .collect();
        let compat = if def.requires_compatibilities.is_empty() {
            vec![Compatibility::Fargate]
        } else {
            def.requires_compatibilities
                .iter()
                .map(|c| Compatibility::from(c.as_str()))
                .collect()
        };
        let td = self
            .client
            .register_task_definition()
            .family(&def.family)
            .network_mode(NetworkMode::Awsvpc)
            .set_requires_compatibilities(Some(compat))
            .set_cpu(def.cpu.as_ref().map(|a| a.as_text()))
            .set_memory(def.memory.as_ref().map(|a| a.as_text()))
            .set_task_role_arn(def.task_role_arn.clone())
            .set_execution_role_arn(def.execution_role_arn.clone())
            .set_container_definitions(Some(containers))
            .send()
            .await
            .map_err(call_err("RegisterTaskDefinition"))?
            .task_definition
            .ok_or_else(|| EcsError::NoTask("RegisterTaskDefinition returned nothing".into()))?;
        let td_arn = td.task_definition_arn().unwrap_or(&def.family).to_string();
        let vpc = AwsVpcConfiguration::builder()
            .set_subnets(Some(self.subnets.clone()))
            .set_security_groups(Some(self.security_groups.clone()))
            .build()
            .map_err(call_err("RunTask"))?;
        let tags: Vec<Tag> = def
            .tags
            .iter()
            .map(|t| Tag::builder().key(&t.key).value(&t.value).build())
            .collect();
        let run = self
            .client
            .run_task()
            .cluster(&cluster_arn)
            .task_definition(&td_arn)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            )
            .set_tags((!tags.is_empty()).then_some(tags))
            .send()
            .await
            .map_err(call_err("RunTask"))?;
        let task_arn = run
            .tasks()
            .first()
            .and_then(|t| t.task_arn())
            .map(str::to_string)
            .ok_or_else(|| {
                EcsError::NoTask(
                    run.failures()
                        .iter()
                        .map(|f| format!("{:?}", f.reason()))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })?;
        Ok(Registered {
            task_arn,
            cluster_arn,
            revision: td.revision().to_string(),
        })
    }

    pub async fn stop_task(&self, cluster_arn: &str, task_arn: &str, reason: &str) {
        let r = self
            .client
            .stop_task()
            .cluster(cluster_arn)
            .task(task_arn)
            .reason(reason)
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %crate::sdk_error::chain(&e), task = task_arn, "ECS StopTask");
        }
    }
}
