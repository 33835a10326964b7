//! The node's memory budgets and the backpressure that keeps the job index
//! inside its own: an enqueue that would take the index past its budget is
//! refused (the caller sees `RESOURCE_EXHAUSTED` and what to do), while
//! fetches, acks and nacks — which shrink the backlog — carry on.
//!
//! The index is every live job's metadata and status (payloads are on disk
//! or in the content cache, which has a budget of its own). Its size is
//! estimated from the number of live jobs, which every shard publishes
//! after each apply.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::MemoryConfig;
use crate::context::ShardHandle;

use crate::store::{ContentCache, Store};

pub use crate::fsm::INDEX_BYTES_PER_JOB;

const MIB: u64 = 1 << 20;

/// The memory this process may use: its cgroup's limit (v2 or v1, found
/// through `/proc/self/cgroup`), else the machine's; `None` where neither
/// can be read.
pub fn memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            return None;
        };
        // "max" (v2) or a huge number (v1) is no limit.
        std::fs::read_to_string(file)
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n < 1 << 60)
    });
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => Some(c.min(m)),
        (Some(x), None) | (None, Some(x)) => Some(x),
        (None, None) => None,
    }
}

/// The node's memory budgets in bytes (0 index = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub index: u64,
    pub content_cache: u64,
    pub block_cache: u64,
    pub memtables: u64,
    /// Every shard's recent log entries together.
    pub log_cache: u64,
    /// Enqueue requests held at once.
    pub requests: u64,
}

impl Budgets {
    /// What `config` sets, and for what it leaves unset a share of
    /// `limit` (the memory the node may use): half for the index, an
    /// eighth for payloads (at most 256 MiB), a sixteenth each for the
    /// block cache (at most 64) and memtables (at most 128), a
    /// thirty-second for the Raft logs' recent entries (at most 16 per
    /// shard and 64 in all, at least 1 per shard), a sixteenth for
    /// enqueue requests held (at most 128, at least 16).
    pub fn resolve(config: &MemoryConfig, limit: Option<u64>, shards: u32) -> Budgets {
        let shards = u64::from(shards.max(1));
        let share = |set: Option<u64>, divisor: u64, cap_mib: u64, floor_mib: u64| match set {
            Some(mib) => mib.saturating_mul(MIB),
            None => match limit {
                Some(limit) => (limit / divisor).clamp(floor_mib * MIB, cap_mib * MIB),
                None => cap_mib * MIB,
            },
        };
        Budgets {
            index: match config.index_mib {
                Some(mib) => mib.saturating_mul(MIB),
                None => limit.map_or(0, |l| l / 2),
            },
            content_cache: share(config.content_cache_mib, 8, 256, 0),
            block_cache: share(config.block_cache_mib, 16, 64, 8),
            memtables: share(config.memtable_mib, 16, 128, 8),
            log_cache: share(config.log_cache_mib, 32, (16 * shards).min(64), shards),
            requests: share(config.requests_mib, 16, 128, 16),
        }
    }

    /// What each of `shards` may hold of applied state writes waiting for
    /// a checkpoint (they are on their way to the memtables): a quarter of
    /// the memtables' budget over all shards, from 256 KiB to 8 MiB each.
    pub fn pending_writes_per_shard(&self, shards: u32) -> usize {
        (self.memtables / 4 / u64::from(shards.max(1))).clamp(256 << 10, 8 * MIB) as usize
    }

    /// What each of `shards` may keep of its log's recent entries.
    pub fn log_cache_per_shard(&self, shards: u32) -> usize {
        (self.log_cache / u64::from(shards.max(1))).max(MIB) as usize
    }
}

pub struct MemoryBudget {
    /// 0 = no limit.
    pub index_bytes: u64,
    pub content_cache: Arc<ContentCache>,
    pub block_cache_bytes: u64,
    pub memtable_bytes: u64,
    pub log_cache_bytes: u64,
    pub requests: RequestBudget,
    /// Reports what RocksDB's block cache and memtables hold.
    pub store: Store,
}

/// Room for the enqueue requests a node holds at once, in KiB.
pub struct RequestBudget {
    permits: Arc<Semaphore>,
    kib: u32,
}

impl RequestBudget {
    pub fn new(bytes: u64) -> RequestBudget {
        let kib = (bytes >> 10).clamp(1, u64::from(u32::MAX)) as u32;
        RequestBudget {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    pub fn bytes(&self) -> u64 {
        u64::from(self.kib) << 10
    }

    /// What the requests held now take.
    pub fn used(&self) -> u64 {
        (self.kib as u64).saturating_sub(self.permits.available_permits() as u64) << 10
    }

    /// Holds room for a request of `bytes` until the permit is dropped, or
    /// says why there is none. A request over the whole budget takes all
    /// of it.
    pub fn hold(&self, bytes: usize) -> Result<OwnedSemaphorePermit, String> {
        let kib = (bytes as u64).div_ceil(1024).clamp(1, u64::from(self.kib)) as u32;
        self.permits
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                format!(
                    "this node holds {} MiB of enqueue requests, its whole budget for them \
                 (memory.requests_mib = {}): retry shortly (producers of the raftq SDK do), \
                 or give the node more memory",
                    self.used() >> 20,
                    self.bytes() >> 20
                )
            })
    }
}

impl MemoryBudget {
    /// Jobs live on this node now (every shard it holds).
    pub fn live_jobs(shards: &[Arc<ShardHandle>]) -> u64 {
        shards.iter().map(|s| s.shared.job_count()).sum()
    }

    /// The index's estimated size now.
    pub fn index_used(shards: &[Arc<ShardHandle>]) -> u64 {
        shards.iter().map(|s| s.shared.index_bytes()).sum()
    }

    /// Why `new_jobs` more jobs may not be enqueued now, if they may not.
    pub fn refuse_enqueue(&self, shards: &[Arc<ShardHandle>], new_jobs: usize) -> Option<String> {
        if self.index_bytes == 0 {
            return None;
        }
        let live = Self::live_jobs(shards);
        // New jobs counted as unpacked: the budget holds whatever they are.
        let after = Self::index_used(shards)
            .saturating_add((new_jobs as u64).saturating_mul(INDEX_BYTES_PER_JOB));
        (after > self.index_bytes).then(|| {
            format!(
                "this node holds {live} jobs, about {} MiB of its {} MiB job index budget \
                 (memory.index_mib): enqueues are refused until workers drain the backlog \
                 (fetch, ack and nack keep working); retry later, or give the node more memory",
                Self::index_used(shards) >> 20,
                self.index_bytes >> 20
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_budgets_follow_the_memory_limit_and_set_ones_win() {
        let unset = MemoryConfig::default();
        let gib = 1 << 30;
        assert_eq!(
            Budgets::resolve(&unset, Some(gib), 4),
            Budgets {
                index: 512 * MIB,
                content_cache: 128 * MIB,
                block_cache: 64 * MIB,
                memtables: 64 * MIB,
                log_cache: 32 * MIB,
                requests: 64 * MIB,
            }
        );
        assert_eq!(
            Budgets::resolve(&unset, Some(64 * gib), 4),
            Budgets {
                index: 32 * gib,
                content_cache: 256 * MIB,
                block_cache: 64 * MIB,
                memtables: 128 * MIB,
                log_cache: 64 * MIB,
                requests: 128 * MIB,
            }
        );
        let one_shard = Budgets::resolve(&unset, Some(64 * gib), 1);
        assert_eq!(one_shard.log_cache_per_shard(1), 16 << 20);
        let many = Budgets::resolve(&unset, Some(64 * gib), 64);
        assert_eq!(many.log_cache_per_shard(64), 1 << 20);
        let tiny = Budgets::resolve(&unset, Some(64 * MIB), 4);
        assert_eq!(
            (tiny.block_cache, tiny.memtables, tiny.requests),
            (8 * MIB, 8 * MIB, 16 * MIB)
        );
        let none = Budgets::resolve(&unset, None, 4);
        assert_eq!((none.index, none.content_cache), (0, 256 * MIB));
        let set = MemoryConfig {
            index_mib: Some(0),
            content_cache_mib: Some(0),
            block_cache_mib: Some(16),
            memtable_mib: Some(32),
            log_cache_mib: Some(8),
            requests_mib: Some(2),
        };
        assert_eq!(
            Budgets::resolve(&set, Some(gib), 4),
            Budgets {
                index: 0,
                content_cache: 0,
                block_cache: 16 * MIB,
                memtables: 32 * MIB,
                log_cache: 8 * MIB,
                requests: 2 * MIB,
            }
        );
    }

    #[test]
    fn requests_are_held_until_answered_and_refused_past_the_budget() {
        let budget = RequestBudget::new(2 * MIB);
        let first = budget.hold(1_500_000).expect("room for the first");
        assert_eq!(budget.used(), 1465 << 10);
        let why = budget.hold(1_000_000).expect_err("no room for the second");
        assert!(why.contains("memory.requests_mib = 2"), "{why}");
        let small = budget.hold(100).expect("a small one fits");
        drop((first, small));
        let huge = budget
            .hold(64 << 20)
            .expect("a request over the budget takes all of it");
        assert!(budget.hold(1).is_err());
        drop(huge);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn this_process_has_a_memory_limit() {
        // Every Linux machine reports at least its own memory.
        let limit = memory_limit().expect("a limit");
        assert!(limit > 16 * MIB, "{limit}");
    }
}
