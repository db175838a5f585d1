//! The replicated state machine: indexed tables held in memory (as Consul's memdb), changed only
//! by applying committed [`Command`]s, and the watch registry that blocking queries wait on.
//!
//! Every row carries CreateIndex/ModifyIndex = the Raft log index of the command that wrote it.
//! `apply` is deterministic: the same commands give the same tables on every server.

pub mod acl;
mod catalog;
pub mod connect;
mod kv;
mod session;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use catalog::{CatalogOp, NodeRecord, Registration};
pub use kv::{KvEntry, KvOp};
pub use session::{Session, SessionOp};

use crate::raft::types::{LogId, NodeInfo, StoredMembership};

/// One replicated change. New variants go at the end; old logs must stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Kv(KvOp),
    Session(SessionOp),
    /// Several commands committed as one log entry, applied in order.
    Batch(Vec<Command>),
    Catalog(CatalogOp),
    Acl(acl::AclOp),
    Connect(connect::ConnectOp),
}

/// What applying a command answers the writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandResult {
    /// KV writes: Consul answers `true` or `false` (CAS mismatch, lock held, ...).
    Bool(bool),
    /// Session create: the new ID.
    Created(String),
    /// The command was valid Raft-wise but refused by the state (e.g. unknown session).
    Rejected(String),
    Batch(Vec<CommandResult>),
    None,
}

/// Tables whose max index is tracked, as memdb's "index" table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Table {
    Kvs,
    Tombstones,
    Sessions,
    Nodes,
    Services,
    Checks,
    Acl,
    ConnectCa,
    ConfigEntries,
}

/// The replicated tables. Serialized whole into snapshots.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub kv: BTreeMap<String, KvEntry>,
    /// Deleted keys and the index of their deletion, so that a prefix whose keys were deleted
    /// still reports an index that moved forward.
    pub tombstones: BTreeMap<String, u64>,
    pub sessions: BTreeMap<String, Session>,
    /// Nodes by name, with their services and checks.
    pub catalog: BTreeMap<String, NodeRecord>,
    /// Per service name: the index of the last change to any instance or its health.
    pub service_index: BTreeMap<String, u64>,
    /// Derived: (node, service ID) of every instance of a service name.
    #[serde(skip)]
    pub by_service: BTreeMap<String, std::collections::BTreeSet<(String, String)>>,
    /// Derived: (node, service ID) of every sidecar proxy of a service name.
    #[serde(skip)]
    pub by_destination: BTreeMap<String, std::collections::BTreeSet<(String, String)>>,
    pub table_index: BTreeMap<Table, u64>,
    #[serde(default)]
    pub acl: acl::AclTables,
    #[serde(default)]
    pub connect: connect::ConnectTables,
    /// Not replicated: when each key's lock-delay ends, recorded locally when a session that
    /// held it is invalidated (as Consul does), and consulted by the leader before an acquire.
    #[serde(skip)]
    pub lock_delays: HashMap<String, Instant>,
}

/// Which watchers a change must wake; gathered during apply, fired after the lock is dropped.
#[derive(Debug, Default)]
pub struct Changes {
    pub keys: Vec<String>,
    pub trees: Vec<String>,
    pub tables: Vec<Table>,
    pub services: Vec<String>,
    pub nodes: Vec<String>,
}

impl State {
    pub fn index(&self, table: Table) -> u64 {
        self.table_index.get(&table).copied().unwrap_or(0)
    }

    pub fn max_index(&self, tables: &[Table]) -> u64 {
        tables.iter().map(|t| self.index(*t)).max().unwrap_or(0)
    }

    fn bump(&mut self, table: Table, index: u64, changes: &mut Changes) {
        self.table_index.insert(table, index);
        changes.tables.push(table);
    }

    /// Applies one command at log index `index`.
    pub fn apply(&mut self, index: u64, cmd: &Command, changes: &mut Changes) -> CommandResult {
        match cmd {
            Command::Kv(op) => self.apply_kv(index, op, changes),
            Command::Session(op) => self.apply_session(index, op, changes),
            Command::Catalog(op) => self.apply_catalog(index, op, changes),
            Command::Acl(op) => self.apply_acl(index, op, changes),
            Command::Connect(op) => self.apply_connect(index, op, changes),
            Command::Batch(cmds) => {
                CommandResult::Batch(cmds.iter().map(|c| self.apply(index, c, changes)).collect())
            }
        }
    }

    /// Records a Raft membership entry.
    pub fn set_membership(
        &mut self,
        log_id: LogId,
        membership: openraft::Membership<u64, NodeInfo>,
    ) {
        self.membership = StoredMembership::new(Some(log_id), membership);
    }
}

#[cfg(test)]
mod tests;
