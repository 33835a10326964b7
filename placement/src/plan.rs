//! From the current placement to the target: which moves to start now.
//!
//! A move takes one replica of a shard from one node to another (or only
//! adds one, for a shard short of voters, or only removes one, for a
//! shard with too many). At most one move per node at a time, since each
//! copies a shard's data to or from it, and one per shard; a shard never
//! drops below its replication factor.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::balance::Target;
use crate::model::{Cluster, NodeId, ShardId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub shard: ShardId,
    /// The node that gets a replica.
    pub add: Option<NodeId>,
    /// The node whose replica goes.
    pub remove: Option<NodeId>,
}

impl Move {
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> {
        self.add.into_iter().chain(self.remove)
    }
}

/// The moves to start now, given those `under_way`, in shard order.
pub fn next_moves(cluster: &Cluster, target: &Target, under_way: &[Move]) -> Vec<Move> {
    let rf = cluster.replication_factor;
    let mut busy: BTreeSet<NodeId> = under_way.iter().flat_map(Move::nodes).collect();
    let moving: BTreeSet<ShardId> = under_way.iter().map(|m| m.shard).collect();
    let mut moves = Vec::new();
    for (&shard, wanted) in &target.voters {
        if moving.contains(&shard) {
            continue;
        }
        let empty = BTreeSet::new();
        let have = cluster.shards.get(&shard).map_or(&empty, |s| &s.voters);
        // A node that left the cluster has nothing under way to wait for.
        let free = |n: &NodeId| !busy.contains(n) || !cluster.nodes.contains_key(n);
        let add = wanted.difference(have).copied().find(|n| free(n));
        // Replicas on nodes that left or are draining go first.
        let remove = have
            .difference(wanted)
            .copied()
            .filter(|n| free(n))
            .min_by_key(|n| (cluster.nodes.get(n).is_some_and(|node| !node.draining), *n));
        let mv = match (add, remove) {
            (Some(add), Some(remove)) => Move {
                shard,
                add: Some(add),
                remove: Some(remove),
            },
            (Some(add), None) if have.len() < rf => Move {
                shard,
                add: Some(add),
                remove: None,
            },
            (None, Some(remove)) if have.len() > rf => Move {
                shard,
                add: None,
                remove: Some(remove),
            },
            _ => continue,
        };
        busy.extend(mv.nodes());
        moves.push(mv);
    }
    moves
}

/// Leadership hand-offs toward the target's leaders, for shards with no
/// move under way whose preferred leader is a voter already.
pub fn leader_transfers(
    cluster: &Cluster,
    target: &Target,
    under_way: &[Move],
) -> Vec<(ShardId, NodeId)> {
    let moving: BTreeSet<ShardId> = under_way.iter().map(|m| m.shard).collect();
    target
        .leaders
        .iter()
        .filter(|(shard, _)| !moving.contains(shard))
        .filter_map(|(&shard, &to)| {
            let now = cluster.shards.get(&shard)?;
            (now.leader.is_some() && now.leader != Some(to) && now.voters.contains(&to))
                .then_some((shard, to))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::balance::target;
    use crate::model::{Node, Shard};

    fn cluster(nodes: u64, rf: usize, shards: &[&[NodeId]]) -> Cluster {
        Cluster {
            nodes: (1..=nodes).map(|n| (n, Node::new(n))).collect(),
            shards: shards
                .iter()
                .enumerate()
                .map(|(i, voters)| {
                    let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
                    let leader = voters.first().copied();
                    (
                        i as ShardId,
                        Shard {
                            voters,
                            leader,
                            ..Shard::default()
                        },
                    )
                })
                .collect(),
            replication_factor: rf,
        }
    }

    /// Applies moves at once, as if each had finished.
    fn finish(cluster: &mut Cluster, moves: &[Move]) {
        for mv in moves {
            let shard = cluster.shards.entry(mv.shard).or_default();
            if let Some(r) = mv.remove {
                shard.voters.remove(&r);
                if shard.leader == Some(r) {
                    shard.leader = shard.voters.first().copied();
                }
            }
            if let Some(a) = mv.add {
                shard.voters.insert(a);
            }
            shard.epoch += 1;
        }
    }

    #[test]
    fn scaling_three_nodes_to_six_moves_one_replica_per_node_at_a_time() {
        let all: &[NodeId] = &[1, 2, 3];
        let mut c = cluster(6, 3, &[all; 12]);
        let goal = target(&c).expect("target");
        let (mut rounds, mut moved) = (0, 0);
        loop {
            let moves = next_moves(&c, &goal, &[]);
            if moves.is_empty() {
                break;
            }
            let mut seen = BTreeSet::new();
            for mv in &moves {
                for n in mv.nodes() {
                    assert!(seen.insert(n), "node {n} in two moves at once: {moves:?}");
                }
                assert!(mv.add.is_some() && mv.remove.is_some(), "a swap: {mv:?}");
            }
            moved += moves.len();
            finish(&mut c, &moves);
            rounds += 1;
            assert!(rounds < 50, "does not converge");
        }
        let counts = c.replicas_per_node();
        assert!(counts.values().all(|&n| n == 6), "{counts:?}");
        // 18 replicas move to the new nodes and no other moves; mostly
        // three at a time (each new node takes one per round).
        assert_eq!(moved, 18);
        assert!(rounds <= 8, "{rounds} rounds");
    }

    #[test]
    fn a_shard_never_drops_below_its_replication_factor() {
        // Shard 0 has five voters with rf 3: removals only; shard 1 has one.
        let mut c = cluster(5, 3, &[&[1, 2, 3, 4, 5], &[1]]);
        let goal = target(&c).expect("target");
        for _ in 0..10 {
            let moves = next_moves(&c, &goal, &[]);
            for mv in &moves {
                let have = c.shards[&mv.shard].voters.len();
                if mv.add.is_none() {
                    assert!(have > 3, "removal from a shard of {have}: {mv:?}");
                }
            }
            finish(&mut c, &moves);
        }
        assert_eq!(c.shards[&0].voters.len(), 3);
        assert_eq!(c.shards[&1].voters.len(), 3);
    }

    #[test]
    fn moves_under_way_block_their_shard_and_nodes() {
        let all: &[NodeId] = &[1, 2, 3];
        let c = cluster(6, 3, &[all; 4]);
        let goal = target(&c).expect("target");
        let first = next_moves(&c, &goal, &[]);
        assert!(!first.is_empty());
        let again = next_moves(&c, &goal, &first);
        for mv in &again {
            assert!(first.iter().all(|f| f.shard != mv.shard));
            for n in mv.nodes() {
                assert!(first.iter().all(|f| f.nodes().all(|m| m != n)));
            }
        }
    }

    #[test]
    fn a_draining_node_is_emptied_and_its_leadership_handed_off() {
        let mut c = cluster(4, 3, &[&[1, 2, 3], &[2, 3, 4], &[1, 3, 4], &[1, 2, 4]]);
        c.nodes.get_mut(&1).expect("node 1").draining = true;
        let goal = target(&c).expect("target");
        assert!(goal.voters.values().all(|v| !v.contains(&1)));
        assert!(goal.leaders.values().all(|&l| l != 1));
        let transfers: BTreeMap<ShardId, NodeId> =
            leader_transfers(&c, &goal, &[]).into_iter().collect();
        // Shards 0, 2 and 3 are led by node 1 now; 2 and 3 can hand off at
        // once, 0 after its move (node 4 is not a voter of it yet).
        assert!(transfers.values().all(|&to| to != 1));
        for _ in 0..5 {
            let moves = next_moves(&c, &goal, &[]);
            finish(&mut c, &moves);
        }
        assert_eq!(c.replicas_per_node()[&1], 0);
    }
}
