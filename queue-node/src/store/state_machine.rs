//! openraft's state machine for one shard: applies entries through
//! [`crate::fsm`] and writes each call's changes, plus the applied log id,
//! in one RocksDB `WriteBatch`. Snapshots are the shard's key range, read
//! from a RocksDB snapshot on a blocking thread while apply carries on.
//!
//! Applied state skips RocksDB's WAL: the Raft log already holds every
//! entry durably, so writing each job a second time into the WAL bought
//! nothing but bytes (half the WAL, and the WAL copy was the biggest item
//! in the enqueue profile). After a crash the state is what was last
//! flushed, and openraft re-applies the log from there. The price is that
//! the log may only be purged up to what is flushed: see
//! [`crate::shard::ShardShared::durable_index`], kept by the flushes of
//! [`super::watermark::run`] and by [`super::log_store`]'s purge.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::contents::ContentCache;
use super::db::{Store, CF_STATE};
use super::format::{self, SnapshotPayload};
use super::io_err;
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

struct BatchSink<'a> {
    batch: WriteBatch,
    cf: &'a rocksdb::ColumnFamily,
    error: Option<postcard::Error>,
    scratch: Vec<u8>,
}

impl WriteSink for BatchSink<'_> {
    fn put_raw(&mut self, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.cf, key, value);
    }
    fn scratch(&mut self) -> &mut Vec<u8> {
        &mut self.scratch
    }
    fn delete(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.cf, key);
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
    snapshots_built: u64,
}

/// The last snapshot built or installed, kept to send to followers.
type SnapshotCache = Arc<Mutex<Option<(SnapshotMeta, Vec<u8>)>>>;

fn cached(cache: &SnapshotCache) -> std::sync::MutexGuard<'_, Option<(SnapshotMeta, Vec<u8>)>> {
    cache.lock().unwrap_or_else(|p| p.into_inner())
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
}

fn meta_key(shard: u32) -> Vec<u8> {
    keys::named_key(shard, keys::META, b"applied")
}

impl StateMachineStore {
    /// Loads the shard's state and indexes from RocksDB.
    pub fn open(
        store: Store,
        shard: u32,
        contents: Arc<ContentCache>,
    ) -> Result<(StateMachineStore, Arc<ShardShared>), LoadStateError> {
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
        let prefix = keys::shard_prefix(shard);
        let end = keys::shard_end(shard);
        let records = store
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
            .take_while(|item| item.as_ref().map_or(true, |(key, _)| **key < *end));
        let state = ShardState::load(shard, meta.now_ms, records)
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
                current_snapshot: Arc::default(),
                snapshots_built: 0,
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
        self.snapshots_built += 1;
        let meta = SnapshotMeta {
            last_log_id: self.meta.last_applied,
            last_membership: self.meta.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                self.shard,
                self.meta.last_applied.map(|l| l.index).unwrap_or(0),
                self.snapshots_built
            ),
        };
        let (pinned_tx, pinned) = tokio::sync::oneshot::channel();
        let (built_tx, built) = tokio::sync::oneshot::channel();
        let (store, shard, now_ms) = (self.store.clone(), self.shard, self.meta.now_ms);
        tokio::task::spawn_blocking(move || {
            let view = store.db.snapshot();
            let _ = pinned_tx.send(());
            let prefix = keys::shard_prefix(shard);
            let scan = view.iterator_cf(
                store.cf(CF_STATE),
                IteratorMode::From(&prefix, Direction::Forward),
            );
            let _ = built_tx.send(
                collect_until(scan, &keys::shard_end(shard))
                    .map_err(SnapshotError::Read)
                    .and_then(|records| {
                        encode_snapshot(records, now_ms).map_err(SnapshotError::Encode)
                    }),
            );
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

#[derive(Debug, thiserror::Error)]
enum SnapshotError {
    #[error("reading the shard: {0}")]
    Read(rocksdb::Error),
    #[error("encoding the snapshot: {0}")]
    Encode(postcard::Error),
    #[error("the snapshot builder stopped")]
    Stopped,
}

/// The shard's state records (not its applied-state record), encoded.
fn encode_snapshot(records: Vec<Record>, now_ms: u64) -> Result<Vec<u8>, postcard::Error> {
    let records = records
        .into_iter()
        .filter(|(k, _)| k.get(4) != Some(&keys::META))
        .map(|(k, v)| (Bytes::from(k), Bytes::from(v)))
        .collect();
    postcard::to_allocvec(&SnapshotPayload {
        now_ms,
        records,
        format: format::SNAPSHOT_FORMAT,
    })
}

/// One key and its value, as RocksDB hands them out.
type Record = (Box<[u8]>, Box<[u8]>);

/// The records of `scan` before `end`.
fn collect_until(
    scan: impl Iterator<Item = Result<Record, rocksdb::Error>>,
    end: &[u8],
) -> Result<Vec<Record>, rocksdb::Error> {
    let mut out = Vec::new();
    for item in scan {
        let (key, value) = item?;
        if &*key >= end {
            break;
        }
        out.push((key, value));
    }
    Ok(out)
}

/// A snapshot being built by [`StateMachineStore::start_snapshot`].
pub struct PreparedSnapshot {
    meta: SnapshotMeta,
    built: Option<tokio::sync::oneshot::Receiver<Result<Vec<u8>, SnapshotError>>>,
    cache: SnapshotCache,
}

impl RaftSnapshotBuilder<TypeConfig> for PreparedSnapshot {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let failed = |e: SnapshotError| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let built = self
            .built
            .take()
            .ok_or_else(|| failed(SnapshotError::Stopped))?;
        let data = built
            .await
            .map_err(|_| failed(SnapshotError::Stopped))?
            .map_err(failed)?;
        tracing::info!(snapshot = %self.meta.snapshot_id, bytes = data.len(), "built snapshot");
        *cached(&self.cache) = Some((self.meta.clone(), data.clone()));
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
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
            batch: WriteBatch::with_capacity_bytes(capacity),
            cf,
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
            self.shared.set_job_count(state.job_count());
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
            .write_opt(sink.batch, &no_wal)
            .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        self.shared.set_applied_index(self.applied_index());
        self.shared.wake(&woken);
        self.shared.applied.notify_waiters();
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.start_snapshot().await
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let payload =
            format::decode_snapshot(&data).map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let cf = self.store.cf(CF_STATE);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf,
            keys::shard_prefix(self.shard).to_vec(),
            keys::shard_end(self.shard),
        );
        for (k, v) in &payload.records {
            batch.put_cf(cf, k, v);
        }
        let state = ShardState::load(
            self.shard,
            payload.now_ms,
            payload
                .records
                .iter()
                .map(|(k, v)| Ok::<_, std::convert::Infallible>((k, v))),
        )
        .map_err(|e| io_err(subject(), ErrorVerb::Read, e))?;
        let applied = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            now_ms: payload.now_ms,
        };
        let applied_bytes =
            postcard::to_allocvec(&applied).map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        batch.put_cf(cf, meta_key(self.shard), applied_bytes);
        // Unlike applied entries, an installed snapshot goes through the
        // WAL, synced: the log it replaces is purged right after, so there
        // is nothing to re-apply it from.
        let mut synced = WriteOptions::default();
        synced.set_sync(self.store.durability == super::Durability::Fsync);
        self.store
            .db
            .write_opt(batch, &synced)
            .map_err(|e| io_err(subject(), ErrorVerb::Write, e))?;
        self.meta = applied;
        self.contents.forget_shard(self.shard);
        self.shared.replace_state(state);
        self.shared.set_applied_index(self.applied_index());
        self.shared.set_durable_index(self.applied_index());
        *cached(&self.current_snapshot) = Some((meta.clone(), data));
        tracing::info!(shard = self.shard, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if let Some((meta, data)) = cached(&self.current_snapshot).as_ref() {
            return Ok(Some(Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(data.clone())),
            }));
        }
        if self.meta.last_applied.is_none() {
            return Ok(None);
        }
        // After a restart nothing is cached: a fresh one is as good.
        self.start_snapshot().await.build_snapshot().await.map(Some)
    }
}
