//! The mesh's replicated tables: the CA (configuration and roots, with the active root's key,
//! as Consul's built-in provider keeps it) and config entries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use berth_api::connect::{CaRoot, ConfigEntry};

use super::{Changes, CommandResult, State, Table};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredRoot {
    pub root: CaRoot,
    /// The certificate that signs leaves, when it is not `root.root_cert` (a user's
    /// intermediate).
    #[serde(default)]
    pub signing_cert: String,
    /// The signing key: only the active root keeps it.
    pub key_pem: String,
    /// When a rotated-out root stops being trusted (unix ms): after every leaf it signed
    /// has expired.
    pub drop_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaState {
    pub cluster_id: String,
    pub trust_domain: String,
    pub provider: String,
    /// The provider's configuration as given (secrets included; the API redacts them).
    pub config: Value,
    pub roots: Vec<StoredRoot>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl CaState {
    pub fn active(&self) -> Option<&StoredRoot> {
        self.roots.iter().find(|r| r.root.active)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ConnectTables {
    pub ca: Option<CaState>,
    /// By `<kind>/<name>`.
    pub entries: BTreeMap<String, ConfigEntry>,
}

pub fn entry_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

impl ConnectTables {
    pub fn entry(&self, kind: &str, name: &str) -> Option<&ConfigEntry> {
        self.entries.get(&entry_key(kind, name))
    }

    pub fn entries_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a ConfigEntry> + 'a {
        let start = format!("{kind}/");
        self.entries
            .range(start.clone()..)
            .take_while(move |(k, _)| k.starts_with(&start))
            .map(|(_, e)| e)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConnectOp {
    /// The first CA of the cluster; ignored when one exists (two leaders' loops may race).
    InitCa(CaState),
    /// A new configuration; with `new_root`, a rotation: the old active root stays trusted
    /// until `drop_old_after_ms`, its key is dropped.
    SetCaConfig {
        provider: String,
        config: Value,
        new_root: Option<StoredRoot>,
        drop_old_after_ms: u64,
    },
    /// Removes rotated-out roots whose time is past.
    PruneRoots { now_ms: u64 },
    /// `cas`: write only if the entry's ModifyIndex is this (0: only if absent).
    SetEntry {
        entry: ConfigEntry,
        cas: Option<u64>,
    },
    DeleteEntry {
        kind: String,
        name: String,
        cas: Option<u64>,
    },
}

impl State {
    pub(super) fn apply_connect(
        &mut self,
        index: u64,
        op: &ConnectOp,
        changes: &mut Changes,
    ) -> CommandResult {
        let t = &mut self.connect;
        let (table, result) = match op {
            ConnectOp::InitCa(ca) => {
                if t.ca.is_some() {
                    return CommandResult::Bool(false);
                }
                let mut ca = ca.clone();
                ca.create_index = index;
                ca.modify_index = index;
                for r in &mut ca.roots {
                    r.root.create_index = index;
                    r.root.modify_index = index;
                }
                t.ca = Some(ca);
                (Table::ConnectCa, CommandResult::Bool(true))
            }
            ConnectOp::SetCaConfig {
                provider,
                config,
                new_root,
                drop_old_after_ms,
            } => {
                let Some(ca) = t.ca.as_mut() else {
                    return CommandResult::Rejected("the CA is not initialized yet".into());
                };
                ca.provider = provider.clone();
                ca.config = config.clone();
                ca.modify_index = index;
                if let Some(new) = new_root {
                    for r in &mut ca.roots {
                        if r.root.active {
                            r.root.active = false;
                            r.root.modify_index = index;
                            r.key_pem.clear();
                            r.drop_after_ms = Some(*drop_old_after_ms);
                        }
                    }
                    let mut new = new.clone();
                    new.root.active = true;
                    new.root.create_index = index;
                    new.root.modify_index = index;
                    ca.roots.push(new);
                }
                (Table::ConnectCa, CommandResult::Bool(true))
            }
            ConnectOp::PruneRoots { now_ms } => {
                let Some(ca) = t.ca.as_mut() else {
                    return CommandResult::Bool(false);
                };
                let before = ca.roots.len();
                ca.roots
                    .retain(|r| r.root.active || r.drop_after_ms.is_none_or(|d| d > *now_ms));
                if ca.roots.len() == before {
                    return CommandResult::Bool(false);
                }
                ca.modify_index = index;
                (Table::ConnectCa, CommandResult::Bool(true))
            }
            ConnectOp::SetEntry { entry, cas } => {
                let key = entry_key(&entry.kind, &entry.name);
                let existing = t.entries.get(&key);
                if let Some(c) = cas {
                    let current = existing.map_or(0, |e| e.modify_index);
                    if current != *c {
                        return CommandResult::Bool(false);
                    }
                }
                let mut e = entry.clone();
                e.create_index = existing.map_or(index, |o| o.create_index);
                e.modify_index = index;
                t.entries.insert(key, e);
                (Table::ConfigEntries, CommandResult::Bool(true))
            }
            ConnectOp::DeleteEntry { kind, name, cas } => {
                let key = entry_key(kind, name);
                if let Some(c) = cas {
                    let current = t.entries.get(&key).map_or(0, |e| e.modify_index);
                    if current != *c {
                        return CommandResult::Bool(false);
                    }
                }
                t.entries.remove(&key);
                (Table::ConfigEntries, CommandResult::Bool(true))
            }
        };
        self.bump(table, index, changes);
        result
    }
}
