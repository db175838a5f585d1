//! The RPC port: one gRPC method, `Call(Envelope)`, whose `kind` picks the operation. Raft,
//! forwarding to the leader and server discovery share it, as Consul's port 8300 does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::raft::types::NodeInfo;

pub mod pb {
    tonic::include_proto!("berth.rpc.v1");
}

pub use pb::Envelope;

pub const RAFT_APPEND: &str = "raft.append";
pub const RAFT_VOTE: &str = "raft.vote";
pub const RAFT_SNAPSHOT: &str = "raft.snapshot";
/// Leadership transfer: hold elections off on a bystander, or start one on the target.
pub const RAFT_HOLD: &str = "raft.hold";
pub const RAFT_ELECT: &str = "raft.elect";
pub const HTTP_FORWARD: &str = "http.forward";
pub const CLUSTER_HELLO: &str = "cluster.hello";
pub const CLUSTER_JOIN: &str = "cluster.join";
/// An agent's anti-entropy: commit catalog operations on the leader.
pub const CATALOG_APPLY: &str = "catalog.apply";
/// An agent's anti-entropy: one node's catalog entry, as the leader sees it.
pub const CATALOG_NODE: &str = "catalog.node";

/// Snapshots travel in one message; 1 GiB is far above what a Berth state reaches.
pub const MAX_MESSAGE: usize = 1 << 30;

/// Discovery: servers tell each other who they know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub from: NodeInfo,
    pub datacenter: String,
    pub known: Vec<NodeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelloReply {
    pub me: NodeInfo,
    pub datacenter: String,
    pub known: Vec<NodeInfo>,
    /// The replying server belongs to a cluster that has been bootstrapped.
    pub formed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub hops: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRequest {
    pub millis: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("{addr} refused the call: {message}")]
    Remote { addr: String, message: String },
    #[error("bad payload: {0}")]
    Payload(String),
}

pub type TlsClient = Option<(Arc<rustls::ClientConfig>, String)>;

/// Cached channels to the other servers.
pub struct Clients {
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
    tls: TlsClient,
}

impl Clients {
    pub fn new(tls: TlsClient) -> Self {
        Clients {
            channels: Mutex::new(HashMap::new()),
            tls,
        }
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, CallError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch =
            crate::tls::channel(addr, self.tls.clone()).map_err(|e| CallError::Unreachable {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }

    pub async fn call(
        &self,
        addr: &str,
        kind: &str,
        json: Vec<u8>,
        data: Vec<u8>,
        timeout: Duration,
    ) -> Result<Envelope, CallError> {
        let ch = self.channel(addr)?;
        let mut client = pb::rpc_client::RpcClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let req = Envelope {
            kind: kind.to_string(),
            json,
            data,
        };
        match tokio::time::timeout(timeout, client.call(Request::new(req))).await {
            Err(_) => Err(CallError::Timeout {
                addr: addr.to_string(),
                timeout,
            }),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                    CallError::Unreachable {
                        addr: addr.to_string(),
                        message: status.message().to_string(),
                    }
                }
                _ => CallError::Remote {
                    addr: addr.to_string(),
                    message: status.message().to_string(),
                },
            }),
        }
    }

    /// A call whose request and reply are JSON documents.
    pub async fn call_json<Req: Serialize, Rep: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        kind: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Rep, CallError> {
        let json = serde_json::to_vec(req).map_err(|e| CallError::Payload(e.to_string()))?;
        let env = self.call(addr, kind, json, Vec::new(), timeout).await?;
        serde_json::from_slice(&env.json).map_err(|e| CallError::Payload(e.to_string()))
    }
}

/// The gRPC service; every kind is answered by [`crate::node::Node::handle_rpc`].
pub struct RpcService {
    pub node: Arc<crate::node::Node>,
}

#[tonic::async_trait]
impl pb::rpc_server::Rpc for RpcService {
    async fn call(&self, request: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let env = request.into_inner();
        self.node.handle_rpc(env).await.map(Response::new)
    }
}

pub fn json_reply<T: Serialize>(v: &T) -> Result<Envelope, Status> {
    Ok(Envelope {
        kind: String::new(),
        json: serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))?,
        data: Vec::new(),
    })
}

pub fn parse<T: serde::de::DeserializeOwned>(env: &Envelope) -> Result<T, Status> {
    serde_json::from_slice(&env.json)
        .map_err(|e| Status::invalid_argument(format!("bad {} payload: {e}", env.kind)))
}
