//! Applies committed entries to the in-memory [`State`] and keeps its snapshot.
//!
//! Snapshot file (`raft/snapshot.bin`): magic, format version, payload length and CRC32, then
//! the payload: the snapshot's metadata and the serialized tables. A file that fails any of
//! those checks stops the server with an error naming it; the server never starts empty over a
//! snapshot it could not read.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, RaftSnapshotBuilder,
};
use serde::{Deserialize, Serialize};

use super::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::watch::Watches;
use crate::state::{Changes, CommandResult, State};

const MAGIC: &[u8; 8] = b"BERTHSNP";
const FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4;

#[derive(Debug, thiserror::Error)]
#[error("snapshot {}: {message}", path.display())]
pub struct SnapshotError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct FileMeta {
    meta: SnapshotMeta,
}

/// Where the latest snapshot lives: a file, or memory in dev mode.
struct SnapshotStore {
    path: Option<PathBuf>,
    mem: Mutex<Option<(SnapshotMeta, Vec<u8>)>>,
}

impl SnapshotStore {
    fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        match &self.path {
            None => {
                *self.mem.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((meta.clone(), data.to_vec()));
                Ok(())
            }
            Some(path) => {
                let meta_json = serde_json::to_vec(&FileMeta { meta: meta.clone() })
                    .map_err(io::Error::other)?;
                // Payload = meta length, meta, data; written piecewise so that a large state
                // is never copied in memory.
                let meta_len = (meta_json.len() as u32).to_be_bytes();
                let payload_len = (4 + meta_json.len() + data.len()) as u64;
                let mut crc = crc32fast::Hasher::new();
                crc.update(&meta_len);
                crc.update(&meta_json);
                crc.update(data);
                let mut header = Vec::with_capacity(HEADER);
                header.extend_from_slice(MAGIC);
                header.extend_from_slice(&FORMAT.to_be_bytes());
                header.extend_from_slice(&payload_len.to_be_bytes());
                header.extend_from_slice(&crc.finalize().to_be_bytes());
                crate::util::write_atomic_parts(path, &[&header, &meta_len, &meta_json, data])
            }
        }
    }

    fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotError> {
        let Some(path) = &self.path else {
            return Ok(self.mem.lock().unwrap_or_else(|p| p.into_inner()).clone());
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(path, format!("cannot read: {e}"))),
        };
        parse_snapshot_file(path, &bytes).map(Some)
    }
}

fn snap_err(path: &Path, message: String) -> SnapshotError {
    SnapshotError {
        path: path.to_path_buf(),
        message,
    }
}

fn parse_snapshot_file(
    path: &Path,
    bytes: &[u8],
) -> Result<(SnapshotMeta, Vec<u8>), SnapshotError> {
    let bad = |m: &str| {
        snap_err(
            path,
            format!(
                "{m}; refusing to start (move the file away only if the data is replicated elsewhere)"
            ),
        )
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("not a Berth snapshot (bad header)"));
    }
    let word = |r: std::ops::Range<usize>| -> &[u8] { &bytes[r] };
    let format = u32::from_be_bytes(word(8..12).try_into().map_err(|_| bad("bad header"))?);
    if format != FORMAT {
        return Err(bad(&format!("unknown snapshot format {format}")));
    }
    let len = u64::from_be_bytes(word(12..20).try_into().map_err(|_| bad("bad header"))?) as usize;
    let crc = u32::from_be_bytes(word(20..24).try_into().map_err(|_| bad("bad header"))?);
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(bad(&format!(
            "truncated: {} of {len} payload bytes",
            payload.len()
        )));
    }
    if crc32fast::hash(payload) != crc {
        return Err(bad("checksum mismatch (corrupt)"));
    }
    if payload.len() < 4 {
        return Err(bad("truncated metadata"));
    }
    let meta_len = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    if payload.len() < 4 + meta_len {
        return Err(bad("truncated metadata"));
    }
    let meta: FileMeta = serde_json::from_slice(&payload[4..4 + meta_len])
        .map_err(|e| bad(&format!("corrupt metadata: {e}")))?;
    Ok((meta.meta, payload[4 + meta_len..].to_vec()))
}

/// What the rest of the server reads: the tables, their watches, snapshot counters.
pub struct Store {
    pub state: RwLock<State>,
    pub watches: Watches,
    pub snapshot_installs: AtomicU64,
    pub last_snapshot_index: AtomicU64,
    /// Raises every time entries are applied; followers' `?stale` readers and tests look at it.
    pub applied: tokio::sync::watch::Sender<u64>,
    snapshots: SnapshotStore,
}

impl Store {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens the store, restoring the latest snapshot from `path` if there is one.
    pub fn open(path: Option<&Path>) -> Result<Arc<Store>, SnapshotError> {
        let snapshots = SnapshotStore {
            path: path.map(Path::to_path_buf),
            mem: Mutex::new(None),
        };
        let mut state = State::default();
        let mut last_snapshot_index = 0;
        if let Some((meta, data)) = snapshots.load()? {
            let shown = path.unwrap_or(Path::new("(memory)"));
            state = restore(&meta, &data)
                .map_err(|m| snap_err(shown, format!("{m}; refusing to start")))?;
            last_snapshot_index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        }
        let applied = state.last_applied.map(|l| l.index).unwrap_or(0);
        Ok(Arc::new(Store {
            state: RwLock::new(state),
            watches: Watches::default(),
            snapshot_installs: AtomicU64::new(0),
            last_snapshot_index: AtomicU64::new(last_snapshot_index),
            applied: tokio::sync::watch::channel(applied).0,
            snapshots,
        }))
    }
}

fn restore(meta: &SnapshotMeta, data: &[u8]) -> Result<State, String> {
    let mut state: State =
        serde_json::from_slice(data).map_err(|e| format!("corrupt tables: {e}"))?;
    state.last_applied = meta.last_log_id;
    state.membership = meta.last_membership.clone();
    state.rebuild_catalog_index();
    state.acl.rebuild_index();
    Ok(state)
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, io::Error::other(e.to_string()))
}

/// openraft's handle on the [`Store`].
#[derive(Clone)]
pub struct StateMachine {
    pub store: Arc<Store>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = {
            let state = self.store.read();
            let data = serde_json::to_vec(&*state)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            let last = state.last_applied;
            let id = match last {
                Some(l) => format!(
                    "{}-{}-{}",
                    l.leader_id.term,
                    l.index,
                    uuid::Uuid::new_v4().simple()
                ),
                None => format!("0-0-{}", uuid::Uuid::new_v4().simple()),
            };
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: state.membership.clone(),
                snapshot_id: id,
            };
            (meta, data)
        };
        let store = self.store.clone();
        let meta2 = meta.clone();
        // The file write fsyncs; keep it off the async workers. The data goes and comes back
        // rather than being copied.
        let data =
            tokio::task::spawn_blocking(move || store.snapshots.save(&meta2, &data).map(|()| data))
                .await
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        crate::util::release_free_memory();
        self.store.last_snapshot_index.store(
            meta.last_log_id.map(|l| l.index).unwrap_or(0),
            Ordering::Relaxed,
        );
        tracing::info!(index = ?meta.last_log_id.map(|l| l.index), bytes = data.len(), "snapshot taken");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.store.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut changes = Changes::default();
        let mut results = Vec::new();
        let last = {
            let mut state = self.store.write();
            for entry in entries {
                let log_id = *entry.get_log_id();
                state.last_applied = Some(log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult::None,
                    EntryPayload::Normal(cmd) => state.apply(log_id.index, &cmd, &mut changes),
                    EntryPayload::Membership(m) => {
                        state.set_membership(log_id, m);
                        CommandResult::None
                    }
                };
                results.push(result);
            }
            state.last_applied.map(|l| l.index).unwrap_or(0)
        };
        self.store.watches.fire(&changes);
        self.store.applied.send_replace(last);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Vec<u8>>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let state = restore(meta, &snapshot).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let store = self.store.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || store.snapshots.save(&meta2, &snapshot))
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let last = state.last_applied.map(|l| l.index).unwrap_or(0);
        {
            let mut current = self.store.write();
            let lock_delays = std::mem::take(&mut current.lock_delays);
            *current = state;
            current.lock_delays = lock_delays;
        }
        self.store
            .last_snapshot_index
            .store(last, Ordering::Relaxed);
        self.store.snapshot_installs.fetch_add(1, Ordering::Relaxed);
        self.store.watches.fire_all();
        self.store.applied.send_replace(last);
        tracing::info!(index = last, "installed snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let store = self.store.clone();
        let loaded = tokio::task::spawn_blocking(move || store.snapshots.load())
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "x".into(),
        }
    }

    #[test]
    fn snapshot_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.bin");
        let store = SnapshotStore {
            path: Some(path.clone()),
            mem: Mutex::new(None),
        };
        let data = serde_json::to_vec(&State::default()).unwrap();
        store.save(&meta(), &data).unwrap();
        let (m, d) = store.load().unwrap().unwrap();
        assert_eq!(
            (m.snapshot_id.as_str(), d.as_slice()),
            ("x", data.as_slice())
        );

        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2 + HEADER / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("snapshot.bin"), "{e}");

        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
