//! Apply: one batch in, one result per op out, every change recorded in the
//! sink. Timers (scheduled jobs coming due, leases expiring, idempotency
//! keys ageing out) fire first, from the batch's own time.

use std::sync::Arc;

use raftq_api::JobId;

use super::job::{Job, JobKey, QueueId, ReadyKey, NO_WORKER};
use super::keys::{self, WriteSink};
use super::{fresh_job, max_attempts, queue_view, DedupEntry, NextReady, ShardState};
use crate::ops::{
    answer_bytes, Batch, BatchResult, ContentRef, JobMeta, JobState, JobStatus, JobView, Nack,
    NewJob, Op, OpError, OpResult, QueueDefaults, TokenOutcome, When,
};

impl ShardState {
    /// Applies the batch committed at log `index`.
    pub fn apply_batch(
        &mut self,
        index: u64,
        batch: &Batch,
        sink: &mut impl WriteSink,
    ) -> BatchResult {
        self.now_ms = self.now_ms.max(batch.time_ms);
        self.fire_timers(&batch.defaults, sink);
        let mut position = 0u32;
        let results = batch
            .ops
            .iter()
            .map(|op| self.apply_op(index, &mut position, op, &batch.defaults, sink))
            .collect();
        BatchResult(results)
    }

    fn apply_op(
        &mut self,
        index: u64,
        position: &mut u32,
        op: &Op,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> OpResult {
        if let Some(queue) = op.queue() {
            if let Err(wrong_shard) = self.takes(queue) {
                return OpResult::Failed(wrong_shard);
            }
        }
        match op {
            Op::Enqueue { queue, jobs } => {
                // Once per op, not per job: the queue's number, shared
                // name and window.
                let queue_id = self.queue_id(queue);
                let queue = self.queues[queue_id as usize].name.clone();
                let dedup_window_ms = self.queue_view(&queue, defaults).dedup_window_ms;
                let ids = jobs
                    .iter()
                    .map(|job| {
                        let id = JobId {
                            shard: self.shard,
                            index,
                            position: *position,
                        };
                        *position += 1;
                        self.enqueue(id, queue_id, &queue, dedup_window_ms, job, sink)
                    })
                    .collect();
                OpResult::Enqueued(ids)
            }
            Op::Claim {
                queue,
                worker,
                max,
                lease_ms,
            } => OpResult::Claimed(self.claim(queue, worker, *max, *lease_ms, defaults, sink)),
            Op::Ack { tokens } => settle_each(tokens, |id, attempt| self.ack(id, attempt, sink)),
            Op::Nack { items } => OpResult::Tokens(
                items
                    .iter()
                    .map(|nack| TokenOutcome {
                        id: nack.id,
                        attempt: nack.attempt,
                        result: self.nack(nack, defaults, sink).map(|()| None),
                    })
                    .collect(),
            ),
            Op::Extend { tokens, lease_ms } => OpResult::Tokens(
                tokens
                    .iter()
                    .map(|&(id, attempt)| TokenOutcome {
                        id,
                        attempt,
                        result: self
                            .extend(id, attempt, *lease_ms, defaults, sink)
                            .map(Some),
                    })
                    .collect(),
            ),
            Op::SetPaused { queue, paused } => {
                let q = self.queue_mut(queue);
                q.meta.paused = *paused;
                let woke = !paused && q.ready_len() > 0;
                let meta = q.meta.clone();
                sink.put(
                    &keys::named_key(self.shard, keys::QUEUE, queue.as_bytes()),
                    &meta,
                );
                if woke {
                    self.wake(queue);
                }
                OpResult::Queue(queue_view(queue, &meta, defaults))
            }
            Op::SetQueueConfig { queue, patch } => {
                let q = self.queue_mut(queue);
                let c = &mut q.meta.config;
                c.lease_ms = patch.lease_ms.or(c.lease_ms);
                c.max_attempts = patch.max_attempts.or(c.max_attempts);
                c.backoff = patch.backoff.or(c.backoff);
                c.dedup_window_ms = patch.dedup_window_ms.or(c.dedup_window_ms);
                let meta = q.meta.clone();
                sink.put(
                    &keys::named_key(self.shard, keys::QUEUE, queue.as_bytes()),
                    &meta,
                );
                OpResult::Queue(queue_view(queue, &meta, defaults))
            }
            Op::PurgeQueue { queue } => OpResult::Count(self.purge_queue(queue, sink)),
            Op::Cancel { id } => match self.cancel(*id, defaults, sink) {
                Ok(view) => OpResult::Job(view),
                Err(e) => OpResult::Failed(e),
            },
            Op::RequeueDead { queue, ids } => match self.dead_selection(queue, ids) {
                Ok(keys) => {
                    for &key in &keys {
                        self.requeue_dead(key, sink);
                    }
                    OpResult::Count(keys.len() as u64)
                }
                Err(e) => OpResult::Failed(e),
            },
            Op::PurgeDead { queue, ids } => match self.dead_selection(queue, ids) {
                Ok(keys) => {
                    for &key in &keys {
                        if let Some(q) = self.queue_ids.get(queue.as_str()) {
                            self.queues[*q as usize].dead.remove(&key);
                        }
                        self.remove_job(key, sink);
                    }
                    OpResult::Count(keys.len() as u64)
                }
                Err(e) => OpResult::Failed(e),
            },
            Op::Tick => OpResult::Ticked,
            Op::SetNodes { nodes } => {
                sink.put(&keys::named_key(self.shard, keys::NODES, b"nodes"), nodes);
                self.nodes = Some(nodes.clone());
                OpResult::NodesSet
            }
            Op::Fence { shard_count } => OpResult::Pinned(self.fence_at(*shard_count, sink)),
            Op::SetRouting { routing } => {
                // Only the successor of the table in force: a growth that
                // started from an older one (another ran meanwhile, or this
                // is a retried proposal) changes nothing.
                let held = self.routing.as_ref().map_or(0, |r| r.version);
                if routing.version != held + 1 {
                    return OpResult::Failed(OpError::RoutingChanged {
                        held,
                        offered: routing.version,
                    });
                }
                sink.put(
                    &keys::named_key(self.shard, keys::ROUTING, b"routing"),
                    routing,
                );
                self.routing = Some(routing.clone());
                OpResult::RoutingSet
            }
            Op::Release { tokens } => {
                settle_each(tokens, |id, attempt| self.release(id, attempt, sink))
            }
        }
    }

    /// Fences the shard for `shard_count` shards (never fewer than it was
    /// fenced for): it keeps every queue it holds something of, and takes
    /// new ones only when they hash here. Returns the queues it keeps that
    /// hash elsewhere. Asked again, it answers the same: no queue it does
    /// not take can have appeared since.
    fn fence_at(&mut self, shard_count: u32, sink: &mut impl WriteSink) -> Vec<String> {
        let mut fence = self.fence.clone().unwrap_or_default();
        fence.shard_count = fence.shard_count.max(shard_count);
        let keep: Vec<String> = self
            .queues_holding_something()
            .into_iter()
            .filter(|q| raftq_api::shard_of(q, fence.shard_count) != self.shard)
            .map(str::to_owned)
            .collect();
        fence.pinned.extend(keep);
        sink.put(&keys::named_key(self.shard, keys::FENCE, b"fence"), &fence);
        let pinned = fence.pinned.iter().cloned().collect();
        self.fence = Some(fence);
        pinned
    }

    fn fire_timers(&mut self, defaults: &QueueDefaults, sink: &mut impl WriteSink) {
        let now = self.now_ms;
        while let Some(&((due, key), ())) = self.scheduled.first() {
            if due > now {
                break;
            }
            self.scheduled.pop_first();
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            job.state = JobState::Ready;
            let job = *job;
            self.write_status(key, &job, sink);
            let (queue, ready_key) = (job.queue, job.ready_key(key));
            let q = &mut self.queues[queue as usize];
            q.scheduled -= 1;
            q.ready.insert(ready_key, ());
            self.wake_id(queue);
        }
        while let Some(&((due, key), ())) = self.leases.first() {
            if due > now {
                break;
            }
            self.leases.pop_first();
            if timed(key) {
                self.lease_starts.remove(&key);
            }
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            self.extras.unlease(job);
            let job = *job;
            let queue = job.queue;
            let attempt = job.attempts_used();
            let q = &self.queues[queue as usize];
            let out_of_attempts =
                attempt >= max_attempts(&job, &queue_view(&q.name, &q.meta, defaults));
            let q = &mut self.queues[queue as usize];
            q.leased -= 1;
            q.totals.expired += 1;
            let error = format!("lease expired (attempt {attempt})");
            if out_of_attempts {
                self.make_dead(key, Some(error), sink);
            } else {
                self.make_ready(key, due, Some(error), sink);
            }
        }
        while let Some((due, _, _)) = self.dedup_expiry.first() {
            if *due > now {
                break;
            }
            let Some((_, queue, key)) = self.dedup_expiry.pop_first() else {
                break;
            };
            sink.delete(&keys::dedup_key(self.shard, &queue, &key));
            self.dedup.remove(&(queue, key));
        }
    }

    fn enqueue(
        &mut self,
        id: JobId,
        queue_id: QueueId,
        queue: &Arc<str>,
        dedup_window_ms: u64,
        job: &NewJob,
        sink: &mut impl WriteSink,
    ) -> (JobId, bool) {
        if let Some(key) = &job.idempotency_key {
            if let Some(existing) = self.dedup.get(&(queue.clone(), key.clone())) {
                return (existing.id, true);
            }
            let entry = DedupEntry {
                id,
                expires_at_ms: self.now_ms.saturating_add(dedup_window_ms),
            };
            sink.put(&keys::dedup_key(self.shard, queue, key), &entry);
            self.dedup_expiry
                .insert((entry.expires_at_ms, queue.clone(), key.clone()));
            self.dedup.insert((queue.clone(), key.clone()), entry);
        }
        let now = self.now_ms;
        let run_at = match job.when {
            When::Now => now,
            When::Delay(ms) => now.saturating_add(ms),
            When::At(at) => at.max(now),
        };
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Ready
        };
        let meta = JobMeta {
            queue: queue.clone(),
            priority: job.priority,
            max_attempts: job.max_attempts,
            backoff: job.backoff,
            enqueued_at_ms: now,
            idempotency_key: job.idempotency_key.clone(),
            answer_bytes: answer_bytes(
                queue,
                &job.payload,
                &job.headers,
                job.idempotency_key.as_deref(),
            ),
        };
        let status = JobStatus {
            state,
            attempt: 0,
            retry_base: 0,
            due_at_ms: run_at,
            last_error: None,
            worker: None,
        };
        // The content is written here once and read back only to serve
        // the job; memory keeps the metadata.
        let content = ContentRef {
            payload: &job.payload,
            headers: &job.headers,
        };
        sink.put_new(&keys::job_key(keys::JOB, id), &(&meta, &status, content));
        let key = JobKey::of(id);
        let packed = self.pack(key, queue_id, &meta, &status);
        if !packed {
            self.insert_job(key, queue_id, &meta, status);
        }
        let q = &mut self.queues[queue_id as usize];
        q.totals.enqueued += 1;
        match state {
            JobState::Ready => {
                if !packed {
                    q.ready.insert(ReadyKey::new(job.priority, run_at, key), ());
                }
                self.wake_id(queue_id);
            }
            _ => {
                q.scheduled += 1;
                self.scheduled.insert((run_at, key), ());
            }
        }
        (id, false)
    }

    fn claim(
        &mut self,
        queue: &str,
        worker: &str,
        max: u32,
        lease_ms: Option<u64>,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> Vec<JobView> {
        let Some(&queue_id) = self.queue_ids.get(queue) else {
            return Vec::new();
        };
        let q = &self.queues[queue_id as usize];
        if q.meta.paused || q.ready_len() == 0 {
            return Vec::new();
        }
        let limits = queue_view(queue, &q.meta, defaults);
        let lease = lease_ms.unwrap_or(limits.lease_ms);
        let expires = self.now_ms.saturating_add(lease);
        let worker_id = self.extras.workers.intern(worker);
        let mut claimed = Vec::with_capacity(max.min(q.ready_len() as u32) as usize);
        let mut bytes = 0u64;
        while claimed.len() < max as usize {
            let q = &mut self.queues[queue_id as usize];
            let Some(next) = q.next_ready() else {
                break;
            };
            let (key, size) = match next {
                NextReady::Fresh(job) => (job.key, job.answer_bytes),
                NextReady::Unpacked(ready) => match self.jobs.get(&ready.key) {
                    Some(job) => (ready.key, job.answer_bytes),
                    None => {
                        q.ready.pop_first();
                        continue;
                    }
                },
            };
            // Lease only what one answer can carry: a job that would take
            // the answer over the budget stays ready for the next claim
            // (the first job always fits: one job is at most ~2 MiB).
            let size = u64::from(size);
            if !claimed.is_empty() && bytes + size > super::MAX_CLAIM_BYTES as u64 {
                break;
            }
            bytes += size;
            // A fresh job has never had a status record (that is what
            // makes it fresh, at enqueue and at load).
            let first_status = matches!(next, NextReady::Fresh(_));
            match next {
                NextReady::Fresh(_) => {
                    if let Some((priority, fresh)) = q.fresh.pop_first() {
                        self.jobs.insert(key, fresh_job(queue_id, priority, &fresh));
                    }
                }
                NextReady::Unpacked(_) => {
                    q.ready.pop_first();
                }
            }
            let q = &mut self.queues[queue_id as usize];
            let Some(job) = self.jobs.get_mut(&key) else {
                continue;
            };
            q.leased += 1;
            job.state = JobState::Leased;
            job.attempt += 1;
            job.due_at_ms = expires;
            job.worker = worker_id;
            let job = *job;
            self.leases.insert((expires, key), ());
            if timed(key) {
                self.lease_starts.insert(key, self.now_ms);
            }
            if first_status {
                sink.put_new(&self.status_key(key), &self.extras.status(key, &job));
            } else {
                self.write_status(key, &job, sink);
            }
            claimed.push((key, job));
        }
        self.extras.workers.add(worker_id, claimed.len() as u32);
        claimed
            .iter()
            .map(|(key, job)| self.view_in(*key, job, &limits))
            .collect()
    }

    /// The key of job `id` if it is leased at `attempt`; otherwise why the
    /// token is stale.
    fn leased_job(&self, id: JobId, attempt: u32) -> Result<JobKey, OpError> {
        let key = self.key_of(id).ok_or(OpError::JobNotFound { id })?;
        let job = self.find(key).ok_or(OpError::JobNotFound { id })?;
        if job.state != JobState::Leased || job.attempt != attempt {
            return Err(OpError::LeaseLost {
                id,
                attempt,
                state: job.state,
                current_attempt: job.attempt,
            });
        }
        Ok(key)
    }

    /// Takes a leased job out of the lease index and its queue's count;
    /// its queue, and how long ago (ms) its lease began, when known.
    fn end_lease(&mut self, key: JobKey) -> Option<(QueueId, Option<u64>)> {
        let job = self.jobs.get_mut(&key)?;
        self.leases.remove(&(job.due_at_ms, key));
        self.extras.unlease(job);
        let queue = job.queue;
        self.queues[queue as usize].leased -= 1;
        let held = timed(key)
            .then(|| self.lease_starts.remove(&key))
            .flatten()
            .map(|start| self.now_ms.saturating_sub(start));
        Some((queue, held))
    }

    fn ack(&mut self, id: JobId, attempt: u32, sink: &mut impl WriteSink) -> Result<(), OpError> {
        let key = self.leased_job(id, attempt)?;
        if let Some((queue, held)) = self.end_lease(key) {
            let q = &mut self.queues[queue as usize];
            q.totals.acked += 1;
            if let Some(ms) = held {
                q.lease_to_ack.observe_ms(ms);
            }
        }
        self.remove_job(key, sink);
        Ok(())
    }

    fn nack(
        &mut self,
        nack: &Nack,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> Result<(), OpError> {
        let key = self.leased_job(nack.id, nack.attempt)?;
        let Some(job) = self.jobs.get(&key) else {
            return Err(OpError::JobNotFound { id: nack.id });
        };
        let q = &self.queues[job.queue as usize];
        let limits = queue_view(&q.name, &q.meta, defaults);
        let used = job.attempts_used();
        let out_of_attempts = used >= max_attempts(job, &limits);
        let delay = nack
            .retry_delay_ms
            .unwrap_or_else(|| self.backoff(key, job, &limits).delay_ms(used));
        if let Some((queue, _)) = self.end_lease(key) {
            self.queues[queue as usize].totals.nacked += 1;
        }
        let error = Some(nack.error.clone()).filter(|e| !e.is_empty());
        if nack.dead || out_of_attempts {
            self.make_dead(key, error, sink);
        } else if delay == 0 {
            self.make_ready(key, self.now_ms, error, sink);
        } else {
            let run_at = self.now_ms.saturating_add(delay);
            let Some(job) = self.jobs.get_mut(&key) else {
                return Ok(());
            };
            job.state = JobState::Scheduled;
            job.due_at_ms = run_at;
            self.extras.set_error(key, job, error);
            let job = *job;
            self.write_status(key, &job, sink);
            let queue = job.queue;
            self.queues[queue as usize].scheduled += 1;
            self.scheduled.insert((run_at, key), ());
        }
        Ok(())
    }

    fn release(
        &mut self,
        id: JobId,
        attempt: u32,
        sink: &mut impl WriteSink,
    ) -> Result<(), OpError> {
        let key = self.leased_job(id, attempt)?;
        self.end_lease(key);
        let Some(job) = self.jobs.get_mut(&key) else {
            return Ok(());
        };
        // Not started, so not an attempt used.
        job.retry_base = job.retry_base.saturating_add(1).min(attempt);
        let enqueued_at = job.enqueued_at_ms;
        self.make_ready(key, enqueued_at, None, sink);
        Ok(())
    }

    fn extend(
        &mut self,
        id: JobId,
        attempt: u32,
        lease_ms: Option<u64>,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> Result<u64, OpError> {
        let key = self.leased_job(id, attempt)?;
        let Some(job) = self.jobs.get_mut(&key) else {
            return Err(OpError::JobNotFound { id });
        };
        let lease = lease_ms.unwrap_or_else(|| {
            self.queues[job.queue as usize]
                .meta
                .config
                .lease_ms
                .unwrap_or(defaults.lease_ms)
        });
        let expires = self.now_ms.saturating_add(lease);
        self.leases.remove(&(job.due_at_ms, key));
        self.leases.insert((expires, key), ());
        job.due_at_ms = expires;
        let job = *job;
        self.write_status(key, &job, sink);
        Ok(expires)
    }

    fn cancel(
        &mut self,
        id: JobId,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> Result<JobView, OpError> {
        let view = self.job(id, defaults).ok_or(OpError::JobNotFound { id })?;
        let key = JobKey::of(id);
        let Some(job) = self.find(key) else {
            return Err(OpError::JobNotFound { id });
        };
        let (queue, status) = (job.queue as usize, &view.status);
        match status.state {
            JobState::Leased => {
                return Err(OpError::Leased {
                    id,
                    worker: status.worker.clone().unwrap_or_default(),
                    attempt: status.attempt,
                })
            }
            JobState::Ready => {
                let q = &mut self.queues[queue];
                if q.ready.remove(&job.ready_key(key)).is_none() {
                    q.fresh.remove(key);
                    self.delete_records(key, sink);
                }
            }
            JobState::Scheduled => {
                self.scheduled.remove(&(status.due_at_ms, key));
                self.queues[queue].scheduled -= 1;
            }
            JobState::Dead => {
                self.queues[queue].dead.remove(&key);
            }
        }
        self.remove_job(key, sink);
        Ok(view)
    }

    fn purge_queue(&mut self, queue: &str, sink: &mut impl WriteSink) -> u64 {
        let Some(&queue_id) = self.queue_ids.get(queue) else {
            return 0;
        };
        let q = &mut self.queues[queue_id as usize];
        let fresh = q.fresh.take();
        let mut victims: Vec<JobKey> = std::mem::take(&mut q.ready)
            .iter()
            .map(|(ready, ())| ready.key)
            .collect();
        q.scheduled = 0;
        for (_, job) in fresh.iter() {
            self.delete_records(job.key, sink);
        }
        let scheduled: Vec<(u64, JobKey)> = self
            .scheduled
            .keys()
            .filter(|(_, key)| self.jobs.get(key).is_some_and(|j| j.queue == queue_id))
            .collect();
        for entry in scheduled {
            self.scheduled.remove(&entry);
            victims.push(entry.1);
        }
        for &key in &victims {
            self.remove_job(key, sink);
        }
        (victims.len() + fresh.len()) as u64
    }

    /// The dead jobs an op targets: all of the queue's, or the listed ones,
    /// which must all be dead jobs of that queue.
    fn dead_selection(&self, queue: &str, ids: &[JobId]) -> Result<Vec<JobKey>, OpError> {
        let dead = self.queue(queue).map(|q| &q.dead);
        if ids.is_empty() {
            return Ok(dead.map(|d| d.keys().collect()).unwrap_or_default());
        }
        let mut keys = Vec::with_capacity(ids.len());
        for &id in ids {
            match (self.key_of(id), dead) {
                (Some(key), Some(dead)) if dead.contains_key(&key) => keys.push(key),
                _ => {
                    return Err(OpError::NotDead {
                        id,
                        queue: queue.to_string(),
                    })
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    fn requeue_dead(&mut self, key: JobKey, sink: &mut impl WriteSink) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        // Retries count afresh; the attempt number itself keeps growing so
        // tokens of earlier deliveries stay stale.
        job.retry_base = job.attempt;
        let queue = job.queue;
        self.queues[queue as usize].dead.remove(&key);
        self.make_ready(key, self.now_ms, None, sink);
    }

    /// Makes a job that is in no index ready from `since_ms`; `error`, if
    /// any, becomes its last error.
    fn make_ready(
        &mut self,
        key: JobKey,
        since_ms: u64,
        error: Option<String>,
        sink: &mut impl WriteSink,
    ) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.state = JobState::Ready;
        job.due_at_ms = since_ms;
        debug_assert_eq!(job.worker, NO_WORKER);
        self.extras.set_error(key, job, error);
        let job = *job;
        self.write_status(key, &job, sink);
        let (queue, ready_key) = (job.queue, job.ready_key(key));
        self.queues[queue as usize].ready.insert(ready_key, ());
        self.wake_id(queue);
    }

    fn make_dead(&mut self, key: JobKey, error: Option<String>, sink: &mut impl WriteSink) {
        let now = self.now_ms;
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.state = JobState::Dead;
        job.due_at_ms = now;
        self.extras.set_error(key, job, error);
        let job = *job;
        self.write_status(key, &job, sink);
        let q = &mut self.queues[job.queue as usize];
        q.dead.insert(key, ());
        q.totals.died += 1;
        self.finished.push(self.id_of(key));
    }

    /// Writes `job`'s status record (the job as just changed).
    fn write_status(&self, key: JobKey, job: &Job, sink: &mut impl WriteSink) {
        sink.put(&self.status_key(key), &self.extras.status(key, job));
    }

    fn status_key(&self, key: JobKey) -> [u8; 17] {
        keys::job_key(keys::STATUS, self.id_of(key))
    }

    /// Forgets a job that left every index.
    fn remove_job(&mut self, key: JobKey, sink: &mut impl WriteSink) {
        if let Some(mut job) = self.jobs.remove(&key) {
            self.extras.forget(key, &mut job);
            self.delete_records(key, sink);
        }
    }

    /// Deletes the records of a job that left the state.
    fn delete_records(&mut self, key: JobKey, sink: &mut impl WriteSink) {
        let id = self.id_of(key);
        sink.delete(&keys::job_key(keys::JOB, id));
        sink.delete(&keys::job_key(keys::STATUS, id));
        self.finished.push(id);
    }

    fn wake(&mut self, queue: &str) {
        let id = self.queue_id(queue);
        self.wake_id(id);
    }

    fn wake_id(&mut self, queue: QueueId) {
        let name = &self.queues[queue as usize].name;
        if !self.woken.iter().any(|q| q == name) {
            self.woken.push(name.clone());
        }
    }
}

/// One outcome per token, from `settle` (an ack or a release).
fn settle_each(
    tokens: &[(JobId, u32)],
    mut settle: impl FnMut(JobId, u32) -> Result<(), OpError>,
) -> OpResult {
    OpResult::Tokens(
        tokens
            .iter()
            .map(|&(id, attempt)| TokenOutcome {
                id,
                attempt,
                result: settle(id, attempt).map(|()| None),
            })
            .collect(),
    )
}

/// Whether the lease-to-ack histogram times this job: one in
/// [`LEASE_TIMING_SAMPLE`], spread over entries and positions, so the map
/// of lease starts stays off most claims and acks (timing every job cost
/// about 5 % of a fetch+ack's CPU).
fn timed(key: JobKey) -> bool {
    (key.index() ^ u64::from(key.position())).is_multiple_of(LEASE_TIMING_SAMPLE)
}

/// One job in this many is timed from lease to ack.
const LEASE_TIMING_SAMPLE: u64 = 16;
