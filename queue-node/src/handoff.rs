//! Hands this node's shard leaderships to peers before it stops, so a
//! rolling restart costs a short, planned election instead of a timeout.
//!
//! openraft 0.9 has no leader transfer, so for each shard this node leads
//! it stops proposing (clients get UNAVAILABLE "retry"), stops heartbeats
//! and stops campaigning itself; the followers' leader lease runs out and
//! one of them, holding every committed entry, is elected. Then this node
//! is an ordinary follower again, forwarding requests to the new leader.

use std::time::Duration;

use crate::context::{NodeContext, ShardHandle};
use crate::raft_types::NodeId;

/// What became of one shard this node led.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub shard: u32,
    /// `None`: no other node took over within the timeout.
    pub new_leader: Option<NodeId>,
}

fn leads_with_peers(shard: &ShardHandle, me: NodeId) -> bool {
    let m = shard.raft.metrics().borrow().clone();
    m.current_leader == Some(me)
        && m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v != me)
}

/// Steps down from every shard this node leads that has another voter, and
/// waits (up to `timeout` in all) until each has a new leader.
pub async fn step_down(ctx: &NodeContext, timeout: Duration) -> Vec<Handoff> {
    let all: Vec<u32> = ctx.shards.iter().map(|s| s.id).collect();
    step_down_shards(ctx, &all, timeout).await
}

/// [`step_down`] for the given shards only.
pub async fn step_down_shards(
    ctx: &NodeContext,
    shards: &[u32],
    timeout: Duration,
) -> Vec<Handoff> {
    let led: Vec<&ShardHandle> = ctx
        .shards
        .iter()
        .filter(|s| shards.contains(&s.id) && leads_with_peers(s, ctx.id))
        .collect();
    for shard in &led {
        shard.batcher.set_stepping_down(true);
        let runtime = shard.raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
    }
    let me = ctx.id;
    let waits = led.iter().map(|shard| async move {
        let moved = shard
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != me),
                "another node leads the shard",
            )
            .await;
        Handoff {
            shard: shard.id,
            new_leader: moved.ok().and_then(|m| m.current_leader),
        }
    });
    let outcomes = futures::future::join_all(waits).await;
    for shard in &led {
        let runtime = shard.raft.runtime_config();
        runtime.heartbeat(true);
        runtime.elect(true);
        shard.batcher.set_stepping_down(false);
    }
    for o in &outcomes {
        match o.new_leader {
            Some(leader) => tracing::info!(shard = o.shard, leader, "handed leadership over"),
            None => tracing::warn!(shard = o.shard, "no peer took leadership over in time"),
        }
    }
    outcomes
}

/// Right after this node created a cluster it leads every shard. Hands each
/// shard whose preferred leader (see `node::shard_raft_config`) is another
/// node over once that node has caught up, so the leaders, and the work
/// they do, spread over the nodes. Best effort: a shard that cannot be
/// handed over in time stays here.
pub async fn spread_leaders(ctx: &NodeContext, preferred: impl Fn(u32) -> NodeId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut give_away = Vec::new();
    for shard in &ctx.shards {
        let to = preferred(shard.id);
        if to == ctx.id {
            continue;
        }
        let caught_up = shard
            .raft
            .wait(Some(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            ))
            .metrics(
                |m| {
                    let last = m.last_log_index;
                    m.replication
                        .as_ref()
                        .is_some_and(|r| r.get(&to).copied().flatten().map(|l| l.index) == last)
                },
                "the preferred leader has every entry",
            )
            .await
            .is_ok();
        if caught_up {
            give_away.push(shard.id);
        }
    }
    if !give_away.is_empty() {
        step_down_shards(ctx, &give_away, Duration::from_secs(5)).await;
    }
}
