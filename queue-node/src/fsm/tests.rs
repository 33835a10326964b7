//! State machine tests: behaviour of each op, rebuild from the written
//! keys, and property tests over random op sequences.

use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;
use raftq_api::JobId;

use super::keys::MapSink;
use super::ShardState;
use crate::ops::*;

struct Harness {
    state: ShardState,
    sink: MapSink,
    index: u64,
    now: u64,
    defaults: QueueDefaults,
}

fn job(payload: &str) -> NewJob {
    NewJob::ready(Bytes::copy_from_slice(payload.as_bytes()))
}

impl Harness {
    fn new() -> Harness {
        Harness {
            state: ShardState::new(0),
            sink: MapSink::default(),
            index: 0,
            now: 1_000_000,
            defaults: QueueDefaults {
                lease_ms: 1_000,
                max_attempts: 3,
                backoff: BackoffPolicy {
                    initial_ms: 100,
                    max_ms: 1_000,
                    multiplier: 2.0,
                },
                dedup_window_ms: 10_000,
            },
        }
    }

    fn apply(&mut self, ops: Vec<Op>) -> Vec<OpResult> {
        self.index += 1;
        let batch = Batch {
            time_ms: self.now,
            defaults: self.defaults,
            ops: ops.into(),
        };
        let results = self.state.apply_batch(self.index, &batch, &mut self.sink).0;
        assert_eq!(self.sink.error, None);
        results
    }

    /// The payload apply wrote for `id` (contents live only in the sink).
    fn payload(&self, id: JobId) -> Bytes {
        let key = super::keys::job_key(super::keys::JOB, id);
        let bytes = self.sink.map.get(&key[..]).expect("job record");
        let (_, _, content): (JobMeta, JobStatus, JobContent) =
            postcard::from_bytes(bytes).expect("job record decodes");
        content.payload
    }

    fn one(&mut self, op: Op) -> OpResult {
        self.apply(vec![op]).remove(0)
    }

    fn enqueue(&mut self, queue: &str, jobs: Vec<NewJob>) -> Vec<(JobId, bool)> {
        match self.one(Op::Enqueue {
            queue: queue.into(),
            jobs,
        }) {
            OpResult::Enqueued(ids) => ids,
            other => panic!("{other:?}"),
        }
    }

    fn claim(&mut self, queue: &str, worker: &str, max: u32) -> Vec<JobView> {
        match self.one(Op::Claim {
            queue: queue.into(),
            worker: worker.into(),
            max,
            lease_ms: None,
        }) {
            OpResult::Claimed(jobs) => jobs,
            other => panic!("{other:?}"),
        }
    }

    fn tokens(&mut self, op: Op) -> Vec<Result<Option<u64>, OpError>> {
        match self.one(op) {
            OpResult::Tokens(t) => t.into_iter().map(|t| t.result).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn ack(&mut self, id: JobId, attempt: u32) -> Result<Option<u64>, OpError> {
        self.tokens(Op::Ack {
            tokens: vec![(id, attempt)],
        })
        .remove(0)
    }

    fn nack(&mut self, id: JobId, attempt: u32, dead: bool) -> Result<Option<u64>, OpError> {
        self.tokens(Op::Nack {
            items: vec![Nack {
                id,
                attempt,
                retry_delay_ms: None,
                error: "boom".into(),
                dead,
            }],
        })
        .remove(0)
    }

    fn stats(&self, queue: &str) -> (u64, u64, u64, u64) {
        let s = self.state.stats(queue).expect("queue exists");
        (s.ready, s.scheduled, s.leased, s.dead)
    }

    /// The state rebuilt from what apply wrote must equal the live one.
    fn assert_rebuilds(&self) {
        let records = self
            .sink
            .map
            .iter()
            .map(|(k, v)| Ok::<_, std::convert::Infallible>((k, v)));
        let rebuilt = ShardState::load(0, self.state.now_ms(), records).expect("load");
        assert_eq!(rebuilt.digest(), self.state.digest());
    }
}

/// A queue name that hashes to shard `shard` of `shards`.
fn queue_on(shards: u32, shard: u32, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .find(|q| raftq_api::shard_of(q, shards) == shard)
        .unwrap_or_default()
}

#[test]
fn a_fenced_shard_keeps_its_queues_and_takes_only_new_ones_that_hash_to_it() {
    let mut h = Harness::new();
    // Shard 0 of 2 holds these; among 4 shards they hash elsewhere.
    let elsewhere = |tag: &str| {
        (0..)
            .map(|i| format!("{tag}-{i}"))
            .find(|q| raftq_api::shard_of(q, 2) == 0 && raftq_api::shard_of(q, 4) != 0)
            .unwrap_or_default()
    };
    let (with_jobs, with_settings, with_key, emptied) = (
        elsewhere("jobs"),
        elsewhere("settings"),
        elsewhere("key"),
        elsewhere("emptied"),
    );
    h.enqueue(&with_jobs, vec![job("a")]);
    h.one(Op::SetQueueConfig {
        queue: with_settings.clone(),
        patch: QueueConfigPatch {
            max_attempts: Some(9),
            ..Default::default()
        },
    });
    let mut keyed = job("k");
    keyed.idempotency_key = Some("once".into());
    h.enqueue(&with_key, vec![keyed]);
    for queue in [&with_key, &emptied] {
        if queue == &emptied {
            // Used, then emptied: it holds nothing, so it follows the
            // new hash.
            h.enqueue(&emptied, vec![job("e")]);
        }
        let claimed = h.claim(queue, "w", 1);
        assert_eq!(h.ack(claimed[0].id, claimed[0].status.attempt), Ok(None));
    }

    let OpResult::Pinned(pinned) = h.one(Op::Fence { shard_count: 4 }) else {
        panic!("fence answers the pinned queues");
    };
    let mut expected = vec![with_jobs.clone(), with_settings.clone(), with_key.clone()];
    expected.sort();
    assert_eq!(pinned, expected);
    // Asked again (a growth resumed), the same answer.
    assert_eq!(
        h.one(Op::Fence { shard_count: 4 }),
        OpResult::Pinned(expected)
    );

    // Pinned queues and queues that hash here are taken; others refused,
    // and nothing of them is created.
    h.enqueue(&with_jobs, vec![job("b")]);
    h.enqueue(&queue_on(4, 0, "new"), vec![job("n")]);
    for refused in [emptied.clone(), queue_on(4, 1, "new")] {
        match h.one(Op::Enqueue {
            queue: refused.clone(),
            jobs: vec![job("x")],
        }) {
            OpResult::Failed(OpError::WrongShard {
                here: 0,
                shard,
                shard_count: 4,
                ..
            }) => assert_eq!(shard, raftq_api::shard_of(&refused, 4)),
            other => panic!("{refused}: {other:?}"),
        }
        assert!(matches!(
            h.one(Op::Claim {
                queue: refused.clone(),
                worker: "w".into(),
                max: 1,
                lease_ms: None,
            }),
            OpResult::Failed(OpError::WrongShard { .. })
        ));
    }
    assert_eq!(h.stats(&with_jobs).0, 2);
    // The fence, and the routing a metadata shard holds, survive a rebuild.
    let routing = crate::routing::Routing::initial(2).grown(4, [(with_jobs.clone(), 0)]);
    h.one(Op::SetRouting {
        routing: routing.clone(),
    });
    assert_eq!(h.state.routing(), Some(&routing));
    // A table that does not follow the one in force changes nothing.
    let stale = crate::routing::Routing::initial(2).grown(8, []);
    assert_eq!(
        h.one(Op::SetRouting { routing: stale }),
        OpResult::Failed(OpError::RoutingChanged {
            held: 1,
            offered: 1
        })
    );
    assert_eq!(h.state.routing(), Some(&routing));
    h.assert_rebuilds();
}

#[test]
fn enqueue_claim_ack_removes_the_job_and_its_keys() {
    let mut h = Harness::new();
    let ids = h.enqueue("q", vec![job("a"), job("b")]);
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0].0, ids[1].0);
    assert_eq!(h.stats("q"), (2, 0, 0, 0));
    let claimed = h.claim("q", "w1", 10);
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        h.payload(claimed[0].id),
        Bytes::from_static(b"a"),
        "FIFO order"
    );
    assert_eq!(claimed[0].status.attempt, 1);
    assert_eq!(claimed[0].status.due_at_ms, h.now + 1_000);
    assert_eq!(h.stats("q"), (0, 0, 2, 0));
    assert_eq!(h.ack(ids[0].0, 1), Ok(None));
    assert_eq!(h.ack(ids[1].0, 1), Ok(None));
    assert_eq!(h.stats("q"), (0, 0, 0, 0));
    assert!(h.state.job(ids[0].0, &h.defaults).is_none());
    assert!(
        h.sink.map.keys().all(|k| k[4] != super::keys::JOB),
        "job keys deleted"
    );
    assert!(matches!(
        h.ack(ids[0].0, 1),
        Err(OpError::JobNotFound { .. })
    ));
    h.assert_rebuilds();
}

#[test]
fn expired_lease_is_redelivered_and_the_stale_token_fenced() {
    let mut h = Harness::new();
    let id = h.enqueue("q", vec![job("x")])[0].0;
    assert_eq!(h.claim("q", "w1", 1).len(), 1);
    h.now += 1_001;
    let again = h.claim("q", "w2", 1);
    assert_eq!(again.len(), 1, "expired lease goes back to ready");
    assert_eq!(again[0].status.attempt, 2);
    assert_eq!(
        again[0].status.last_error.as_deref(),
        Some("lease expired (attempt 1)")
    );
    match h.ack(id, 1) {
        Err(e @ OpError::LeaseLost { .. }) => {
            assert!(e.to_string().starts_with("lease lost"), "{e}")
        }
        other => panic!("stale ack accepted: {other:?}"),
    }
    assert!(matches!(
        h.nack(id, 1, false),
        Err(OpError::LeaseLost { .. })
    ));
    assert_eq!(h.stats("q"), (0, 0, 1, 0), "stale token changed nothing");
    assert_eq!(h.ack(id, 2), Ok(None));
    h.assert_rebuilds();
}

#[test]
fn release_returns_unstarted_jobs_at_their_place_without_using_an_attempt() {
    let mut h = Harness::new();
    h.defaults.max_attempts = 2;
    let ids: Vec<JobId> = h
        .enqueue("q", vec![job("a"), job("b"), job("c")])
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let first = h.claim("q", "w1", 2);
    assert_eq!(first.len(), 2);
    // Released three times over: still not out of attempts, still first.
    for round in 0..3 {
        let attempt = round + 1;
        let out = h.tokens(Op::Release {
            tokens: vec![(ids[0], attempt), (ids[1], attempt)],
        });
        assert_eq!(out, vec![Ok(None), Ok(None)], "round {round}");
        assert_eq!(h.stats("q"), (3, 0, 0, 0));
        let again = h.claim("q", "w2", 2);
        let order: Vec<JobId> = again.iter().map(|j| j.id).collect();
        assert_eq!(order, ids[..2].to_vec(), "released jobs keep their place");
        assert_eq!(again[0].status.attempt, attempt + 1);
        assert_eq!(
            again[0].status.attempts_used(),
            1,
            "a release uses no attempt"
        );
        // The released delivery's token is fenced.
        match h.ack(ids[0], attempt) {
            Err(e @ OpError::LeaseLost { .. }) => {
                assert!(e.to_string().starts_with("lease lost"), "{e}")
            }
            other => panic!("stale ack accepted: {other:?}"),
        }
    }
    // Only a lease that is current can be released.
    assert!(h.tokens(Op::Release {
        tokens: vec![(ids[2], 1)]
    })[0]
        .is_err());
    assert_eq!(h.ack(ids[0], 4), Ok(None));
    h.assert_rebuilds();
}

#[test]
fn extend_pushes_the_expiry() {
    let mut h = Harness::new();
    let id = h.enqueue("q", vec![job("x")])[0].0;
    h.claim("q", "w", 1);
    h.now += 900;
    let expiry = h.tokens(Op::Extend {
        tokens: vec![(id, 1)],
        lease_ms: Some(5_000),
    });
    assert_eq!(expiry, vec![Ok(Some(h.now + 5_000))]);
    h.now += 2_000;
    assert!(
        h.claim("q", "w2", 1).is_empty(),
        "extended lease still held"
    );
    assert_eq!(h.ack(id, 1), Ok(None));
}

#[test]
fn nack_backs_off_then_dead_letters_after_max_attempts() {
    let mut h = Harness::new();
    let id = h.enqueue("q", vec![job("x")])[0].0;
    for attempt in 1..=3u32 {
        let claimed = h.claim("q", "w", 1);
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].status.attempt, attempt);
        assert_eq!(h.nack(id, attempt, false), Ok(None));
        if attempt < 3 {
            assert_eq!(h.stats("q"), (0, 1, 0, 0));
            assert!(h.claim("q", "w", 1).is_empty(), "backoff not over");
            h.now += 100 * 2u64.pow(attempt - 1);
        }
    }
    assert_eq!(h.stats("q"), (0, 0, 0, 1));
    let dead = h.state.dead_page("q", None, 10, &h.defaults);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].status.last_error.as_deref(), Some("boom"));
    h.assert_rebuilds();
    assert_eq!(
        h.one(Op::RequeueDead {
            queue: "q".into(),
            ids: vec![]
        }),
        OpResult::Count(1)
    );
    let claimed = h.claim("q", "w", 1);
    assert_eq!(
        claimed[0].status.attempts_used(),
        1,
        "requeue resets the retry count"
    );
    assert_eq!(claimed[0].status.attempt, 4, "but not the fencing attempt");
    assert!(
        matches!(h.ack(id, 1), Err(OpError::LeaseLost { .. })),
        "old token stays stale"
    );
    assert_eq!(h.nack(id, 4, true), Ok(None), "nack with dead=true");
    assert_eq!(h.stats("q"), (0, 0, 0, 1));
    let missing = JobId {
        shard: 0,
        index: 999,
        position: 0,
    };
    assert!(matches!(
        h.one(Op::PurgeDead {
            queue: "q".into(),
            ids: vec![missing]
        }),
        OpResult::Failed(OpError::NotDead { .. })
    ));
    assert_eq!(h.stats("q"), (0, 0, 0, 1), "a bad id purges nothing");
    assert_eq!(
        h.one(Op::PurgeDead {
            queue: "q".into(),
            ids: vec![id]
        }),
        OpResult::Count(1)
    );
    assert_eq!(h.stats("q"), (0, 0, 0, 0));
    h.assert_rebuilds();
}

#[test]
fn lease_expiry_on_the_last_attempt_dead_letters() {
    let mut h = Harness::new();
    let mut j = job("x");
    j.max_attempts = 1;
    h.enqueue("q", vec![j]);
    h.claim("q", "w", 1);
    h.now += 5_000;
    h.one(Op::Tick);
    assert_eq!(h.stats("q"), (0, 0, 0, 1));
}

#[test]
fn delayed_jobs_become_ready_at_their_time() {
    let mut h = Harness::new();
    let mut later = job("later");
    later.when = When::Delay(500);
    let mut at = job("at");
    at.when = When::At(h.now + 200);
    h.enqueue("q", vec![later, at]);
    assert_eq!(h.stats("q"), (0, 2, 0, 0));
    assert_eq!(h.state.next_deadline_ms(), Some(h.now + 200));
    h.now += 200;
    h.one(Op::Tick);
    assert_eq!(h.stats("q"), (1, 1, 0, 0));
    assert_eq!(h.state.take_woken().len(), 1, "fetchers are woken");
    h.now += 300;
    let claimed = h.claim("q", "w", 10);
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        h.payload(claimed[0].id),
        Bytes::from_static(b"at"),
        "earlier run time first"
    );
}

#[test]
fn higher_priority_first_then_fifo() {
    let mut h = Harness::new();
    let mut jobs = vec![job("low1"), job("high"), job("low2")];
    jobs[1].priority = 5;
    h.enqueue("q", jobs);
    let claimed = h.claim("q", "w", 3);
    let order: Vec<Bytes> = claimed.iter().map(|j| h.payload(j.id)).collect();
    assert_eq!(
        order,
        vec![
            Bytes::from("high"),
            Bytes::from("low1"),
            Bytes::from("low2")
        ]
    );
}

#[test]
fn idempotency_key_dedups_within_the_window() {
    let mut h = Harness::new();
    let mut a = job("a");
    a.idempotency_key = Some("k".into());
    let first = h.enqueue("q", vec![a.clone()])[0];
    assert!(!first.1);
    let again = h.enqueue("q", vec![a.clone(), a.clone()]);
    assert_eq!(again, vec![(first.0, true), (first.0, true)]);
    assert_eq!(h.stats("q").0, 1);
    let other_queue = h.enqueue("other", vec![a.clone()])[0];
    assert!(!other_queue.1, "keys are per queue");
    h.assert_rebuilds();
    h.now += 10_000;
    let fresh = h.enqueue("q", vec![a])[0];
    assert!(!fresh.1);
    assert_ne!(fresh.0, first.0);
    h.assert_rebuilds();
}

#[test]
fn paused_queue_leases_nothing_until_resumed() {
    let mut h = Harness::new();
    h.enqueue("q", vec![job("x")]);
    h.state.take_woken();
    h.one(Op::SetPaused {
        queue: "q".into(),
        paused: true,
    });
    assert!(h.claim("q", "w", 1).is_empty());
    h.assert_rebuilds();
    h.one(Op::SetPaused {
        queue: "q".into(),
        paused: false,
    });
    assert_eq!(h.state.take_woken().len(), 1);
    assert_eq!(h.claim("q", "w", 1).len(), 1);
}

#[test]
fn cancel_and_purge() {
    let mut h = Harness::new();
    let ids = h.enqueue("q", vec![job("a"), job("b"), job("c")]);
    let mut later = job("later");
    later.when = When::Delay(10_000);
    h.enqueue("q", vec![later]);
    let leased = h.claim("q", "w", 1)[0].id;
    assert!(matches!(
        h.one(Op::Cancel { id: leased }),
        OpResult::Failed(OpError::Leased { .. })
    ));
    assert!(matches!(
        h.one(Op::Cancel { id: ids[1].0 }),
        OpResult::Job(_)
    ));
    assert!(matches!(
        h.one(Op::Cancel { id: ids[1].0 }),
        OpResult::Failed(OpError::JobNotFound { .. })
    ));
    assert_eq!(
        h.one(Op::PurgeQueue { queue: "q".into() }),
        OpResult::Count(2)
    );
    assert_eq!(
        h.stats("q"),
        (0, 0, 1, 0),
        "the leased job survives a purge"
    );
    h.assert_rebuilds();
}

/// A backlog of plain jobs is kept packed — a few bytes a job, against
/// the 128 counted for a job in the job map — and behaves exactly like
/// unpacked jobs: order with priorities and redelivered jobs among them,
/// lookups, cancel, stale tokens, the records on disk, and the rebuild.
#[test]
fn a_fresh_backlog_is_packed_and_behaves_like_any_ready_job() {
    let mut h = Harness::new();
    let mut ids = Vec::new();
    for round in 0..100 {
        h.now += 1;
        let jobs = (0..100).map(|i| job(&format!("job-{round}-{i}"))).collect();
        ids.extend(h.enqueue("q", jobs).into_iter().map(|(id, _)| id));
    }
    let bytes = h.state.index_bytes();
    assert!(bytes < 10 * 10_000, "{bytes} bytes for 10,000 fresh jobs");
    let mut keyed = job("keyed");
    keyed.idempotency_key = Some("k".into());
    h.enqueue("q", vec![keyed]);
    assert!(
        h.state.index_bytes() >= bytes + super::INDEX_BYTES_PER_JOB,
        "a job with a key of its own is not packed"
    );
    assert_eq!(h.state.job_count(), 10_001);

    // Lookups, a token for a job never leased, cancel.
    let view = h
        .state
        .job(ids[7], &h.defaults)
        .expect("a fresh job is found");
    assert_eq!(
        (view.status.state, view.status.attempt),
        (JobState::Ready, 0)
    );
    assert!(matches!(
        h.ack(ids[7], 1),
        Err(OpError::LeaseLost {
            current_attempt: 0,
            state: JobState::Ready,
            ..
        })
    ));
    assert!(matches!(h.one(Op::Cancel { id: ids[7] }), OpResult::Job(_)));
    assert!(h.state.job(ids[7], &h.defaults).is_none());
    assert!(!h
        .sink
        .map
        .contains_key(&super::keys::job_key(super::keys::JOB, ids[7])[..]));
    h.assert_rebuilds();

    // An urgent job jumps the backlog; a released one goes back to its
    // place at the front, among the packed ones.
    let mut urgent = job("urgent");
    urgent.priority = 5;
    let urgent = h.enqueue("q", vec![urgent])[0].0;
    let first = h.claim("q", "w", 3);
    assert_eq!(first[0].id, urgent);
    assert_eq!(first[1].id, ids[0]);
    assert_eq!(first[2].id, ids[1]);
    h.tokens(Op::Release {
        tokens: vec![(ids[0], 1)],
    });
    h.assert_rebuilds();
    let next: Vec<JobId> = h.claim("q", "w", 3).iter().map(|j| j.id).collect();
    assert_eq!(next, vec![ids[0], ids[2], ids[3]]);
    // 10,000 + the keyed + the urgent - the cancelled, five of them leased.
    assert_eq!(h.stats("q"), (9_996, 0, 5, 0));
    h.assert_rebuilds();
    assert_eq!(
        h.one(Op::PurgeQueue { queue: "q".into() }),
        OpResult::Count(9_996)
    );
    assert_eq!(h.stats("q"), (0, 0, 5, 0));
    h.assert_rebuilds();
}

#[test]
fn set_queue_config_changes_new_leases() {
    let mut h = Harness::new();
    let patch = QueueConfigPatch {
        lease_ms: Some(60_000),
        ..Default::default()
    };
    match h.one(Op::SetQueueConfig {
        queue: "q".into(),
        patch,
    }) {
        OpResult::Queue(v) => {
            assert_eq!(v.lease_ms, 60_000);
            assert_eq!(v.max_attempts, 3, "others keep the default");
        }
        other => panic!("{other:?}"),
    }
    let id = h.enqueue("q", vec![job("x")])[0].0;
    assert_eq!(h.claim("q", "w", 1)[0].status.due_at_ms, h.now + 60_000);
    // A lower max-attempts applies to jobs already in the queue.
    let patch = QueueConfigPatch {
        max_attempts: Some(1),
        ..Default::default()
    };
    h.one(Op::SetQueueConfig {
        queue: "q".into(),
        patch,
    });
    assert_eq!(h.nack(id, 1, false), Ok(None));
    assert_eq!(h.stats("q"), (0, 0, 0, 1), "dead after its only attempt");
    h.assert_rebuilds();
}

#[test]
fn time_never_goes_backwards() {
    let mut h = Harness::new();
    h.enqueue("q", vec![job("x")]);
    h.claim("q", "w", 1);
    let t = h.now;
    h.now -= 10_000; // a new leader with a slower clock
    h.one(Op::Tick);
    assert_eq!(h.state.now_ms(), t);
}

// ---- property tests -------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Enqueue {
        queue: usize,
        n: usize,
        key: Option<u8>,
        delay: u64,
    },
    Claim {
        queue: usize,
        worker: usize,
        max: u32,
    },
    AckHeld {
        pick: usize,
    },
    NackHeld {
        pick: usize,
        dead: bool,
    },
    ExtendHeld {
        pick: usize,
    },
    ReleaseHeld {
        pick: usize,
    },
    AckStale {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    RequeueDead {
        queue: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0..2usize,
            1..4usize,
            prop::option::of(0..4u8),
            prop_oneof![Just(0u64), 1..300u64]
        )
            .prop_map(|(queue, n, key, delay)| Step::Enqueue {
                queue,
                n,
                key,
                delay
            }),
        (0..2usize, 0..3usize, 1..4u32).prop_map(|(queue, worker, max)| Step::Claim {
            queue,
            worker,
            max
        }),
        any::<usize>().prop_map(|pick| Step::AckHeld { pick }),
        (any::<usize>(), any::<bool>()).prop_map(|(pick, dead)| Step::NackHeld { pick, dead }),
        any::<usize>().prop_map(|pick| Step::ExtendHeld { pick }),
        any::<usize>().prop_map(|pick| Step::ReleaseHeld { pick }),
        any::<usize>().prop_map(|pick| Step::AckStale { pick }),
        (1..1500u64).prop_map(|ms| Step::Advance { ms }),
        (0..2usize).prop_map(|queue| Step::RequeueDead { queue }),
    ]
}

const QUEUES: [&str; 2] = ["alpha", "beta"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Random histories: no job is lost, none is leased twice at once, stale
    /// tokens are always refused, attempts and dead-lettering add up, two
    /// replicas applying the same entries agree byte for byte, and a
    /// rebuild from the written keys equals the live state.
    #[test]
    fn random_histories_keep_every_invariant(steps in prop::collection::vec(step(), 1..80)) {
        let mut a = Harness::new();
        let mut b = Harness::new();
        // id -> (attempt, lease expiry) of the lease we believe is current
        let mut held: HashMap<JobId, (u32, u64)> = HashMap::new();
        let mut stale: Vec<(JobId, u32)> = Vec::new();
        let mut live: std::collections::BTreeSet<JobId> = Default::default();
        let mut acked: std::collections::BTreeSet<JobId> = Default::default();
        let mut seq = 0u64;
        for s in steps {
            let ops = match &s {
                Step::Enqueue { queue, n, key, delay } => {
                    let jobs = (0..*n).map(|_| {
                        seq += 1;
                        let mut j = job(&format!("job{seq}"));
                        j.idempotency_key = key.map(|k| format!("key{k}"));
                        if *delay > 0 { j.when = When::Delay(*delay); }
                        j
                    }).collect();
                    vec![Op::Enqueue { queue: QUEUES[*queue].into(), jobs }]
                }
                Step::Claim { queue, worker, max } => vec![Op::Claim {
                    queue: QUEUES[*queue].into(), worker: format!("w{worker}"), max: *max, lease_ms: None,
                }],
                Step::AckHeld { pick } | Step::NackHeld { pick, .. } | Step::ExtendHeld { pick } | Step::ReleaseHeld { pick } => {
                    let mut ids: Vec<_> = held.iter().map(|(id, (att, _))| (*id, *att)).collect();
                    ids.sort();
                    let Some(&(id, attempt)) = ids.get(pick % ids.len().max(1)) else { continue };
                    match s {
                        Step::AckHeld { .. } => vec![Op::Ack { tokens: vec![(id, attempt)] }],
                        Step::NackHeld { dead, .. } => vec![Op::Nack { items: vec![Nack {
                            id, attempt, retry_delay_ms: None, error: "e".into(), dead,
                        }] }],
                        Step::ReleaseHeld { .. } => vec![Op::Release { tokens: vec![(id, attempt)] }],
                        _ => vec![Op::Extend { tokens: vec![(id, attempt)], lease_ms: None }],
                    }
                }
                Step::AckStale { pick } => {
                    let Some(&(id, attempt)) = stale.get(pick % stale.len().max(1)) else { continue };
                    vec![Op::Ack { tokens: vec![(id, attempt)] }]
                }
                Step::Advance { ms } => { a.now += ms; b.now += ms; vec![Op::Tick] }
                Step::RequeueDead { queue } => vec![Op::RequeueDead { queue: QUEUES[*queue].into(), ids: vec![] }],
            };
            let now = a.now;
            // Leases we hold that expire by this batch's time are lost.
            for (id, (attempt, expiry)) in held.clone() {
                if expiry <= now {
                    held.remove(&id);
                    stale.push((id, attempt));
                }
            }
            let ra = a.apply(ops.clone());
            let rb = b.apply(ops.clone());
            prop_assert_eq!(&ra, &rb, "replicas disagree on results");
            prop_assert_eq!(&a.sink, &b.sink, "replicas disagree on stored state");
            for (op, result) in ops.iter().zip(&ra) {
                match (op, result) {
                    (Op::Enqueue { .. }, OpResult::Enqueued(ids)) => {
                        for (id, dup) in ids {
                            if *dup {
                                // The key still names the first job, even once acked.
                                prop_assert!(live.contains(id) || acked.contains(id));
                            } else {
                                prop_assert!(!acked.contains(id) && !live.contains(id), "job id {} reused", id);
                                live.insert(*id);
                            }
                        }
                    }
                    (Op::Claim { .. }, OpResult::Claimed(jobs)) => {
                        for j in jobs {
                            prop_assert!(!held.contains_key(&j.id), "job {} leased twice at once", j.id);
                            prop_assert!(j.status.attempts_used() <= j.max_attempts);
                            prop_assert!(live.contains(&j.id));
                            held.insert(j.id, (j.status.attempt, j.status.due_at_ms));
                        }
                    }
                    (Op::Ack { tokens }, OpResult::Tokens(out)) => {
                        let (id, attempt) = tokens[0];
                        if matches!(s, Step::AckStale { .. }) {
                            let current = held.get(&id).map(|h| h.0);
                            if current != Some(attempt) {
                                prop_assert!(out[0].result.is_err(), "stale ack of {} accepted", id);
                            }
                        } else {
                            prop_assert_eq!(&out[0].result, &Ok(None));
                        }
                        if out[0].result.is_ok() {
                            held.remove(&id);
                            live.remove(&id);
                            acked.insert(id);
                        }
                    }
                    (Op::Nack { items }, OpResult::Tokens(out)) => {
                        prop_assert_eq!(&out[0].result, &Ok(None));
                        held.remove(&items[0].id);
                    }
                    (Op::Release { tokens }, OpResult::Tokens(out)) => {
                        prop_assert_eq!(&out[0].result, &Ok(None));
                        held.remove(&tokens[0].0);
                        stale.push(tokens[0]);
                    }
                    (Op::Extend { tokens, .. }, OpResult::Tokens(out)) => {
                        let expiry = out[0].result.clone();
                        prop_assert!(matches!(expiry, Ok(Some(_))));
                        if let Ok(Some(e)) = expiry { held.insert(tokens[0].0, (tokens[0].1, e)); }
                    }
                    (Op::Tick, OpResult::Ticked) | (Op::RequeueDead { .. }, OpResult::Count(_)) => {}
                    (op, result) => prop_assert!(false, "unexpected {:?} -> {:?}", op, result),
                }
            }
            // No job lost, nothing acked comes back, counts add up.
            for id in &live {
                let view = a.state.job(*id, &a.defaults);
                prop_assert!(view.is_some(), "job {} lost", id);
                if let Some(v) = view {
                    prop_assert!(v.status.attempts_used() <= v.max_attempts);
                    if v.status.state == JobState::Dead {
                        prop_assert!(v.status.attempt >= 1);
                    }
                }
            }
            for id in &acked {
                prop_assert!(a.state.job(*id, &a.defaults).is_none(), "acked job {} came back", id);
            }
            let total: u64 = QUEUES.iter().filter_map(|q| a.state.stats(q)).map(|s| s.ready + s.scheduled + s.leased + s.dead).sum();
            prop_assert_eq!(total, live.len() as u64);
        }
        a.assert_rebuilds();
    }
}

#[test]
fn listing_pages_newest_first_over_every_state_and_filter() {
    use super::JobFilter;
    let mut h = Harness::new();
    // Fresh jobs at two priorities, interleaved with another queue's.
    let mut ids = Vec::new();
    for n in 0..10 {
        let mut j = job(&format!("q{n}"));
        j.priority = n % 2;
        ids.push(h.enqueue("q", vec![j])[0].0);
        h.enqueue("other", vec![job("x")]);
    }
    let mut keyed = job("keyed");
    keyed.idempotency_key = Some("order-7".into());
    ids.push(h.enqueue("q", vec![keyed])[0].0);
    let mut later = job("later");
    later.when = When::Delay(60_000);
    ids.push(h.enqueue("q", vec![later])[0].0);
    // Lease the two oldest priority-1 jobs, fail one of them to dead.
    let leased = h.claim("q", "w", 2);
    assert_eq!(
        leased.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1], ids[3]]
    );
    h.nack(ids[1], 1, true).expect("nack to dead");

    let list = |h: &Harness, filter: &JobFilter, before, limit, scan| {
        h.state
            .list_jobs("q", filter, before, limit, scan, &h.defaults)
    };
    let all = list(&h, &JobFilter::default(), None, 100, 1000);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(
        all.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        newest_first
    );
    assert_eq!(all.next_before, None);
    assert_eq!(all.scanned, 12);

    // Pages of 5 walk the same order with no gap or repeat.
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let page = list(&h, &JobFilter::default(), before, 5, 1000);
        walked.extend(page.jobs.iter().map(|j| j.id));
        match page.next_before {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, newest_first);

    let by_state = |h: &Harness, state| {
        let filter = JobFilter {
            state: Some(state),
            ..JobFilter::default()
        };
        list(h, &filter, None, 100, 1000)
            .jobs
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_state(&h, JobState::Dead), vec![ids[1]]);
    assert_eq!(by_state(&h, JobState::Leased), vec![ids[3]]);
    assert_eq!(by_state(&h, JobState::Scheduled), vec![ids[11]]);
    assert_eq!(by_state(&h, JobState::Ready).len(), 9);

    let keyed = JobFilter {
        idempotency_key: Some("order-7".into()),
        ..JobFilter::default()
    };
    assert_eq!(list(&h, &keyed, None, 100, 1000).jobs[0].id, ids[10]);
    let failed = JobFilter {
        error_contains: Some("BOO".into()),
        ..JobFilter::default()
    };
    let failed = list(&h, &failed, None, 100, 1000);
    assert_eq!(
        failed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert_eq!(failed.jobs[0].status.last_error.as_deref(), Some("boom"));

    // A small scan budget stops early and says where to go on.
    let short = list(
        &h,
        &JobFilter {
            state: Some(JobState::Dead),
            ..JobFilter::default()
        },
        None,
        100,
        1,
    );
    assert_eq!(short.scanned, 1);
    let only_dead = JobFilter {
        error_contains: Some("boom".into()),
        ..JobFilter::default()
    };
    let short = list(&h, &only_dead, None, 100, 3);
    assert!(short.jobs.is_empty());
    // Fresh jobs cannot have an error: only the other jobs are examined.
    assert_eq!(short.next_before, Some(ids[3]), "the last job examined");
    let rest = list(&h, &only_dead, short.next_before, 100, 1000);
    assert_eq!(
        rest.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );

    // One job by id, only in its own queue.
    let one = h
        .state
        .list_one("q", ids[4], &JobFilter::default(), &h.defaults);
    assert_eq!(
        one.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4]]
    );
    assert!(h
        .state
        .list_one("other", ids[4], &JobFilter::default(), &h.defaults)
        .jobs
        .is_empty());
    assert!(h
        .state
        .list_jobs("nope", &JobFilter::default(), None, 10, 10, &h.defaults)
        .jobs
        .is_empty());
}

#[test]
fn the_oldest_ready_job_is_found_across_priorities_packed_or_not() {
    let mut h = Harness::new();
    let start = h.now;
    h.enqueue("q", vec![job("low")]);
    h.now += 1_000;
    let mut high = job("high");
    high.priority = 9;
    h.enqueue("q", vec![high]);
    let oldest = |h: &Harness| h.state.stats("q").expect("queue").oldest_ready_ms;
    assert_eq!(
        oldest(&h),
        Some(start),
        "the low-priority job waits longest"
    );
    let high = h.claim("q", "w", 1).remove(0);
    assert_eq!(high.priority, 9);
    assert_eq!(oldest(&h), Some(start));
    h.now += 200;
    let low = h.claim("q", "w", 1).remove(0);
    assert_eq!(low.priority, 0);
    h.now += 250;
    h.ack(low.id, 1).expect("ack");
    assert_eq!(h.state.stats("q").expect("queue").oldest_ready_ms, None);
    // The high one fails and comes back after its backoff (100 ms),
    // unpacked: ready since its retry time.
    h.nack(high.id, 1, false).expect("nack");
    let retry_at = h.now + 100;
    h.now += 500;
    h.enqueue("other", vec![job("tick")]);
    assert_eq!(oldest(&h), Some(retry_at));
}

#[test]
fn one_lease_in_sixteen_is_timed_to_its_ack() {
    let mut h = Harness::new();
    h.enqueue("q", (0..32).map(|n| job(&n.to_string())).collect());
    let leased = h.claim("q", "w", 32);
    h.now += 250;
    for job in &leased {
        h.ack(job.id, 1).expect("ack");
    }
    let timed = h.state.stats("q").expect("queue").lease_to_ack;
    // 32 consecutive positions of one entry: two are in the sample.
    assert_eq!(timed.count(), 2);
    assert!((timed.sum_seconds() - 0.5).abs() < 1e-9, "{timed:?}");
}

#[test]
fn one_idempotency_key_twice_in_one_batch_makes_one_job() {
    let mut h = Harness::new();
    let mut a = job("a");
    a.idempotency_key = Some("k".into());
    let results = h.apply(vec![
        Op::Enqueue {
            queue: "q".into(),
            jobs: vec![a.clone()],
        },
        Op::Enqueue {
            queue: "q".into(),
            jobs: vec![a.clone(), a],
        },
    ]);
    let ids: Vec<(JobId, bool)> = results
        .into_iter()
        .flat_map(|r| match r {
            OpResult::Enqueued(ids) => ids,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(h.stats("q").0, 1, "{ids:?}");
    assert!(ids.iter().all(|(id, _)| *id == ids[0].0));
    assert_eq!(
        ids.iter().map(|(_, dup)| *dup).collect::<Vec<_>>(),
        vec![false, true, true]
    );
    h.assert_rebuilds();
}
