//! The target placement: each shard's voters and preferred leader.
//!
//! Rules, in order of weight: every shard has `replication_factor` voters
//! on distinct nodes that take work (not draining); a shard's voters span
//! as many zones as they can, and evening out never lowers that spread;
//! replicas are even over the nodes (the fullest and emptiest differ by at
//! most one where zones allow); leaders are even over the nodes; and of
//! the placements that do all that, the one closest to the current, so a
//! balanced cluster is left as it is and a new node takes only its share.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::model::{Cluster, NodeId, ShardId};

/// Why no target can be computed; the cluster is left as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("replication factor {0} is not 1, 3 or 5")]
    ReplicationFactor(usize),
    #[error(
        "{active} node(s) take replicas but each shard needs {needed} voters on different nodes; \
         add nodes or stop draining"
    )]
    TooFewNodes { active: usize, needed: usize },
}

/// Where every shard's voters should be and which of them should lead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub voters: BTreeMap<ShardId, BTreeSet<NodeId>>,
    pub leaders: BTreeMap<ShardId, NodeId>,
}

pub fn target(cluster: &Cluster) -> Result<Target, Refusal> {
    let rf = cluster.replication_factor;
    if ![1, 3, 5].contains(&rf) {
        return Err(Refusal::ReplicationFactor(rf));
    }
    let active: BTreeSet<NodeId> = cluster.active_nodes().map(|n| n.id).collect();
    if active.len() < rf {
        return Err(Refusal::TooFewNodes {
            active: active.len(),
            needed: rf,
        });
    }
    let mut layout = Layout::new(cluster, &active);
    let shards: Vec<ShardId> = cluster.shards.keys().copied().collect();
    for &shard in &shards {
        layout.trim(shard, rf);
        layout.fill(shard, rf);
    }
    layout.spread_out();
    layout.even_out();
    let leaders = leaders(cluster, &layout.voters, &active);
    Ok(Target {
        voters: layout.voters,
        leaders,
    })
}

/// Voters being decided, with the replica count of every active node.
struct Layout<'a> {
    cluster: &'a Cluster,
    voters: BTreeMap<ShardId, BTreeSet<NodeId>>,
    counts: BTreeMap<NodeId, usize>,
}

impl<'a> Layout<'a> {
    /// Starts from the current voters that are on active nodes.
    fn new(cluster: &'a Cluster, active: &BTreeSet<NodeId>) -> Layout<'a> {
        let mut counts: BTreeMap<NodeId, usize> = active.iter().map(|&n| (n, 0)).collect();
        let voters = cluster
            .shards
            .iter()
            .map(|(&id, shard)| {
                let kept: BTreeSet<NodeId> = shard.voters.intersection(active).copied().collect();
                for n in &kept {
                    *counts.entry(*n).or_default() += 1;
                }
                (id, kept)
            })
            .collect();
        Layout {
            cluster,
            voters,
            counts,
        }
    }

    /// How many of `members` are in `node`'s zone (nodes without a zone
    /// count as one zone of their own kind).
    fn zone_crowd(&self, members: &BTreeSet<NodeId>, node: NodeId) -> usize {
        let zone = self.cluster.zone_of(node);
        members
            .iter()
            .filter(|&&m| self.cluster.zone_of(m) == zone)
            .count()
    }

    fn spread(&self, members: &BTreeSet<NodeId>) -> usize {
        members
            .iter()
            .map(|&m| self.cluster.zone_of(m))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Drops voters past `rf`: from the most crowded zone, then the
    /// fullest node, then the highest id.
    fn trim(&mut self, shard: ShardId, rf: usize) {
        while self.voters[&shard].len() > rf {
            let members = &self.voters[&shard];
            let Some(victim) = members
                .iter()
                .copied()
                .max_by_key(|&n| (self.zone_crowd(members, n), self.counts[&n], n))
            else {
                return;
            };
            self.remove(shard, victim);
        }
    }

    /// Adds voters up to `rf`: from a zone the shard is not in yet, then
    /// the emptiest node, then the lowest id.
    fn fill(&mut self, shard: ShardId, rf: usize) {
        while self.voters[&shard].len() < rf {
            let members = &self.voters[&shard];
            let Some(pick) = self
                .counts
                .keys()
                .copied()
                .filter(|n| !members.contains(n))
                .min_by_key(|&n| (self.zone_crowd(members, n), self.counts[&n], n))
            else {
                return;
            };
            self.add(shard, pick);
        }
    }

    /// Swaps voters until every shard spans as many zones as it can: a
    /// voter that shares its zone with another (the fullest node first)
    /// for the emptiest node of a zone the shard lacks. Zones may be
    /// declared after the shards were placed. Each swap raises one shard's
    /// spread, so this ends.
    fn spread_out(&mut self) {
        let shards: Vec<ShardId> = self.voters.keys().copied().collect();
        for shard in shards {
            loop {
                let members = &self.voters[&shard];
                let present: BTreeSet<Option<&str>> =
                    members.iter().map(|&m| self.cluster.zone_of(m)).collect();
                let to = self
                    .counts
                    .keys()
                    .copied()
                    .filter(|&n| !present.contains(&self.cluster.zone_of(n)))
                    .min_by_key(|&n| (self.counts[&n], n));
                let from = members
                    .iter()
                    .copied()
                    .filter(|&m| self.zone_crowd(members, m) > 1)
                    .max_by_key(|&m| (self.zone_crowd(members, m), self.counts[&m], m));
                let (Some(from), Some(to)) = (from, to) else {
                    break;
                };
                self.remove(shard, from);
                self.add(shard, to);
            }
        }
    }

    /// Moves replicas from fuller to emptier nodes while two differ by more
    /// than one and a move keeps the shard's zone spread. Each move lowers
    /// the sum of the squared counts, so this ends.
    fn even_out(&mut self) {
        while let Some((shard, from, to)) = self.next_even_move() {
            self.remove(shard, from);
            self.add(shard, to);
        }
    }

    fn next_even_move(&self) -> Option<(ShardId, NodeId, NodeId)> {
        let mut fullest: Vec<NodeId> = self.counts.keys().copied().collect();
        fullest.sort_by_key(|&n| (std::cmp::Reverse(self.counts[&n]), n));
        let mut emptiest = fullest.clone();
        emptiest.sort_by_key(|&n| (self.counts[&n], n));
        for &from in &fullest {
            for &to in &emptiest {
                if self.counts[&from] <= self.counts[&to] + 1 {
                    break;
                }
                for (&shard, members) in &self.voters {
                    if !members.contains(&from) || members.contains(&to) {
                        continue;
                    }
                    let mut moved = members.clone();
                    moved.remove(&from);
                    moved.insert(to);
                    if self.spread(&moved) >= self.spread(members) {
                        return Some((shard, from, to));
                    }
                }
            }
        }
        None
    }

    fn add(&mut self, shard: ShardId, node: NodeId) {
        if let Some(members) = self.voters.get_mut(&shard) {
            if members.insert(node) {
                *self.counts.entry(node).or_default() += 1;
            }
        }
    }

    fn remove(&mut self, shard: ShardId, node: NodeId) {
        if let Some(members) = self.voters.get_mut(&shard) {
            if members.remove(&node) {
                if let Some(c) = self.counts.get_mut(&node) {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }
}

/// One leader per shard among its voters, even over the active nodes:
/// current leaders are kept up to a node's fair share, the rest go to the
/// voter leading fewest, then leadership is shifted along chains of
/// shards (a leads x where b votes, b leads y where c votes, ...) until no
/// node leads two more than one it could hand a shard to, directly or
/// along such a chain.
fn leaders(
    cluster: &Cluster,
    voters: &BTreeMap<ShardId, BTreeSet<NodeId>>,
    active: &BTreeSet<NodeId>,
) -> BTreeMap<ShardId, NodeId> {
    let share = voters.len().div_ceil(active.len().max(1));
    let mut count: BTreeMap<NodeId, usize> = active.iter().map(|&n| (n, 0)).collect();
    let mut leaders = BTreeMap::new();
    for (&shard, members) in voters {
        let current = cluster.shards.get(&shard).and_then(|s| s.leader);
        if let Some(l) = current.filter(|l| members.contains(l)) {
            if count[&l] < share {
                leaders.insert(shard, l);
                *count.entry(l).or_default() += 1;
            }
        }
    }
    for (&shard, members) in voters {
        if leaders.contains_key(&shard) {
            continue;
        }
        if let Some(pick) = members.iter().copied().min_by_key(|&n| (count[&n], n)) {
            leaders.insert(shard, pick);
            *count.entry(pick).or_default() += 1;
        }
    }
    while let Some(path) = leader_chain(voters, &leaders, &count) {
        // Each shard on the path passes to the next node: the first node
        // leads one fewer, the last one more, the rest the same.
        for (shard, to) in path {
            if let Some(from) = leaders.insert(shard, to) {
                *count.entry(from).or_default() -= 1;
            }
            *count.entry(to).or_default() += 1;
        }
    }
    leaders
}

/// The shortest chain of hand-offs from the node leading most to a node
/// leading at least two fewer (breadth first, in id order), as
/// (shard, new leader) pairs; `None` when there is none.
fn leader_chain(
    voters: &BTreeMap<ShardId, BTreeSet<NodeId>>,
    leaders: &BTreeMap<ShardId, NodeId>,
    count: &BTreeMap<NodeId, usize>,
) -> Option<Vec<(ShardId, NodeId)>> {
    let mut sources: Vec<NodeId> = count.keys().copied().collect();
    sources.sort_by_key(|&n| (std::cmp::Reverse(count[&n]), n));
    for &start in &sources {
        let mut came_from: BTreeMap<NodeId, (NodeId, ShardId)> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            if count[&node] + 2 <= count[&start] {
                let mut path = Vec::new();
                let mut at = node;
                while at != start {
                    let (prev, shard) = came_from[&at];
                    path.push((shard, at));
                    at = prev;
                }
                path.reverse();
                return Some(path);
            }
            for (&shard, &leader) in leaders {
                if leader != node {
                    continue;
                }
                for &next in &voters[&shard] {
                    if next != start && count.contains_key(&next) && !came_from.contains_key(&next)
                    {
                        came_from.insert(next, (node, shard));
                        queue.push_back(next);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
