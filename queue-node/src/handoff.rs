//! Moves shard leaderships away from this node: all of them before it
//! stops, so a rolling restart costs a short, planned election instead of
//! a timeout, and one at a time when the balancer ([`balance`]) finds the
//! spread uneven.
//!
//! openraft 0.9 has no leader transfer. For each shard handed over, this
//! node stops proposing (clients get UNAVAILABLE "retry"), stops heartbeats
//! and stops campaigning itself, and asks the chosen successor, which
//! holds (nearly) every entry, to stand for election as soon as the
//! followers' leader lease has run out: it is the first to stand, so it
//! wins. If it cannot, the followers' own election timers elect one of
//! them. Then this node is an ordinary follower again, forwarding requests
//! to the new leader. Whom to choose is [`crate::leadership`]'s plan.

use std::sync::Arc;
use std::time::Duration;

use raftq_api::v1::raft_transport_client::RaftTransportClient;
use raftq_api::v1::CampaignRequest;

use crate::context::{NodeContext, ShardHandle};
use crate::leadership;
use crate::raft_types::NodeId;

/// A successor stands this long after the followers' leader lease (its
/// election timeout maximum) could have run out.
const CAMPAIGN_MARGIN_MS: u64 = 100;

/// How long a successor has to answer that it will stand.
const CAMPAIGN_ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// After stepping down, this node takes no leadership back for this long:
/// it is about to stop (a node that stepped down and kept running takes
/// part again afterwards).
const LEAVING_FOR: Duration = Duration::from_secs(60);

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

/// Steps down from every shard this node leads that has another voter,
/// each to the voter that leads the fewest shards, and waits (up to
/// `timeout` in all) until each has a new leader.
pub async fn step_down(ctx: &NodeContext, timeout: Duration) -> Vec<Handoff> {
    ctx.campaigns.close_for(LEAVING_FOR);
    let moves = leadership::successors(&leadership::view(ctx), ctx.id);
    hand_over(ctx, &moves, Leave::Always, timeout).await
}

/// Steps down from `shard` alone (a move takes this node's replica away),
/// to the ready voter leading the fewest shards.
pub async fn step_down_from(ctx: &NodeContext, shard: u32, timeout: Duration) -> Vec<Handoff> {
    let moves: Vec<_> = leadership::successors(&leadership::view(ctx), ctx.id)
        .into_iter()
        .filter(|(s, _)| *s == shard)
        .collect();
    hand_over(ctx, &moves, Leave::Always, timeout).await
}

/// Whether a shard is handed over when its successor cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Step down anyway: the followers elect one of them.
    Always,
    /// Keep leading: the move was only to even the spread.
    IfSuccessorAgrees,
}

/// Hands each `(shard, successor)` this node leads over (to any voter when
/// the successor is `None`), and waits up to `timeout` for new leaders.
pub async fn hand_over(
    ctx: &NodeContext,
    moves: &[(u32, Option<NodeId>)],
    leave: Leave,
    timeout: Duration,
) -> Vec<Handoff> {
    let mut led: Vec<(Arc<ShardHandle>, Option<NodeId>)> = Vec::new();
    for (shard, to) in moves {
        let Some(shard) = ctx.local(*shard) else {
            continue;
        };
        if !leads_with_peers(&shard, ctx.id) {
            continue;
        }
        // Asked first, so a successor that is down or cut off costs
        // nothing when the move is optional.
        // A successor whose answer is lost may stand all the same, so
        // only a clear refusal keeps this node leading.
        let agreed = match to {
            Some(to) => ask_to_campaign(ctx, &shard, *to).await != Answer::Refused,
            None => false,
        };
        if agreed || leave == Leave::Always {
            shard.batcher.set_stepping_down(true);
            let runtime = shard.raft.runtime_config();
            runtime.heartbeat(false);
            runtime.elect(false);
            led.push((shard, *to));
        }
    }
    let me = ctx.id;
    let waits = led.iter().map(|(shard, _)| async move {
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
    for (shard, _) in &led {
        let runtime = shard.raft.runtime_config();
        runtime.heartbeat(true);
        runtime.elect(true);
        shard.batcher.set_stepping_down(false);
    }
    for (o, (_, wanted)) in outcomes.iter().zip(&led) {
        match o.new_leader {
            Some(leader) => {
                tracing::info!(shard = o.shard, leader, ?wanted, "handed leadership over")
            }
            None => tracing::warn!(shard = o.shard, "no peer took leadership over in time"),
        }
    }
    outcomes
}

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Agreed,
    Refused,
    /// No answer in time: it may stand or not.
    Lost,
}

/// Asks `to` to stand for `shard` once the leader lease has run out (this
/// node stops its heartbeats right after).
async fn ask_to_campaign(ctx: &NodeContext, shard: &ShardHandle, to: NodeId) -> Answer {
    let (term, addr) = {
        let metrics = shard.raft.metrics();
        let m = metrics.borrow();
        let addr = m
            .membership_config
            .membership()
            .get_node(&to)
            .map(|n| n.addr.clone());
        (m.current_term, addr)
    };
    let Some(addr) = addr else {
        return Answer::Refused;
    };
    let lease = shard.raft.config().election_timeout_max;
    let request = CampaignRequest {
        shard: shard.id,
        term,
        after_ms: (lease + CAMPAIGN_MARGIN_MS).min(u64::from(u32::MAX)) as u32,
    };
    let channel = match ctx.peer(&addr) {
        Ok(channel) => channel,
        Err(_) => return Answer::Refused,
    };
    let mut client = RaftTransportClient::new(channel);
    match tokio::time::timeout(CAMPAIGN_ANSWER_WITHIN, client.campaign(request)).await {
        Ok(Ok(_)) => Answer::Agreed,
        Ok(Err(status)) => {
            tracing::info!(
                shard = shard.id,
                to,
                reason = status.message(),
                "successor will not stand"
            );
            Answer::Refused
        }
        Err(_) => Answer::Lost,
    }
}

/// Keeps leaderships spread: every `every`, if this node leads at least two
/// shards more than some voter that has caught up, hands one shard to it.
/// Runs until the node stops; a node on its way out hands nothing.
pub async fn balance(ctx: Arc<NodeContext>, every: Duration) {
    let mut pause = every;
    loop {
        tokio::time::sleep(pause).await;
        pause = every;
        if !ctx.campaigns.is_open() {
            continue;
        }
        if let Some((shard, to)) = leadership::next_move(&leadership::view(&ctx), ctx.id) {
            tracing::info!(shard, to, "leaderships are uneven: handing one over");
            hand_over(
                &ctx,
                &[(shard, Some(to))],
                Leave::IfSuccessorAgrees,
                Duration::from_secs(5),
            )
            .await;
            // More may be needed (one node led them all): look again soon.
            pause = every.min(Duration::from_secs(1));
        }
    }
}
