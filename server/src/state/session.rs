//! The sessions table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use berth_api::types::{ServiceCheck, SessionBehavior};

use super::{Changes, CommandResult, State, Table};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay_ns: u64,
    pub behavior: SessionBehavior,
    /// As given by the client ("30s"); empty for no TTL.
    pub ttl: String,
    pub node_checks: Vec<String>,
    pub service_checks: Option<Vec<ServiceCheck>>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// `session.create_index`/`modify_index` are filled in at apply time.
    Create(Session),
    Destroy {
        id: String,
    },
}

impl State {
    pub(super) fn apply_session(
        &mut self,
        index: u64,
        op: &SessionOp,
        changes: &mut Changes,
    ) -> CommandResult {
        match op {
            SessionOp::Create(s) => {
                if self.sessions.contains_key(&s.id) {
                    return CommandResult::Rejected(format!("session {} already exists", s.id));
                }
                let mut s = s.clone();
                s.create_index = index;
                s.modify_index = index;
                let id = s.id.clone();
                self.sessions.insert(id.clone(), s);
                self.bump(Table::Sessions, index, changes);
                CommandResult::Created(id)
            }
            SessionOp::Destroy { id } => {
                let Some(s) = self.sessions.remove(id) else {
                    return CommandResult::Bool(true);
                };
                self.bump(Table::Sessions, index, changes);
                self.release_session_locks(
                    index,
                    id,
                    s.behavior == SessionBehavior::Delete,
                    Duration::from_nanos(s.lock_delay_ns),
                    changes,
                );
                CommandResult::Bool(true)
            }
        }
    }

    pub fn session_get(&self, id: &str) -> (u64, Option<&Session>) {
        (self.index(Table::Sessions), self.sessions.get(id))
    }

    pub fn session_list(&self, node: Option<&str>) -> (u64, Vec<&Session>) {
        let list = self
            .sessions
            .values()
            .filter(|s| node.is_none_or(|n| s.node == n))
            .collect();
        (self.index(Table::Sessions), list)
    }
}
