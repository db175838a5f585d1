//! The ECS task metadata endpoint v4: `${ECS_CONTAINER_METADATA_URI_V4}` is the container's
//! own document, `${...}/task` the task's, in the JSON shapes AWS documents. Reading is
//! lenient (fields AWS adds later are ignored); `berth-ecs-local` serves the same types.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TaskMetadata {
    /// A cluster ARN on AWS Fargate; only the name on some EC2 agents.
    pub cluster: String,
    #[serde(rename = "TaskARN")]
    pub task_arn: String,
    pub family: String,
    pub revision: String,
    pub desired_status: String,
    pub known_status: String,
    pub containers: Vec<ContainerMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub launch_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerMetadata {
    pub docker_id: String,
    pub name: String,
    pub docker_name: String,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub desired_status: String,
    /// PENDING, RUNNING or STOPPED.
    pub known_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `NORMAL` for containers of the task definition.
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "ContainerARN", skip_serializing_if = "String::is_empty")]
    pub container_arn: String,
    /// Present only for containers with a health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    pub networks: Vec<Network>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Limits {
    #[serde(rename = "CPU")]
    pub cpu: f64,
    pub memory: u64,
}

/// The container's health as the agent sees it (field names are lower camel case in ECS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Health {
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Network {
    /// `awsvpc` for every task Berth runs in.
    pub network_mode: String,
    #[serde(rename = "IPv4Addresses")]
    pub ipv4_addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_index: Option<u32>,
    #[serde(rename = "MACAddress", skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
    #[serde(
        rename = "IPv4SubnetCIDRBlock",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_subnet_cidr_block: String,
    #[serde(rename = "PrivateDNSName", skip_serializing_if = "String::is_empty")]
    pub private_dns_name: String,
    #[serde(
        rename = "SubnetGatewayIpv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub subnet_gateway_ipv4_address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(
        "{} is not set: this must run in an ECS task (metadata endpoint v4)",
        crate::METADATA_ENV
    )]
    NotSet,
    #[error("cannot reach the ECS task metadata endpoint {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the ECS task metadata endpoint {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error(
        "the ECS task metadata endpoint {url} sent a document that is not task metadata: {reason}"
    )]
    Malformed { url: String, reason: String },
}

impl TaskMetadata {
    /// The task ID: the last segment of the task ARN.
    pub fn task_id(&self) -> &str {
        task_id_of(&self.task_arn)
    }

    /// The cluster's ARN: as given when it is one, else built from the task ARN
    /// (`arn:aws:ecs:region:account:task/cluster/id`), else the name.
    pub fn cluster_arn(&self) -> String {
        cluster_arn_of(&self.cluster, &self.task_arn)
    }

    pub fn container(&self, name: &str) -> Option<&ContainerMetadata> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The application's containers: `NORMAL` ones not named `berth-*`.
    pub fn app_containers(&self) -> impl Iterator<Item = &ContainerMetadata> {
        self.containers
            .iter()
            .filter(|c| c.kind == "NORMAL" && !c.name.starts_with(crate::BERTH_PREFIX))
    }

    /// The task's IP: the first IPv4 address of a container network (awsvpc gives every
    /// container the task ENI's address).
    pub fn task_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.containers
            .iter()
            .flat_map(|c| &c.networks)
            .filter_map(|n| n.ipv4_addresses.first())
            .find_map(|a| a.parse().ok())
    }

    /// The region, from the task ARN.
    pub fn region(&self) -> Option<&str> {
        arn_part(&self.task_arn, 3)
    }

    pub fn account(&self) -> Option<&str> {
        arn_part(&self.task_arn, 4)
    }

    pub fn partition(&self) -> Option<&str> {
        arn_part(&self.task_arn, 1)
    }
}

fn arn_part(arn: &str, i: usize) -> Option<&str> {
    arn.strip_prefix("arn:")?;
    arn.split(':').nth(i).filter(|s| !s.is_empty())
}

pub fn task_id_of(task_arn: &str) -> &str {
    task_arn.rsplit('/').next().unwrap_or(task_arn)
}

pub fn cluster_arn_of(cluster: &str, task_arn: &str) -> String {
    if cluster.starts_with("arn:") {
        return cluster.to_string();
    }
    // arn:aws:ecs:us-east-1:123456789012:task/my-cluster/abc
    let mut parts = task_arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(res)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return cluster.to_string();
    };
    let name = match res.strip_prefix("task/").and_then(|r| r.split_once('/')) {
        Some((c, _)) if cluster.is_empty() => c,
        _ if !cluster.is_empty() => cluster,
        // Old-style ARN (task/<id>) and no name: nothing better than empty.
        _ => return cluster.to_string(),
    };
    format!("arn:{partition}:{service}:{region}:{account}:cluster/{name}")
}

/// Reads the metadata endpoint from the environment map given (pure for tests).
pub fn endpoint(env: &impl Fn(&str) -> Option<String>) -> Result<String, MetadataError> {
    env(crate::METADATA_ENV)
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().trim_end_matches('/').to_string())
        .ok_or(MetadataError::NotSet)
}

/// A client for one container's metadata endpoint.
#[derive(Clone, Debug)]
pub struct MetadataClient {
    base: String,
    http: reqwest::Client,
}

impl MetadataClient {
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            base: base.into(),
            http,
        }
    }

    /// From `ECS_CONTAINER_METADATA_URI_V4` in the process environment.
    pub fn from_env() -> Result<Self, MetadataError> {
        endpoint(&|k| std::env::var(k).ok()).map(Self::new)
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn task(&self) -> Result<TaskMetadata, MetadataError> {
        self.get(&format!("{}/task", self.base)).await
    }

    pub async fn container(&self) -> Result<ContainerMetadata, MetadataError> {
        self.get(&self.base).await
    }

    /// The task document, retried for up to `patience` (the endpoint may come up after the
    /// container starts); a malformed answer is final.
    pub async fn task_with_retry(&self, patience: Duration) -> Result<TaskMetadata, MetadataError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.task().await {
                Err(e @ (MetadataError::Unreachable { .. } | MetadataError::Status { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "task metadata not ready");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, MetadataError> {
        let r = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| MetadataError::Unreachable {
                url: url.to_string(),
                reason: crate::error_chain(&e),
            })?;
        if !r.status().is_success() {
            return Err(MetadataError::Status {
                url: url.to_string(),
                status: r.status().as_u16(),
            });
        }
        let body = r.bytes().await.map_err(|e| MetadataError::Unreachable {
            url: url.to_string(),
            reason: crate::error_chain(&e),
        })?;
        serde_json::from_slice(&body).map_err(|e| MetadataError::Malformed {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_documented_fargate_task_shape() {
        let doc = json!({
            "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
            "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
            "Family": "curltest", "Revision": "3", "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
            "Limits": {"CPU": 0.25, "Memory": 512},
            "AvailabilityZone": "us-west-2d", "LaunchType": "FARGATE", "ClockDrift": {"ClockErrorBound": 0.4},
            "Containers": [{
                "DockerId": "e9028f8d5d8e4f258373e7b93ce9a3c3-2495160603", "Name": "curl",
                "DockerName": "curl", "Image": "x", "ImageID": "sha256:y", "Labels": {"a": "b"},
                "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING", "Type": "NORMAL",
                "Health": {"status": "HEALTHY", "statusSince": "2021-02-01T00:00:00Z"},
                "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.0.108"],
                    "IPv4SubnetCIDRBlock": "10.0.0.0/24", "MACAddress": "0e:b7:c1:9d:a0:f9"}]
            }, {"Name": "~internal~ecs~pause", "Type": "CNI_PAUSE", "KnownStatus": "RUNNING"}]
        });
        let t: TaskMetadata = serde_json::from_value(doc).unwrap();
        assert_eq!(t.task_id(), "e9028f8d5d8e4f258373e7b93ce9a3c3");
        assert_eq!(
            t.cluster_arn(),
            "arn:aws:ecs:us-west-2:111122223333:cluster/default"
        );
        assert_eq!(t.task_ip(), Some([10, 0, 0, 108].into()));
        assert_eq!(t.region(), Some("us-west-2"));
        assert_eq!(t.account(), Some("111122223333"));
        assert_eq!(
            t.app_containers()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["curl"]
        );
        assert_eq!(
            t.container("curl").unwrap().health.as_ref().unwrap().status,
            "HEALTHY"
        );
        // What is served reads back the same.
        let again: TaskMetadata =
            serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn the_cluster_arn_is_derived_when_metadata_gives_a_name() {
        let arn = "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc123";
        assert_eq!(
            cluster_arn_of("prod", arn),
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod"
        );
        assert_eq!(
            cluster_arn_of("", arn),
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod"
        );
        assert_eq!(
            cluster_arn_of("arn:aws-cn:ecs:cn-north-1:1:cluster/x", arn),
            "arn:aws-cn:ecs:cn-north-1:1:cluster/x"
        );
        // An old-style task ARN has no cluster segment.
        assert_eq!(
            cluster_arn_of("c", "arn:aws:ecs:us-east-1:1:task/abc"),
            "arn:aws:ecs:us-east-1:1:cluster/c"
        );
        assert_eq!(task_id_of("arn:aws:ecs:us-east-1:1:task/abc"), "abc");
    }

    #[test]
    fn berth_containers_are_not_the_apps() {
        let c = |name: &str, kind: &str| ContainerMetadata {
            name: name.into(),
            kind: kind.into(),
            ..Default::default()
        };
        let t = TaskMetadata {
            containers: vec![
                c("berth-proxy", "NORMAL"),
                c("app", "NORMAL"),
                c("pause", "CNI_PAUSE"),
            ],
            ..Default::default()
        };
        assert_eq!(
            t.app_containers()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["app"]
        );
    }

    #[test]
    fn the_endpoint_must_be_set() {
        assert!(matches!(endpoint(&|_| None), Err(MetadataError::NotSet)));
        assert!(matches!(
            endpoint(&|_| Some(" ".into())),
            Err(MetadataError::NotSet)
        ));
        assert_eq!(
            endpoint(&|_| Some("http://x/v4/1/".into())).unwrap(),
            "http://x/v4/1"
        );
    }
}
