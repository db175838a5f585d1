//! The Raft log and vote, durable in redb.
//!
//! Every entry not yet purged is also kept in memory, so replication and apply never read the
//! disk. Writes go to one writer thread that drains everything queued and commits it as one
//! fsynced redb transaction (group commit): under load many client writes share one fsync,
//! which is what makes throughput scale with concurrency. openraft is told an append is
//! durable only through the `LogFlushed` callback, after that commit.

// openraft's storage traits fix the error type; boxing it here would only move the size.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "last_purged";
/// Upper bound of operations folded into one transaction.
const MAX_BATCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("raft log {}: {message}", path.display())]
pub struct LogStoreError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Default)]
struct Meta {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

struct Shared {
    entries: RwLock<BTreeMap<u64, Entry>>,
    meta: Mutex<Meta>,
}

enum Op {
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    Truncate(u64),
    Purge(u64, Vec<u8>),
    Meta(
        &'static str,
        Vec<u8>,
        Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ),
}

pub struct LogStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Op>,
}

#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    /// Opens (or creates) the log at `path`; `None` keeps it in memory (dev mode). A log that
    /// cannot be read whole is an error, never an empty start.
    pub fn open(path: Option<&Path>) -> Result<Self, LogStoreError> {
        let shown = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("(memory)"));
        let err = |message: String| LogStoreError {
            path: shown.clone(),
            message,
        };
        let db = match path {
            Some(p) => Database::create(p).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    err("already open by another process".to_string())
                }
                e => err(format!(
                    "cannot open ({e}); the file is damaged or not a Berth raft log"
                )),
            })?,
            None => redb::Builder::new()
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(|e| err(e.to_string()))?,
        };
        let (meta, entries) = load(&db).map_err(err)?;
        let shared = Arc::new(Shared {
            entries: RwLock::new(entries),
            meta: Mutex::new(meta),
        });
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(db, rx))
            .map_err(|e| err(format!("cannot start the writer thread: {e}")))?;
        Ok(LogStore { shared, tx })
    }

    fn send(&self, op: Op) -> Result<(), StorageError> {
        self.tx.send(op).map_err(|_| {
            StorageError::from_io_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                io::Error::other("raft log writer stopped"),
            )
        })
    }

    async fn put_meta_durable(
        &self,
        key: &'static str,
        value: Vec<u8>,
    ) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Op::Meta(key, value, Some(tx)))?;
        let res = rx
            .await
            .unwrap_or_else(|_| Err("raft log writer stopped".to_string()));
        res.map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, io::Error::other(e))
        })
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("corrupt {what}: {e}"))
}

fn load(db: &Database) -> Result<(Meta, BTreeMap<u64, Entry>), String> {
    let init = db.begin_write().map_err(|e| e.to_string())?;
    init.open_table(LOGS).map_err(|e| e.to_string())?;
    init.open_table(META).map_err(|e| e.to_string())?;
    init.commit().map_err(|e| e.to_string())?;

    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let meta_t = txn.open_table(META).map_err(|e| e.to_string())?;
    let mut meta = Meta::default();
    let get = |k: &str| -> Result<Option<Vec<u8>>, String> {
        Ok(meta_t
            .get(k)
            .map_err(|e| format!("corrupt metadata: {e}"))?
            .map(|v| v.value().to_vec()))
    };
    if let Some(v) = get(META_VOTE)? {
        meta.vote = Some(decode("vote", &v)?);
    }
    if let Some(v) = get(META_COMMITTED)? {
        meta.committed = decode("committed index", &v)?;
    }
    if let Some(v) = get(META_PURGED)? {
        meta.last_purged = decode("purge marker", &v)?;
    }
    let logs = txn.open_table(LOGS).map_err(|e| e.to_string())?;
    let mut entries = BTreeMap::new();
    let mut expected = meta.last_purged.map(|l| l.index + 1);
    for row in logs.iter().map_err(|e| format!("corrupt log table: {e}"))? {
        let (k, v) = row.map_err(|e| format!("corrupt log table: {e}"))?;
        let index = k.value();
        let entry: Entry = decode(&format!("entry {index}"), v.value())?;
        if entry.get_log_id().index != index {
            return Err(format!(
                "entry stored at {index} claims index {}",
                entry.get_log_id().index
            ));
        }
        if let Some(exp) = expected
            && index != exp
        {
            return Err(format!(
                "gap in the log: expected entry {exp}, found {index}"
            ));
        }
        expected = Some(index + 1);
        entries.insert(index, entry);
    }
    Ok((meta, entries))
}

fn writer(db: Database, rx: mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = commit(&db, &ops).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        for op in ops {
            match op {
                Op::Append(_, cb) => cb.log_io_completed(result.clone().map_err(io::Error::other)),
                Op::Meta(_, _, Some(tx)) => {
                    let _ = tx.send(result.clone());
                }
                _ => {}
            }
        }
    }
}

fn commit(db: &Database, ops: &[Op]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut logs = txn.open_table(LOGS)?;
        let mut meta = txn.open_table(META)?;
        for op in ops {
            match op {
                Op::Append(entries, _) => {
                    for (i, bytes) in entries {
                        logs.insert(*i, bytes.as_slice())?;
                    }
                }
                Op::Truncate(from) => logs.retain_in(*from.., |_, _| false)?,
                Op::Purge(upto, marker) => {
                    logs.retain_in(..=*upto, |_, _| false)?;
                    meta.insert(META_PURGED, marker.as_slice())?;
                }
                Op::Meta(k, v, _) => {
                    meta.insert(*k, v.as_slice())?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(|e| {
        StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, io::Error::other(e))
    })
}

impl Shared {
    fn range<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        read(&self.entries)
            .range(range)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.shared.range(range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.shared.range(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = lock(&self.shared.meta).last_purged;
        let last = read(&self.shared.entries)
            .values()
            .next_back()
            .map(|e| *e.get_log_id());
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        lock(&self.shared.meta).vote = Some(*vote);
        self.put_meta_durable(META_VOTE, encode(vote)?).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(lock(&self.shared.meta).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        lock(&self.shared.meta).committed = committed;
        // Not waited for: the committed index only saves re-applying entries after a restart.
        self.send(Op::Meta(META_COMMITTED, encode(&committed)?, None))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(lock(&self.shared.meta).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        {
            let mut mem = write(&self.shared.entries);
            for e in entries {
                let index = e.get_log_id().index;
                rows.push((index, encode(&e)?));
                mem.insert(index, e);
            }
        }
        self.send(Op::Append(rows, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        write(&self.shared.entries).split_off(&log_id.index);
        self.send(Op::Truncate(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut mem = write(&self.shared.entries);
            let keep = mem.split_off(&(log_id.index + 1));
            *mem = keep;
        }
        lock(&self.shared.meta).last_purged = Some(log_id);
        self.send(Op::Purge(log_id.index, encode(&Some(log_id))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn reopen_sees_appends_truncation_purge_and_vote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        {
            let mut store = LogStore::open(Some(&path)).unwrap();
            store.blocking_append((1..=10).map(entry)).await.unwrap();
            store.truncate(entry(9).log_id).await.unwrap();
            store.purge(entry(3).log_id).await.unwrap();
            store.save_vote(&Vote::new(2, 7)).await.unwrap();
        }
        // The writer thread ends when the store is dropped; redb releases its lock then.
        let mut store = loop {
            match LogStore::open(Some(&path)) {
                Ok(s) => break s,
                Err(e) if e.message.contains("already open") => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
        let got = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![4, 5, 6, 7, 8]
        );
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 7)));
    }

    #[test]
    fn a_file_that_is_not_a_log_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let e = LogStore::open(Some(&path))
            .err()
            .expect("garbage must not open");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
