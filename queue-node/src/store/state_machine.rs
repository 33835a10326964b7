//! openraft's state machine for one shard: applies entries through
//! [`crate::fsm`] and writes each call's changes, plus the applied log id,
//! in one RocksDB `WriteBatch`. Snapshots are the shard's key range,
//! streamed from a RocksDB snapshot into a file on a blocking thread while
//! apply carries on, and streamed from a received file back into RocksDB
//! ([`super::snapshot_file`]): never whole in memory.
//!
//! Applied state skips RocksDB's WAL: the Raft log already holds every
//! entry durably, so writing each job a second time into the WAL bought
//! nothing but bytes (half the WAL, and the WAL copy was the biggest item
//! in the enqueue profile). After a crash the state is what was last
//! flushed, and openraft re-applies the log from there. The price is that
//! the log may only be purged up to what is flushed: see
//! [`crate::shard::ShardShared::durable_index`], kept by the flushes of
//! [`super::watermark::run`] and by [`super::log_store`]'s purge.
//!
//! Apply's writes reach RocksDB at checkpoints ([`super::pending`]): every
//! [`CHECKPOINT_AFTER`], when they fill the shard's share of memory, and
//! before a snapshot. A checkpoint is one batch ending in the applied log
//! id, so the state in RocksDB is always the state at one log index, and a
//! restart re-applies the log from there. One kind of record is written at
//! once instead: a new job's, whose contents are served from RocksDB. Its
//! key names the log index that created it, so a load skips the ones past
//! the stored state's index (the entries re-applied write them again).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::contents::ContentCache;
use super::db::{Store, CF_RAFT, CF_STATE};
use super::io_err;
use super::pending::PendingWrites;
use super::snapshot_file::{SnapshotData, SnapshotFileError, SnapshotReader, SnapshotWriter};
use crate::fsm::keys::{self, WriteSink};
use crate::fsm::ShardState;
use crate::ops::{BatchResult, Op, OpResult};
use crate::raft_types::{LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::shard::ShardShared;

/// Persisted next to the state: how far it reflects the log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    now_ms: u64,
}

/// How long applied changes may wait in memory for a checkpoint. Long
/// enough that a job claimed and acked within it costs RocksDB nothing
/// for its status; short enough that a restart re-applies little.
pub const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Where one apply's writes go: new jobs' records into `ahead` (written
/// when the apply ends), the rest into the shard's pending writes.
struct BatchSink<'a> {
    ahead: WriteBatch,
    cf: &'a rocksdb::ColumnFamily,
    pending: &'a mut PendingWrites,
    error: Option<postcard::Error>,
    scratch: Vec<u8>,
}

/// A new job's record: written before the checkpoint that covers it.
fn written_ahead(key: &[u8], created: bool) -> bool {
    created && key.get(4) == Some(&keys::JOB)
}

/// A record written ahead of the state's applied index `applied`: a job
/// enqueued by an entry the stored state does not reflect yet.
fn ahead_of(key: &[u8], applied: u64) -> bool {
    key.get(4) == Some(&keys::JOB) && keys::job_id_of(key).is_some_and(|id| id.index > applied)
}

impl WriteSink for BatchSink<'_> {
    fn put_raw(&mut self, key: &[u8], value: &[u8], created: bool) {
        if written_ahead(key, created) {
            self.ahead.put_cf(self.cf, key, value);
        } else {
            self.pending.put(key, value, created);
        }
    }
    fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
    fn delete(&mut self, key: &[u8]) {
        self.pending.delete(key);
    }
    fn encoding_failed(&mut self, error: postcard::Error) {
        self.error.get_or_insert(error);
    }
}

pub struct StateMachineStore {
    store: Store,
    shard: u32,
    /// Where the contents of newly enqueued jobs are kept for serving.
    contents: Arc<ContentCache>,
    shared: Arc<ShardShared>,
    meta: AppliedMeta,
    current_snapshot: SnapshotCache,
    /// Numbers snapshot ids and received files.
    snapshot_seq: u64,
    /// This shard's snapshot files.
    snapshot_dir: PathBuf,
    /// The file a snapshot is being received into.
    receiving: Option<PathBuf>,
    /// Applied writes not in RocksDB yet.
    pending: PendingWrites,
    /// Checkpoint once `pending` holds this many bytes.
    pending_limit: usize,
    /// Since when something applied waits for a checkpoint.
    unwritten_since: Option<std::time::Instant>,
    /// The checkpoint being written: its outcome, and its emptied buffer.
    writing: Option<tokio::sync::oneshot::Receiver<(Result<(), InstallError>, PendingWrites)>>,
    /// A buffer to fill after the next checkpoint.
    spare: Option<PendingWrites>,
}

/// The last snapshot built or installed, kept to send to followers: its
/// meta and its file. Not kept across restarts (a fresh one is as good).
#[derive(Clone, Default)]
struct SnapshotCache(Arc<Mutex<Option<(SnapshotMeta, PathBuf)>>>);

impl SnapshotCache {
    fn get(&self) -> Option<(SnapshotMeta, PathBuf)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `path` the current snapshot and deletes the one it replaces
    /// (a follower still being sent it keeps its open file).
    fn set(&self, meta: SnapshotMeta, path: PathBuf) {
        let old = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace((meta, path.clone()));
        if let Some((_, old)) = old.filter(|(_, old)| *old != path) {
            let _ = std::fs::remove_file(old);
        }
    }
}

/// Why a shard's persisted state could not be read at start.
#[derive(Debug, thiserror::Error)]
pub enum LoadStateError {
    #[error("reading shard {shard} state from RocksDB: {source}")]
    Read { shard: u32, source: rocksdb::Error },
    #[error("shard {shard} applied-state record is corrupt: {source}")]
    Meta { shard: u32, source: postcard::Error },
    #[error("shard {shard}: {source}")]
    Records {
        shard: u32,
        source: crate::fsm::LoadError<rocksdb::Error>,
    },
    #[error("shard {shard}: finishing the snapshot install a stop interrupted: {source}")]
    Install { shard: u32, source: InstallError },
    #[error("shard {shard}: snapshot directory {path}: {source}")]
    SnapshotDir {
        shard: u32,
        path: String,
        source: std::io::Error,
    },
}

/// Why a snapshot could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    #[error("RocksDB: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("encoding: {0}")]
    Encode(#[from] postcard::Error),
    #[error("{0}")]
    Load(String),
    #[error("the snapshot worker stopped")]
    Stopped,
}

fn meta_key(shard: u32) -> Vec<u8> {
    keys::named_key(shard, keys::META, b"applied")
}

/// In `raft_meta` while a snapshot install is under way: the applied
/// state it ends in. A node that finds it at start redoes the install
/// from [`INSTALLING`] before anything reads the shard.
fn installing_key(shard: u32) -> Vec<u8> {
    let mut key = shard.to_be_bytes().to_vec();
    key.extend_from_slice(b"snapshot-installing");
    key
}

/// The file of the snapshot being installed, in the shard's snapshot dir.
const INSTALLING: &str = "installing.snap";

/// Records written per write batch when a snapshot is installed.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Replaces the shard's state with the snapshot in `dir/INSTALLING`
/// (complete and checked), ending in `applied`, then clears the install
/// marker. Safe to run again on the same file after a crash.
fn write_snapshot_state(
    store: &Store,
    shard: u32,
    dir: &Path,
    applied: &AppliedMeta,
) -> Result<(), InstallError> {
    let cf = store.cf(CF_STATE);
    let mut no_wal = WriteOptions::default();
    no_wal.disable_wal(true);
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(
        cf,
        keys::shard_prefix(shard).to_vec(),
        keys::shard_end(shard),
    );
    for record in SnapshotReader::open(&dir.join(INSTALLING))? {
        let (key, value) = record?;
        batch.put_cf(cf, key, value);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            store.db.write_opt(std::mem::take(&mut batch), &no_wal)?;
        }
    }
    batch.put_cf(cf, meta_key(shard), postcard::to_allocvec(applied)?);
    store.db.write_opt(batch, &no_wal)?;
    // On disk before the marker goes: the records skipped the WAL.
    store.flush_state()?;
    let mut synced = WriteOptions::default();
    synced.set_sync(store.durability == super::Durability::Fsync);
    let mut done = WriteBatch::default();
    done.delete_cf(store.cf(CF_RAFT), installing_key(shard));
    store.db.write_opt(done, &synced)?;
    Ok(())
}

/// The shard's state as stored at log index `applied`, read one record at
/// a time.
fn load_state(
    store: &Store,
    shard: u32,
    applied: u64,
    now_ms: u64,
) -> Result<ShardState, crate::fsm::LoadError<rocksdb::Error>> {
    let prefix = keys::shard_prefix(shard);
    let end = keys::shard_end(shard);
    // A rebuild reads every record once: keep it out of the block cache,
    // which is for the job records served next.
    let mut once = rocksdb::ReadOptions::default();
    once.fill_cache(false);
    let records = store
        .db
        .iterator_cf_opt(
            store.cf(CF_STATE),
            once,
            IteratorMode::From(&prefix, Direction::Forward),
        )
        .take_while(|item| item.as_ref().map_or(true, |(key, _)| **key < *end))
        .filter(|item| {
            item.as_ref()
                .map_or(true, |(key, _)| !ahead_of(key, applied))
        });
    ShardState::load(shard, now_ms, records)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachineStore {
    /// Loads the shard's state and indexes from RocksDB.
    /// `pending_limit`: the bytes of applied writes held for a checkpoint.
    pub fn open(
        store: Store,
        shard: u32,
        contents: Arc<ContentCache>,
        pending_limit: usize,
    ) -> Result<(StateMachineStore, Arc<ShardShared>), LoadStateError> {
        let snapshot_dir = store.snapshot_dir(shard);
        let dir_error = |source| LoadStateError::SnapshotDir {
            shard,
            path: snapshot_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&snapshot_dir).map_err(dir_error)?;
        if let Some(bytes) = store
            .db
            .get_cf(store.cf(CF_RAFT), installing_key(shard))
            .map_err(|source| LoadStateError::Read { shard, source })?
        {
            let applied: AppliedMeta = postcard::from_bytes(&bytes)
                .map_err(|source| LoadStateError::Meta { shard, source })?;
            tracing::warn!(shard, "a snapshot install was interrupted; finishing it");
            write_snapshot_state(&store, shard, &snapshot_dir, &applied)
                .map_err(|source| LoadStateError::Install { shard, source })?;
        }
        // Snapshots are not kept across restarts: clear what an earlier
        // run left (built, received or installed).
        for entry in std::fs::read_dir(&snapshot_dir).map_err(dir_error)? {
            let path = entry.map_err(dir_error)?.path();
            std::fs::remove_file(&path).map_err(dir_error)?;
        }
        let cf = store.cf(CF_STATE);
        let meta: AppliedMeta = match store
            .db
            .get_cf(cf, meta_key(shard))
            .map_err(|source| LoadStateError::Read { shard, source })?
        {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|source| LoadStateError::Meta { shard, source })?,
            None => AppliedMeta::default(),
        };
        // Streamed: the shard's records are never all in memory at once.
        let applied = meta.last_applied.map(|l| l.index).unwrap_or(0);
        let state = load_state(&store, shard, applied, meta.now_ms)
            .map_err(|source| LoadStateError::Records { shard, source })?;
        let shared = Arc::new(ShardShared::new(state));
        shared.set_applied_index(applied);
        shared.set_written_index(applied);
        // What was read back from disk is, by definition, on disk.
        shared.set_durable_index(applied);
        Ok((
            StateMachineStore {
                store,
                shard,
                contents,
                shared: shared.clone(),
                meta,
                current_snapshot: SnapshotCache::default(),
                snapshot_seq: 0,
                snapshot_dir,
                receiving: None,
                pending: PendingWrites::default(),
                pending_limit,
                unwritten_since: None,
                writing: None,
                spare: None,
            },
            shared,
        ))
    }

    /// Starts writing what was applied since the last checkpoint, ending
    /// in the applied log id, as one batch. The write runs on a blocking
    /// thread while apply carries on (tens of thousands of records take
    /// tens of milliseconds); checkpoints are written one after another.
    async fn checkpoint(&mut self) -> Result<(), InstallError> {
        self.checkpoint_written().await?;
        let meta = postcard::to_allocvec(&self.meta)?;
        let next = self.spare.take().unwrap_or_default();
        let mut pending = std::mem::replace(&mut self.pending, next);
        pending.put(&meta_key(self.shard), &meta, false);
        self.unwritten_since = None;
        let (store, shared, index) = (
            self.store.clone(),
            self.shared.clone(),
            self.applied_index(),
        );
        let (done, written) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let batch = pending.take_write_batch(store.cf(CF_STATE));
            let mut no_wal = WriteOptions::default();
            no_wal.disable_wal(true);
            let result = store.db.write_opt(batch, &no_wal);
            if result.is_ok() {
                shared.set_written_index(index);
            }
            let _ = done.send((result.map_err(InstallError::from), pending));
        });
        self.writing = Some(written);
        Ok(())
    }

    /// Waits until the checkpoint being written (if any) is in RocksDB.
    async fn checkpoint_written(&mut self) -> Result<(), InstallError> {
        let Some(writing) = self.writing.take() else {
            return Ok(());
        };
        let (result, emptied) = writing.await.map_err(|_| InstallError::Stopped)?;
        self.spare = Some(emptied);
        result
    }

    /// The last applied log index (0 before the first entry).
    pub fn applied_index(&self) -> u64 {
        self.meta.last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Keeps the contents of the jobs these entries enqueued (not the
    /// duplicates an idempotency key turned away) while the cache has room.
    fn cache_contents(&self, entries: &[openraft::Entry<TypeConfig>], results: &[BatchResult]) {
        for (entry, result) in entries.iter().zip(results) {
            let EntryPayload::Normal(batch) = &entry.payload else {
                continue;
            };
            for (op, result) in batch.ops.iter().zip(&result.0) {
                if let (Op::Enqueue { jobs, .. }, OpResult::Enqueued(ids)) = (op, result) {
                    self.contents.admit(
                        ids.iter()
                            .zip(jobs)
                            .filter(|((_, duplicate), _)| !duplicate)
                            .map(|((id, _), job)| (*id, job)),
                    );
                }
            }
        }
    }

    /// Starts building a snapshot of the state as applied now. Waits only
    /// until a RocksDB snapshot (a consistent view, taken in microseconds)
    /// pins that state; the scan of the shard's keys and their encoding
    /// run on a blocking thread while this task applies the next entries.
    async fn start_snapshot(&mut self) -> PreparedSnapshot {
        let (built_tx, built) = tokio::sync::oneshot::channel();
        let cache = self.current_snapshot.clone();
        // The snapshot is read from RocksDB: everything applied goes there first.
        let checkpointed = match self.checkpoint().await {
            Ok(()) => self.checkpoint_written().await,
            Err(e) => Err(e),
        };
        if let Err(e) = checkpointed {
            let _ = built_tx.send(Err(e));
            return PreparedSnapshot {
                meta: SnapshotMeta::default(),
                built: Some(built),
                cache,
            };
        }
        self.snapshot_seq += 1;
        let meta = SnapshotMeta {
            last_log_id: self.meta.last_applied,
            last_membership: self.meta.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                self.shard,
                self.meta.last_applied.map(|l| l.index).unwrap_or(0),
                self.snapshot_seq
            ),
        };
        let (pinned_tx, pinned) = tokio::sync::oneshot::channel();
        let (store, shard, now_ms) = (self.store.clone(), self.shard, self.meta.now_ms);
        let applied = self.applied_index();
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        tokio::task::spawn_blocking(move || {
            let view = store.db.snapshot();
            let _ = pinned_tx.send(());
            let prefix = keys::shard_prefix(shard);
            let end = keys::shard_end(shard);
            let scan = view.iterator_cf(
                store.cf(CF_STATE),
                IteratorMode::From(&prefix, Direction::Forward),
            );
            let built = write_snapshot_file(scan, &end, applied, &path, now_ms);
            let _ = built_tx.send(built.map(|()| path));
        });
        // If the thread could not start, `built` reports it.
        let _ = pinned.await;
        PreparedSnapshot {
            meta,
            built: Some(built),
            cache,
        }
    }
}

/// The shard's state records at log index `applied` (not its
/// applied-state record, nor records written ahead of it) of `scan` before
/// `end`, into a snapshot file at `path` (written under a temporary name,
/// then renamed: a file there is complete).
fn write_snapshot_file(
    scan: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    end: &[u8],
    applied: u64,
    path: &Path,
    now_ms: u64,
) -> Result<(), InstallError> {
    let building = path.with_extension("building");
    let mut writer = SnapshotWriter::create(&building, now_ms)?;
    for item in scan {
        let (key, value) = item?;
        if &*key >= end {
            break;
        }
        if key.get(4) != Some(&keys::META) && !ahead_of(&key, applied) {
            writer.push(&key, &value)?;
        }
    }
    writer.finish()?;
    std::fs::rename(&building, path).map_err(|e| SnapshotFileError::io(path, e))?;
    Ok(())
}

/// A snapshot being built by [`StateMachineStore::start_snapshot`].
pub struct PreparedSnapshot {
    meta: SnapshotMeta,
    built: Option<tokio::sync::oneshot::Receiver<Result<PathBuf, InstallError>>>,
    cache: SnapshotCache,
}

impl RaftSnapshotBuilder<TypeConfig> for PreparedSnapshot {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let failed = |e: InstallError| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let built = self
            .built
            .take()
            .ok_or_else(|| failed(InstallError::Stopped))?;
        let path = built
            .await
            .map_err(|_| failed(InstallError::Stopped))?
            .map_err(failed)?;
        let data = SnapshotData::open(path.clone())
            .await
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        tracing::info!(snapshot = %self.meta.snapshot_id, path = %path.display(), "built snapshot");
        self.cache.set(self.meta.clone(), path);
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = PreparedSnapshot;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.meta.last_applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResult>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let entries: Vec<_> = entries.into_iter().collect();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            self.shared
                .note_apply_start(first.log_id.index, last.log_id.index, started);
        }
        let mut sink = BatchSink {
            ahead: WriteBatch::default(),
            cf: self.store.cf(CF_STATE),
            pending: &mut self.pending,
            error: None,
            scratch: Vec::with_capacity(1024),
        };
        let mut results = Vec::new();
        let (woken, finished) = {
            let mut state = self.shared.state();
            for entry in &entries {
                self.meta.last_applied = Some(entry.log_id);
                results.push(match &entry.payload {
                    EntryPayload::Blank => BatchResult::default(),
                    EntryPayload::Normal(batch) => {
                        state.apply_batch(entry.log_id.index, batch, &mut sink)
                    }
                    EntryPayload::Membership(m) => {
                        self.meta.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        BatchResult::default()
                    }
                });
            }
            self.meta.now_ms = state.now_ms();
            self.shared.clock.applied(self.meta.now_ms);
            self.shared.count_jobs(&state);
            (state.take_woken(), state.take_finished())
        };
        let BatchSink { ahead, error, .. } = sink;
        if let Some(e) = error {
            return Err(io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e));
        }
        self.cache_contents(&entries, &results);
        self.contents.forget(finished);
        if !ahead.is_empty() {
            let mut no_wal = WriteOptions::default();
            no_wal.disable_wal(true);
            self.store
                .db
                .write_opt(ahead, &no_wal)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        }
        let since = *self
            .unwritten_since
            .get_or_insert_with(std::time::Instant::now);
        if self.pending.bytes() >= self.pending_limit || since.elapsed() >= CHECKPOINT_AFTER {
            self.checkpoint()
                .await
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        }
        self.shared.set_applied_index(self.applied_index());
        self.shared.apply_seconds.observe(started.elapsed());
        self.shared.wake(&woken);
        self.shared.applied.notify_waiters();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.start_snapshot().await
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        let failed = |e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
        if let Some(old) = self.receiving.take() {
            let _ = tokio::fs::remove_file(old).await;
        }
        self.snapshot_seq += 1;
        let path = self
            .snapshot_dir
            .join(format!("receiving-{}.snap", self.snapshot_seq));
        let data = SnapshotData::create(path.clone()).await.map_err(failed)?;
        self.receiving = Some(path);
        Ok(Box::new(data))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        snapshot
            .flush()
            .await
            .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        let received = snapshot.path.clone();
        drop(snapshot);
        // A checkpoint still being written would land on the installed state.
        self.checkpoint_written()
            .await
            .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        if self.receiving.as_ref() == Some(&received) {
            self.receiving = None;
        }
        // The clock comes from the file.
        let applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            now_ms: 0,
        };
        let (store, shard, dir) = (self.store.clone(), self.shard, self.snapshot_dir.clone());
        let kept = dir.join(format!("{}.snap", meta.snapshot_id));
        let target = kept.clone();
        let (state, applied) = tokio::task::spawn_blocking(move || {
            install_file(&store, shard, &dir, &received, &target, applied)
        })
        .await
        .map_err(|_| io_err(subject(), ErrorVerb::Write, InstallError::Stopped))?
        .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        self.meta = applied;
        // What was applied before is replaced, written or not.
        self.pending.clear();
        self.unwritten_since = None;
        self.contents.forget_shard(self.shard);
        self.shared.replace_state(state);
        self.shared.set_applied_index(self.applied_index());
        self.shared.set_written_index(self.applied_index());
        self.shared.set_durable_index(self.applied_index());
        self.current_snapshot.set(meta.clone(), kept);
        tracing::info!(shard = self.shard, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if let Some((meta, path)) = self.current_snapshot.get() {
            // Deleted only when replaced; if that raced this, build anew.
            if let Ok(data) = SnapshotData::open(path).await {
                return Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(data),
                }));
            }
        }
        if self.meta.last_applied.is_none() {
            return Ok(None);
        }
        // After a restart nothing is kept: a fresh one is as good.
        self.start_snapshot().await.build_snapshot().await.map(Some)
    }
}

/// Installs the received snapshot file `received`: checks it whole, marks
/// the install (so a crash midway is finished at the next start), writes
/// it into the shard's key range, and keeps the file as `kept`. Returns
/// the state loaded from what was written, and `applied` with the
/// snapshot's clock.
fn install_file(
    store: &Store,
    shard: u32,
    dir: &Path,
    received: &Path,
    kept: &Path,
    mut applied: AppliedMeta,
) -> Result<(ShardState, AppliedMeta), InstallError> {
    let io = SnapshotFileError::io;
    applied.now_ms = SnapshotReader::verify(received)?;
    let installing = dir.join(INSTALLING);
    std::fs::rename(received, &installing).map_err(|e| io(&installing, e))?;
    sync_dir(dir).map_err(|e| io(dir, e))?;
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    let mut mark = WriteBatch::default();
    mark.put_cf(
        store.cf(CF_RAFT),
        installing_key(shard),
        postcard::to_allocvec(&applied)?,
    );
    store.db.write_opt(mark, &synced)?;
    write_snapshot_state(store, shard, dir, &applied)?;
    std::fs::rename(&installing, kept).map_err(|e| io(kept, e))?;
    let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
    let state = load_state(store, shard, index, applied.now_ms)
        .map_err(|e| InstallError::Load(e.to_string()))?;
    Ok((state, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::keys::MapSink;
    use crate::ops::{Batch, NewJob, QueueDefaults, When};
    use raftq_api::JobId;

    /// A shard state with jobs in it, and the records apply wrote.
    fn some_state() -> (ShardState, MapSink) {
        let mut state = ShardState::new(0);
        let mut sink = MapSink::default();
        let jobs = (0..50)
            .map(|i| NewJob {
                payload: bytes::Bytes::from(format!("job {i}")),
                headers: vec![("k".into(), format!("{i}"))],
                priority: i % 3,
                when: When::Now,
                max_attempts: 0,
                backoff: None,
                idempotency_key: (i % 7 == 0).then(|| format!("key-{i}")),
            })
            .collect();
        let batch = Batch {
            time_ms: 1_000,
            defaults: QueueDefaults::default(),
            ops: vec![
                Op::Enqueue {
                    queue: "q".into(),
                    jobs,
                },
                Op::Claim {
                    queue: "q".into(),
                    worker: "w".into(),
                    max: 5,
                    lease_ms: None,
                },
            ]
            .into(),
        };
        state.apply_batch(1, &batch, &mut sink);
        (state, sink)
    }

    fn write_snapshot(path: &Path, sink: &MapSink) {
        let mut writer = SnapshotWriter::create(path, 1_000).unwrap();
        for (k, v) in &sink.map {
            writer.push(k, v).unwrap();
        }
        writer.finish().unwrap();
    }

    fn entry(index: u64, ops: Vec<Op>) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Batch {
                time_ms: 1_000 + index,
                defaults: QueueDefaults::default(),
                ops: ops.into(),
            }),
        }
    }

    fn enqueue(n: usize) -> Op {
        Op::Enqueue {
            queue: "q".into(),
            jobs: (0..n)
                .map(|i| NewJob::ready(bytes::Bytes::from(format!("job {i}"))))
                .collect(),
        }
    }

    fn claim(max: u32) -> Op {
        Op::Claim {
            queue: "q".into(),
            worker: "w".into(),
            max,
            lease_ms: None,
        }
    }

    fn claimed(results: &[BatchResult]) -> Vec<(JobId, u32)> {
        results
            .iter()
            .flat_map(|r| &r.0)
            .filter_map(|r| match r {
                OpResult::Claimed(jobs) => Some(jobs),
                _ => None,
            })
            .flatten()
            .map(|job| (job.id, job.status.attempt))
            .collect()
    }

    async fn checkpoint(sm: &mut StateMachineStore) {
        sm.checkpoint().await.unwrap();
        sm.checkpoint_written().await.unwrap();
    }

    fn stored_statuses(store: &Store) -> Vec<JobId> {
        store
            .db
            .iterator_cf(store.cf(CF_STATE), IteratorMode::Start)
            .map(|item| item.unwrap().0)
            .filter(|key| key.get(4) == Some(&keys::STATUS))
            .filter_map(|key| keys::job_id_of(&key))
            .collect()
    }

    #[tokio::test]
    async fn a_restart_before_the_checkpoint_loads_the_state_of_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_test(dir.path());
        let open = |store: &Store| {
            StateMachineStore::open(store.clone(), 0, Arc::new(ContentCache::new(0)), 1 << 20)
                .unwrap()
        };
        let (mut sm, shared) = open(&store);
        sm.apply([entry(1, vec![enqueue(10)])]).await.unwrap();
        checkpoint(&mut sm).await;
        let at_checkpoint = shared.state().digest();
        assert_eq!(shared.written_index(), 1, "written up to the checkpoint");
        // Applied, not checkpointed: jobs enqueued (their records written
        // ahead), claimed and acked.
        let later = [
            entry(2, vec![enqueue(5), claim(4)]),
            entry(3, vec![claim(3)]),
        ];
        let results = sm.apply(later.clone()).await.unwrap();
        let leased = claimed(&results);
        let ack = entry(
            4,
            vec![Op::Ack {
                tokens: leased[..2].to_vec(),
            }],
        );
        sm.apply([ack.clone()]).await.unwrap();
        let before_crash = shared.state().digest();
        assert_eq!(shared.written_index(), 1, "nothing written since");
        assert_eq!(shared.applied_index(), 4);
        drop((sm, shared));

        let (mut sm, shared) = open(&store);
        assert_eq!(sm.applied_index(), 1);
        assert_eq!(
            shared.state().digest(),
            at_checkpoint,
            "the jobs written ahead of the checkpoint are not loaded"
        );
        // Re-applying the log from there gives the same state.
        sm.apply(later).await.unwrap();
        sm.apply([ack]).await.unwrap();
        assert_eq!(shared.state().digest(), before_crash);
        checkpoint(&mut sm).await;
        drop((sm, shared));
        let (_sm, shared) = open(&store);
        assert_eq!(shared.state().digest(), before_crash);
    }

    #[tokio::test]
    async fn a_status_created_and_deleted_between_checkpoints_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_test(dir.path());
        let (mut sm, _shared) =
            StateMachineStore::open(store.clone(), 0, Arc::new(ContentCache::new(0)), 1 << 20)
                .unwrap();
        sm.apply([entry(1, vec![enqueue(6)])]).await.unwrap();
        checkpoint(&mut sm).await;
        let results = sm.apply([entry(2, vec![claim(4)])]).await.unwrap();
        let leased = claimed(&results);
        // Two acked and two still leased at the checkpoint.
        sm.apply([entry(
            3,
            vec![Op::Ack {
                tokens: leased[..2].to_vec(),
            }],
        )])
        .await
        .unwrap();
        checkpoint(&mut sm).await;
        let still_leased: Vec<JobId> = leased[2..].iter().map(|(id, _)| *id).collect();
        assert_eq!(stored_statuses(&store), still_leased);
        // Acked after the checkpoint that wrote their statuses: deleted.
        sm.apply([entry(
            4,
            vec![Op::Ack {
                tokens: leased[2..].to_vec(),
            }],
        )])
        .await
        .unwrap();
        checkpoint(&mut sm).await;
        assert_eq!(stored_statuses(&store), Vec::<JobId>::new());
    }

    #[test]
    fn an_install_cut_short_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let (want, sink) = some_state();
        let store = Store::open_for_test(dir.path());
        let snapshots = store.snapshot_dir(0);
        std::fs::create_dir_all(&snapshots).unwrap();
        // A stale record the snapshot replaces.
        store
            .db
            .put_cf(
                store.cf(CF_STATE),
                keys::named_key(0, keys::QUEUE, b"old"),
                b"x",
            )
            .unwrap();
        write_snapshot(&snapshots.join(INSTALLING), &sink);
        let applied = AppliedMeta {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 1)),
            membership: StoredMembership::default(),
            now_ms: 1_000,
        };
        // The node stopped right after marking the install.
        store
            .db
            .put_cf(
                store.cf(CF_RAFT),
                installing_key(0),
                postcard::to_allocvec(&applied).unwrap(),
            )
            .unwrap();
        drop(store);

        let store = Store::open_for_test(dir.path());
        let (sm, shared) =
            StateMachineStore::open(store.clone(), 0, Arc::new(ContentCache::new(0)), 1 << 20)
                .expect("finishes the install");
        assert_eq!(sm.applied_index(), 1);
        assert_eq!(shared.state().digest(), want.digest());
        assert!(store
            .db
            .get_cf(store.cf(CF_RAFT), installing_key(0))
            .unwrap()
            .is_none());
        assert!(std::fs::read_dir(&snapshots).unwrap().next().is_none());
    }

    #[test]
    fn a_damaged_received_snapshot_is_refused_and_the_state_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_test(dir.path());
        let (sm, _shared) =
            StateMachineStore::open(store.clone(), 0, Arc::new(ContentCache::new(0)), 1 << 20)
                .unwrap();
        // What the shard holds now, which a refused install must leave.
        let queue_key = keys::named_key(0, keys::QUEUE, b"kept");
        store
            .db
            .put_cf(store.cf(CF_STATE), &queue_key, b"x")
            .unwrap();
        let received = sm.snapshot_dir.join("receiving-1.snap");
        let (_, sink) = some_state();
        write_snapshot(&received, &sink);
        let whole = std::fs::read(&received).unwrap();
        std::fs::write(&received, &whole[..whole.len() / 2]).unwrap();
        let applied = AppliedMeta::default();
        let kept = sm.snapshot_dir.join("kept.snap");
        let err = install_file(&store, 0, &sm.snapshot_dir, &received, &kept, applied)
            .expect_err("cut short");
        assert!(err.to_string().contains("cut short"), "{err}");
        assert!(store
            .db
            .get_cf(store.cf(CF_RAFT), installing_key(0))
            .unwrap()
            .is_none());
        assert_eq!(
            store.db.get_cf(store.cf(CF_STATE), &queue_key).unwrap(),
            Some(b"x".to_vec())
        );
        assert!(store
            .db
            .get_cf(store.cf(CF_STATE), meta_key(0))
            .unwrap()
            .is_none());
    }
}
