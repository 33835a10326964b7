//! Job contents on disk, and the bounded part of them kept in memory.
//! Apply writes a job's payload and headers once, at enqueue, at the end of
//! its job record ([`keys::JOB`]); the state machine keeps only what
//! scheduling needs.
//! This module hands contents back for the jobs a claim or an admin read
//! returns: from the [`ContentCache`] when the job is in it, else by one
//! batched `multi_get` per answer, through RocksDB's block cache, on a
//! blocking thread — never on the apply task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use raftq_api::JobId;

use super::db::{Store, CF_STATE};
use crate::fsm::keys;
use crate::ops::{JobContent, JobMeta, JobStatus, NewJob};

/// Reads the contents of one node's jobs (any shard: the key carries it).
#[derive(Clone)]
pub struct Contents {
    store: Store,
    cache: Arc<ContentCache>,
}

/// Contents of live jobs kept in memory, up to a budget in bytes shared by
/// every shard of the node. A job enqueued while it is full is read from
/// disk when served; one that is acked, purged, cancelled or dead leaves.
/// Nothing here is replicated state: a cache miss only costs a read.
pub struct ContentCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Ordered by id: jobs are mostly served and acked oldest first, so
    /// lookups and removals walk neighbouring nodes (a hash map touched a
    /// cold cache line per job, 6 % of a node's CPU under load).
    map: BTreeMap<JobId, JobContent>,
    bytes: usize,
}

/// What one cached job costs: its bytes plus the map entry and handles.
fn entry_cost(payload: usize, headers: &[(String, String)]) -> usize {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
    payload + headers + 112
}

fn cost(content: &JobContent) -> usize {
    entry_cost(content.payload.len(), &content.headers)
}

impl ContentCache {
    pub fn new(budget_bytes: usize) -> ContentCache {
        ContentCache {
            budget: budget_bytes,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the contents of newly enqueued jobs while the budget has
    /// room. Each gets its own allocation: on the leader an op's payload is
    /// a slice of a whole gRPC request, which one long-lived job would
    /// otherwise keep alive entire.
    pub fn admit<'a>(&self, jobs: impl IntoIterator<Item = (JobId, &'a NewJob)>) {
        if self.budget == 0 {
            return;
        }
        let mut inner = self.lock();
        for (id, job) in jobs {
            let size = entry_cost(job.payload.len(), &job.headers);
            if inner.bytes + size > self.budget {
                break;
            }
            let content = JobContent {
                payload: Bytes::copy_from_slice(&job.payload),
                headers: job.headers.clone(),
            };
            inner.bytes += size;
            if let Some(old) = inner.map.insert(id, content) {
                inner.bytes -= cost(&old);
            }
        }
    }

    /// Drops the contents of jobs that will not be served again soon.
    pub fn forget(&self, ids: impl IntoIterator<Item = JobId>) {
        let mut inner = self.lock();
        for id in ids {
            if let Some(old) = inner.map.remove(&id) {
                inner.bytes -= cost(&old);
            }
        }
    }

    /// Drops every entry of `shard` (its state was replaced by a snapshot).
    pub fn forget_shard(&self, shard: u32) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let bytes = &mut inner.bytes;
        inner.map.retain(|id, content| {
            let keep = id.shard != shard;
            if !keep {
                *bytes -= cost(content);
            }
            keep
        });
    }

    /// Bytes held now (for `/metrics`).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn budget(&self) -> usize {
        self.budget
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("reading job contents from RocksDB: {0}")]
    Read(#[from] rocksdb::Error),
    #[error("job {id}'s record is corrupt: {source}")]
    Decode { id: JobId, source: postcard::Error },
    #[error("the content reader stopped")]
    Stopped,
}

impl Contents {
    pub fn new(store: Store, cache: Arc<ContentCache>) -> Contents {
        Contents { store, cache }
    }

    /// The contents of `ids`, in order; `None` where a job is gone (acked,
    /// cancelled or purged since it was read from the state).
    pub async fn read(&self, ids: Vec<JobId>) -> Result<Vec<Option<JobContent>>, ContentError> {
        let mut out: Vec<Option<JobContent>> = {
            let cache = self.cache.lock();
            ids.iter().map(|id| cache.map.get(id).cloned()).collect()
        };
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let store = self.store.clone();
        let missing_ids: Vec<JobId> = missing.iter().map(|&i| ids[i]).collect();
        let read = tokio::task::spawn_blocking(move || read_now(&store, &missing_ids))
            .await
            .map_err(|_| ContentError::Stopped)??;
        for (i, content) in missing.into_iter().zip(read) {
            out[i] = content;
        }
        Ok(out)
    }
}

fn read_now(store: &Store, ids: &[JobId]) -> Result<Vec<Option<JobContent>>, ContentError> {
    // Looked up in key order (RocksDB then walks each file once), answered
    // in the caller's order.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    let keys: Vec<[u8; 17]> = order
        .iter()
        .map(|&i| keys::job_key(keys::JOB, ids[i]))
        .collect();
    let values = store
        .db
        .batched_multi_get_cf(store.cf(CF_STATE), keys.iter(), true);
    let mut out: Vec<Option<JobContent>> = vec![None; ids.len()];
    for (&i, value) in order.iter().zip(values) {
        if let Some(bytes) = value? {
            let (_, _, content): (JobMeta, JobStatus, JobContent) = postcard::from_bytes(&bytes)
                .map_err(|source| ContentError::Decode { id: ids[i], source })?;
            out[i] = Some(content);
        }
    }
    Ok(out)
}
