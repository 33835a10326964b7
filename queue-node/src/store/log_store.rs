//! openraft's log storage for one shard: entries in `raft_log` under
//! `shard | index`, vote / committed / purged marks in `raft_meta`.
//!
//! Appends are written without waiting for the disk; the fsync thread
//! reports them durable (see [`super::db`]). Purges stop at the state
//! machine's durable index (see [`super::state_machine`]).
//!
//! The newest entries are also kept in memory ([`RecentEntries`]): openraft
//! reads every committed entry back to apply it, and again per follower to
//! replicate it, and decoding each batch back from RocksDB (a copy of every
//! payload) sat on the leader's one serial Raft task.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, RaftLogId, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::db::{Durability, Store, CF_LOG, CF_RAFT};
use super::io_err;
use crate::raft_types::{LogId, NodeId, StorageError, TypeConfig};
use crate::shard::ShardShared;

#[derive(Clone)]
pub struct LogStore {
    store: Store,
    shard: u32,
    shared: Arc<ShardShared>,
    recent: Arc<Mutex<RecentEntries>>,
    /// Reused by `append` (left empty between calls, so clones stay cheap).
    encode_buffer: Vec<u8>,
}

/// Largest append buffer kept between appends.
const ENCODE_BUFFER_KEPT: usize = 8 << 20;

/// The newest appended entries: a contiguous run that ends at the last
/// entry of the log, bounded by a budget of encoded bytes (the node's
/// `memory.log_cache_mib`, shared out among its shards).
struct RecentEntries {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    budget: usize,
}

impl RecentEntries {
    fn new(budget: usize) -> RecentEntries {
        RecentEntries {
            entries: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.get_log_id().index)
    }

    fn push(&mut self, entry: Entry<TypeConfig>, size: usize) {
        let index = entry.get_log_id().index;
        let follows = match self.entries.back() {
            Some((last, _)) => last.get_log_id().index + 1 == index,
            None => true,
        };
        if !follows {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.bytes > self.budget && self.entries.len() > 1 {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// The entries from `start` on that `range` holds, if the run reaches
    /// back to `start` (else the caller reads RocksDB).
    fn read(&self, start: u64, range: &impl RangeBounds<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|(e, _)| range.contains(&e.get_log_id().index))
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// Forgets entries from `index` on (a truncated tail).
    fn truncate(&mut self, index: u64) {
        while let Some((last, size)) = self.entries.back() {
            if last.get_log_id().index < index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_back();
        }
    }

    /// Forgets entries up to and including `index` (a purged head).
    fn purge(&mut self, index: u64) {
        while let Some((first, size)) = self.entries.front() {
            if first.get_log_id().index > index {
                break;
            }
            self.bytes -= size;
            self.entries.pop_front();
        }
    }
}

fn log_key(shard: u32, index: u64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&shard.to_be_bytes());
    key[4..].copy_from_slice(&index.to_be_bytes());
    key
}

fn index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(4..12)?.try_into().ok()?))
}

fn meta_key(shard: u32, name: &str) -> Vec<u8> {
    let mut key = shard.to_be_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

impl LogStore {
    /// `cache_bytes`: most bytes of recent entries kept in memory.
    pub fn new(store: Store, shard: u32, shared: Arc<ShardShared>, cache_bytes: usize) -> LogStore {
        LogStore {
            store,
            shard,
            shared,
            recent: Arc::new(Mutex::new(RecentEntries::new(cache_bytes))),
            encode_buffer: Vec::new(),
        }
    }

    /// The index of the last entry in the log (or of the last purged one),
    /// 0 for an empty log.
    pub fn last_index(&self) -> Result<u64, StorageError> {
        let purged: Option<LogId> = self.get_meta("purged")?;
        Ok(self
            .last_entry_log_id()?
            .or(purged)
            .map(|l| l.index)
            .unwrap_or(0))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        // Every change to the cache is complete before its lock is let go;
        // a panic elsewhere leaves nothing half-done in it.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StorageError> {
        let cf = self.store.cf(CF_RAFT);
        let Some(bytes) = self
            .store
            .db
            .get_cf(cf, meta_key(self.shard, name))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    fn put_meta<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(value)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync && self.store.durability == Durability::Fsync);
        self.store
            .db
            .put_cf_opt(
                self.store.cf(CF_RAFT),
                meta_key(self.shard, name),
                bytes,
                &opts,
            )
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let cf = self.store.cf(CF_LOG);
        let end = log_key(self.shard, u64::MAX);
        let mut iter = self
            .store
            .db
            .iterator_cf(cf, IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            Some(Ok((key, value))) if key.starts_with(&self.shard.to_be_bytes()) => {
                let entry: Entry<TypeConfig> = postcard::from_bytes(&value)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Ok(Some(*entry.get_log_id()))
            }
            Some(Err(e)) => Err(io_err(ErrorSubject::Logs, ErrorVerb::Read, e)),
            _ => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        if let Some(entries) = self.recent().read(start, &range) {
            return Ok(entries);
        }
        let cf = self.store.cf(CF_LOG);
        let from = log_key(self.shard, start);
        let mut entries = Vec::new();
        for item in self
            .store
            .db
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let Some(index) = index_of(&key).filter(|_| key.starts_with(&self.shard.to_be_bytes()))
            else {
                break;
            };
            if !range.contains(&index) {
                break;
            }
            let entry = postcard::from_bytes(&value)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta("purged")?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta("vote", vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta("committed", &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let cf = self.store.cf(CF_LOG);
        // Every entry is encoded into one buffer first, so the write batch
        // is allocated once at its final size: grown by doubling, a batch
        // of a few MiB was copied several times and faulted in fresh pages.
        let mut encoded = std::mem::take(&mut self.encode_buffer);
        encoded.clear();
        let mut appended = Vec::new();
        for entry in entries {
            let start = encoded.len();
            encoded = postcard::to_extend(&entry, encoded)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            appended.push((entry, start..encoded.len()));
        }
        let mut batch = WriteBatch::with_capacity_bytes(encoded.len() + 32 * appended.len() + 64);
        for (entry, range) in &appended {
            batch.put_cf(
                cf,
                log_key(self.shard, entry.get_log_id().index),
                &encoded[range.clone()],
            );
        }
        // Kept for the next append unless an unusually large one grew it.
        if encoded.capacity() <= ENCODE_BUFFER_KEPT {
            encoded.clear();
            self.encode_buffer = encoded;
        }
        self.store
            .db
            .write(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let mut recent = self.recent();
        for (entry, range) in appended {
            recent.push(entry, range.len());
        }
        self.shared.set_log_cache_bytes(recent.bytes);
        drop(recent);
        self.store.after_sync(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut recent = self.recent();
        recent.truncate(log_id.index);
        self.shared.set_log_cache_bytes(recent.bytes);
        drop(recent);
        let cf = self.store.cf(CF_LOG);
        self.store
            .db
            .delete_range_cf(
                cf,
                log_key(self.shard, log_id.index),
                log_key(self.shard, u64::MAX),
            )
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // The tail must be gone for good before a new entry can take its place.
        self.store
            .db
            .flush_wal(self.store.durability == Durability::Fsync)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The state up to `log_id` must be on disk before the entries that
        // could rebuild it go. The watermark task's flushes usually got
        // there first; if not, flush now.
        if self.shared.durable_index() < log_id.index {
            let written = self.shared.written_index();
            self.store
                .flush_state()
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
            self.shared.set_durable_index(written);
            // A snapshot is built right after a checkpoint and an installed
            // one is written whole, so `log_id` passes `written` only over
            // entries an install superseded (never applied here): they go
            // too; keeping them would leave a hole in the log.
        }
        self.put_meta("purged", &log_id, true)?;
        let mut recent = self.recent();
        recent.purge(log_id.index);
        self.shared.set_log_cache_bytes(recent.bytes);
        drop(recent);
        let cf = self.store.cf(CF_LOG);
        self.store
            .db
            .delete_range_cf(
                cf,
                log_key(self.shard, 0),
                log_key(self.shard, log_id.index + 1),
            )
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.get_log_id().index).collect())
    }

    #[test]
    fn recent_entries_serve_only_what_they_hold_in_full() {
        let mut recent = RecentEntries::new(1 << 20);
        assert_eq!(indexes(recent.read(1, &(1..))), None, "empty: read RocksDB");
        for i in 5..=9 {
            recent.push(entry(i), 100);
        }
        assert_eq!(indexes(recent.read(6, &(6..9))), Some(vec![6, 7, 8]));
        assert_eq!(indexes(recent.read(7, &(7..))), Some(vec![7, 8, 9]));
        assert_eq!(
            indexes(recent.read(12, &(12..))),
            Some(vec![]),
            "past the end"
        );
        assert_eq!(
            indexes(recent.read(4, &(4..7))),
            None,
            "reaches before the run"
        );

        recent.truncate(8);
        assert_eq!(indexes(recent.read(5, &(5..))), Some(vec![5, 6, 7]));
        recent.push(entry(8), 100);
        recent.purge(6);
        assert_eq!(recent.first_index(), Some(7));
        assert_eq!(indexes(recent.read(7, &(7..))), Some(vec![7, 8]));
        assert_eq!(recent.bytes, 200);

        // A gap (a snapshot installed past the log) starts a new run.
        recent.push(entry(20), 100);
        assert_eq!(recent.first_index(), Some(20));
        assert_eq!(recent.bytes, 100);
    }

    #[test]
    fn recent_entries_stay_within_their_byte_budget() {
        const BUDGET: usize = 16 << 20;
        let mut recent = RecentEntries::new(BUDGET);
        let size = BUDGET / 4;
        for i in 1..=10 {
            recent.push(entry(i), size);
        }
        assert!(recent.bytes <= BUDGET);
        assert_eq!(recent.first_index(), Some(7));
        assert_eq!(indexes(recent.read(3, &(3..))), None);
        // One entry larger than the budget is still kept (it is the newest).
        recent.push(entry(11), BUDGET * 2);
        assert_eq!(recent.first_index(), Some(11));
    }
}
