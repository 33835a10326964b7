//! The shard's write pipeline. Request handlers submit groups of ops; the
//! batcher packs groups into one Raft entry, proposes it, and hands each
//! group its results once the entry is applied.
//!
//! Flushing: when nothing is in flight a batch goes out at once (no timer
//! at low load). While batches are in flight it lingers up to `linger_min`
//! to let the batch grow, and keeps growing it up to `linger_max` while it
//! waits for an in-flight slot. A group is never split, so the acks and the
//! claim of one worker frame share one Raft round-trip.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::ops::{Batch, Op, OpResult, QueueDefaults};
use crate::raft_types::{NodeId, Raft, ServerMetrics};
use crate::shard::ShardShared;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most ops in one Raft entry.
    pub max_batch_ops: usize,
    /// Most payload bytes in one Raft entry.
    pub max_batch_bytes: usize,
    /// How long a batch waits for company while others are in flight.
    pub linger_min_micros: u64,
    /// The longest a batch waits, in all.
    pub linger_max_micros: u64,
    /// Batches proposed but not yet applied, at most.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch_ops: 4096,
            max_batch_bytes: 8 << 20,
            linger_min_micros: 200,
            linger_max_micros: 2000,
            max_in_flight: 4,
        }
    }
}

impl BatchConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_ops == 0 || self.max_batch_bytes == 0 || self.max_in_flight == 0 {
            return Err(
                "batching: max_batch_ops, max_batch_bytes and max_in_flight must be > 0".into(),
            );
        }
        if self.linger_min_micros > self.linger_max_micros {
            return Err(format!(
                "batching: linger_min_micros ({}) must not exceed linger_max_micros ({})",
                self.linger_min_micros, self.linger_max_micros
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("this node is not the leader of the shard")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("raft: {0}")]
    Raft(String),
    #[error("the node is shutting down")]
    Closed,
    /// Leadership changed while the batch was in flight: it may or may not
    /// have been applied.
    #[error("leadership changed while the request was in flight")]
    Interrupted,
}

type Reply = oneshot::Sender<Result<Vec<OpResult>, SubmitError>>;

struct Group {
    ops: Vec<Op>,
    bytes: usize,
    reply: Reply,
}

/// Counters of what the batcher proposed, for `/metrics`.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
    /// From proposing a batch to its entry applied here: replication to a
    /// quorum, fsync and apply, as the batch's callers wait for it.
    pub write_seconds: crate::latency::Histogram,
    /// From proposing a batch to its committed entry reaching the state
    /// machine: replication to a quorum with fsync, and any wait behind
    /// the entries applied before it.
    pub commit_seconds: crate::latency::Histogram,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Group>,
    pub stats: Arc<BatchStats>,
    /// Set while this node hands the shard's leadership away: no new
    /// entries, so the followers' leader lease runs out and they elect.
    stepping_down: Arc<AtomicBool>,
}

impl Batcher {
    /// Starts the batcher of a shard; its batches are stamped by the
    /// shard's clock.
    pub fn spawn(
        raft: Raft,
        config: BatchConfig,
        defaults: QueueDefaults,
        shard: Arc<ShardShared>,
    ) -> Batcher {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let stats = Arc::new(BatchStats::default());
        tokio::spawn(run(rx, raft, config, defaults, stats.clone(), shard));
        Batcher {
            tx,
            stats,
            stepping_down: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn set_stepping_down(&self, on: bool) {
        self.stepping_down.store(on, Ordering::SeqCst);
    }

    /// Proposes `ops` (in one entry, never split) and waits for their results.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, SubmitError> {
        if self.stepping_down.load(Ordering::SeqCst) {
            return Err(SubmitError::NotLeader { leader: None });
        }
        let (reply, rx) = oneshot::channel();
        let bytes = ops.iter().map(Op::size_hint).sum();
        self.tx
            .send(Group { ops, bytes, reply })
            .await
            .map_err(|_| SubmitError::Closed)?;
        rx.await.map_err(|_| SubmitError::Closed)?
    }
}

struct Pending {
    groups: Vec<Group>,
    ops: usize,
    bytes: usize,
}

impl Pending {
    fn fits(&self, g: &Group, config: &BatchConfig) -> bool {
        self.groups.is_empty()
            || (self.ops + g.ops.len() <= config.max_batch_ops
                && self.bytes + g.bytes <= config.max_batch_bytes)
    }

    fn full(&self, config: &BatchConfig) -> bool {
        self.ops >= config.max_batch_ops || self.bytes >= config.max_batch_bytes
    }

    fn push(&mut self, g: Group) {
        self.ops += g.ops.len();
        self.bytes += g.bytes;
        self.groups.push(g);
    }
}

async fn run(
    mut rx: mpsc::Receiver<Group>,
    raft: Raft,
    config: BatchConfig,
    defaults: QueueDefaults,
    stats: Arc<BatchStats>,
    shard: Arc<ShardShared>,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let linger_min = Duration::from_micros(config.linger_min_micros);
    let linger_max = Duration::from_micros(config.linger_max_micros);
    let mut carry: Option<Group> = None;
    loop {
        let first = match carry.take() {
            Some(g) => g,
            None => match rx.recv().await {
                Some(g) => g,
                None => return,
            },
        };
        let started = Instant::now();
        let mut pending = Pending {
            groups: Vec::new(),
            ops: 0,
            bytes: 0,
        };
        pending.push(first);
        // Take whatever is already queued.
        while carry.is_none() && !pending.full(&config) {
            match rx.try_recv() {
                Ok(g) if pending.fits(&g, &config) => pending.push(g),
                Ok(g) => carry = Some(g),
                Err(_) => break,
            }
        }
        let busy = slots.available_permits() < config.max_in_flight;
        // Linger while others are in flight, so batches grow under load.
        if busy {
            let until = started + linger_min;
            while carry.is_none() && !pending.full(&config) {
                tokio::select! {
                    g = rx.recv() => match g {
                        Some(g) if pending.fits(&g, &config) => pending.push(g),
                        Some(g) => carry = Some(g),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
        // Wait for a slot, still growing the batch until linger_max.
        let give_up = started + linger_max;
        let permit = loop {
            let can_grow = carry.is_none() && !pending.full(&config) && Instant::now() < give_up;
            tokio::select! {
                permit = slots.clone().acquire_owned() => break permit,
                g = rx.recv(), if can_grow => match g {
                    Some(g) if pending.fits(&g, &config) => pending.push(g),
                    Some(g) => carry = Some(g),
                    None => {}
                },
                _ = tokio::time::sleep_until(give_up), if can_grow => {}
            }
        };
        let Ok(permit) = permit else { return };
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.ops.fetch_add(pending.ops as u64, Ordering::Relaxed);
        stats
            .bytes
            .fetch_add(pending.bytes as u64, Ordering::Relaxed);
        let term = raft.server_metrics().borrow().vote.leader_id().term;
        let now = shard.clock.stamp(term);
        let (raft, stats, shard) = (raft.clone(), stats.clone(), shard.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            if let Some(index) = propose(raft, pending.groups, now, defaults).await {
                stats.write_seconds.observe(started.elapsed());
                if let Some(at) = shard.apply_started(index) {
                    stats
                        .commit_seconds
                        .observe(at.saturating_duration_since(started));
                }
            }
            drop(permit);
        });
    }
}

/// Resolves once the node's term is past `term`.
async fn term_ends(mut metrics: tokio::sync::watch::Receiver<ServerMetrics>, term: u64) {
    loop {
        if metrics.borrow_and_update().vote.leader_id().term > term {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Proposes one batch and answers its callers; the log index of its
/// entry once applied.
async fn propose(
    raft: Raft,
    groups: Vec<Group>,
    time_ms: u64,
    defaults: QueueDefaults,
) -> Option<u64> {
    let mut ops = Vec::with_capacity(groups.iter().map(|g| g.ops.len()).sum());
    let mut replies = Vec::with_capacity(groups.len());
    for g in groups {
        replies.push((g.ops.len(), g.reply));
        ops.extend(g.ops);
    }
    let batch = Batch {
        time_ms,
        defaults,
        ops: ops.into(),
    };
    // openraft answers a proposal when its entry is applied or truncated
    // away; one that a deposed leader's log loses to an installed snapshot
    // is never answered. Give up on it once the term moves on, so its
    // in-flight slot is not held forever (the outcome is then unknown).
    // (The server metrics change only with the vote or the leader, not on
    // every append like the full metrics.)
    let term = raft.server_metrics().borrow().vote.leader_id().term;
    let outcome = tokio::select! {
        written = raft.client_write(batch) => written,
        () = term_ends(raft.server_metrics(), term) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(SubmitError::Interrupted));
            }
            return None;
        }
    };
    match outcome {
        Ok(response) => {
            let mut results = response.data.0.into_iter();
            for (n, reply) in replies {
                let _ = reply.send(Ok(results.by_ref().take(n).collect()));
            }
            Some(response.log_id.index)
        }
        Err(e) => {
            let error = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    SubmitError::NotLeader {
                        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                    }
                }
                other => SubmitError::Raft(other.to_string()),
            };
            for (_, reply) in replies {
                let _ = reply.send(Err(error.clone()));
            }
            None
        }
    }
}
