//! The servers' HTTP API as a task's Berth containers use it: ACL login, reading a token
//! back, logout. Each call tries the configured hosts in turn, so one server down does not
//! stop a task from joining.

use std::time::Duration;

use serde_json::{Value, json};

use crate::TaskConfig;

#[derive(Debug, thiserror::Error)]
pub enum ServersError {
    #[error("cannot read the servers' CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no Berth server answered ({tried}): {reason}")]
    Unreachable { tried: String, reason: String },
    #[error("the servers answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the servers sent an answer that is not JSON: {0}")]
    Malformed(String),
}

impl ServersError {
    /// Worth another try: no server answered, or one that could not serve (no leader, rate
    /// limit, restarting).
    pub fn transient(&self) -> bool {
        match self {
            ServersError::Unreachable { .. } => true,
            ServersError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServersHttp {
    bases: Vec<String>,
    http: reqwest::Client,
}

/// An ACL token from a login: only the IDs are kept.
#[derive(Clone)]
pub struct LoginToken {
    pub accessor_id: String,
    pub secret_id: String,
}

impl std::fmt::Debug for LoginToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("LoginToken")
            .field("accessor_id", &self.accessor_id)
            .finish_non_exhaustive()
    }
}

impl ServersHttp {
    pub fn new(cfg: &TaskConfig) -> Result<Self, ServersError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .user_agent(concat!("berth-ecs/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &cfg.servers.http.ca_cert_file {
            let err = |reason: String| ServersError::CaFile {
                path: ca.display().to_string(),
                reason,
            };
            let pem = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
            b = b.tls_certs_only(certs);
        }
        Ok(ServersHttp {
            bases: cfg.http_bases(),
            http: b.build().map_err(|e| ServersError::Unreachable {
                tried: String::new(),
                reason: crate::error_chain(&e),
            })?,
        })
    }

    pub fn bases(&self) -> &[String] {
        &self.bases
    }

    /// One request, to the first server that answers at all.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ServersError> {
        let mut last = String::new();
        for base in &self.bases {
            let mut req = self.http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = token {
                req = req.header("X-Consul-Token", t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let r = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{base}: {}", crate::error_chain(&e));
                    continue;
                }
            };
            let status = r.status().as_u16();
            let text = match r.text().await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("{base}: {}", crate::error_chain(&e));
                    continue;
                }
            };
            if !(200..300).contains(&status) {
                return Err(ServersError::Status {
                    status,
                    message: text.trim().chars().take(300).collect(),
                });
            }
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| ServersError::Malformed(e.to_string()));
        }
        Err(ServersError::Unreachable {
            tried: self.bases.join(", "),
            reason: last,
        })
    }

    pub async fn login(
        &self,
        method: &str,
        bearer: &str,
        meta: &std::collections::BTreeMap<String, String>,
    ) -> Result<LoginToken, ServersError> {
        let body = json!({"AuthMethod": method, "BearerToken": bearer, "Meta": meta});
        let v = self
            .call(reqwest::Method::POST, "/v1/acl/login", None, Some(&body))
            .await?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| ServersError::Malformed(format!("the login answer has no {k}")))
        };
        Ok(LoginToken {
            accessor_id: field("AccessorID")?,
            secret_id: field("SecretID")?,
        })
    }

    /// Whether the servers know the token yet (a follower may not have it at first).
    pub async fn token_readable(&self, secret: &str) -> Result<bool, ServersError> {
        match self
            .call(
                reqwest::Method::GET,
                "/v1/acl/token/self",
                Some(secret),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(ServersError::Status { status: 403, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn logout(&self, secret: &str) -> Result<(), ServersError> {
        self.call(reqwest::Method::POST, "/v1/acl/logout", Some(secret), None)
            .await
            .map(|_| ())
    }
}
