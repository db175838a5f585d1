//! The Raft log and vote, durable in redb.
//!
//! The newest entries (up to `MEM_BYTES`) are also kept in memory, so replication to followers
//! that keep up and apply never read the disk; older ones, needed only by a lagging follower,
//! are read back from redb. Memory thus stays bounded however many writes share an entry. Writes go to one writer thread that drains everything queued and commits it as one
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
use std::sync::atomic::{AtomicU64, Ordering};
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
/// Encoded bytes of entries kept in memory before the oldest durable, committed ones are
/// dropped from it. Decoded entries take several times their encoded size, and followers
/// that fall further behind are served from redb, so this stays small.
const MEM_BYTES: usize = 4 << 20;

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
    last_log: Option<LogId>,
}

/// The in-memory tail of the log: entries and their encoded size.
#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, (Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn insert(&mut self, index: u64, e: Entry, size: usize) {
        if let Some((_, old)) = self.entries.insert(index, (e, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
    }

    /// Drops every entry at or above `from`.
    fn truncate(&mut self, from: u64) {
        for (_, (_, size)) in self.entries.split_off(&from) {
            self.bytes -= size;
        }
    }

    /// Drops entries at or below `upto`, oldest first, while `keep_going` says so.
    fn drop_front(&mut self, upto: u64, mut keep_going: impl FnMut(&Tail) -> bool) {
        while keep_going(self) {
            match self.entries.first_key_value() {
                Some((i, _)) if *i <= upto => {
                    if let Some((_, (_, size))) = self.entries.pop_first() {
                        self.bytes -= size;
                    }
                }
                _ => break,
            }
        }
    }
}

struct Shared {
    tail: RwLock<Tail>,
    meta: Mutex<Meta>,
    db: Arc<Database>,
    mem_bytes: usize,
    /// Highest index whose append is durable. Entries at or below both this and the committed
    /// index can never be truncated, so they may leave memory and be read from redb.
    flushed: AtomicU64,
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
        Self::open_with_memory(path, MEM_BYTES)
    }

    /// [`LogStore::open`] keeping at most `mem_bytes` of encoded entries in memory.
    pub fn open_with_memory(path: Option<&Path>, mem_bytes: usize) -> Result<Self, LogStoreError> {
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
        let (meta, tail) = load(&db, mem_bytes).map_err(err)?;
        let flushed = meta.last_log.map(|l| l.index).unwrap_or(0);
        let shared = Arc::new(Shared {
            tail: RwLock::new(tail),
            meta: Mutex::new(meta),
            db: Arc::new(db),
            mem_bytes,
            flushed: AtomicU64::new(flushed),
        });
        let (tx, rx) = mpsc::channel();
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer(for_writer, rx))
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

fn load(db: &Database, mem_bytes: usize) -> Result<(Meta, Tail), String> {
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
    let mut tail = Tail::default();
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
        meta.last_log = Some(*entry.get_log_id());
        tail.insert(index, entry, v.value().len());
        tail.drop_front(index, |t| t.bytes > mem_bytes);
    }
    meta.last_log = meta.last_log.or(meta.last_purged);
    Ok((meta, tail))
}

fn writer(shared: Arc<Shared>, rx: mpsc::Receiver<Op>) {
    let db = shared.db.clone();
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = commit(&db, &ops).map_err(|e| e.to_string());
        match &result {
            Err(e) => tracing::error!(error = %e, "raft log write failed"),
            Ok(()) => {
                let top = ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::Append(rows, _) => rows.last().map(|(i, _)| *i),
                        _ => None,
                    })
                    .max();
                if let Some(top) = top {
                    shared.flushed.fetch_max(top, Ordering::SeqCst);
                }
            }
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
    /// Entries in `range`: the part below the in-memory tail from redb, the rest from memory.
    fn range<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let tail = read(&self.tail);
        let tail_first = tail.entries.keys().next().copied().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        if start < tail_first {
            out = self.read_db(start, end.min(tail_first))?;
        }
        let from = start.max(tail_first);
        if from < end {
            out.extend(tail.entries.range(from..end).map(|(_, (e, _))| e.clone()));
        }
        Ok(out)
    }

    fn read_db(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let io = |e: String| {
            StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, io::Error::other(e))
        };
        let txn = self.db.begin_read().map_err(|e| io(e.to_string()))?;
        let logs = txn.open_table(LOGS).map_err(|e| io(e.to_string()))?;
        let mut out = Vec::new();
        for row in logs.range(start..end).map_err(|e| io(e.to_string()))? {
            let (k, v) = row.map_err(|e| io(e.to_string()))?;
            out.push(decode(&format!("entry {}", k.value()), v.value()).map_err(io)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.shared.range(range)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.shared.range(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let meta = lock(&self.shared.meta);
        Ok(LogState {
            last_purged_log_id: meta.last_purged,
            last_log_id: meta.last_log.or(meta.last_purged),
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
        let mut last = None;
        {
            let mut tail = write(&self.shared.tail);
            for e in entries {
                let index = e.get_log_id().index;
                last = Some(*e.get_log_id());
                let bytes = encode(&e)?;
                tail.insert(index, e, bytes.len());
                rows.push((index, bytes));
            }
            let limit = self.shared.mem_bytes;
            if tail.bytes > limit {
                let committed = lock(&self.shared.meta)
                    .committed
                    .map(|l| l.index)
                    .unwrap_or(0);
                let safe = committed.min(self.shared.flushed.load(Ordering::SeqCst));
                tail.drop_front(safe, |t| t.bytes > limit);
            }
        }
        if last.is_some() {
            lock(&self.shared.meta).last_log = last;
        }
        self.send(Op::Append(rows, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        write(&self.shared.tail).truncate(log_id.index);
        let before = match log_id.index.checked_sub(1) {
            Some(prev) => self
                .shared
                .range(prev..=prev)?
                .first()
                .map(|e| *e.get_log_id()),
            None => None,
        };
        {
            let mut meta = lock(&self.shared.meta);
            meta.last_log = before.or(meta.last_purged);
        }
        self.send(Op::Truncate(log_id.index))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        write(&self.shared.tail).drop_front(log_id.index, |_| true);
        {
            let mut meta = lock(&self.shared.meta);
            meta.last_purged = Some(log_id);
            if meta.last_log.is_none_or(|l| l.index < log_id.index) {
                meta.last_log = Some(log_id);
            }
        }
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

    #[tokio::test]
    async fn old_entries_leave_memory_and_are_read_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store =
            LogStore::open_with_memory(Some(&dir.path().join("raft.redb")), 2_000).unwrap();
        store.blocking_append((1..=50).map(entry)).await.unwrap();
        store.save_committed(Some(entry(50).log_id)).await.unwrap();
        // The next append finds the tail over its limit and drops committed, durable entries.
        store.blocking_append((51..=60).map(entry)).await.unwrap();
        let in_memory = read(&store.shared.tail).entries.len();
        assert!(in_memory < 60, "nothing left memory ({in_memory} entries)");
        assert!(
            read(&store.shared.tail).entries.contains_key(&60),
            "the newest stays"
        );
        let all = store.try_get_log_entries(1..=60).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            (1..=60).collect::<Vec<_>>()
        );
        let some = store.try_get_log_entries(5..8).await.unwrap();
        assert_eq!(
            some.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
        // Uncommitted entries are never dropped, however full memory is.
        store.blocking_append((61..=100).map(entry)).await.unwrap();
        assert!(read(&store.shared.tail).entries.contains_key(&51));
        store.truncate(entry(70).log_id).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(69));
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
