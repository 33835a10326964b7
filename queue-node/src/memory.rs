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

use crate::context::ShardHandle;
use crate::store::{ContentCache, Store};

/// What one live job costs in the index, about: its metadata and status,
/// the map and index entries that hold it, and their allocator slack
/// (measured: ~450 B per job of a million, memtables included).
pub const INDEX_BYTES_PER_JOB: u64 = 512;

/// Half the memory this process may use: its cgroup's limit (what a
/// container's memory limit sets), else the machine's; 0 (no limit) where
/// neither can be read.
pub fn default_index_bytes() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let machine = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match (cgroup, machine) {
        (Some(c), Some(m)) => c.min(m) / 2,
        (Some(x), None) | (None, Some(x)) => x / 2,
        (None, None) => 0,
    }
}

pub struct MemoryBudget {
    /// 0 = no limit.
    pub index_bytes: u64,
    pub content_cache: Arc<ContentCache>,
    pub block_cache_bytes: u64,
    pub memtable_bytes: u64,
    /// Reports what RocksDB's block cache and memtables hold.
    pub store: Store,
}

impl MemoryBudget {
    /// Jobs live on this node now (every shard it holds).
    pub fn live_jobs(shards: &[ShardHandle]) -> u64 {
        shards.iter().map(|s| s.shared.job_count()).sum()
    }

    /// The index's estimated size now.
    pub fn index_used(shards: &[ShardHandle]) -> u64 {
        Self::live_jobs(shards).saturating_mul(INDEX_BYTES_PER_JOB)
    }

    /// Why `new_jobs` more jobs may not be enqueued now, if they may not.
    pub fn refuse_enqueue(&self, shards: &[ShardHandle], new_jobs: usize) -> Option<String> {
        if self.index_bytes == 0 {
            return None;
        }
        let live = Self::live_jobs(shards);
        let after = (live + new_jobs as u64).saturating_mul(INDEX_BYTES_PER_JOB);
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
