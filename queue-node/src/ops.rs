//! The replicated commands. Every mutation of a shard is an [`Op`]; the
//! batcher packs many ops into one [`Batch`], which is one Raft entry. The
//! leader stamps the batch with its clock and the queue defaults in force, so
//! applying a batch depends only on the batch and the state: every replica
//! computes the same result.

use std::sync::Arc;

use bytes::Bytes;
use raftq_api::JobId;
use serde::{Deserialize, Serialize};

/// Retry delay policy: `initial * multiplier^(retry-1)`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BackoffPolicy {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

impl BackoffPolicy {
    /// Delay before retry number `retry` (1-based). Integer-stepped so every
    /// replica gets the same number.
    pub fn delay_ms(&self, retry: u32) -> u64 {
        let mut delay = self.initial_ms as f64;
        for _ in 1..retry {
            delay *= self.multiplier;
            if delay >= self.max_ms as f64 {
                return self.max_ms;
            }
        }
        (delay as u64).min(self.max_ms)
    }
}

/// Queue settings used where a queue has no value of its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueueDefaults {
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub backoff: BackoffPolicy,
    pub dedup_window_ms: u64,
}

impl Default for QueueDefaults {
    fn default() -> Self {
        QueueDefaults {
            lease_ms: 30_000,
            max_attempts: 10,
            backoff: BackoffPolicy {
                initial_ms: 1_000,
                max_ms: 300_000,
                multiplier: 2.0,
            },
            dedup_window_ms: 3_600_000,
        }
    }
}

/// A job as the enqueue op carries it (already validated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
    pub priority: i32,
    pub when: When,
    /// 0 = queue default.
    pub max_attempts: u32,
    pub backoff: Option<BackoffPolicy>,
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// A job of `payload` with every option at its default: no headers,
    /// priority 0, ready now (tests and benches build most jobs this way).
    pub fn ready(payload: Bytes) -> NewJob {
        NewJob {
            payload,
            headers: Vec::new(),
            priority: 0,
            when: When::Now,
            max_attempts: 0,
            backoff: None,
            idempotency_key: None,
        }
    }
}

/// About how many bytes a job takes in a fetch answer: its payload,
/// headers, queue name and idempotency key plus a fixed allowance for the
/// other fields. Claims are bounded by it, so every replica must compute
/// the same number for the same job, in every version that shares a log.
pub fn answer_bytes(
    queue: &str,
    payload: &[u8],
    headers: &[(String, String)],
    idempotency_key: Option<&str>,
) -> u64 {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    (payload.len() + headers + queue.len() + idempotency_key.map_or(0, str::len) + 128) as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum When {
    Now,
    /// Relative to the batch time, so the delay is measured on the leader's clock.
    Delay(u64),
    At(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nack {
    pub id: JobId,
    pub attempt: u32,
    pub retry_delay_ms: Option<u64>,
    pub error: String,
    pub dead: bool,
}

/// Per-queue settings a user changed; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueConfigPatch {
    pub lease_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<BackoffPolicy>,
    pub dedup_window_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    Enqueue {
        queue: String,
        jobs: Vec<NewJob>,
    },
    /// Lease up to `max` ready jobs of `queue` to `worker`.
    Claim {
        queue: String,
        worker: String,
        max: u32,
        lease_ms: Option<u64>,
    },
    Ack {
        tokens: Vec<(JobId, u32)>,
    },
    Nack {
        items: Vec<Nack>,
    },
    Extend {
        tokens: Vec<(JobId, u32)>,
        lease_ms: Option<u64>,
    },
    SetPaused {
        queue: String,
        paused: bool,
    },
    PurgeQueue {
        queue: String,
    },
    SetQueueConfig {
        queue: String,
        patch: QueueConfigPatch,
    },
    Cancel {
        id: JobId,
    },
    /// Dead jobs back to ready; empty `ids` = all of the queue's.
    RequeueDead {
        queue: String,
        ids: Vec<JobId>,
    },
    PurgeDead {
        queue: String,
        ids: Vec<JobId>,
    },
    /// Carries only the batch time: lets due timers fire on an idle shard.
    Tick,
    /// Leased jobs a worker never started (its stream closed cleanly) go
    /// back to the ready queue at once, at their old place. The delivery
    /// still counts for the lease tokens (they are stale after this) but
    /// not against `max_attempts`.
    Release {
        tokens: Vec<(JobId, u32)>,
    },
    /// The nodes the cluster's replicas are to be placed on (replaces the
    /// declared set). Proposed on the metadata shard only; entries that
    /// carry it travel in entry format 2.
    SetNodes {
        nodes: Vec<NodeRecord>,
    },
    /// The shard count grows to `shard_count`: from this entry on the
    /// shard takes a queue it holds nothing of only when the queue hashes
    /// to it among that many shards, and keeps every queue it holds now
    /// (answered with the names of those the new hash sends elsewhere:
    /// the routing pins them here). Entries that carry it travel in entry
    /// format 3.
    Fence {
        shard_count: u32,
    },
    /// The queue routing (metadata shard only; entry format 3).
    SetRouting {
        routing: crate::routing::Routing,
    },
}

/// A node as its owner declared it, for placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    /// Its peer address.
    pub addr: String,
    /// Its failure domain, if any.
    pub zone: Option<String>,
    /// Being emptied: it takes no replicas, and those it has are moved.
    pub draining: bool,
}

impl Op {
    /// The queue the op names, if it names one.
    pub fn queue(&self) -> Option<&str> {
        match self {
            Op::Enqueue { queue, .. }
            | Op::Claim { queue, .. }
            | Op::SetPaused { queue, .. }
            | Op::PurgeQueue { queue }
            | Op::SetQueueConfig { queue, .. }
            | Op::RequeueDead { queue, .. }
            | Op::PurgeDead { queue, .. } => Some(queue),
            Op::Ack { .. }
            | Op::Nack { .. }
            | Op::Extend { .. }
            | Op::Cancel { .. }
            | Op::Tick
            | Op::Release { .. }
            | Op::SetNodes { .. }
            | Op::Fence { .. }
            | Op::SetRouting { .. } => None,
        }
    }

    /// Rough encoded size, for the batcher's byte limit.
    pub fn size_hint(&self) -> usize {
        match self {
            Op::Enqueue { queue, jobs } => {
                queue.len()
                    + jobs
                        .iter()
                        .map(|j| {
                            32 + j.payload.len()
                                + j.headers
                                    .iter()
                                    .map(|(k, v)| k.len() + v.len())
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            }
            Op::Ack { tokens } | Op::Extend { tokens, .. } | Op::Release { tokens } => {
                16 + tokens.len() * 20
            }
            Op::Nack { items } => items.iter().map(|n| 32 + n.error.len()).sum(),
            Op::SetRouting { routing } => {
                64 + routing.pins.keys().map(|q| q.len() + 8).sum::<usize>()
            }
            _ => 64,
        }
    }
}

/// One Raft entry's worth of ops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The leader's clock (unix ms) when it proposed the batch.
    pub time_ms: u64,
    pub defaults: QueueDefaults,
    /// Shared, so a batch is cloned in O(1) (the log's entry cache hands
    /// out clones to apply and to replication).
    pub ops: Arc<[Op]>,
}

impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch(t={}, ops={})", self.time_ms, self.ops.len())
    }
}

/// Why one op (or one token of it) was refused, as data; the words a
/// person reads are rendered once, at the API edge, from `Display`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    #[error("job {id} not found: it was already acked, cancelled or purged (or the id is wrong)")]
    JobNotFound { id: JobId },
    #[error(
        "lease lost: job {id} attempt {attempt} is no longer leased (its lease expired or was released; the job is now {}); do not report a result for it",
        describe_now(*.state, *.current_attempt)
    )]
    LeaseLost {
        id: JobId,
        attempt: u32,
        /// Where the job is now, and its current delivery number.
        state: JobState,
        current_attempt: u32,
    },
    #[error("job {id} is leased to worker {worker:?} (attempt {attempt}); cancel it after the worker finishes or the lease expires")]
    Leased {
        id: JobId,
        worker: String,
        attempt: u32,
    },
    #[error("job {id} is not a dead job of queue {queue:?}; nothing was changed")]
    NotDead { id: JobId, queue: String },
    #[error("queue {queue:?} is on shard {shard} since the shard count grew to {shard_count}, not on shard {here}; retry (the node learns the new routing)")]
    WrongShard {
        queue: String,
        here: u32,
        shard: u32,
        shard_count: u32,
    },
    #[error("the queue routing is at version {held}; version {offered} does not follow it (another growth ran meanwhile)")]
    RoutingChanged { held: u64, offered: u64 },
}

fn describe_now(state: JobState, attempt: u32) -> String {
    match state {
        JobState::Leased => format!("leased again as attempt {attempt}"),
        JobState::Ready => "back in the ready queue".into(),
        JobState::Scheduled => "waiting for a retry".into(),
        JobState::Dead => "dead-lettered".into(),
    }
}

/// The outcome of one token of an ack / nack / extend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenOutcome {
    pub id: JobId,
    pub attempt: u32,
    pub result: Result<Option<u64>, OpError>,
}

/// A job as the state machine shows it to readers and lease holders:
/// everything but its payload and headers, which are not in memory; the
/// serving side reads them ([`JobContent`]) before answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub queue: Arc<str>,
    pub priority: i32,
    pub enqueued_at_ms: u64,
    pub idempotency_key: Option<String>,
    pub status: JobStatus,
    /// The job's own limit, or else its queue's.
    pub max_attempts: u32,
}

/// What scheduling needs of a job, written once at enqueue at the head of
/// its record, `(JobMeta, JobStatus, JobContent)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    pub queue: Arc<str>,
    pub priority: i32,
    /// 0 = the queue's current default.
    pub max_attempts: u32,
    /// `None` = the queue's current default.
    pub backoff: Option<BackoffPolicy>,
    pub enqueued_at_ms: u64,
    pub idempotency_key: Option<String>,
    /// [`answer_bytes`] of the job, which bounds a claim.
    pub answer_bytes: u64,
}

/// What a job carries for its worker, written once at enqueue under its
/// own key and read only when the job is served: never held in the state
/// machine's memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobContent {
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
}

/// [`JobContent`] as apply writes it, borrowed from the enqueue op (the
/// same encoding, without copying the payload).
#[derive(Serialize)]
pub struct ContentRef<'a> {
    pub payload: &'a Bytes,
    pub headers: &'a [(String, String)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Scheduled,
    Ready,
    Leased,
    Dead,
}

/// The mutable part of a job, rewritten on every state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub state: JobState,
    /// Deliveries so far. Never goes down, so it fences lease tokens.
    pub attempt: u32,
    /// `attempt` when the job was last requeued from the dead-letter set;
    /// retries are counted from here.
    pub retry_base: u32,
    /// Scheduled: run time. Ready: when it became ready (orders FIFO).
    /// Leased: lease expiry. Dead: when it died.
    pub due_at_ms: u64,
    pub last_error: Option<String>,
    pub worker: Option<String>,
}

impl JobStatus {
    /// Attempts counted against `max_attempts`.
    pub fn attempts_used(&self) -> u32 {
        self.attempt.saturating_sub(self.retry_base)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    pub lease_ms: u64,
    pub max_attempts: u32,
    pub backoff: BackoffPolicy,
    pub dedup_window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OpResult {
    Enqueued(Vec<(JobId, bool)>),
    Claimed(Vec<JobView>),
    Tokens(Vec<TokenOutcome>),
    Queue(QueueView),
    Count(u64),
    Job(JobView),
    Ticked,
    Failed(OpError),
    /// The declared nodes were replaced.
    NodesSet,
    /// The shard is fenced: the queues it keeps that the new hash sends
    /// elsewhere.
    Pinned(Vec<String>),
    /// The queue routing was replaced.
    RoutingSet,
}

/// The state machine's answer to one batch: one result per op, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResult(pub Vec<OpResult>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = BackoffPolicy {
            initial_ms: 100,
            max_ms: 1000,
            multiplier: 2.0,
        };
        let delays: Vec<u64> = (1..=6).map(|r| b.delay_ms(r)).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        let fixed = BackoffPolicy {
            multiplier: 1.0,
            ..b
        };
        assert_eq!(fixed.delay_ms(50), 100);
    }
}
