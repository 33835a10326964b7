//! What placement reasons about: the nodes, each shard's members and
//! leader, and the replication factor. Owned by the metadata group; this
//! module only describes it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub type NodeId = u64;
pub type ShardId = u32;

/// A queue node as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    /// The failure domain (a Kubernetes node's `topology.kubernetes.io/zone`);
    /// a shard's replicas are spread over as many zones as it can be.
    pub zone: Option<String>,
    /// Being emptied before it leaves: it takes no replica and no
    /// leadership, and those it has are moved away.
    pub draining: bool,
}

impl Node {
    pub fn new(id: NodeId) -> Node {
        Node {
            id,
            zone: None,
            draining: false,
        }
    }

    pub fn in_zone(mut self, zone: &str) -> Node {
        self.zone = Some(zone.to_string());
        self
    }
}

/// One shard's Raft group as it is now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members: a move's incoming replica while it catches up.
    pub learners: BTreeSet<NodeId>,
    pub leader: Option<NodeId>,
    /// Grows on every change of members or leader, so a client can tell
    /// which of two shard maps is newer.
    pub epoch: u64,
}

/// The whole cluster: nodes, shards and how many voters each shard has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub shards: BTreeMap<ShardId, Shard>,
    /// Voters per shard: 1, 3 or 5.
    pub replication_factor: usize,
}

impl Cluster {
    /// The nodes that take replicas and leadership, by id.
    pub fn active_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| !n.draining)
    }

    pub fn zone_of(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).and_then(|n| n.zone.as_deref())
    }

    /// How many shards have a voter on each node (every node listed).
    pub fn replicas_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|&n| (n, 0)).collect();
        for shard in self.shards.values() {
            for voter in &shard.voters {
                *counts.entry(*voter).or_default() += 1;
            }
        }
        counts
    }

    /// How many shards each node leads (every node listed).
    pub fn leaders_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|&n| (n, 0)).collect();
        for leader in self.shards.values().filter_map(|s| s.leader) {
            *counts.entry(leader).or_default() += 1;
        }
        counts
    }
}
