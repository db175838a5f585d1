//! The task's own `berth agent`, on the task's loopback: where mesh-init registers the
//! service and health-sync writes check statuses.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// The agent API inside a task (the agent's default `-http-addr`).
pub const DEFAULT_AGENT_ADDR: &str = "127.0.0.1:8500";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the local berth agent at {addr} does not answer: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the local berth agent refused {what}: {status} {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
}

#[derive(Clone, Debug)]
pub struct AgentHttp {
    addr: String,
    http: reqwest::Client,
}

impl AgentHttp {
    pub fn new(addr: impl Into<String>) -> Self {
        AgentHttp {
            addr: addr.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, AgentError> {
        let mut req = self
            .http
            .request(method.clone(), format!("http://{}{path}", self.addr));
        if let Some(t) = token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| AgentError::Unreachable {
            addr: self.addr.clone(),
            reason: crate::error_chain(&e),
        };
        let r = req.send().await.map_err(unreachable)?;
        let status = r.status().as_u16();
        let text = r.text().await.map_err(unreachable)?;
        if !(200..300).contains(&status) {
            return Err(AgentError::Status {
                what: format!("{method} {path}"),
                status,
                message: text.trim().chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits until the agent answers and has joined (it serves its API before it has
    /// reached the servers).
    pub async fn wait_ready(&self, patience: Duration) -> Result<(), AgentError> {
        let deadline = Instant::now() + patience;
        loop {
            let r = self
                .call(reqwest::Method::GET, "/v1/status/leader", None, None)
                .await;
            match r {
                Ok(Value::String(l)) if !l.is_empty() => return Ok(()),
                Ok(_) | Err(AgentError::Status { .. }) if Instant::now() < deadline => {}
                Err(AgentError::Unreachable { .. }) if Instant::now() < deadline => {}
                Ok(v) => {
                    return Err(AgentError::Unreachable {
                        addr: self.addr.clone(),
                        reason: format!("no leader known after {patience:?} ({v})"),
                    });
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
