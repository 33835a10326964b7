//! The history of a test run and the checker that judges it.
//!
//! Clients record what they asked and what they were told, in the order it
//! happened in this process (one lock, one sequence number). Afterwards
//! [`check`] looks for anything a durable at-least-once queue with fenced
//! leases must never do. The checker knows nothing about the cluster or the
//! faults: it judges only what a client could observe.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One observation. `key` is the idempotency key, which is also the payload,
/// so a delivery can be traced back to the enqueue that asked for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// An enqueue was sent (once per job per try).
    EnqueueInvoke { key: String },
    /// The server acknowledged the enqueue: the job must never be lost.
    EnqueueOk { key: String, job: String },
    /// The try failed or its answer was lost: the job may or may not exist.
    EnqueueUnknown { key: String },
    /// A fetch was sent by `worker`.
    FetchInvoke { worker: String },
    /// A job was handed to `worker` for `attempt`, leased until
    /// `expires_ms` on the cluster's clock, for `lease_ms`.
    Deliver {
        worker: String,
        key: String,
        job: String,
        attempt: u32,
        expires_ms: i64,
        lease_ms: i64,
        /// When the fetch that returned it was sent (the lease began later).
        fetch_sent: Instant,
    },
    /// An ack or nack of (job, attempt) was sent.
    SettleInvoke {
        job: String,
        attempt: u32,
        kind: Settle,
    },
    /// The server accepted it.
    SettleOk {
        job: String,
        attempt: u32,
        kind: Settle,
    },
    /// The server refused it (stale attempt, unknown job...), with a code.
    SettleRefused {
        job: String,
        attempt: u32,
        kind: Settle,
        code: i32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Back to the queue for another attempt.
    Retry,
    /// Straight to the dead-letter set.
    Dead,
    /// Handed back unstarted by a cleanly closed stream: ready again at
    /// once, the delivery counted.
    Release,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub at: Instant,
    pub op: Op,
}

/// Shared by every client task of a run.
#[derive(Default)]
pub struct History {
    events: Mutex<Vec<Event>>,
}

impl History {
    pub fn record(&self, op: Op) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let seq = events.len() as u64;
        events.push(Event {
            seq,
            at: Instant::now(),
            op,
        });
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the cluster holds at the end, per job id: `None` when the job is
/// gone (acked), else its state name (`"dead"`, `"ready"`...).
pub type FinalStates = HashMap<String, Option<String>>;

/// Counts and violations of one history.
#[derive(Debug, Default)]
pub struct Report {
    pub enqueued: usize,
    pub acknowledged: usize,
    pub deliveries: usize,
    pub acked: usize,
    pub dead: usize,
    pub redeliveries: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn lost(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| v.starts_with("lost"))
            .count()
    }
}

/// Slack for comparing lease windows measured on this process's clock with
/// lease lengths counted on the cluster's clock (rates may differ slightly;
/// the leader slews its clock by at most 1%).
const LEASE_RATE_SLACK: f64 = 0.02;
const LEASE_ABS_SLACK: Duration = Duration::from_millis(50);

pub fn check(events: &[Event], finals: &FinalStates) -> Report {
    let mut r = Report::default();
    let mut v = Vec::new();

    // Enqueues: one job id per key, ever.
    let mut invoked: BTreeSet<&str> = BTreeSet::new();
    let mut job_of_key: BTreeMap<&str, &str> = BTreeMap::new();
    let mut key_of_job: HashMap<&str, &str> = HashMap::new();
    for e in events {
        match &e.op {
            Op::EnqueueInvoke { key } => {
                invoked.insert(key);
            }
            Op::EnqueueOk { key, job } => {
                if let Some(prev) = job_of_key.insert(key, job) {
                    if prev != job {
                        v.push(format!(
                            "duplicate: idempotency key {key} created two jobs, {prev} and {job}"
                        ));
                    }
                }
                key_of_job.insert(job, key);
            }
            _ => {}
        }
    }
    r.enqueued = invoked.len();
    r.acknowledged = job_of_key.len();

    // Deliveries per job, in the order they reached a worker.
    let mut deliveries: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in events {
        if let Op::Deliver { key, job, .. } = &e.op {
            r.deliveries += 1;
            if !invoked.contains(key.as_str()) {
                v.push(format!(
                    "phantom: job {job} with payload {key} was never enqueued"
                ));
            }
            if let Some(expected) = job_of_key.get(key.as_str()) {
                if expected != job {
                    v.push(format!(
                        "duplicate: key {key} acknowledged as {expected} but delivered as {job}"
                    ));
                }
            }
            deliveries.entry(job).or_default().push(e);
        }
    }

    // Settlements per job.
    let mut settled_ok: HashMap<&str, Vec<(&Event, u32, Settle)>> = HashMap::new();
    let mut settle_sent: HashMap<(&str, u32), Vec<&Event>> = HashMap::new();
    let mut refused: BTreeSet<(&str, u32)> = BTreeSet::new();
    for e in events {
        match &e.op {
            Op::SettleRefused { job, attempt, .. } => {
                refused.insert((job, *attempt));
            }
            Op::SettleOk { job, attempt, kind } => {
                settled_ok
                    .entry(job)
                    .or_default()
                    .push((e, *attempt, *kind));
            }
            Op::SettleInvoke { job, attempt, .. } => {
                settle_sent.entry((job, *attempt)).or_default().push(e);
            }
            _ => {}
        }
    }

    for (job, ds) in &deliveries {
        let mut seen_attempts = BTreeSet::new();
        for d in ds {
            let Op::Deliver { attempt, .. } = &d.op else {
                continue;
            };
            if !seen_attempts.insert(*attempt) {
                v.push(format!(
                    "double lease: job {job} attempt {attempt} was handed out twice"
                ));
            }
        }
        r.redeliveries += ds.len().saturating_sub(1);
        // Consecutive leases must not overlap, unless the earlier one was
        // settled (nacked) before the later one was granted.
        for pair in ds.windows(2) {
            let (
                Op::Deliver {
                    attempt: a1,
                    expires_ms: e1,
                    fetch_sent: sent1,
                    lease_ms: l1,
                    worker: w1,
                    ..
                },
                Op::Deliver {
                    attempt: a2,
                    expires_ms: e2,
                    lease_ms: l2,
                    worker: w2,
                    ..
                },
            ) = (&pair[0].op, &pair[1].op)
            else {
                continue;
            };
            if a2 <= a1 {
                v.push(format!(
                    "attempts out of order: job {job} attempt {a2} delivered after attempt {a1}"
                ));
                continue;
            }
            // A nack or a stream's release ends the lease; one whose
            // answer was lost (a release has none) may have done so too.
            let released_early = settled_ok
                .get(job)
                .is_some_and(|s| s.iter().any(|(e, a, _)| *a == *a1 && e.seq < pair[1].seq))
                || settle_sent.get(&(job, *a1)).is_some_and(|sent| {
                    sent.iter().any(|e| {
                        matches!(
                            &e.op,
                            Op::SettleInvoke {
                                kind: Settle::Retry | Settle::Release,
                                ..
                            }
                        ) && e.seq < pair[1].seq
                            && !refused.contains(&(*job, *a1))
                    })
                });
            if released_early {
                continue;
            }
            // On the cluster's clock: the later lease began after the
            // earlier one ended.
            let granted2 = e2 - l2;
            if granted2 < *e1 {
                v.push(format!(
                    "overlapping leases: job {job} attempt {a1} ({w1}) leased until {e1}, attempt {a2} ({w2}) granted at {granted2} (cluster clock); its history: {}",
                    story(events, job)
                ));
            }
            // On this process's clock: the earlier lease cannot have ended
            // before its fetch was sent plus its length.
            let lease1 = Duration::from_millis((*l1).max(0) as u64);
            let min_end = *sent1 + lease1.mul_f64(1.0 - LEASE_RATE_SLACK);
            if pair[1].at + LEASE_ABS_SLACK < min_end {
                v.push(format!(
                    "lease cut short: job {job} attempt {a2} ({w2}) delivered {:?} before attempt {a1}'s {lease1:?} lease could end",
                    min_end - pair[1].at
                ));
            }
        }
    }

    // Settlements: only the current attempt, never twice, nothing returns.
    for (job, oks) in &settled_ok {
        let ds = deliveries.get(job).map(Vec::as_slice).unwrap_or(&[]);
        let final_oks: Vec<_> = oks
            .iter()
            .filter(|(_, _, k)| matches!(k, Settle::Ack | Settle::Dead))
            .collect();
        if final_oks.len() > 1 {
            v.push(format!(
                "settled twice: job {job} was acked or buried {} times",
                final_oks.len()
            ));
        }
        for (ok, attempt, kind) in oks {
            if !ds
                .iter()
                .any(|d| matches!(&d.op, Op::Deliver { attempt: a, .. } if a == attempt))
            {
                v.push(format!(
                    "unknown attempt: job {job} attempt {attempt} {kind:?} accepted but never delivered"
                ));
            }
            // A later attempt handed out before this settle was even sent
            // means the lease had moved on: the server had to refuse it.
            let sent_first = settle_sent
                .get(&(job, *attempt))
                .and_then(|s| s.iter().filter(|e| e.seq < ok.seq).map(|e| e.seq).min())
                .unwrap_or(ok.seq);
            if let Some(later) = ds.iter().find(|d| {
                matches!(&d.op, Op::Deliver { attempt: a, .. } if a > attempt) && d.seq < sent_first
            }) {
                let Op::Deliver { attempt: a, .. } = &later.op else {
                    continue;
                };
                v.push(format!(
                    "stale {kind:?} accepted: job {job} attempt {attempt} settled after attempt {a} was delivered"
                ));
            }
            if matches!(kind, Settle::Ack | Settle::Dead) {
                if let Some(back) = ds.iter().find(|d| d.seq > ok.seq) {
                    let Op::Deliver { attempt: a, .. } = &back.op else {
                        continue;
                    };
                    v.push(format!(
                        "came back: job {job} settled ({kind:?}) yet delivered again as attempt {a}"
                    ));
                }
            }
            match kind {
                Settle::Ack => r.acked += 1,
                Settle::Dead => r.dead += 1,
                Settle::Retry | Settle::Release => {}
            }
        }
    }

    // Every acknowledged job was delivered and ended acked or dead.
    for (key, job) in &job_of_key {
        if !deliveries.contains_key(job) {
            v.push(format!(
                "lost: job {job} (key {key}) was acknowledged but never delivered"
            ));
            continue;
        }
        let acked = settled_ok
            .get(job)
            .is_some_and(|s| s.iter().any(|(_, _, k)| *k == Settle::Ack));
        match finals.get(*job) {
            Some(None) if acked => {}
            Some(Some(state)) if state == "dead" && !acked => {
                // Buried by a nack or by running out of attempts.
                if !settled_ok
                    .get(job)
                    .is_some_and(|s| s.iter().any(|(_, _, k)| *k == Settle::Dead))
                {
                    r.dead += 1;
                }
            }
            // An ack whose answer never came may still have been applied.
            Some(None)
                if settle_sent.iter().any(|((j, _), sent)| {
                    j == job
                        && sent.iter().any(|e| {
                            matches!(
                                e.op,
                                Op::SettleInvoke {
                                    kind: Settle::Ack,
                                    ..
                                }
                            )
                        })
                }) => {}
            Some(None) => v.push(format!(
                "lost: job {job} (key {key}) is gone from the cluster but no ack was ever sent for it; its history: {}",
                story(events, job)
            )),
            Some(Some(state)) => v.push(format!(
                "unfinished: job {job} (key {key}) ended {state}{}",
                if acked { " although it was acked" } else { "" }
            )),
            None => v.push(format!("unchecked: job {job} (key {key}) has no final state")),
        }
    }

    r.violations = v;
    r
}

/// Everything that happened to `job`, for a violation's message.
fn story(events: &[Event], job: &str) -> String {
    events
        .iter()
        .filter(|e| match &e.op {
            Op::EnqueueOk { job: j, .. }
            | Op::Deliver { job: j, .. }
            | Op::SettleInvoke { job: j, .. }
            | Op::SettleOk { job: j, .. }
            | Op::SettleRefused { job: j, .. } => j == job,
            _ => false,
        })
        .map(|e| format!("#{} {:?}", e.seq, e.op))
        .collect::<Vec<_>>()
        .join("; ")
}
