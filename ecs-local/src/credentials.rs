//! Task role credentials: STS AssumeRole with the daemon's own credentials, cached per task
//! until shortly before they expire, in the shape the ECS credentials endpoint serves.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE: time::Duration = time::Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("sts:AssumeRole of {role}: {reason}")]
    AssumeRole { role: String, reason: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoleCredentials {
    pub role_arn: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub token: String,
    pub expiration: String,
    #[serde(skip)]
    expires: Option<OffsetDateTime>,
}

#[derive(Clone)]
pub struct Sts {
    client: aws_sdk_sts::Client,
}

impl Sts {
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Sts {
        let mut b = aws_sdk_sts::config::Builder::from(sdk);
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        Sts {
            client: aws_sdk_sts::Client::from_conf(b.build()),
        }
    }

    /// The daemon's account, if it has working credentials.
    pub async fn account(&self) -> Option<String> {
        let call = self.client.get_caller_identity().send();
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(out)) => out.account,
            Ok(Err(e)) => {
                tracing::info!(error = %crate::sdk_error::chain(&e), "no caller identity; using the default account");
                None
            }
            Err(_) => None,
        }
    }

    pub async fn assume_role(
        &self,
        role: &str,
        session: &str,
    ) -> Result<RoleCredentials, CredentialsError> {
        let err = |reason: String| CredentialsError::AssumeRole {
            role: role.to_string(),
            reason,
        };
        let out = self
            .client
            .assume_role()
            .role_arn(role)
            .role_session_name(session)
            .send()
            .await
            .map_err(|e| err(crate::sdk_error::chain(&e)))?;
        let c = out
            .credentials
            .ok_or_else(|| err("the answer has no credentials".into()))?;
        let expires = OffsetDateTime::from_unix_timestamp(c.expiration.secs()).ok();
        Ok(RoleCredentials {
            role_arn: role.to_string(),
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            token: c.session_token,
            expiration: expires
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_default(),
            expires,
        })
    }
}

/// One task's credentials; the lock also keeps concurrent readers to one AssumeRole.
#[derive(Default)]
pub struct Cache {
    current: tokio::sync::Mutex<Option<RoleCredentials>>,
}

impl Cache {
    pub async fn get(
        &self,
        sts: &Sts,
        role: &str,
        session: &str,
    ) -> Result<RoleCredentials, CredentialsError> {
        let mut cur = self.current.lock().await;
        if let Some(c) = cur.as_ref()
            && c.expires
                .is_some_and(|e| e - REFRESH_BEFORE > OffsetDateTime::now_utc())
        {
            return Ok(c.clone());
        }
        let fresh = sts.assume_role(role, session).await?;
        *cur = Some(fresh.clone());
        Ok(fresh)
    }
}
