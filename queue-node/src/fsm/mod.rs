//! The job-queue state machine of one shard.
//!
//! [`ShardState`] is the working set: every live job's metadata and status
//! (not its payload and headers, which apply writes under their own key and
//! the serving side reads back) and the indexes apply needs — ready jobs by priority then age, leases by
//! expiry, scheduled jobs by run time, idempotency keys by expiry. Apply
//! ([`ShardState::apply_batch`]) is a pure function of the batch and this
//! state; it records what changed into a [`keys::WriteSink`] and never reads
//! RocksDB. The state is rebuilt from the written keys at start and after a
//! snapshot install ([`ShardState::load`]).
//!
//! This module owns no I/O, no locks and no clocks.

mod apply;
pub mod keys;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use raftq_api::JobId;
use serde::{Deserialize, Serialize};

use crate::ops::{
    JobMeta, JobState, JobStatus, JobView, QueueConfigPatch, QueueDefaults, QueueView,
};

/// Most bytes of jobs one claim leases: a fetch answer or worker frame
/// must stay under the 64 MiB message limit (`raftq_api::limits`), with
/// room for the other fields. Part of apply: every replica uses the same
/// number, so it must never change between versions that share a log.
pub const MAX_CLAIM_BYTES: usize = 48 * 1024 * 1024;

/// Where a ready job sorts: highest priority first, then oldest.
type ReadyKey = (Reverse<i32>, u64, JobId);

#[derive(Debug, Clone)]
struct Job {
    meta: Arc<JobMeta>,
    status: JobStatus,
}

impl Job {
    fn ready_key(&self, id: JobId) -> ReadyKey {
        (Reverse(self.meta.priority), self.status.due_at_ms, id)
    }

    fn view(&self, id: JobId, limits: &QueueView) -> JobView {
        JobView {
            id,
            meta: self.meta.clone(),
            status: self.status.clone(),
            max_attempts: self.max_attempts(limits),
        }
    }

    fn max_attempts(&self, limits: &QueueView) -> u32 {
        match self.meta.max_attempts {
            0 => limits.max_attempts,
            n => n,
        }
    }

    fn backoff(&self, limits: &QueueView) -> crate::ops::BackoffPolicy {
        self.meta.backoff.unwrap_or(limits.backoff)
    }
}

/// What is persisted of a queue (only once a user changed something).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct QueueMeta {
    paused: bool,
    config: QueueConfigPatch,
}

#[derive(Debug, Clone, Default)]
struct Queue {
    meta: QueueMeta,
    ready: BTreeSet<ReadyKey>,
    scheduled: u64,
    leased: u64,
    dead: BTreeSet<JobId>,
    totals: QueueTotals,
}

/// Counters since this node started (not replicated state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub enqueued: u64,
    pub acked: u64,
    pub nacked: u64,
    pub expired: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub ready: u64,
    pub scheduled: u64,
    pub leased: u64,
    pub dead: u64,
    pub paused: bool,
    pub totals: QueueTotals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DedupEntry {
    id: JobId,
    expires_at_ms: u64,
}

#[derive(Debug)]
pub struct ShardState {
    shard: u32,
    /// The newest batch time applied: the shard's clock, never going back.
    now_ms: u64,
    /// Ordered by id, not hashed: ids only grow, so inserts append at the
    /// right edge and the map grows a node at a time. A hash map doubled
    /// and rehashed millions of jobs at once (10% of a node's CPU under
    /// enqueue load, and second-long apply stalls at each doubling).
    jobs: BTreeMap<JobId, Job>,
    queues: HashMap<Arc<str>, Queue>,
    leases: BTreeSet<(u64, JobId)>,
    scheduled: BTreeSet<(u64, JobId)>,
    dedup: HashMap<(Arc<str>, String), DedupEntry>,
    dedup_expiry: BTreeSet<(u64, Arc<str>, String)>,
    /// Queues that gained ready jobs since the last [`ShardState::take_woken`].
    woken: Vec<Arc<str>>,
    /// Jobs that left the state or died since the last
    /// [`ShardState::take_finished`]: their contents need not stay cached.
    finished: Vec<JobId>,
}

/// Why persisted state could not be loaded (`E`: reading it).
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E> {
    #[error("reading the state: {0}")]
    Read(E),
    #[error("corrupt state record at key {key:02x?}: {source}")]
    Decode {
        key: Vec<u8>,
        source: postcard::Error,
    },
    #[error("status record {0:02x?} has no job record")]
    OrphanStatus(Vec<u8>),
}

impl ShardState {
    pub fn new(shard: u32) -> ShardState {
        ShardState {
            shard,
            now_ms: 0,
            jobs: BTreeMap::new(),
            queues: HashMap::new(),
            leases: BTreeSet::new(),
            scheduled: BTreeSet::new(),
            dedup: HashMap::new(),
            dedup_expiry: BTreeSet::new(),
            woken: Vec::new(),
            finished: Vec::new(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Rebuilds the state from its keys, in key order (as RocksDB iterates
    /// them), one record at a time. Meta keys are the store's and are
    /// skipped here; of a job record only the metadata and status are
    /// decoded, never the content that follows them.
    pub fn load<K: AsRef<[u8]>, V: AsRef<[u8]>, E>(
        shard: u32,
        now_ms: u64,
        records: impl IntoIterator<Item = Result<(K, V), E>>,
    ) -> Result<ShardState, LoadError<E>> {
        fn decode<'v, T: Deserialize<'v>, E>(
            key: &[u8],
            value: &'v [u8],
        ) -> Result<T, LoadError<E>> {
            postcard::take_from_bytes(value)
                .map(|(value, _rest)| value)
                .map_err(|source| LoadError::Decode {
                    key: key.to_vec(),
                    source,
                })
        }
        let mut state = ShardState::new(shard);
        state.now_ms = now_ms;
        for record in records {
            let (key, value) = record.map_err(LoadError::Read)?;
            let (key, value) = (key.as_ref(), value.as_ref());
            let kind = key.get(4).copied();
            match kind {
                Some(keys::JOB) => {
                    let id = keys::job_id_of(key)
                        .ok_or_else(|| LoadError::OrphanStatus(key.to_vec()))?;
                    let (meta, status): (JobMeta, JobStatus) = decode(key, value)?;
                    state.queue_mut(&meta.queue);
                    let meta = state.intern_meta(meta);
                    state.jobs.insert(id, Job { meta, status });
                }
                Some(keys::STATUS) => {
                    let id = keys::job_id_of(key)
                        .ok_or_else(|| LoadError::OrphanStatus(key.to_vec()))?;
                    let status: JobStatus = decode(key, value)?;
                    let job = state
                        .jobs
                        .get_mut(&id)
                        .ok_or_else(|| LoadError::OrphanStatus(key.to_vec()))?;
                    job.status = status;
                }
                Some(keys::QUEUE) => {
                    let name = String::from_utf8_lossy(&key[5..]).into_owned();
                    let meta: QueueMeta = decode(key, value)?;
                    state.queue_mut(&name).meta = meta;
                }
                Some(keys::DEDUP) => {
                    let rest = &key[5..];
                    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    let queue = String::from_utf8_lossy(&rest[..split]).into_owned();
                    let idem = String::from_utf8_lossy(rest.get(split + 1..).unwrap_or_default())
                        .into_owned();
                    let entry: DedupEntry = decode(key, value)?;
                    let queue = state.queue_name(&queue);
                    state
                        .dedup_expiry
                        .insert((entry.expires_at_ms, queue.clone(), idem.clone()));
                    state.dedup.insert((queue, idem), entry);
                }
                _ => {}
            }
        }
        state.rebuild_indexes();
        Ok(state)
    }

    fn intern_meta(&mut self, mut meta: JobMeta) -> Arc<JobMeta> {
        meta.queue = self.queue_name(&meta.queue);
        Arc::new(meta)
    }

    fn rebuild_indexes(&mut self) {
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            let job = &self.jobs[&id];
            let queue = job.meta.queue.clone();
            let status = job.status.clone();
            let ready_key = job.ready_key(id);
            let q = self.queue_mut(&queue);
            match status.state {
                JobState::Ready => {
                    q.ready.insert(ready_key);
                }
                JobState::Scheduled => {
                    q.scheduled += 1;
                    self.scheduled.insert((status.due_at_ms, id));
                }
                JobState::Leased => {
                    q.leased += 1;
                    self.leases.insert((status.due_at_ms, id));
                }
                JobState::Dead => {
                    q.dead.insert(id);
                }
            }
        }
    }

    /// The shared name of a queue (so a million jobs share one allocation).
    fn queue_name(&mut self, name: &str) -> Arc<str> {
        match self.queues.get_key_value(name) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(name);
                self.queues.insert(key.clone(), Queue::default());
                key
            }
        }
    }

    fn queue_mut(&mut self, name: &str) -> &mut Queue {
        let key = self.queue_name(name);
        self.queues.entry(key).or_default()
    }

    /// Queues that gained ready jobs since the last call (for waking fetchers).
    pub fn take_woken(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.woken)
    }

    /// Live jobs (any state, dead ones included).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// Jobs acked, cancelled, purged or dead since the last call.
    pub fn take_finished(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.finished)
    }

    /// The earliest time a timer (scheduled job, lease, idempotency key) is due.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        [
            self.scheduled.first().map(|(t, _)| *t),
            self.leases.first().map(|(t, _)| *t),
            self.dedup_expiry.first().map(|(t, _, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn job(&self, id: JobId, defaults: &QueueDefaults) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        Some(job.view(id, &self.queue_view(&job.meta.queue, defaults)))
    }

    pub fn queue_view(&self, name: &str, defaults: &QueueDefaults) -> QueueView {
        let meta = self
            .queues
            .get(name)
            .map(|q| q.meta.clone())
            .unwrap_or_default();
        queue_view(name, &meta, defaults)
    }

    /// Whether a claim on `queue` could lease anything now: it has ready
    /// jobs and is not paused. Lets idle fetchers skip a Raft round.
    pub fn has_ready(&self, queue: &str) -> bool {
        self.queues
            .get(queue)
            .is_some_and(|q| !q.meta.paused && !q.ready.is_empty())
    }

    pub fn stats(&self, name: &str) -> Option<QueueStats> {
        self.queues.get(name).map(|q| QueueStats {
            queue: name.to_string(),
            ready: q.ready.len() as u64,
            scheduled: q.scheduled,
            leased: q.leased,
            dead: q.dead.len() as u64,
            paused: q.meta.paused,
            totals: q.totals,
        })
    }

    pub fn all_stats(&self) -> Vec<QueueStats> {
        let mut names: Vec<&Arc<str>> = self.queues.keys().collect();
        names.sort();
        names.into_iter().filter_map(|n| self.stats(n)).collect()
    }

    /// One page of a queue's dead jobs, in id order, after `after`.
    pub fn dead_page(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
        defaults: &QueueDefaults,
    ) -> Vec<JobView> {
        let limits = self.queue_view(queue, defaults);
        let Some(q) = self.queues.get(queue) else {
            return Vec::new();
        };
        let range = match after {
            Some(after) => q
                .dead
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => q.dead.range(..),
        };
        range
            .take(limit)
            .filter_map(|id| self.jobs.get(id).map(|job| job.view(*id, &limits)))
            .collect()
    }

    /// A canonical dump of the replicated state, for comparing replicas and
    /// rebuilds in tests. Excludes node-local counters.
    pub fn digest(&self) -> String {
        let jobs = self.jobs.iter();
        let mut out = format!("now={}\n", self.now_ms);
        for (id, job) in jobs {
            out.push_str(&format!("{id} {:?} {:?}\n", job.meta, job.status));
        }
        // Queues with nothing in them and default settings exist only in
        // memory (a name was used); they carry no replicated state.
        let mut queues: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                q.meta != QueueMeta::default()
                    || !q.ready.is_empty()
                    || q.scheduled + q.leased > 0
                    || !q.dead.is_empty()
            })
            .collect();
        queues.sort_by(|a, b| a.0.cmp(b.0));
        for (name, q) in queues {
            out.push_str(&format!(
                "queue {name} {:?} ready={:?} scheduled={} leased={} dead={:?}\n",
                q.meta, q.ready, q.scheduled, q.leased, q.dead
            ));
        }
        let mut dedup: Vec<_> = self.dedup.iter().collect();
        dedup.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str(&format!(
            "dedup {dedup:?}\nleases {:?}\nscheduled {:?}\n",
            self.leases, self.scheduled
        ));
        out
    }
}

fn queue_view(name: &str, meta: &QueueMeta, defaults: &QueueDefaults) -> QueueView {
    let c = &meta.config;
    QueueView {
        name: name.to_string(),
        paused: meta.paused,
        lease_ms: c.lease_ms.unwrap_or(defaults.lease_ms),
        max_attempts: c.max_attempts.unwrap_or(defaults.max_attempts),
        backoff: c.backoff.unwrap_or(defaults.backoff),
        dedup_window_ms: c.dedup_window_ms.unwrap_or(defaults.dedup_window_ms),
    }
}

#[cfg(test)]
mod tests;
