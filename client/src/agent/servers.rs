//! The agent's way to the servers: their RPC port, over which it forwards HTTP API requests
//! (`http.forward`, answered by the servers' own router with the caller's token) and makes
//! the token-checked agent calls (`agent.*`). Servers that do not answer are skipped; the
//! list grows from `/v1/status/peers`.

use std::sync::Mutex;
use std::time::Duration;

use berth_server::rpc::{CallError, Clients, ForwardReply, ForwardRequest, HTTP_FORWARD};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("no Berth server answered (tried {tried}): {last}")]
    Unreachable { tried: String, last: String },
    #[error("{0}")]
    Call(String),
    #[error("bad answer: {0}")]
    Payload(String),
}

pub struct Servers {
    addrs: Mutex<Vec<String>>,
    /// The index of the server that answered last; tried first.
    current: Mutex<usize>,
    clients: Clients,
}

/// An HTTP answer from the servers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn index(&self) -> u64 {
        self.header("x-consul-index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Servers {
    pub fn new(addrs: Vec<String>, tls: berth_server::rpc::TlsClient) -> Servers {
        Servers {
            addrs: Mutex::new(
                addrs
                    .iter()
                    .map(|a| berth_server::config::with_rpc_port(a))
                    .collect(),
            ),
            current: Mutex::new(0),
            clients: Clients::new(tls),
        }
    }

    fn order(&self) -> Vec<String> {
        let addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let start = *self.current.lock().unwrap_or_else(|p| p.into_inner());
        let n = addrs.len();
        (0..n).map(|i| addrs[(start + i) % n].clone()).collect()
    }

    fn answered(&self, addr: &str) {
        let addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = addrs.iter().position(|a| a == addr) {
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) = i;
        }
    }

    /// Adds servers learned from the cluster.
    pub fn learn(&self, more: &[String]) {
        let mut addrs = self.addrs.lock().unwrap_or_else(|p| p.into_inner());
        for a in more {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
    }

    async fn call(
        &self,
        kind: &str,
        json: Vec<u8>,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<berth_server::rpc::Envelope, ServerError> {
        let mut last = String::from("no servers configured (-retry-join)");
        let order = self.order();
        for addr in &order {
            match self
                .clients
                .call(addr, kind, json.clone(), data.clone(), timeout)
                .await
            {
                Ok(env) => {
                    self.answered(addr);
                    return Ok(env);
                }
                Err(e @ (CallError::Unreachable { .. } | CallError::Timeout { .. })) => {
                    last = e.to_string();
                }
                Err(e) => return Err(ServerError::Call(e.to_string())),
            }
        }
        Err(ServerError::Unreachable {
            tried: order.join(", "),
            last,
        })
    }

    /// A token-checked agent call whose request and answer are JSON.
    pub async fn call_json<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        kind: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, ServerError> {
        let json = serde_json::to_vec(req).map_err(|e| ServerError::Payload(e.to_string()))?;
        let env = self.call(kind, json, Vec::new(), timeout).await?;
        serde_json::from_slice(&env.json).map_err(|e| ServerError::Payload(e.to_string()))
    }

    /// An HTTP API request, answered by a server's router as if it had arrived there.
    pub async fn http(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Reply, ServerError> {
        let mut headers = headers;
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("x-consul-token"));
            headers.push(("x-consul-token".into(), t.to_string()));
        }
        let fwd = ForwardRequest {
            method: method.to_string(),
            uri: uri.to_string(),
            headers,
            hops: 0,
        };
        let json = serde_json::to_vec(&fwd).map_err(|e| ServerError::Payload(e.to_string()))?;
        let env = self.call(HTTP_FORWARD, json, body, timeout).await?;
        let r: ForwardReply =
            serde_json::from_slice(&env.json).map_err(|e| ServerError::Payload(e.to_string()))?;
        Ok(Reply {
            status: r.status,
            headers: r.headers,
            body: env.data,
        })
    }

    /// A GET whose JSON answer is wanted, with its index; non-200 answers are errors.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        uri: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<(u64, T), ServerError> {
        let r = self
            .http("GET", uri, token, Vec::new(), Vec::new(), timeout)
            .await?;
        if r.status != 200 {
            return Err(ServerError::Call(format!(
                "GET {uri}: {} {}",
                r.status,
                r.text().trim()
            )));
        }
        let v = serde_json::from_slice(&r.body)
            .map_err(|e| ServerError::Payload(format!("GET {uri}: {e}")))?;
        Ok((r.index(), v))
    }
}
