//! The job-queue state machine of one shard.
//!
//! [`ShardState`] is the working set: every live job's scheduling
//! metadata and status, packed small ([`job::Job`]; the payload, headers
//! and anything else only a reader needs stay on disk), and the indexes
//! apply needs — ready jobs by priority then age, leases by expiry,
//! scheduled jobs by run time, idempotency keys by expiry. Jobs ready
//! since their enqueue and never touched — most of a backlog — are kept
//! in each queue's [`fresh::FreshJobs`] instead, a few bytes each. Apply
//! ([`ShardState::apply_batch`]) is a pure function of the batch and this
//! state; it records what changed into a [`keys::WriteSink`] and never reads
//! RocksDB. The state is rebuilt from the written keys at start and after a
//! snapshot install ([`ShardState::load`]).
//!
//! This module owns no I/O, no locks and no clocks.

mod apply;
mod chunk_map;
mod fresh;
mod job;
pub mod keys;
mod listing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use raftq_api::JobId;
use serde::{Deserialize, Serialize};

use self::chunk_map::ChunkMap;
use self::fresh::{FreshJob, FreshJobs};
use self::job::{flags, Job, JobKey, QueueId, ReadyKey, StatusRecord, Workers, NO_WORKER};
pub use self::listing::{JobFilter, JobPage};
use crate::ops::{
    BackoffPolicy, JobMeta, JobState, JobStatus, JobView, QueueConfigPatch, QueueDefaults,
    QueueView,
};

/// Most bytes of jobs one claim leases: a fetch answer or worker frame
/// must stay under the 64 MiB message limit (`raftq_api::limits`), with
/// room for the other fields. Part of apply: every replica uses the same
/// number, so it must never change between versions that share a log.
pub const MAX_CLAIM_BYTES: usize = 48 * 1024 * 1024;

/// What one job in the job map is counted at in memory: a ready job there
/// takes 84 bytes (its 60-byte entry in the job map and its 24-byte place
/// in the queue), a leased or scheduled one as much with its timer; the
/// rest is room for chunk slack and the side maps of the jobs that carry
/// an idempotency key, an error or a backoff policy. Fresh jobs are not
/// in the map and are counted at what they take packed.
pub const INDEX_BYTES_PER_JOB: u64 = 128;

/// What is persisted of a queue (only once a user changed something).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct QueueMeta {
    paused: bool,
    config: QueueConfigPatch,
}

#[derive(Debug, Clone)]
struct Queue {
    name: Arc<str>,
    meta: QueueMeta,
    /// Ready jobs that are in the job map; the rest are `fresh`.
    ready: ChunkMap<ReadyKey, ()>,
    /// Ready jobs never touched since enqueue, packed, in no other map.
    fresh: FreshJobs,
    scheduled: u64,
    leased: u64,
    dead: ChunkMap<JobKey, ()>,
    totals: QueueTotals,
    /// From lease to ack, by the batch clock (node-local, like `totals`).
    lease_to_ack: crate::latency::Counts,
}

impl Queue {
    fn new(name: Arc<str>) -> Queue {
        Queue {
            name,
            meta: QueueMeta::default(),
            ready: ChunkMap::new(),
            fresh: FreshJobs::default(),
            scheduled: 0,
            leased: 0,
            dead: ChunkMap::new(),
            totals: QueueTotals::default(),
            lease_to_ack: crate::latency::Counts::default(),
        }
    }

    /// When the longest-waiting ready job became ready: the oldest of
    /// each priority's first job, fresh or not.
    fn oldest_ready_ms(&self) -> Option<u64> {
        let mut oldest = self.fresh.oldest_ms();
        let mut next = self.ready.first().map(|(k, ())| *k);
        while let Some(first) = next {
            oldest = Some(oldest.map_or(first.since_ms, |o| o.min(first.since_ms)));
            // Past every job of this priority: the next priority's oldest.
            let past = ReadyKey {
                since_ms: u64::MAX,
                key: JobKey::new(u64::MAX, u32::MAX),
                ..first
            };
            next = self.ready.iter_after(Some(past)).next().map(|(k, ())| *k);
        }
        oldest
    }

    fn ready_len(&self) -> usize {
        self.ready.len() + self.fresh.len()
    }

    /// The ready job a claim takes next: from the job map, or fresh.
    fn next_ready(&self) -> Option<NextReady> {
        let unpacked = self.ready.first().map(|(ready, ())| *ready);
        let fresh = self
            .fresh
            .first()
            .map(|(priority, job)| (ReadyKey::new(priority, job.enqueued_at_ms, job.key), job));
        match (unpacked, fresh) {
            (Some(ready), Some((fresh_key, job))) if fresh_key < ready => {
                Some(NextReady::Fresh(job))
            }
            (Some(ready), _) => Some(NextReady::Unpacked(ready)),
            (None, Some((_, job))) => Some(NextReady::Fresh(job)),
            (None, None) => None,
        }
    }
}

enum NextReady {
    Unpacked(ReadyKey),
    Fresh(FreshJob),
}

/// Counters since this node started (not replicated state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub enqueued: u64,
    pub acked: u64,
    pub nacked: u64,
    pub expired: u64,
    /// Jobs moved to the dead-letter set.
    pub died: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub ready: u64,
    pub scheduled: u64,
    pub leased: u64,
    pub dead: u64,
    pub paused: bool,
    pub totals: QueueTotals,
    /// When the longest-waiting ready job became ready (shard clock, ms).
    pub oldest_ready_ms: Option<u64>,
    /// Lease-to-ack times of the jobs acked since this node started.
    pub lease_to_ack: crate::latency::Counts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DedupEntry {
    id: JobId,
    expires_at_ms: u64,
}

/// What only some jobs have, kept beside [`Job`] so that a plain job stays
/// 48 bytes; a job's [`flags`] say which maps to look in.
#[derive(Debug, Default)]
struct Extras {
    backoffs: BTreeMap<JobKey, BackoffPolicy>,
    idempotency_keys: BTreeMap<JobKey, Box<str>>,
    errors: BTreeMap<JobKey, Box<str>>,
    workers: Workers,
}

impl Extras {
    fn error(&self, key: JobKey, job: &Job) -> Option<&str> {
        if job.has(flags::ERROR) {
            self.errors.get(&key).map(|e| &**e)
        } else {
            None
        }
    }

    fn worker(&self, job: &Job) -> Option<&str> {
        if job.worker == NO_WORKER {
            None
        } else {
            self.workers.name(job.worker).map(|w| &**w)
        }
    }

    fn status<'a>(&'a self, key: JobKey, job: &Job) -> StatusRecord<'a> {
        StatusRecord {
            state: job.state,
            attempt: job.attempt,
            retry_base: job.retry_base,
            due_at_ms: job.due_at_ms,
            last_error: self.error(key, job),
            worker: self.worker(job),
        }
    }

    /// Records `error` as the job's last (none keeps the one it has).
    fn set_error(&mut self, key: JobKey, job: &mut Job, error: Option<String>) {
        if let Some(error) = error {
            self.errors.insert(key, error.into_boxed_str());
            job.flags |= flags::ERROR;
        }
    }

    /// Drops the job's lease holder, if it has one.
    fn unlease(&mut self, job: &mut Job) {
        if job.worker != NO_WORKER {
            self.workers.release(job.worker);
            job.worker = NO_WORKER;
        }
    }

    /// Forgets everything kept for a job that left the state.
    fn forget(&mut self, key: JobKey, job: &mut Job) {
        if job.has(flags::BACKOFF) {
            self.backoffs.remove(&key);
        }
        if job.has(flags::IDEMPOTENCY_KEY) {
            self.idempotency_keys.remove(&key);
        }
        if job.has(flags::ERROR) {
            self.errors.remove(&key);
        }
        self.unlease(job);
    }
}

#[derive(Debug)]
pub struct ShardState {
    shard: u32,
    /// The newest batch time applied: the shard's clock, never going back.
    now_ms: u64,
    /// Every live job but the queues' fresh ones. Ordered by id in filled
    /// chunks: ids only grow, so inserts mostly append, and a ready job
    /// costs 84 bytes here and in its queue's ready set, not the 450 of a
    /// `BTreeMap` of full records.
    jobs: ChunkMap<JobKey, Job>,
    queues: Vec<Queue>,
    queue_ids: HashMap<Arc<str>, QueueId>,
    leases: ChunkMap<(u64, JobKey), ()>,
    scheduled: ChunkMap<(u64, JobKey), ()>,
    dedup: HashMap<(Arc<str>, String), DedupEntry>,
    dedup_expiry: BTreeSet<(u64, Arc<str>, String)>,
    extras: Extras,
    /// Queues that gained ready jobs since the last [`ShardState::take_woken`].
    woken: Vec<Arc<str>>,
    /// Jobs that left the state or died since the last
    /// [`ShardState::take_finished`]: their contents need not stay cached.
    finished: Vec<JobId>,
    /// When each timed lease applied since this node started began (a
    /// sample, see `apply::timed`), for the lease-to-ack histogram; not
    /// replicated state: leases from before a restart or a snapshot are
    /// not in it, and are not measured.
    lease_starts: HashMap<JobKey, u64>,
    /// The nodes replicas are placed on, as last declared (`SetNodes`, on
    /// the metadata shard); `None` until a first declaration.
    nodes: Option<Vec<crate::ops::NodeRecord>>,
    /// Set once the shard count grew: which queues this shard takes.
    fence: Option<ShardFence>,
    /// The queue routing, once it changed (`SetRouting`, on the metadata
    /// shard).
    routing: Option<crate::routing::Routing>,
}

/// Which queues a shard takes after the shard count grew (`Op::Fence`): a
/// queue it keeps (one that held something when fenced), or one that
/// hashes to it among `shard_count` shards. The same rule as
/// [`crate::routing::Routing`], from the shard's own log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFence {
    pub shard_count: u32,
    /// Queues this shard keeps although they hash elsewhere.
    pub pinned: BTreeSet<String>,
}

impl ShardFence {
    fn takes(&self, shard: u32, queue: &str) -> Result<(), crate::ops::OpError> {
        let hashed = raftq_api::shard_of(queue, self.shard_count);
        if hashed == shard || self.pinned.contains(queue) {
            return Ok(());
        }
        Err(crate::ops::OpError::WrongShard {
            queue: queue.to_owned(),
            here: shard,
            shard: hashed,
            shard_count: self.shard_count,
        })
    }
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
            jobs: ChunkMap::new(),
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            leases: ChunkMap::new(),
            scheduled: ChunkMap::new(),
            dedup: HashMap::new(),
            dedup_expiry: BTreeSet::new(),
            extras: Extras::default(),
            woken: Vec::new(),
            finished: Vec::new(),
            lease_starts: HashMap::new(),
            nodes: None,
            fence: None,
            routing: None,
        }
    }

    /// The declared nodes, if any were (metadata shard only).
    pub fn nodes(&self) -> Option<&[crate::ops::NodeRecord]> {
        self.nodes.as_deref()
    }

    /// The queue routing, if it ever changed (metadata shard only).
    pub fn routing(&self) -> Option<&crate::routing::Routing> {
        self.routing.as_ref()
    }

    /// Which queues this shard takes, once the shard count grew.
    pub fn fence(&self) -> Option<&ShardFence> {
        self.fence.as_ref()
    }

    /// Whether `queue` may be used on this shard.
    fn takes(&self, queue: &str) -> Result<(), crate::ops::OpError> {
        match &self.fence {
            None => Ok(()),
            Some(fence) => fence.takes(self.shard, queue),
        }
    }

    /// The queues that hold something (settings, jobs of any state, dead
    /// letters, idempotency keys): exactly what a rebuild from the
    /// records brings back, so every replica computes the same set.
    fn queues_holding_something(&self) -> BTreeSet<&str> {
        let mut holding: BTreeSet<&str> = self
            .queues
            .iter()
            .filter(|q| {
                q.ready_len() > 0
                    || q.scheduled > 0
                    || q.leased > 0
                    || !q.dead.is_empty()
                    || q.meta != QueueMeta::default()
            })
            .map(|q| &*q.name)
            .collect();
        holding.extend(self.dedup.keys().map(|(queue, _)| &**queue));
        holding
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
                    let queue = state.queue_id(&meta.queue);
                    let key = JobKey::of(id);
                    if !state.pack(key, queue, &meta, &status) {
                        state.insert_job(key, queue, &meta, status);
                    }
                }
                Some(keys::STATUS) => {
                    let id = keys::job_id_of(key)
                        .ok_or_else(|| LoadError::OrphanStatus(key.to_vec()))?;
                    let status: JobStatus = decode(key, value)?;
                    let key = JobKey::of(id);
                    // Its job record made it fresh; this record says it
                    // was touched since.
                    state.unpack(key);
                    let ShardState { jobs, extras, .. } = &mut state;
                    let job = jobs.get_mut(&key).ok_or_else(|| {
                        LoadError::OrphanStatus(keys::job_key(keys::STATUS, id).to_vec())
                    })?;
                    set_status(extras, key, job, status);
                }
                Some(keys::NODES) => {
                    state.nodes = Some(decode(key, value)?);
                }
                Some(keys::FENCE) => {
                    state.fence = Some(decode(key, value)?);
                }
                Some(keys::ROUTING) => {
                    state.routing = Some(decode(key, value)?);
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

    /// Adds a job of `queue` from its record (at enqueue, and at load); no
    /// index.
    fn insert_job(&mut self, key: JobKey, queue: QueueId, meta: &JobMeta, status: JobStatus) {
        let mut job = Job {
            due_at_ms: 0,
            enqueued_at_ms: meta.enqueued_at_ms,
            queue,
            priority: meta.priority,
            attempt: 0,
            retry_base: 0,
            max_attempts: meta.max_attempts,
            answer_bytes: u32::try_from(meta.answer_bytes).unwrap_or(u32::MAX),
            worker: NO_WORKER,
            state: status.state,
            flags: 0,
        };
        if let Some(backoff) = meta.backoff {
            self.extras.backoffs.insert(key, backoff);
            job.flags |= flags::BACKOFF;
        }
        if let Some(idem) = &meta.idempotency_key {
            self.extras
                .idempotency_keys
                .insert(key, idem.clone().into_boxed_str());
            job.flags |= flags::IDEMPOTENCY_KEY;
        }
        set_status(&mut self.extras, key, &mut job, status);
        self.jobs.insert(key, job);
    }

    /// Keeps a job as fresh if it is one (ready since its enqueue, with
    /// nothing of its own in the side maps): false if it is not.
    fn pack(&mut self, key: JobKey, queue: QueueId, meta: &JobMeta, status: &JobStatus) -> bool {
        let fresh = status.state == JobState::Ready
            && status.attempt == 0
            && status.retry_base == 0
            && status.due_at_ms == meta.enqueued_at_ms
            && status.worker.is_none()
            && status.last_error.is_none()
            && meta.backoff.is_none()
            && meta.idempotency_key.is_none();
        fresh
            && self.queues[queue as usize].fresh.push(
                meta.priority,
                FreshJob {
                    key,
                    enqueued_at_ms: meta.enqueued_at_ms,
                    max_attempts: meta.max_attempts,
                    answer_bytes: u32::try_from(meta.answer_bytes).unwrap_or(u32::MAX),
                },
            )
    }

    /// The fresh job `key`'s queue, priority and data, if it is one.
    fn find_fresh(&self, key: JobKey) -> Option<(QueueId, i32, FreshJob)> {
        self.queues.iter().enumerate().find_map(|(queue, q)| {
            q.fresh
                .get(key)
                .map(|(priority, job)| (queue as QueueId, priority, job))
        })
    }

    /// Moves the fresh job `key`, if it is one, into the job map (in no
    /// index: the caller puts it where it belongs).
    fn unpack(&mut self, key: JobKey) -> Option<QueueId> {
        let (queue, (priority, job)) = self
            .queues
            .iter_mut()
            .enumerate()
            .find_map(|(queue, q)| Some((queue as QueueId, q.fresh.remove(key)?)))?;
        self.jobs.insert(key, fresh_job(queue, priority, &job));
        Some(queue)
    }

    /// Job `key` as it stands, wherever it is kept.
    fn find(&self, key: JobKey) -> Option<Job> {
        match self.jobs.get(&key) {
            Some(job) => Some(*job),
            None => self
                .find_fresh(key)
                .map(|(queue, priority, job)| fresh_job(queue, priority, &job)),
        }
    }

    fn rebuild_indexes(&mut self) {
        let ShardState {
            jobs,
            queues,
            leases,
            scheduled,
            ..
        } = self;
        for (key, job) in jobs.iter() {
            let q = &mut queues[job.queue as usize];
            match job.state {
                JobState::Ready => {
                    q.ready.insert(job.ready_key(*key), ());
                }
                JobState::Scheduled => {
                    q.scheduled += 1;
                    scheduled.insert((job.due_at_ms, *key), ());
                }
                JobState::Leased => {
                    q.leased += 1;
                    leases.insert((job.due_at_ms, *key), ());
                }
                JobState::Dead => {
                    q.dead.insert(*key, ());
                }
            }
        }
    }

    /// The key of `id` in this state: none for another shard's id.
    fn key_of(&self, id: JobId) -> Option<JobKey> {
        (id.shard == self.shard).then(|| JobKey::of(id))
    }

    fn id_of(&self, key: JobKey) -> JobId {
        key.id(self.shard)
    }

    /// The queue's number, creating it on first use.
    fn queue_id(&mut self, name: &str) -> QueueId {
        if let Some(&id) = self.queue_ids.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = self.queues.len() as QueueId;
        self.queues.push(Queue::new(name.clone()));
        self.queue_ids.insert(name, id);
        id
    }

    /// The shared name of a queue (so a million jobs share one allocation).
    fn queue_name(&mut self, name: &str) -> Arc<str> {
        let id = self.queue_id(name);
        self.queues[id as usize].name.clone()
    }

    fn queue_mut(&mut self, name: &str) -> &mut Queue {
        let id = self.queue_id(name);
        &mut self.queues[id as usize]
    }

    fn queue(&self, name: &str) -> Option<&Queue> {
        self.queue_ids
            .get(name)
            .map(|&id| &self.queues[id as usize])
    }

    /// Queues that gained ready jobs since the last call (for waking fetchers).
    pub fn take_woken(&mut self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.woken)
    }

    /// Live jobs (any state, dead ones included).
    pub fn job_count(&self) -> usize {
        self.jobs.len() + self.queues.iter().map(|q| q.fresh.len()).sum::<usize>()
    }

    /// What the live jobs take in memory: [`INDEX_BYTES_PER_JOB`] for each
    /// one in the job map (with its index entries and side maps), and what
    /// the fresh ones take packed.
    pub fn index_bytes(&self) -> u64 {
        let fresh: usize = self.queues.iter().map(|q| q.fresh.footprint()).sum();
        (self.jobs.len() as u64).saturating_mul(INDEX_BYTES_PER_JOB) + fresh as u64
    }

    /// Jobs acked, cancelled, purged or dead since the last call.
    pub fn take_finished(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.finished)
    }

    /// The earliest time a timer (scheduled job, lease, idempotency key) is due.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        [
            self.scheduled.first().map(|((t, _), ())| *t),
            self.leases.first().map(|((t, _), ())| *t),
            self.dedup_expiry.first().map(|(t, _, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The queue of a live job.
    pub fn queue_of(&self, id: JobId) -> Option<Arc<str>> {
        let job = self.find(self.key_of(id)?)?;
        Some(self.queues[job.queue as usize].name.clone())
    }

    pub fn job(&self, id: JobId, defaults: &QueueDefaults) -> Option<JobView> {
        let key = self.key_of(id)?;
        let job = self.find(key)?;
        Some(self.view(key, &job, defaults))
    }

    fn view(&self, key: JobKey, job: &Job, defaults: &QueueDefaults) -> JobView {
        let queue = &self.queues[job.queue as usize];
        self.view_in(key, job, &queue_view(&queue.name, &queue.meta, defaults))
    }

    /// [`ShardState::view`] of a job of the queue whose settings are `limits`.
    fn view_in(&self, key: JobKey, job: &Job, limits: &QueueView) -> JobView {
        let queue = &self.queues[job.queue as usize];
        let status = self.extras.status(key, job);
        JobView {
            id: self.id_of(key),
            queue: queue.name.clone(),
            priority: job.priority,
            enqueued_at_ms: job.enqueued_at_ms,
            idempotency_key: self.idempotency_key(key, job).map(str::to_string),
            status: JobStatus {
                state: status.state,
                attempt: status.attempt,
                retry_base: status.retry_base,
                due_at_ms: status.due_at_ms,
                last_error: status.last_error.map(str::to_string),
                worker: status.worker.map(str::to_string),
            },
            max_attempts: max_attempts(job, limits),
        }
    }

    fn idempotency_key(&self, key: JobKey, job: &Job) -> Option<&str> {
        if job.has(flags::IDEMPOTENCY_KEY) {
            self.extras.idempotency_keys.get(&key).map(|k| &**k)
        } else {
            None
        }
    }

    fn backoff(&self, key: JobKey, job: &Job, limits: &QueueView) -> BackoffPolicy {
        if job.has(flags::BACKOFF) {
            if let Some(backoff) = self.extras.backoffs.get(&key) {
                return *backoff;
            }
        }
        limits.backoff
    }

    pub fn queue_view(&self, name: &str, defaults: &QueueDefaults) -> QueueView {
        let meta = self.queue(name).map(|q| q.meta.clone()).unwrap_or_default();
        queue_view(name, &meta, defaults)
    }

    /// Whether a claim on `queue` could lease anything now: it has ready
    /// jobs and is not paused. Lets idle fetchers skip a Raft round.
    pub fn has_ready(&self, queue: &str) -> bool {
        self.queue(queue)
            .is_some_and(|q| !q.meta.paused && q.ready_len() > 0)
    }

    pub fn stats(&self, name: &str) -> Option<QueueStats> {
        self.queue(name).map(stats)
    }

    pub fn all_stats(&self) -> Vec<QueueStats> {
        let mut all: Vec<QueueStats> = self.queues.iter().map(stats).collect();
        all.sort_by(|a, b| a.queue.cmp(&b.queue));
        all
    }

    /// One page of a queue's dead jobs, in id order, after `after`.
    pub fn dead_page(
        &self,
        queue: &str,
        after: Option<JobId>,
        limit: usize,
        defaults: &QueueDefaults,
    ) -> Vec<JobView> {
        let Some(q) = self.queue(queue) else {
            return Vec::new();
        };
        let limits = queue_view(&q.name, &q.meta, defaults);
        q.dead
            .iter_after(after.map(JobKey::of))
            .take(limit)
            .filter_map(|(key, ())| {
                self.jobs
                    .get(key)
                    .map(|job| self.view_in(*key, job, &limits))
            })
            .collect()
    }

    /// A canonical dump of the replicated state, for comparing replicas and
    /// rebuilds in tests. Excludes node-local counters.
    pub fn digest(&self) -> String {
        let mut out = format!("now={}\n", self.now_ms);
        // Packed or not is how a job is kept, not what it is.
        let mut all: Vec<(JobKey, Job)> = self.jobs.iter().map(|(k, j)| (*k, *j)).collect();
        for (queue, q) in self.queues.iter().enumerate() {
            all.extend(
                q.fresh
                    .iter()
                    .map(|(priority, job)| (job.key, fresh_job(queue as QueueId, priority, &job))),
            );
        }
        all.sort_by_key(|(key, _)| *key);
        for (key, job) in &all {
            let (key, job) = (key, job);
            let queue = &self.queues[job.queue as usize].name;
            let backoff = job
                .has(flags::BACKOFF)
                .then(|| self.extras.backoffs.get(key))
                .flatten();
            let status = self.extras.status(*key, job);
            out.push_str(&format!(
                "{} queue={queue} priority={} max_attempts={} backoff={backoff:?} enqueued={} key={:?} bytes={} state={:?} attempt={} base={} due={} error={:?} worker={:?}\n",
                self.id_of(*key),
                { job.priority },
                { job.max_attempts },
                { job.enqueued_at_ms },
                self.idempotency_key(*key, job),
                { job.answer_bytes },
                status.state,
                status.attempt,
                status.retry_base,
                status.due_at_ms,
                status.last_error,
                status.worker,
            ));
        }
        // Queues with nothing in them and default settings exist only in
        // memory (a name was used); they carry no replicated state.
        let mut queues: Vec<&Queue> = self
            .queues
            .iter()
            .filter(|q| {
                q.meta != QueueMeta::default()
                    || q.ready_len() > 0
                    || q.scheduled + q.leased > 0
                    || !q.dead.is_empty()
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        for q in queues {
            let mut ready: Vec<ReadyKey> = q.ready.keys().collect();
            ready.extend(
                q.fresh
                    .iter()
                    .map(|(priority, job)| ReadyKey::new(priority, job.enqueued_at_ms, job.key)),
            );
            ready.sort();
            out.push_str(&format!(
                "queue {} {:?} ready={:?} scheduled={} leased={} dead={:?}\n",
                q.name, q.meta, ready, q.scheduled, q.leased, q.dead
            ));
        }
        let mut dedup: Vec<_> = self.dedup.iter().collect();
        dedup.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str(&format!(
            "dedup {dedup:?}\nleases {:?}\nscheduled {:?}\nfence {:?}\nrouting {:?}\n",
            self.leases, self.scheduled, self.fence, self.routing
        ));
        out
    }
}

/// Sets a job's status from a record: at enqueue and at load.
fn set_status(extras: &mut Extras, key: JobKey, job: &mut Job, status: JobStatus) {
    job.state = status.state;
    job.attempt = status.attempt;
    job.retry_base = status.retry_base;
    job.due_at_ms = status.due_at_ms;
    extras.unlease(job);
    if let Some(worker) = status.worker {
        job.worker = extras.workers.intern(&worker);
        extras.workers.add(job.worker, 1);
    }
    match status.last_error {
        Some(error) => extras.set_error(key, job, Some(error)),
        None => {
            if job.has(flags::ERROR) {
                extras.errors.remove(&key);
                job.flags &= !flags::ERROR;
            }
        }
    }
}

/// A fresh job as the job map keeps jobs.
fn fresh_job(queue: QueueId, priority: i32, job: &FreshJob) -> Job {
    Job {
        due_at_ms: job.enqueued_at_ms,
        enqueued_at_ms: job.enqueued_at_ms,
        queue,
        priority,
        attempt: 0,
        retry_base: 0,
        max_attempts: job.max_attempts,
        answer_bytes: job.answer_bytes,
        worker: NO_WORKER,
        state: JobState::Ready,
        flags: 0,
    }
}

fn max_attempts(job: &Job, limits: &QueueView) -> u32 {
    match job.max_attempts {
        0 => limits.max_attempts,
        n => n,
    }
}

fn stats(q: &Queue) -> QueueStats {
    QueueStats {
        queue: q.name.to_string(),
        ready: q.ready_len() as u64,
        scheduled: q.scheduled,
        leased: q.leased,
        dead: q.dead.len() as u64,
        paused: q.meta.paused,
        totals: q.totals,
        oldest_ready_ms: q.oldest_ready_ms(),
        lease_to_ack: q.lease_to_ack,
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
