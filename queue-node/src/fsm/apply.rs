//! Apply: one batch in, one result per op out, every change recorded in the
//! sink. Timers (scheduled jobs coming due, leases expiring, idempotency
//! keys ageing out) fire first, from the batch's own time.

use std::sync::Arc;

use raftq_api::JobId;

use super::keys::{self, WriteSink};
use super::{queue_view, DedupEntry, Job, ShardState};
use crate::ops::{
    answer_bytes, Batch, BatchResult, ContentRef, JobMeta, JobState, JobStatus, Nack, NewJob, Op,
    OpError, OpResult, QueueDefaults, TokenOutcome, When,
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
        match op {
            Op::Enqueue { queue, jobs } => {
                // Once per op, not per job: the queue's shared name and window.
                let queue = self.queue_name(queue);
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
                        self.enqueue(id, &queue, dedup_window_ms, job, sink)
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
                let woke = !paused && !q.ready.is_empty();
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
                Ok(ids) => {
                    for &id in &ids {
                        self.requeue_dead(id, sink);
                    }
                    OpResult::Count(ids.len() as u64)
                }
                Err(e) => OpResult::Failed(e),
            },
            Op::PurgeDead { queue, ids } => match self.dead_selection(queue, ids) {
                Ok(ids) => {
                    for &id in &ids {
                        if let Some(q) = self.queues.get_mut(queue.as_str()) {
                            q.dead.remove(&id);
                        }
                        self.remove_job(id, sink);
                    }
                    OpResult::Count(ids.len() as u64)
                }
                Err(e) => OpResult::Failed(e),
            },
            Op::Tick => OpResult::Ticked,
            Op::Release { tokens } => {
                settle_each(tokens, |id, attempt| self.release(id, attempt, sink))
            }
        }
    }

    fn fire_timers(&mut self, defaults: &QueueDefaults, sink: &mut impl WriteSink) {
        let now = self.now_ms;
        while let Some(&(due, id)) = self.scheduled.first() {
            if due > now {
                break;
            }
            self.scheduled.pop_first();
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.status.state = JobState::Ready;
            let queue = job.meta.queue.clone();
            let key = job.ready_key(id);
            sink.put(&keys::job_key(keys::STATUS, id), &job.status);
            let q = self.queue_mut(&queue);
            q.scheduled -= 1;
            q.ready.insert(key);
            self.wake(&queue);
        }
        while let Some(&(due, id)) = self.leases.first() {
            if due > now {
                break;
            }
            self.leases.pop_first();
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let queue = job.meta.queue.clone();
            let attempt = job.status.attempts_used();
            let out_of_attempts = attempt >= job.max_attempts(&self.queue_view(&queue, defaults));
            let q = self.queue_mut(&queue);
            q.leased -= 1;
            q.totals.expired += 1;
            let error = format!("lease expired (attempt {attempt})");
            if out_of_attempts {
                self.make_dead(id, Some(error), sink);
            } else {
                self.make_ready(id, due, Some(error), sink);
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
        queue: &Arc<str>,
        dedup_window_ms: u64,
        job: &NewJob,
        sink: &mut impl WriteSink,
    ) -> (JobId, bool) {
        let queue = queue.clone();
        if let Some(key) = &job.idempotency_key {
            if let Some(existing) = self.dedup.get(&(queue.clone(), key.clone())) {
                return (existing.id, true);
            }
            let entry = DedupEntry {
                id,
                expires_at_ms: self.now_ms.saturating_add(dedup_window_ms),
            };
            sink.put(&keys::dedup_key(self.shard, &queue, key), &entry);
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
        let meta = Arc::new(JobMeta {
            queue: queue.clone(),
            priority: job.priority,
            max_attempts: job.max_attempts,
            backoff: job.backoff,
            enqueued_at_ms: now,
            idempotency_key: job.idempotency_key.clone(),
            answer_bytes: answer_bytes(
                &queue,
                &job.payload,
                &job.headers,
                job.idempotency_key.as_deref(),
            ),
        });
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
        sink.put(&keys::job_key(keys::JOB, id), &(&*meta, &status, content));
        let job = Job { meta, status };
        let q = self.queue_mut(&queue);
        q.totals.enqueued += 1;
        match state {
            JobState::Ready => {
                q.ready.insert(job.ready_key(id));
                self.wake(&queue);
            }
            _ => {
                q.scheduled += 1;
                self.scheduled.insert((run_at, id));
            }
        }
        self.jobs.insert(id, job);
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
    ) -> Vec<super::JobView> {
        let Some(q) = self.queues.get_mut(queue) else {
            return Vec::new();
        };
        if q.meta.paused {
            return Vec::new();
        }
        let limits = super::queue_view(queue, &q.meta, defaults);
        let lease = lease_ms.unwrap_or(limits.lease_ms);
        let expires = self.now_ms.saturating_add(lease);
        let mut claimed = Vec::with_capacity(max.min(q.ready.len() as u32) as usize);
        let mut bytes = 0u64;
        while claimed.len() < max as usize {
            let Some(&(_, _, id)) = q.ready.first() else {
                break;
            };
            let Some(job) = self.jobs.get_mut(&id) else {
                q.ready.pop_first();
                continue;
            };
            // Lease only what one answer can carry: a job that would take
            // the answer over the budget stays ready for the next claim
            // (the first job always fits: one job is at most ~2 MiB).
            let size = job.meta.answer_bytes;
            if !claimed.is_empty() && bytes + size > super::MAX_CLAIM_BYTES as u64 {
                break;
            }
            bytes += size;
            q.ready.pop_first();
            job.status.state = JobState::Leased;
            job.status.attempt += 1;
            job.status.due_at_ms = expires;
            job.status.worker = Some(worker.to_string());
            sink.put(&keys::job_key(keys::STATUS, id), &job.status);
            self.leases.insert((expires, id));
            q.leased += 1;
            claimed.push(job.view(id, &limits));
        }
        claimed
    }

    /// The job `id` if it is leased at `attempt`; otherwise why the token is stale.
    fn leased_job(&self, id: JobId, attempt: u32) -> Result<&Job, OpError> {
        let job = self.jobs.get(&id).ok_or(OpError::JobNotFound { id })?;
        if job.status.state != JobState::Leased || job.status.attempt != attempt {
            return Err(OpError::LeaseLost {
                id,
                attempt,
                state: job.status.state,
                current_attempt: job.status.attempt,
            });
        }
        Ok(job)
    }

    fn ack(&mut self, id: JobId, attempt: u32, sink: &mut impl WriteSink) -> Result<(), OpError> {
        let job = self.leased_job(id, attempt)?;
        let (due, queue) = (job.status.due_at_ms, job.meta.queue.clone());
        self.leases.remove(&(due, id));
        let q = self.queue_mut(&queue);
        q.leased -= 1;
        q.totals.acked += 1;
        self.remove_job(id, sink);
        Ok(())
    }

    fn nack(
        &mut self,
        nack: &Nack,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> Result<(), OpError> {
        let job = self.leased_job(nack.id, nack.attempt)?;
        let (due, queue) = (job.status.due_at_ms, job.meta.queue.clone());
        let limits = self.queue_view(&queue, defaults);
        let out_of_attempts = job.status.attempts_used() >= job.max_attempts(&limits);
        let delay = nack
            .retry_delay_ms
            .unwrap_or_else(|| job.backoff(&limits).delay_ms(job.status.attempts_used()));
        self.leases.remove(&(due, nack.id));
        let q = self.queue_mut(&queue);
        q.leased -= 1;
        q.totals.nacked += 1;
        let error = Some(nack.error.clone()).filter(|e| !e.is_empty());
        if nack.dead || out_of_attempts {
            self.make_dead(nack.id, error, sink);
        } else if delay == 0 {
            self.make_ready(nack.id, self.now_ms, error, sink);
        } else {
            let run_at = self.now_ms.saturating_add(delay);
            if let Some(job) = self.jobs.get_mut(&nack.id) {
                job.status.state = JobState::Scheduled;
                job.status.due_at_ms = run_at;
                job.status.last_error = error;
                job.status.worker = None;
                sink.put(&keys::job_key(keys::STATUS, nack.id), &job.status);
            }
            self.queue_mut(&queue).scheduled += 1;
            self.scheduled.insert((run_at, nack.id));
        }
        Ok(())
    }

    fn release(
        &mut self,
        id: JobId,
        attempt: u32,
        sink: &mut impl WriteSink,
    ) -> Result<(), OpError> {
        let job = self.leased_job(id, attempt)?;
        let (due, queue) = (job.status.due_at_ms, job.meta.queue.clone());
        let enqueued_at = job.meta.enqueued_at_ms;
        self.leases.remove(&(due, id));
        self.queue_mut(&queue).leased -= 1;
        if let Some(job) = self.jobs.get_mut(&id) {
            // Not started, so not an attempt used.
            job.status.retry_base = job.status.retry_base.saturating_add(1).min(attempt);
        }
        self.make_ready(id, enqueued_at, None, sink);
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
        let job = self.leased_job(id, attempt)?;
        let old_due = job.status.due_at_ms;
        let queue = job.meta.queue.clone();
        let lease = lease_ms.unwrap_or_else(|| {
            self.queues
                .get(&queue)
                .and_then(|q| q.meta.config.lease_ms)
                .unwrap_or(defaults.lease_ms)
        });
        let expires = self.now_ms.saturating_add(lease);
        self.leases.remove(&(old_due, id));
        self.leases.insert((expires, id));
        if let Some(job) = self.jobs.get_mut(&id) {
            job.status.due_at_ms = expires;
            sink.put(&keys::job_key(keys::STATUS, id), &job.status);
        }
        Ok(expires)
    }

    fn cancel(
        &mut self,
        id: JobId,
        defaults: &QueueDefaults,
        sink: &mut impl WriteSink,
    ) -> Result<super::JobView, OpError> {
        let view = self.job(id, defaults).ok_or(OpError::JobNotFound { id })?;
        let status = &view.status;
        let queue = view.meta.queue.clone();
        match status.state {
            JobState::Leased => {
                return Err(OpError::Leased {
                    id,
                    worker: status.worker.clone().unwrap_or_default(),
                    attempt: status.attempt,
                })
            }
            JobState::Ready => {
                let key = (std::cmp::Reverse(view.meta.priority), status.due_at_ms, id);
                self.queue_mut(&queue).ready.remove(&key);
            }
            JobState::Scheduled => {
                self.scheduled.remove(&(status.due_at_ms, id));
                self.queue_mut(&queue).scheduled -= 1;
            }
            JobState::Dead => {
                self.queue_mut(&queue).dead.remove(&id);
            }
        }
        self.remove_job(id, sink);
        Ok(view)
    }

    fn purge_queue(&mut self, queue: &str, sink: &mut impl WriteSink) -> u64 {
        let Some(q) = self.queues.get_mut(queue) else {
            return 0;
        };
        let mut victims: Vec<JobId> = std::mem::take(&mut q.ready)
            .into_iter()
            .map(|(_, _, id)| id)
            .collect();
        q.scheduled = 0;
        let scheduled: Vec<(u64, JobId)> = self
            .scheduled
            .iter()
            .filter(|(_, id)| self.jobs.get(id).is_some_and(|j| &*j.meta.queue == queue))
            .copied()
            .collect();
        for entry in scheduled {
            self.scheduled.remove(&entry);
            victims.push(entry.1);
        }
        for &id in &victims {
            self.remove_job(id, sink);
        }
        victims.len() as u64
    }

    /// The dead jobs an op targets: all of the queue's, or the listed ones,
    /// which must all be dead jobs of that queue.
    fn dead_selection(&self, queue: &str, ids: &[JobId]) -> Result<Vec<JobId>, OpError> {
        let dead = self.queues.get(queue).map(|q| &q.dead);
        if ids.is_empty() {
            return Ok(dead
                .map(|d| d.iter().copied().collect())
                .unwrap_or_default());
        }
        for id in ids {
            if !dead.is_some_and(|d| d.contains(id)) {
                return Err(OpError::NotDead {
                    id: *id,
                    queue: queue.to_string(),
                });
            }
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn requeue_dead(&mut self, id: JobId, sink: &mut impl WriteSink) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        // Retries count afresh; the attempt number itself keeps growing so
        // tokens of earlier deliveries stay stale.
        job.status.retry_base = job.status.attempt;
        let queue = job.meta.queue.clone();
        let error = job.status.last_error.clone();
        self.queue_mut(&queue).dead.remove(&id);
        self.make_ready(id, self.now_ms, error, sink);
    }

    fn make_ready(
        &mut self,
        id: JobId,
        since_ms: u64,
        error: Option<String>,
        sink: &mut impl WriteSink,
    ) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.status.state = JobState::Ready;
        job.status.due_at_ms = since_ms;
        job.status.worker = None;
        if error.is_some() {
            job.status.last_error = error;
        }
        sink.put(&keys::job_key(keys::STATUS, id), &job.status);
        let queue = job.meta.queue.clone();
        let key = job.ready_key(id);
        self.queue_mut(&queue).ready.insert(key);
        self.wake(&queue);
    }

    fn make_dead(&mut self, id: JobId, error: Option<String>, sink: &mut impl WriteSink) {
        let now = self.now_ms;
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.status.state = JobState::Dead;
        job.status.due_at_ms = now;
        job.status.worker = None;
        if error.is_some() {
            job.status.last_error = error;
        }
        sink.put(&keys::job_key(keys::STATUS, id), &job.status);
        let queue = job.meta.queue.clone();
        self.queue_mut(&queue).dead.insert(id);
        self.finished.push(id);
    }

    /// Forgets a job that left every index.
    fn remove_job(&mut self, id: JobId, sink: &mut impl WriteSink) {
        if self.jobs.remove(&id).is_some() {
            sink.delete(&keys::job_key(keys::JOB, id));
            sink.delete(&keys::job_key(keys::STATUS, id));
            self.finished.push(id);
        }
    }

    fn wake(&mut self, queue: &str) {
        if !self.woken.iter().any(|q| &**q == queue) {
            let name = self.queue_name(queue);
            self.woken.push(name);
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
