//! Where shard leaderships should be: a view of who leads what, as this
//! node's Raft metrics show it, and pure functions that plan moves from
//! it. Moving a leadership is [`crate::handoff`]'s job; nothing here acts.
//!
//! Each shard's leader does that shard's batching, fsyncs and replication,
//! so a node leading most shards does most of the cluster's work. When
//! shards are placed on some nodes only, the layout names each shard's
//! preferred leader (even over the nodes) and a shard goes back to it once
//! it is ready; otherwise, and for shards away from their preferred leader,
//! the plan keeps every node within one leadership of every other.

use std::collections::BTreeMap;

use crate::context::NodeContext;
use crate::raft_types::NodeId;

/// A voter this far behind the leader's log (in entries) is not asked to
/// take over: it would first have to catch up, with the shard unavailable.
const MAX_SUCCESSOR_LAG: u64 = 100;

/// One shard as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub shard: u32,
    pub leader: Option<NodeId>,
    pub voters: Vec<NodeId>,
    /// Voters other than the leader that hold (nearly) all of its log.
    /// Known only for shards this node leads.
    pub ready: Vec<NodeId>,
    /// The voter that should lead it, when the layout names one.
    pub preferred: Option<NodeId>,
    /// A move is under way (the shard has a learner): its leadership is
    /// the move's to hand over, not the balancer's.
    pub moving: bool,
}

/// Every shard of this node, from its Raft metrics.
pub fn view(ctx: &NodeContext) -> Vec<ShardView> {
    ctx.held()
        .iter()
        .map(|s| {
            let metrics = s.raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            let moving = membership.learner_ids().next().is_some();
            let preferred = preferred_leader(ctx, s.id, &voters);
            let last = m.last_log_index.unwrap_or(0);
            let ready = match &m.replication {
                Some(replication) if m.current_leader == Some(ctx.id) => voters
                    .iter()
                    .copied()
                    .filter(|v| *v != ctx.id)
                    .filter(|v| {
                        replication
                            .get(v)
                            .copied()
                            .flatten()
                            .is_some_and(|matched| matched.index + MAX_SUCCESSOR_LAG >= last)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            ShardView {
                shard: s.id,
                leader: m.current_leader,
                voters,
                ready,
                preferred,
                moving,
            }
        })
        .collect()
}

/// The voter that should lead `shard` with `voters`: the layout's
/// preferred leader while it is a voter; after a move took it away, the
/// voter that came in its place (the lowest id if several did), so a move
/// keeps the leaderships as even as the layout made them. Every member
/// computes the same answer from the same voters.
fn preferred_leader(ctx: &NodeContext, shard: u32, voters: &[NodeId]) -> Option<NodeId> {
    let placed = ctx.layout.preferred_leaders.get(&shard).copied()?;
    if voters.contains(&placed) {
        return Some(placed);
    }
    let initial = ctx.layout.voters.get(&shard);
    voters
        .iter()
        .copied()
        .filter(|v| initial.is_none_or(|i| !i.contains_key(v)))
        .min()
}

/// How many shards each voter (of any shard) leads.
fn leaderships(view: &[ShardView]) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = view
        .iter()
        .flat_map(|s| s.voters.iter().map(|v| (*v, 0)))
        .collect();
    for leader in view.iter().filter_map(|s| s.leader) {
        *counts.entry(leader).or_default() += 1;
    }
    counts
}

/// The ready voter of `shard` that leads the fewest shards (lowest id on a
/// tie, so every node plans alike).
fn least_loaded(shard: &ShardView, counts: &BTreeMap<NodeId, usize>) -> Option<NodeId> {
    shard
        .ready
        .iter()
        .copied()
        .min_by_key(|v| (counts.get(v).copied().unwrap_or(0), *v))
}

/// One move: a shard `me` leads to its preferred leader, once that one is
/// ready; else one that evens the spread: a shard `me` leads, to the ready voter
/// leading the fewest shards, when that voter leads at least two fewer
/// than `me` (a move between counts one apart only swaps them). `None`
/// while any shard has no leader: an election is under way, and the
/// counts are about to change anyway.
pub fn next_move(view: &[ShardView], me: NodeId) -> Option<(u32, NodeId)> {
    if view.iter().any(|s| s.leader.is_none()) {
        return None;
    }
    let led = || view.iter().filter(|s| s.leader == Some(me) && !s.moving);
    let back_home = led().find_map(|s| {
        s.preferred
            .filter(|p| *p != me && s.ready.contains(p))
            .map(|p| (s.shard, p))
    });
    if back_home.is_some() {
        return back_home;
    }
    let counts = leaderships(view);
    let mine = counts.get(&me).copied().unwrap_or(0);
    // A shard led by its preferred leader stays: moving it to even the
    // counts would only have it sent back.
    led()
        .filter(|s| s.preferred != Some(me))
        .filter_map(|s| least_loaded(s, &counts).map(|to| (s.shard, to)))
        .filter(|(_, to)| counts.get(to).copied().unwrap_or(0) + 2 <= mine)
        .min_by_key(|(shard, to)| (counts.get(to).copied().unwrap_or(0), *shard))
}

/// Who should take each shard `me` leads when `me` stops: the ready voter
/// leading the fewest shards, counting the shards given away before it.
/// `None` for a shard with no ready voter (its followers elect one).
pub fn successors(view: &[ShardView], me: NodeId) -> Vec<(u32, Option<NodeId>)> {
    let mut counts = leaderships(view);
    counts.remove(&me);
    view.iter()
        .filter(|s| s.leader == Some(me) && s.voters.iter().any(|v| *v != me))
        .map(|s| {
            let to = least_loaded(s, &counts);
            if let Some(to) = to {
                *counts.entry(to).or_default() += 1;
            }
            (s.shard, to)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(shard: u32, leader: NodeId, voters: &[NodeId], me: NodeId) -> ShardView {
        ShardView {
            shard,
            leader: Some(leader),
            voters: voters.to_vec(),
            ready: if leader == me {
                voters.iter().copied().filter(|v| *v != me).collect()
            } else {
                Vec::new()
            },
            preferred: None,
            moving: false,
        }
    }

    #[test]
    fn a_shard_goes_back_to_its_preferred_leader_once_it_is_ready() {
        let preferred = |mut s: ShardView, p| {
            s.preferred = Some(p);
            s
        };
        // Node 1 leads shard 0 (preferred: 2); node 3 leads shard 1 (its own).
        let mut view = vec![
            preferred(shard(0, 1, &[1, 2, 3], 1), 2),
            preferred(shard(1, 3, &[1, 3, 4], 1), 3),
        ];
        assert_eq!(next_move(&view, 1), Some((0, 2)));
        view[0].ready = vec![3];
        assert_eq!(next_move(&view, 1), None, "node 2 is behind: wait for it");
        // A shard at home is not moved to even the counts.
        let at_home = vec![
            preferred(shard(0, 1, &[1, 2, 3], 1), 1),
            preferred(shard(1, 1, &[1, 2, 3], 1), 1),
            preferred(shard(2, 1, &[1, 2, 3], 1), 1),
        ];
        assert_eq!(next_move(&at_home, 1), None);
    }

    #[test]
    fn moves_until_no_node_leads_two_more_than_another() {
        // Node 1 leads all four shards of a 3-node cluster (the operator's
        // bootstrap): it gives one to node 2, then one to node 3, then stops.
        let voters = [1, 2, 3];
        let mut leaders = vec![1, 1, 1, 1];
        let mut moves = 0;
        loop {
            let view: Vec<ShardView> = leaders
                .iter()
                .enumerate()
                .map(|(i, l)| shard(i as u32, *l, &voters, 1))
                .collect();
            match next_move(&view, 1) {
                Some((s, to)) => {
                    leaders[s as usize] = to;
                    moves += 1;
                }
                None => break,
            }
            assert!(moves <= 4, "the plan must converge: {leaders:?}");
        }
        assert_eq!(moves, 2, "{leaders:?}");
        let counts = leaderships(
            &leaders
                .iter()
                .enumerate()
                .map(|(i, l)| shard(i as u32, *l, &voters, 1))
                .collect::<Vec<_>>(),
        );
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![2, 1, 1]);
    }

    #[test]
    fn leaves_an_even_spread_and_elections_alone() {
        let view = vec![
            shard(0, 1, &[1, 2, 3], 1),
            shard(1, 1, &[1, 2, 3], 1),
            shard(2, 2, &[1, 2, 3], 1),
            shard(3, 3, &[1, 2, 3], 1),
        ];
        assert_eq!(next_move(&view, 1), None, "2/1/1 is as even as 4 on 3 gets");
        let mut electing = vec![
            shard(0, 1, &[1, 2, 3], 1),
            shard(1, 1, &[1, 2, 3], 1),
            shard(2, 1, &[1, 2, 3], 1),
        ];
        electing.push(ShardView {
            leader: None,
            ..shard(3, 1, &[1, 2, 3], 1)
        });
        assert_eq!(next_move(&electing, 1), None);
    }

    #[test]
    fn never_moves_to_a_voter_that_is_behind() {
        let mut view = vec![shard(0, 1, &[1, 2, 3], 1), shard(1, 1, &[1, 2, 3], 1)];
        for s in &mut view {
            s.ready = vec![3];
        }
        assert_eq!(next_move(&view, 1), Some((0, 3)));
        for s in &mut view {
            s.ready.clear();
        }
        assert_eq!(next_move(&view, 1), None);
    }

    #[test]
    fn a_stopping_node_spreads_its_shards_over_the_others() {
        // Node 1 leads shards 0-2, node 2 leads shard 3: node 3 gets two.
        let view = vec![
            shard(0, 1, &[1, 2, 3], 1),
            shard(1, 1, &[1, 2, 3], 1),
            shard(2, 1, &[1, 2, 3], 1),
            shard(3, 2, &[1, 2, 3], 1),
        ];
        assert_eq!(
            successors(&view, 1),
            vec![(0, Some(3)), (1, Some(2)), (2, Some(3))]
        );
        let alone = vec![shard(0, 1, &[1], 1)];
        assert!(successors(&alone, 1).is_empty(), "no peer to hand over to");
    }
}
