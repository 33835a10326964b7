//! Which shard a queue lives on.
//!
//! A queue's shard is its name's hash among the cluster's shards, unless
//! the queue is pinned: when the shard count grows, every queue that
//! already holds something stays on the shard it was on (its jobs, leases,
//! dead letters and idempotency keys are never moved between Raft groups),
//! and only queues with nothing stored follow the new hash. The table of
//! pins and the count are one record, [`Routing`], in the metadata shard's
//! Raft log; `version` grows with every change.
//!
//! Each shard enforces the same rule from its own log (see
//! [`crate::fsm::ShardFence`]), so a node routing by an older table can
//! never create a queue on the wrong shard: the shard refuses, the node
//! learns the newer table and the retry goes to the right one.
//!
//! Owns the rule and the node's copy of the table; proposes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use raftq_api::v1 as pb;
use serde::{Deserialize, Serialize};

/// The most shards a cluster can have.
pub const MAX_SHARDS: u32 = 64;

/// The shard count, and the queues that stay where they were when it grew.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Grows by one with every change; 0: never changed since the cluster
    /// was created (its count is the configured one, nothing is pinned).
    pub version: u64,
    pub shard_count: u32,
    /// Queue → shard, for queues whose hash among `shard_count` shards is
    /// not where they live.
    pub pins: BTreeMap<String, u32>,
}

impl Routing {
    /// The routing of a cluster created with `shard_count` shards.
    pub fn initial(shard_count: u32) -> Routing {
        Routing {
            version: 0,
            shard_count,
            pins: BTreeMap::new(),
        }
    }

    /// The shard `queue` lives on.
    pub fn shard_of(&self, queue: &str) -> u32 {
        if !self.pins.is_empty() {
            if let Some(&shard) = self.pins.get(queue) {
                return shard;
            }
        }
        raftq_api::shard_of(queue, self.shard_count)
    }

    /// Whether `queue` lives somewhere other than where its hash says: a
    /// client that routes by hash alone sends it to the wrong shard.
    pub fn is_pinned_away(&self, queue: &str) -> bool {
        self.pins
            .get(queue)
            .is_some_and(|&shard| shard != raftq_api::shard_of(queue, self.shard_count))
    }

    /// The routing after growing to `shard_count` shards with `pins` (each
    /// queue every old shard holds that now hashes elsewhere) added.
    pub fn grown(
        &self,
        shard_count: u32,
        pins: impl IntoIterator<Item = (String, u32)>,
    ) -> Routing {
        let mut grown = Routing {
            version: self.version + 1,
            shard_count,
            pins: self.pins.clone(),
        };
        grown.pins.extend(pins);
        // A pin that the new hash agrees with says nothing.
        grown
            .pins
            .retain(|queue, shard| raftq_api::shard_of(queue, shard_count) != *shard);
        grown
    }
}

/// This node's copy of the newest [`Routing`] it has seen.
pub struct RoutingCell {
    current: RwLock<Arc<Routing>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl RoutingCell {
    pub fn new(routing: Routing) -> RoutingCell {
        let version = routing.version;
        RoutingCell {
            current: RwLock::new(Arc::new(routing)),
            changed: tokio::sync::watch::Sender::new(version),
        }
    }

    pub fn get(&self) -> Arc<Routing> {
        self.read().clone()
    }

    /// The shard `queue` lives on (read in place: on every request).
    pub fn shard_of(&self, queue: &str) -> u32 {
        self.read().shard_of(queue)
    }

    /// The shard `queue` lives on, and whether a client routing by the
    /// hash alone would miss it (see [`Routing::is_pinned_away`]).
    pub fn place(&self, queue: &str) -> (u32, bool) {
        let routing = self.read();
        (routing.shard_of(queue), routing.is_pinned_away(queue))
    }

    pub fn shard_count(&self) -> u32 {
        self.read().shard_count
    }

    pub fn version(&self) -> u64 {
        self.read().version
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Arc<Routing>> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `routing` if it is newer than the one held; says whether it
    /// was.
    pub fn offer(&self, routing: Routing) -> bool {
        {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            if routing.version <= current.version {
                return false;
            }
            tracing::info!(
                version = routing.version,
                shards = routing.shard_count,
                pinned = routing.pins.len(),
                "queue routing changed"
            );
            *current = Arc::new(routing);
        }
        self.changed.send_replace(self.get().version);
        true
    }

    /// Resolves each time a newer routing is taken.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl From<&Routing> for pb::QueueRouting {
    fn from(routing: &Routing) -> pb::QueueRouting {
        pb::QueueRouting {
            version: routing.version,
            shard_count: routing.shard_count,
            pins: routing.pins.iter().map(|(q, s)| (q.clone(), *s)).collect(),
        }
    }
}

impl From<pb::QueueRouting> for Routing {
    fn from(routing: pb::QueueRouting) -> Routing {
        Routing {
            version: routing.version,
            shard_count: routing.shard_count,
            pins: routing.pins.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpinned_queues_follow_the_hash_and_pinned_ones_stay() {
        let before = Routing::initial(4);
        let queues: Vec<String> = (0..200).map(|i| format!("q{i}")).collect();
        // Every queue holds something: all stay where they were.
        let pins = queues.iter().map(|q| (q.clone(), before.shard_of(q)));
        let after = before.grown(8, pins);
        assert_eq!(after.version, 1);
        assert_eq!(after.shard_count, 8);
        for q in &queues {
            assert_eq!(after.shard_of(q), before.shard_of(q), "{q}");
        }
        // Only queues the new hash moves are recorded.
        assert!(after.pins.len() < queues.len());
        assert!(after
            .pins
            .iter()
            .all(|(q, &s)| raftq_api::shard_of(q, 8) != s));
        // A queue never used goes by the new hash, some to new shards.
        let fresh: Vec<u32> = (0..200)
            .map(|i| after.shard_of(&format!("new{i}")))
            .collect();
        assert!(fresh.iter().any(|&s| s >= 4));
        assert!(fresh.iter().all(|&s| s < 8));
    }

    #[test]
    fn the_cell_takes_only_newer_tables() {
        let cell = RoutingCell::new(Routing::initial(4));
        let newer = cell.get().grown(8, []);
        assert!(cell.offer(newer.clone()));
        assert!(!cell.offer(Routing::initial(4)));
        assert!(!cell.offer(newer));
        assert_eq!(cell.get().shard_count, 8);
    }
}
