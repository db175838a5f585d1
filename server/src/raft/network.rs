//! openraft's RPCs over the RPC port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use serde::{Deserialize, Serialize};

use super::types::{NodeInfo, SnapshotMeta, TypeConfig, Vote};
use crate::rpc::{self, CallError, Clients};

/// How long a whole snapshot may take to reach a follower.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

pub struct Network {
    pub clients: Arc<Clients>,
}

pub struct Peer {
    target: u64,
    addr: String,
    clients: Arc<Clients>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> Peer {
        Peer {
            target,
            addr: node.rpc_addr.clone(),
            clients: self.clients.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, NodeInfo, RaftError<u64, E>>;

fn transport<E: std::error::Error>(e: CallError) -> RPCError<u64, NodeInfo, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl Peer {
    async fn raft_call<Req, Rep, E>(
        &self,
        kind: &str,
        req: &Req,
        ttl: Duration,
    ) -> Result<Rep, RpcErr<E>>
    where
        Req: Serialize,
        Rep: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let env = self
            .clients
            .call(&self.addr, kind, json, Vec::new(), ttl)
            .await
            .map_err(transport)?;
        let res: Result<Rep, RaftError<u64, E>> = serde_json::from_slice(&env.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        self.raft_call(rpc::RAFT_APPEND, &rpc, option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        // Berth sends whole snapshots with `full_snapshot`; openraft never calls this with
        // `generic-snapshot-data` enabled.
        Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other("chunked snapshots are not used"),
        )))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        self.raft_call(rpc::RAFT_VOTE, &rpc, option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        };
        let json = serde_json::to_vec(&header)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let data = *snapshot.snapshot;
        let call = self
            .clients
            .call(&self.addr, rpc::RAFT_SNAPSHOT, json, data, SNAPSHOT_TIMEOUT);
        let env = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r.map_err(|e| match e {
                CallError::Unreachable { .. } => StreamingError::Unreachable(Unreachable::new(&e)),
                _ => StreamingError::Network(NetworkError::new(&e)),
            })?,
        };
        let res: Result<SnapshotResponse<u64>, Fatal<u64>> = serde_json::from_slice(&env.json)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}
