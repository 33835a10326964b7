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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::contents::ContentCache;
use super::db::{Store, CF_RAFT, CF_STATE};
use super::io_err;
use super::snapshot_file::{SnapshotData, SnapshotFileError, SnapshotReader, SnapshotWriter};
use super::sorted_batch::SortedBatch;
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

struct BatchSink {
    batch: SortedBatch,
    error: Option<postcard::Error>,
    scratch: Vec<u8>,
}

impl WriteSink for BatchSink {
    fn put_raw(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put(key, value);
    }
    fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
    fn delete(&mut self, key: &[u8]) {
        self.batch.delete(key);
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

/// The shard's state as stored, read one record at a time.
fn load_state(
    store: &Store,
    shard: u32,
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
        .take_while(|item| item.as_ref().map_or(true, |(key, _)| **key < *end));
    ShardState::load(shard, now_ms, records)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachineStore {
    /// Loads the shard's state and indexes from RocksDB.
    pub fn open(
        store: Store,
        shard: u32,
        contents: Arc<ContentCache>,
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
        let state = load_state(&store, shard, meta.now_ms)
            .map_err(|source| LoadStateError::Records { shard, source })?;
        let shared = Arc::new(ShardShared::new(state));
        let applied = meta.last_applied.map(|l| l.index).unwrap_or(0);
        shared.set_applied_index(applied);
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
            },
            shared,
        ))
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
        let (built_tx, built) = tokio::sync::oneshot::channel();
        let (store, shard, now_ms) = (self.store.clone(), self.shard, self.meta.now_ms);
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
            let _ = built_tx.send(write_snapshot_file(scan, &end, &path, now_ms).map(|()| path));
        });
        // If the thread could not start, `built` reports it.
        let _ = pinned.await;
        PreparedSnapshot {
            meta,
            built: Some(built),
            cache: self.current_snapshot.clone(),
        }
    }
}

/// The shard's state records (not its applied-state record) of `scan`
/// before `end`, into a snapshot file at `path` (written under a
/// temporary name, then renamed: a file there is complete).
fn write_snapshot_file(
    scan: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    end: &[u8],
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
        if key.get(4) != Some(&keys::META) {
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
        let cf = self.store.cf(CF_STATE);
        let entries: Vec<_> = entries.into_iter().collect();
        // Sized up front: grown by doubling, the batch (a few MiB under
        // load) was copied several times over and faulted in fresh pages.
        let capacity = entries
            .iter()
            .map(|e| match &e.payload {
                // Each record adds its key and status to the op's bytes.
                EntryPayload::Normal(batch) => batch.ops.iter().map(|op| 2 * op.size_hint()).sum(),
                _ => 0,
            })
            .sum::<usize>()
            + 1024;
        let mut sink = BatchSink {
            batch: SortedBatch::with_capacity_bytes(capacity),
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
        self.cache_contents(&entries, &results);
        self.contents.forget(finished);
        sink.put(&meta_key(self.shard), &self.meta);
        if let Some(e) = sink.error {
            return Err(io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e));
        }
        let mut no_wal = WriteOptions::default();
        no_wal.disable_wal(true);
        self.store
            .db
            .write_opt(sink.batch.into_write_batch(cf), &no_wal)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        self.shared.set_applied_index(self.applied_index());
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
        self.contents.forget_shard(self.shard);
        self.shared.replace_state(state);
        self.shared.set_applied_index(self.applied_index());
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
    let state =
        load_state(store, shard, applied.now_ms).map_err(|e| InstallError::Load(e.to_string()))?;
    Ok((state, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::keys::MapSink;
    use crate::ops::{Batch, NewJob, QueueDefaults, When};

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
            StateMachineStore::open(store.clone(), 0, Arc::new(ContentCache::new(0)))
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
            StateMachineStore::open(store.clone(), 0, Arc::new(ContentCache::new(0))).unwrap();
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
