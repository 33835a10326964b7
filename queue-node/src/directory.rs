//! Where clients reach each member: node id → client address, for the
//! shard map. This node's own comes from its config; the others' are asked
//! of them (`ClusterAdmin.Status` on their peer port, as this node) when
//! they join a shard's membership and every [`REFRESH`] after, so an
//! address that changes with a restart is picked up.
//!
//! On a node that holds only some shards it also learns, from the same
//! answers asked every [`LOOK`], who leads each shard it does not hold, so
//! requests for those shards can be forwarded.
//!
//! The same answers carry the queue routing when the member has a newer
//! one than this node (the shard count grew), which is taken into
//! [`crate::routing::RoutingCell`].
//!
//! Owns only the address book; never changes membership or routes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;

use crate::context::NodeContext;
use crate::raft_types::NodeId;

/// How often every member is asked again.
const REFRESH: Duration = Duration::from_secs(30);
/// How often the membership is looked at for members not asked yet.
const LOOK: Duration = Duration::from_secs(1);
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct Directory {
    known: RwLock<BTreeMap<NodeId, String>>,
    /// Leaders of the shards this node does not hold, as their members
    /// last reported them.
    remote: RwLock<BTreeMap<u32, RemoteShard>>,
    /// Peer addresses of every member any answer named: after moves, the
    /// nodes that lead the shards this node does not hold may be none of
    /// the members it knows itself.
    peers: RwLock<BTreeMap<NodeId, String>>,
}

/// A shard held by other nodes, as one of its members reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteShard {
    pub leader: NodeId,
    /// The leader's peer address, where requests are forwarded.
    pub leader_peer_addr: String,
    pub term: u64,
    /// The log index of the shard's membership in the report.
    pub epoch: u64,
    pub members: Vec<NodeId>,
}

impl Directory {
    pub fn with_own(id: NodeId, client_addr: &str) -> Directory {
        let directory = Directory::default();
        directory.set(id, client_addr.to_string());
        directory
    }

    pub fn client_addr(&self, id: NodeId) -> Option<String> {
        self.read().get(&id).cloned()
    }

    pub fn all(&self) -> BTreeMap<NodeId, String> {
        self.read().clone()
    }

    /// Peer addresses of the members other nodes reported.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Who leads `shard`, a shard this node does not hold.
    pub fn remote_shard(&self, shard: u32) -> Option<RemoteShard> {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&shard)
            .cloned()
    }

    /// Takes in what `status` says of the shards this node does not hold:
    /// a report of a higher term wins; of the same term, one from the
    /// leader itself or of a newer membership.
    fn learn_remote(&self, status: &pb::ClusterStatus, held: &impl Fn(u32) -> bool) {
        {
            let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
            peers.insert(status.node_id, status.addr.clone());
            for member in status.shards.iter().flat_map(|s| &s.members) {
                peers.insert(member.node_id, member.addr.clone());
            }
        }
        let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
        for shard in status.shards.iter().filter(|s| !held(s.shard)) {
            if !shard.has_leader {
                continue;
            }
            let Some(leader) = shard.members.iter().find(|m| m.node_id == shard.leader_id) else {
                continue;
            };
            let newer = remote.get(&shard.shard).is_none_or(|known| {
                shard.term > known.term
                    || (shard.term == known.term
                        && (status.node_id == shard.leader_id || shard.epoch > known.epoch))
            });
            if newer {
                remote.insert(
                    shard.shard,
                    RemoteShard {
                        leader: shard.leader_id,
                        leader_peer_addr: leader.addr.clone(),
                        term: shard.term,
                        epoch: shard.epoch,
                        members: shard.members.iter().map(|m| m.node_id).collect(),
                    },
                );
            }
        }
    }

    fn set(&self, id: NodeId, addr: String) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, addr);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, String>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps `ctx.directory` filled while the node runs.
pub async fn run(ctx: Arc<NodeContext>) {
    let mut asked: BTreeMap<NodeId, tokio::time::Instant> = BTreeMap::new();
    loop {
        let now = tokio::time::Instant::now();
        // Shard leaders move at any time: with shards held elsewhere,
        // every node is asked at every look.
        let refresh = if ctx.holds_every_shard() {
            REFRESH
        } else {
            LOOK
        };
        let due: Vec<(NodeId, String)> = ctx
            .member_addrs()
            .into_iter()
            .filter(|(id, _)| *id != ctx.id)
            .filter(|(id, _)| asked.get(id).is_none_or(|at| now >= *at + refresh))
            .collect();
        let held = |shard| ctx.local(shard).is_some();
        // All at once: a member that is down costs one timeout, not one
        // per member behind it.
        let answers = futures::future::join_all(due.into_iter().map(|(id, peer_addr)| {
            let ctx = &ctx;
            async move { (id, ask(ctx, &peer_addr).await, peer_addr) }
        }))
        .await;
        for (id, answer, peer_addr) in answers {
            match answer {
                Ok(status) if status.node_id == id && !status.client_addr.is_empty() => {
                    ctx.directory.learn_remote(&status, &held);
                    ctx.directory.set(id, status.client_addr);
                    asked.insert(id, now);
                }
                Ok(status) => {
                    tracing::debug!(node = id, %peer_addr, answered = status.node_id, "a member's status named another node");
                }
                // Asked again at the next look: it may be starting.
                Err(e) => {
                    tracing::debug!(node = id, %peer_addr, error = %e, "could not ask a member for its client address")
                }
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

/// `ClusterAdmin.Status` of the node at `peer_addr`, asked as this node.
pub(crate) async fn ask(
    ctx: &NodeContext,
    peer_addr: &str,
) -> Result<pb::ClusterStatus, tonic::Status> {
    let mut client = ClusterAdminClient::new(ctx.peer(peer_addr)?);
    let call = client.status(pb::ClusterStatusRequest {
        routing_version: ctx.routing.version(),
    });
    let mut status = match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(answer) => answer?.into_inner(),
        Err(_) => return Err(tonic::Status::deadline_exceeded("no answer")),
    };
    // A newer queue routing (the shard count grew) comes with the answer.
    if let Some(routing) = status.routing.take() {
        ctx.routing.offer(routing.into());
    }
    Ok(status)
}
