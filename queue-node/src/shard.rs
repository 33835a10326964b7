//! What a shard's request handlers share with its state machine: the
//! in-memory [`ShardState`] (read by stats and job lookups, written only by
//! apply) and the wake-ups of long-polling fetchers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::clock::ShardClock;
use crate::fsm::ShardState;

/// Apply groups remembered for [`ShardShared::apply_started`]: more than
/// the batches a leader has in flight.
const APPLY_STARTS_KEPT: usize = 64;

/// Beyond this many queue notifiers, unused ones are dropped.
const MAX_IDLE_WAITERS: usize = 1024;

pub struct ShardShared {
    state: Mutex<ShardState>,
    /// The shard's "now": batches are stamped and timers compared with it.
    pub clock: Arc<ShardClock>,
    waiters: Mutex<HashMap<Arc<str>, Arc<Notify>>>,
    /// Signalled after every apply, so the ticker re-reads the next deadline.
    pub applied: Notify,
    /// The last log index applied (in memory; its entry is in the log).
    applied_index: AtomicU64,
    /// The last log index whose effects are written to RocksDB (the last
    /// checkpoint of [`crate::store::state_machine`]).
    written_index: AtomicU64,
    /// The last log index whose effects are on disk. State writes skip the
    /// WAL (the Raft log is the state machine's WAL), so this trails
    /// `written_index` until the state column family is flushed; the log
    /// is never purged past it.
    durable_index: AtomicU64,
    /// Live jobs as of the last apply.
    jobs: AtomicU64,
    /// What they take in memory (for the memory budget).
    index_bytes: AtomicU64,
    /// Bytes of recent log entries the log store keeps in memory.
    log_cache_bytes: AtomicU64,
    /// How long applying each group of committed entries takes (state
    /// machine, RocksDB write), on every replica.
    pub apply_seconds: crate::latency::Histogram,
    /// When apply began for the most recent groups of entries (first and
    /// last index), so the leader's batcher can tell a batch's commit
    /// latency from its log index.
    apply_starts: Mutex<std::collections::VecDeque<(u64, u64, std::time::Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the state as apply left it;
    // carrying on with it is no worse than the panic itself.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ShardShared {
    pub fn new(state: ShardState) -> ShardShared {
        let jobs = AtomicU64::new(state.job_count() as u64);
        let index_bytes = AtomicU64::new(state.index_bytes());
        ShardShared {
            clock: Arc::new(ShardClock::new(state.now_ms())),
            state: Mutex::new(state),
            waiters: Mutex::new(HashMap::new()),
            applied: Notify::new(),
            applied_index: AtomicU64::new(0),
            written_index: AtomicU64::new(0),
            durable_index: AtomicU64::new(0),
            jobs,
            index_bytes,
            log_cache_bytes: AtomicU64::new(0),
            apply_seconds: crate::latency::Histogram::default(),
            apply_starts: Mutex::new(std::collections::VecDeque::with_capacity(APPLY_STARTS_KEPT)),
        }
    }

    /// Apply began at `at` for entries `first..=last`.
    pub fn note_apply_start(&self, first: u64, last: u64, at: std::time::Instant) {
        let mut starts = lock(&self.apply_starts);
        if starts.len() == APPLY_STARTS_KEPT {
            starts.pop_front();
        }
        starts.push_back((first, last, at));
    }

    /// When apply began for the group holding entry `index`, if recent.
    pub fn apply_started(&self, index: u64) -> Option<std::time::Instant> {
        lock(&self.apply_starts)
            .iter()
            .rev()
            .find(|(first, last, _)| (*first..=*last).contains(&index))
            .map(|(_, _, at)| *at)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// Called by the state machine once `index` is applied.
    pub fn set_applied_index(&self, index: u64) {
        self.applied_index.store(index, Ordering::Release);
    }

    pub fn written_index(&self) -> u64 {
        self.written_index.load(Ordering::Acquire)
    }

    /// Called by the state machine once `index` is written to RocksDB.
    pub fn set_written_index(&self, index: u64) {
        self.written_index.store(index, Ordering::Release);
    }

    pub fn durable_index(&self) -> u64 {
        self.durable_index.load(Ordering::Acquire)
    }

    /// Called once the state up to `index` is known to be on disk.
    pub fn set_durable_index(&self, index: u64) {
        self.durable_index.fetch_max(index, Ordering::AcqRel);
    }

    pub fn state(&self) -> MutexGuard<'_, ShardState> {
        lock(&self.state)
    }

    /// Live jobs as of the last apply.
    pub fn job_count(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// What the live jobs take in memory as of the last apply.
    pub fn index_bytes(&self) -> u64 {
        self.index_bytes.load(Ordering::Relaxed)
    }

    /// Records the state's job count and index size after an apply.
    pub fn count_jobs(&self, state: &ShardState) {
        self.jobs.store(state.job_count() as u64, Ordering::Relaxed);
        self.index_bytes
            .store(state.index_bytes(), Ordering::Relaxed);
    }

    pub fn log_cache_bytes(&self) -> u64 {
        self.log_cache_bytes.load(Ordering::Relaxed)
    }

    pub fn set_log_cache_bytes(&self, bytes: usize) {
        self.log_cache_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    pub fn replace_state(&self, state: ShardState) {
        self.clock.applied(state.now_ms());
        self.count_jobs(&state);
        *lock(&self.state) = state;
        let waiters: Vec<Arc<Notify>> = lock(&self.waiters).values().cloned().collect();
        for w in waiters {
            w.notify_waiters();
        }
    }

    /// The notifier that fires when `queue` gains ready jobs.
    pub fn waiter(&self, queue: &str) -> Arc<Notify> {
        let mut waiters = lock(&self.waiters);
        if let Some(n) = waiters.get(queue) {
            return n.clone();
        }
        // Clients may ask for any queue name: forget the notifiers nobody
        // waits on any more, so the map holds only queues being waited on.
        if waiters.len() >= MAX_IDLE_WAITERS {
            waiters.retain(|_, n| Arc::strong_count(n) > 1);
        }
        let n = Arc::new(Notify::new());
        waiters.insert(Arc::from(queue), n.clone());
        n
    }

    /// How many queue notifiers are kept (for tests and metrics).
    pub fn waiter_count(&self) -> usize {
        lock(&self.waiters).len()
    }

    pub fn wake(&self, queues: &[Arc<str>]) {
        if queues.is_empty() {
            return;
        }
        let waiters = lock(&self.waiters);
        for q in queues {
            if let Some(n) = waiters.get(q) {
                n.notify_waiters();
            }
        }
    }
}
