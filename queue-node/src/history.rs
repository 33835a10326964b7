//! The last 15 minutes of every queue, as the console's charts show them:
//! depths and per-second rates of enqueues, acks, nacks and dead letters,
//! sampled from this node's applied state at a fixed interval.
//!
//! Node-local and in memory: the counters behind the rates count what this
//! node applied since it started (every replica applies every entry, so
//! any node's rates are the queue's), and a restart starts the window
//! afresh. The queues of shards held by other nodes are asked of those
//! shards' leaders at each sample. Reads the state machines; writes
//! nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::context::NodeContext;
use crate::fsm::QueueStats;

/// How far back the window reaches.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// A queue at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counts {
    ready: u64,
    scheduled: u64,
    leased: u64,
    dead: u64,
    enqueued: u64,
    acked: u64,
    nacked: u64,
    died: u64,
}

impl From<&raftq_api::v1::QueueStats> for Counts {
    fn from(s: &raftq_api::v1::QueueStats) -> Counts {
        Counts {
            ready: s.ready,
            scheduled: s.scheduled,
            leased: s.leased,
            dead: s.dead,
            enqueued: s.enqueued_total,
            acked: s.acked_total,
            nacked: s.nacked_total,
            died: s.dead_total,
        }
    }
}

impl From<&QueueStats> for Counts {
    fn from(s: &QueueStats) -> Counts {
        Counts {
            ready: s.ready,
            scheduled: s.scheduled,
            leased: s.leased,
            dead: s.dead,
            enqueued: s.totals.enqueued,
            acked: s.totals.acked,
            nacked: s.totals.nacked,
            died: s.totals.died,
        }
    }
}

struct Sample {
    at_ms: u64,
    queues: BTreeMap<String, Counts>,
}

/// One point of a queue's series: depths then, and rates since the point
/// before (per second).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    pub at_ms: u64,
    pub ready: u64,
    pub scheduled: u64,
    pub leased: u64,
    pub dead: u64,
    pub enqueue_rate: f64,
    pub ack_rate: f64,
    pub nack_rate: f64,
    pub dead_rate: f64,
}

pub struct History {
    every: Duration,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new(every: Duration) -> History {
        History {
            every,
            samples: Mutex::new(VecDeque::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.every
    }

    #[cfg(test)]
    fn record(&self, at_ms: u64, stats: &[QueueStats]) {
        let queues = stats
            .iter()
            .map(|s| (s.queue.clone(), Counts::from(s)))
            .collect();
        self.record_counts(at_ms, queues);
    }

    fn record_counts(&self, at_ms: u64, queues: BTreeMap<String, Counts>) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back(Sample { at_ms, queues });
        let keep = (WINDOW.as_millis() / self.every.as_millis().max(1)) as usize + 1;
        while samples.len() > keep {
            samples.pop_front();
        }
    }

    /// Each queue `wanted` lets through, with its points oldest first (the
    /// first sample has no rates, so it starts the series only as depths).
    pub fn series(&self, wanted: impl Fn(&str) -> bool) -> BTreeMap<String, Vec<Point>> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        let mut previous: Option<&Sample> = None;
        for sample in samples.iter() {
            for (queue, now) in sample.queues.iter().filter(|(q, _)| wanted(q)) {
                let before = previous.and_then(|p| Some((p.at_ms, *p.queues.get(queue)?)));
                let rate = |pick: fn(&Counts) -> u64| match before {
                    Some((at_ms, then)) if sample.at_ms > at_ms => {
                        // A counter that went back was reset (the
                        // shard's state was rebuilt): no rate.
                        pick(now).saturating_sub(pick(&then)) as f64 * 1000.0
                            / (sample.at_ms - at_ms) as f64
                    }
                    _ => 0.0,
                };
                out.entry(queue.clone()).or_default().push(Point {
                    at_ms: sample.at_ms,
                    ready: now.ready,
                    scheduled: now.scheduled,
                    leased: now.leased,
                    dead: now.dead,
                    enqueue_rate: rate(|c| c.enqueued),
                    ack_rate: rate(|c| c.acked),
                    nack_rate: rate(|c| c.nacked),
                    dead_rate: rate(|c| c.died),
                });
            }
            previous = Some(sample);
        }
        out
    }

    /// Samples every shard's applied state each interval, for ever.
    pub async fn run(self: Arc<Self>, ctx: Arc<NodeContext>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut queues: BTreeMap<String, Counts> = BTreeMap::new();
            for shard in ctx.held().iter() {
                let stats = shard.shared.state().all_stats();
                queues.extend(stats.iter().map(|s| (s.queue.clone(), Counts::from(s))));
            }
            if !ctx.holds_every_shard() {
                queues.extend(held_elsewhere(&ctx, self.every).await);
            }
            self.record_counts(unix_ms(), queues);
        }
    }
}

/// The queues of the shards other nodes hold, each from its leader as the
/// directory knows it; a shard that does not answer within `within` is
/// left out of this sample.
async fn held_elsewhere(ctx: &NodeContext, within: Duration) -> Vec<(String, Counts)> {
    let me = crate::security::Caller::this_node(ctx.id);
    let asks = ctx
        .shard_ids()
        .filter(|&shard| ctx.local(shard).is_none())
        .filter_map(|shard| Some((shard, ctx.directory.remote_shard(shard)?)))
        .map(|(shard, remote)| {
            let me = &me;
            async move {
                let channel = ctx.peer(&remote.leader_peer_addr).ok()?;
                let request = crate::forward::forwarded_for_shard(
                    raftq_api::v1::StatsRequest::default(),
                    shard,
                    me,
                );
                let mut admin = raftq_api::v1::queue_admin_client::QueueAdminClient::new(channel);
                let answer = tokio::time::timeout(within, admin.stats(request)).await;
                match answer {
                    Ok(Ok(stats)) => Some(stats.into_inner().queues),
                    Ok(Err(status)) => {
                        tracing::debug!(shard, %status, "no sample of a shard held elsewhere");
                        None
                    }
                    Err(_) => None,
                }
            }
        });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .map(|q| (q.queue.clone(), Counts::from(&q)))
        .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::QueueTotals;

    fn stats(queue: &str, ready: u64, enqueued: u64, acked: u64) -> QueueStats {
        QueueStats {
            queue: queue.into(),
            ready,
            scheduled: 0,
            leased: 0,
            dead: 0,
            paused: false,
            totals: QueueTotals {
                enqueued,
                acked,
                ..QueueTotals::default()
            },
            oldest_ready_ms: None,
            lease_to_ack: Default::default(),
        }
    }

    #[test]
    fn rates_are_the_counters_differences_per_second_and_the_window_is_bounded() {
        let history = History::new(Duration::from_secs(10));
        history.record(0, &[stats("a", 5, 100, 0)]);
        history.record(10_000, &[stats("a", 7, 300, 50), stats("b", 1, 1, 0)]);
        // A restart: counters start again from zero.
        history.record(20_000, &[stats("a", 7, 10, 0)]);
        let series = history.series(|q| q == "a");
        assert_eq!(series.len(), 1, "only what the filter lets through");
        let a = &series["a"];
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].enqueue_rate, 0.0);
        assert_eq!(
            (a[1].enqueue_rate, a[1].ack_rate, a[1].ready),
            (20.0, 5.0, 7)
        );
        assert_eq!(a[2].enqueue_rate, 0.0);
        // 15 minutes at 10 s: 91 samples at most.
        for n in 3..200 {
            history.record(n * 10_000, &[stats("a", 0, n, 0)]);
        }
        assert_eq!(history.series(|_| true)["a"].len(), 91);
    }
}
