//! Which nodes hold which shards when a cluster starts: a pure function of
//! the initial members, the shard count and the replication factor, so
//! every node computes the same layout without asking anyone.
//!
//! With no replication factor every initial member holds every shard (a
//! cluster of 3 does the same work 3 times, as before placement existed).
//! With one, [`raftq_placement::target`] places each shard's voters on
//! that many nodes, replicas and preferred leaders even over the nodes.
//! Moving shards later is the metadata group's work, not this module's.

use std::collections::{BTreeMap, BTreeSet};

use raftq_placement::{Cluster, Node, Shard};

use crate::raft_types::NodeId;

/// Where every shard lives at cluster start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shard_count: u32,
    /// Each shard's voters, with their peer addresses.
    pub voters: BTreeMap<u32, BTreeMap<NodeId, String>>,
    /// The voter each shard's leadership is handed to when it is ready;
    /// empty when every node holds every shard (leaderships are then
    /// evened out by count alone).
    pub preferred_leaders: BTreeMap<u32, NodeId>,
    /// Voters per shard, when the cluster was created with a factor (its
    /// replicas can then be moved).
    pub replication_factor: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("replication_factor {factor} with {members} initial member(s): {reason}")]
    Refused {
        factor: u32,
        members: usize,
        reason: raftq_placement::Refusal,
    },
}

impl Layout {
    /// The layout of a cluster started with `members` (node id → peer
    /// address; this node alone when there are none), `shard_count`
    /// shards and `replication_factor` voters per shard (`None`: all).
    pub fn new(
        members: &BTreeMap<NodeId, String>,
        shard_count: u32,
        replication_factor: Option<u32>,
    ) -> Result<Layout, LayoutError> {
        let all = || members.clone();
        let Some(factor) = replication_factor else {
            return Ok(Layout {
                shard_count,
                voters: (0..shard_count).map(|s| (s, all())).collect(),
                preferred_leaders: BTreeMap::new(),
                replication_factor: None,
            });
        };
        let cluster = Cluster {
            nodes: members.keys().map(|&id| (id, Node::new(id))).collect(),
            shards: (0..shard_count).map(|s| (s, Shard::default())).collect(),
            replication_factor: factor as usize,
        };
        let target = raftq_placement::target(&cluster).map_err(|reason| LayoutError::Refused {
            factor,
            members: members.len(),
            reason,
        })?;
        let voters = target
            .voters
            .iter()
            .map(|(&shard, ids)| {
                let addrs = ids
                    .iter()
                    .filter_map(|id| members.get(id).map(|addr| (*id, addr.clone())))
                    .collect();
                (shard, addrs)
            })
            .collect();
        Ok(Layout {
            shard_count,
            voters,
            preferred_leaders: target.leaders,
            replication_factor: Some(factor),
        })
    }

    /// Whether every node holds every shard for good (no replication
    /// factor: replicas are never moved).
    pub fn is_full(&self) -> bool {
        self.replication_factor.is_none()
    }

    /// The shards `node` holds, in order.
    pub fn shards_of(&self, node: NodeId) -> Vec<u32> {
        self.voters
            .iter()
            .filter(|(_, voters)| voters.contains_key(&node))
            .map(|(&shard, _)| shard)
            .collect()
    }

    /// Every node of the cluster.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.voters
            .values()
            .flat_map(|voters| voters.keys().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> BTreeMap<NodeId, String> {
        (1..=n)
            .map(|id| (id, format!("10.0.0.{id}:7500")))
            .collect()
    }

    #[test]
    fn without_a_factor_every_member_holds_every_shard() {
        let layout = Layout::new(&members(3), 4, None).unwrap();
        assert!(layout.is_full());
        for node in 1..=3 {
            assert_eq!(layout.shards_of(node), vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn a_factor_equal_to_the_members_is_every_member_with_movable_replicas() {
        let layout = Layout::new(&members(3), 4, Some(3)).unwrap();
        let full = Layout::new(&members(3), 4, None).unwrap();
        assert_eq!(layout.voters, full.voters);
        assert!(!layout.is_full(), "a factor makes replicas movable");
        assert_eq!(layout.preferred_leaders.len(), 4);
    }

    #[test]
    fn six_nodes_at_factor_three_hold_six_of_twelve_shards_and_lead_two() {
        let layout = Layout::new(&members(6), 12, Some(3)).unwrap();
        assert!(!layout.is_full());
        for node in 1..=6 {
            assert_eq!(layout.shards_of(node).len(), 6, "node {node}");
            let leads = layout
                .preferred_leaders
                .values()
                .filter(|&&l| l == node)
                .count();
            assert_eq!(leads, 2, "node {node}");
        }
        for (shard, voters) in &layout.voters {
            assert_eq!(voters.len(), 3, "shard {shard}");
            assert!(voters.contains_key(&layout.preferred_leaders[shard]));
            assert!(voters.values().all(|addr| addr.starts_with("10.0.0.")));
        }
    }

    #[test]
    fn every_node_computes_the_same_layout() {
        let mut reversed: Vec<_> = members(5).into_iter().collect();
        reversed.reverse();
        let again: BTreeMap<_, _> = reversed.into_iter().collect();
        assert_eq!(
            Layout::new(&members(5), 16, Some(3)).unwrap(),
            Layout::new(&again, 16, Some(3)).unwrap()
        );
    }

    #[test]
    fn a_factor_beyond_the_members_is_refused_with_the_reason() {
        let err = Layout::new(&members(2), 4, Some(3))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("replication_factor 3 with 2 initial member(s)"),
            "{err}"
        );
        assert!(err.contains("needs 3 voters"), "{err}");
        let err = Layout::new(&members(6), 4, Some(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not 1, 3 or 5"), "{err}");
    }
}
