//! Type parameters of Berth's Raft.

use serde::{Deserialize, Serialize};

use crate::state::{Command, CommandResult};

/// What the Raft membership records of each server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The server's node ID (a UUID, kept in `<data-dir>/node-id`), as Consul reports it.
    pub uuid: String,
    pub name: String,
    /// The advertised RPC address, `IP:PORT`.
    pub rpc_addr: String,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Vec<u8>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, NodeInfo>;
pub type StorageError = openraft::StorageError<u64>;

/// openraft wants a `Copy` integer ID; Consul users see the UUID. The first 8 bytes of a random
/// UUID are as unique as anything here needs.
pub fn raft_id(uuid: &uuid::Uuid) -> u64 {
    let b = uuid.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}
