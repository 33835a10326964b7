//! One job as the state machine keeps it in memory, packed small: a node
//! holds every live job of its shards, so each byte here is a megabyte per
//! million jobs. What few jobs carry (a backoff policy of their own, an
//! idempotency key, an error) lives in side maps that [`flags`] point to;
//! the worker holding a lease is a number into [`Workers`].

use std::collections::HashMap;
use std::sync::Arc;

use raftq_api::JobId;
use serde::Serialize;

use crate::ops::JobState;

/// A job id without its shard (one state holds one shard), in 12 bytes
/// that order like the id: by log index, then position in the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct JobKey {
    index_high: u32,
    index_low: u32,
    position: u32,
}

impl JobKey {
    pub fn of(id: JobId) -> JobKey {
        JobKey::new(id.index, id.position)
    }

    pub fn new(index: u64, position: u32) -> JobKey {
        JobKey {
            index_high: (index >> 32) as u32,
            index_low: index as u32,
            position,
        }
    }

    /// The log index of the entry that enqueued the job.
    pub fn index(self) -> u64 {
        (u64::from(self.index_high) << 32) | u64::from(self.index_low)
    }

    /// The job's place among the jobs of its entry.
    pub fn position(self) -> u32 {
        self.position
    }

    pub fn id(self, shard: u32) -> JobId {
        JobId {
            shard,
            index: self.index(),
            position: self.position,
        }
    }
}

/// Index of a queue in the state's queue table.
pub(super) type QueueId = u32;

/// Which side maps hold something for a job.
pub(super) mod flags {
    pub const BACKOFF: u8 = 1;
    pub const IDEMPOTENCY_KEY: u8 = 2;
    pub const ERROR: u8 = 4;
}

/// 48 bytes; 4-byte aligned so that with its 12-byte key an entry takes
/// 60 bytes, not 64.
#[derive(Debug, Clone, Copy)]
#[repr(C, packed(4))]
pub(super) struct Job {
    /// Scheduled: run time. Ready: when it became ready (orders FIFO).
    /// Leased: lease expiry. Dead: when it died.
    pub due_at_ms: u64,
    pub enqueued_at_ms: u64,
    pub queue: QueueId,
    pub priority: i32,
    /// Deliveries so far; fences lease tokens.
    pub attempt: u32,
    /// `attempt` when last requeued from the dead-letter set.
    pub retry_base: u32,
    /// 0 = the queue's current default.
    pub max_attempts: u32,
    /// [`crate::ops::answer_bytes`] of the job (saturated: one job is at
    /// most a few MiB).
    pub answer_bytes: u32,
    /// [`Workers`] id of the lease holder; [`NO_WORKER`] when not leased.
    pub worker: u32,
    pub state: JobState,
    pub flags: u8,
}

pub(super) const NO_WORKER: u32 = u32::MAX;

impl Job {
    pub fn attempts_used(&self) -> u32 {
        self.attempt.saturating_sub(self.retry_base)
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub fn ready_key(&self, key: JobKey) -> ReadyKey {
        ReadyKey::new(self.priority, self.due_at_ms, key)
    }
}

/// Where a ready job sorts: highest priority first, then oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ReadyKey {
    pub priority: std::cmp::Reverse<i32>,
    pub since_ms: u64,
    pub key: JobKey,
}

impl ReadyKey {
    pub fn new(priority: i32, since_ms: u64, key: JobKey) -> ReadyKey {
        ReadyKey {
            priority: std::cmp::Reverse(priority),
            since_ms,
            key,
        }
    }
}

/// A job's status record as written to RocksDB, borrowed from the packed
/// job and its side maps: encodes exactly as [`crate::ops::JobStatus`].
#[derive(Serialize)]
pub(super) struct StatusRecord<'a> {
    pub state: JobState,
    pub attempt: u32,
    pub retry_base: u32,
    pub due_at_ms: u64,
    pub last_error: Option<&'a str>,
    pub worker: Option<&'a str>,
}

/// Names of the workers holding leases, each stored once: a leased job
/// keeps a 4-byte id, counted, and the name goes when its last lease does.
/// Ids are local to this node's memory, never written or replicated.
#[derive(Debug, Default)]
pub(super) struct Workers {
    slots: Vec<Option<(Arc<str>, u32)>>,
    ids: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Workers {
    /// The id of `name`, created unheld if it is new: each lease then
    /// takes a reference with [`Workers::add`].
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let slot = Some((name.clone(), 0));
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// `leases` more leases held by `id`; none frees a name nothing holds
    /// (a claim that leased nothing).
    pub fn add(&mut self, id: u32, leases: u32) {
        if let Some(Some((_, count))) = self.slots.get_mut(id as usize) {
            *count += leases;
            if *count == 0 {
                self.free_slot(id);
            }
        }
    }

    /// Drops one lease's reference to `id` (and the name with the last).
    pub fn release(&mut self, id: u32) {
        if let Some(Some((_, count))) = self.slots.get_mut(id as usize) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.free_slot(id);
            }
        }
    }

    fn free_slot(&mut self, id: u32) {
        if let Some((name, _)) = self.slots.get_mut(id as usize).and_then(Option::take) {
            self.ids.remove(&name);
            self.free.push(id);
        }
    }

    pub fn name(&self, id: u32) -> Option<&Arc<str>> {
        self.slots
            .get(id as usize)
            .and_then(|slot| slot.as_ref())
            .map(|(name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::JobStatus;

    #[test]
    fn a_ready_job_takes_84_bytes_of_index() {
        // The job map's entry, and the ready index's.
        assert_eq!(std::mem::size_of::<(JobKey, Job)>(), 60);
        assert_eq!(std::mem::size_of::<ReadyKey>(), 24);
    }

    #[test]
    fn keys_round_trip_and_order_like_ids() {
        let ids = [
            JobId {
                shard: 3,
                index: 1,
                position: 9,
            },
            JobId {
                shard: 3,
                index: 2,
                position: 0,
            },
            JobId {
                shard: 3,
                index: u64::MAX - 1,
                position: u32::MAX,
            },
            JobId {
                shard: 3,
                index: u64::MAX,
                position: 0,
            },
        ];
        for pair in ids.windows(2) {
            assert!(JobKey::of(pair[0]) < JobKey::of(pair[1]));
        }
        for id in ids {
            assert_eq!(JobKey::of(id).id(3), id);
        }
    }

    #[test]
    fn a_status_record_encodes_as_a_job_status() {
        let record = StatusRecord {
            state: JobState::Leased,
            attempt: 3,
            retry_base: 1,
            due_at_ms: 1_700_000_000_123,
            last_error: Some("boom"),
            worker: Some("w-1"),
        };
        let status = JobStatus {
            state: JobState::Leased,
            attempt: 3,
            retry_base: 1,
            due_at_ms: 1_700_000_000_123,
            last_error: Some("boom".into()),
            worker: Some("w-1".into()),
        };
        assert_eq!(
            postcard::to_allocvec(&record).unwrap(),
            postcard::to_allocvec(&status).unwrap()
        );
    }

    #[test]
    fn a_worker_name_lives_while_a_lease_holds_it() {
        let mut workers = Workers::default();
        let a = workers.intern("a");
        workers.add(a, 2);
        assert_eq!(workers.intern("a"), a);
        workers.add(a, 1);
        let b = workers.intern("b");
        workers.add(b, 0);
        assert_eq!(workers.name(b), None);
        for _ in 0..2 {
            workers.release(a);
            assert_eq!(workers.name(a).map(|n| &**n), Some("a"));
        }
        workers.release(a);
        assert_eq!(workers.name(a), None);
        // Ids are reused.
        let c = workers.intern("c");
        assert!(c == a || c == b);
    }
}
