//! Logging a task in with its IAM role: a fresh signed `GetCallerIdentity` on every attempt
//! (a signature is accepted once), retried while the servers cannot answer, and a token
//! that is returned only once the servers can read it back.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::servers::{LoginToken, ServersError, ServersHttp};
use crate::{TaskConfig, TaskMetadata};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot build the AWS bearer token: {0}")]
    Bearer(String),
    #[error("login with auth method {method:?} refused: {reason}")]
    Refused { method: String, reason: String },
    #[error("login with auth method {method:?} failed: {reason}")]
    Failed { method: String, reason: String },
    #[error("the servers did not make the new token readable within {0:?}")]
    NotReadable(Duration),
}

/// How long a login keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// For servers that cannot answer (down, no leader).
    pub transient: Duration,
    /// Refusals are retried a few times: IAM is eventually consistent, a role made a moment
    /// ago may not be visible to STS yet.
    pub refusals: u32,
    pub readable: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Patience {
            transient: Duration::from_secs(120),
            refusals: 3,
            readable: Duration::from_secs(20),
        }
    }
}

/// The token meta of a task's login: `berth/task-id`, `berth/cluster` (the cluster ARN),
/// over the configured `login.meta`.
pub fn login_meta(cfg: &TaskConfig, task: &TaskMetadata) -> BTreeMap<String, String> {
    let mut meta = cfg.login.meta.clone();
    meta.insert(crate::META_TASK_ID.into(), task.task_id().to_string());
    meta.insert(crate::META_CLUSTER.into(), task.cluster_arn());
    meta
}

pub fn iam_options(cfg: &TaskConfig, task: &TaskMetadata) -> berth_api::iam::LoginOptions {
    berth_api::iam::LoginOptions {
        include_entity: cfg.login.include_entity,
        server_id_header_value: cfg.login.server_id_header_value.clone(),
        sts_endpoint: cfg.login.sts_endpoint.clone(),
        region: cfg
            .login
            .region
            .clone()
            .or_else(|| task.region().map(str::to_string)),
        iam_endpoint: cfg.login.iam_endpoint.clone(),
    }
}

/// Logs in with `method` and waits until the token is readable.
pub async fn login(
    servers: &ServersHttp,
    method: &str,
    opts: &berth_api::iam::LoginOptions,
    meta: &BTreeMap<String, String>,
    patience: Patience,
) -> Result<LoginToken, LoginError> {
    let deadline = Instant::now() + patience.transient;
    let mut refusals = 0;
    let mut delay = Duration::from_millis(200);
    let token = loop {
        let bearer = berth_api::iam::bearer_token(opts)
            .await
            .map_err(|e| LoginError::Bearer(e.to_string()))?;
        match servers.login(method, &bearer, meta).await {
            Ok(t) => break t,
            Err(e) if e.transient() && Instant::now() < deadline => {
                tracing::info!(method, error = %e, "login not possible yet; retrying");
            }
            Err(
                e @ ServersError::Status {
                    status: 400..=499, ..
                },
            ) if !e.transient() => {
                refusals += 1;
                if refusals >= patience.refusals.max(1) {
                    return Err(LoginError::Refused {
                        method: method.to_string(),
                        reason: e.to_string(),
                    });
                }
                tracing::warn!(method, error = %e, "login refused; retrying with a fresh signature");
                // A signature covers X-Amz-Date, to the second: another container of the
                // task that logged in this second with the same role signed the very same
                // request, which the servers accept only once.
                tokio::time::sleep(Duration::from_millis(1100)).await;
                continue;
            }
            Err(e) => {
                return Err(LoginError::Failed {
                    method: method.to_string(),
                    reason: e.to_string(),
                });
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    };
    let until = Instant::now() + patience.readable;
    loop {
        match servers.token_readable(&token.secret_id).await {
            Ok(true) => return Ok(token),
            Ok(false) => {}
            Err(e) => tracing::info!(error = %e, "cannot read the new token back yet"),
        }
        if Instant::now() >= until {
            return Err(LoginError::NotReadable(patience.readable));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_meta_names_the_task_and_its_cluster() {
        let cfg = TaskConfig::parse(
            r#"{"servers": {"hosts": ["s"]}, "login": {"meta": {"team": "a", "berth/task-id": "forged"}}}"#,
        )
        .unwrap();
        let task = TaskMetadata {
            cluster: "prod".into(),
            task_arn: "arn:aws:ecs:eu-west-1:123456789012:task/prod/abc".into(),
            ..Default::default()
        };
        let m = login_meta(&cfg, &task);
        assert_eq!(
            m["berth/task-id"], "abc",
            "the task's own ID wins over configured meta"
        );
        assert_eq!(
            m["berth/cluster"],
            "arn:aws:ecs:eu-west-1:123456789012:cluster/prod"
        );
        assert_eq!(m["team"], "a");
        assert_eq!(
            iam_options(&cfg, &task).region.as_deref(),
            Some("eu-west-1")
        );
    }
}
