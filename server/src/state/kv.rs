//! The KV table: Consul's `kvs` and `tombstones`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Changes, CommandResult, State, Table};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "crate::util::b64")]
    pub value: Vec<u8>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Set {
        key: String,
        #[serde(with = "crate::util::b64")]
        value: Vec<u8>,
        flags: u64,
        /// `Some(0)`: only if absent; `Some(n)`: only if ModifyIndex is n.
        cas: Option<u64>,
        acquire: Option<String>,
        release: Option<String>,
    },
    Delete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
}

impl State {
    pub(super) fn apply_kv(
        &mut self,
        index: u64,
        op: &KvOp,
        changes: &mut Changes,
    ) -> CommandResult {
        match op {
            KvOp::Set {
                key,
                value,
                flags,
                cas,
                acquire,
                release,
            } => {
                let existing = self.kv.get(key);
                if let Some(cas) = cas {
                    let ok = match (cas, existing) {
                        (0, None) => true,
                        (0, Some(_)) => false,
                        (n, Some(e)) => e.modify_index == *n,
                        (_, None) => false,
                    };
                    if !ok {
                        return CommandResult::Bool(false);
                    }
                }
                let mut entry = existing.cloned().unwrap_or(KvEntry {
                    value: Vec::new(),
                    flags: 0,
                    create_index: index,
                    modify_index: index,
                    lock_index: 0,
                    session: None,
                });
                if let Some(sid) = acquire {
                    if !self.sessions.contains_key(sid) {
                        return CommandResult::Rejected(format!("invalid session \"{sid}\""));
                    }
                    match &entry.session {
                        Some(holder) if holder == sid => {}
                        Some(_) => return CommandResult::Bool(false),
                        None => {
                            entry.session = Some(sid.clone());
                            entry.lock_index += 1;
                        }
                    }
                } else if let Some(sid) = release {
                    if existing.is_none() || entry.session.as_deref() != Some(sid.as_str()) {
                        return CommandResult::Bool(false);
                    }
                    entry.session = None;
                }
                entry.value = value.clone();
                entry.flags = *flags;
                entry.modify_index = index;
                self.kv.insert(key.clone(), entry);
                self.tombstones.remove(key);
                self.bump(Table::Kvs, index, changes);
                changes.keys.push(key.clone());
                CommandResult::Bool(true)
            }
            KvOp::Delete { key, recurse, cas } => {
                if *recurse {
                    let doomed: Vec<String> = self
                        .kv
                        .range(key.clone()..)
                        .take_while(|(k, _)| k.starts_with(key.as_str()))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !doomed.is_empty() {
                        for k in doomed {
                            self.delete_key(index, &k);
                        }
                        self.bump(Table::Kvs, index, changes);
                        self.bump(Table::Tombstones, index, changes);
                        changes.trees.push(key.clone());
                    }
                    return CommandResult::Bool(true);
                }
                match (cas, self.kv.get(key)) {
                    (Some(n), Some(e)) if e.modify_index != *n => {
                        return CommandResult::Bool(false);
                    }
                    (Some(_), None) => return CommandResult::Bool(false),
                    (_, None) => return CommandResult::Bool(true),
                    _ => {}
                }
                self.delete_key(index, key);
                self.bump(Table::Kvs, index, changes);
                self.bump(Table::Tombstones, index, changes);
                changes.keys.push(key.clone());
                CommandResult::Bool(true)
            }
        }
    }

    fn delete_key(&mut self, index: u64, key: &str) {
        self.kv.remove(key);
        self.tombstones.insert(key.to_string(), index);
    }

    /// Releases (or deletes, per the session's behaviour) every key the session holds.
    pub(super) fn release_session_locks(
        &mut self,
        index: u64,
        sid: &str,
        delete: bool,
        lock_delay: std::time::Duration,
        changes: &mut Changes,
    ) {
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(sid))
            .map(|(k, _)| k.clone())
            .collect();
        if held.is_empty() {
            return;
        }
        let until = Instant::now() + lock_delay;
        for key in held {
            if delete {
                self.delete_key(index, &key);
                self.bump(Table::Tombstones, index, changes);
            } else if let Some(e) = self.kv.get_mut(&key) {
                e.session = None;
                e.modify_index = index;
            }
            if !lock_delay.is_zero() {
                self.lock_delays.insert(key.clone(), until);
            }
            changes.keys.push(key);
        }
        self.bump(Table::Kvs, index, changes);
    }

    /// Single-key read: the entry's ModifyIndex, or the table index when the key is absent.
    pub fn kv_get(&self, key: &str) -> (u64, Option<&KvEntry>) {
        match self.kv.get(key) {
            Some(e) => (e.modify_index, Some(e)),
            None => (self.max_index(&[Table::Kvs, Table::Tombstones]), None),
        }
    }

    /// Prefix read: the highest index among live and deleted keys under the prefix.
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<(&String, &KvEntry)>) {
        let entries: Vec<_> = self
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect();
        let live = entries
            .iter()
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        let idx = live.max(dead);
        let idx = if idx == 0 {
            self.max_index(&[Table::Kvs, Table::Tombstones])
        } else {
            idx
        };
        (idx, entries)
    }

    /// Key names under a prefix, folded at the first `separator` after the prefix.
    pub fn kv_keys(&self, prefix: &str, separator: Option<&str>) -> (u64, Vec<String>) {
        let (idx, entries) = self.kv_list(prefix);
        let mut out: Vec<String> = Vec::new();
        for (k, _) in entries {
            let name = match separator.filter(|s| !s.is_empty()) {
                Some(sep) => match k[prefix.len()..].find(sep) {
                    Some(pos) => k[..prefix.len() + pos + sep.len()].to_string(),
                    None => k.clone(),
                },
                None => k.clone(),
            };
            if out.last() != Some(&name) {
                out.push(name);
            }
        }
        (idx, out)
    }

    /// Whether an acquire of `key` must be refused because a lock on it was recently lost.
    pub fn kv_lock_delayed(&self, key: &str, now: Instant) -> bool {
        self.lock_delays.get(key).is_some_and(|until| *until > now)
    }
}
