//! Growing the shard count (`ClusterAdmin.GrowShards`), run by the node
//! that leads the metadata shard, and keeping this node's copy of the
//! queue routing current from its own replica of that shard.
//!
//! A growth, step by step (each idempotent, so a growth cut short is
//! finished by asking again):
//!
//! 1. **create_shards**: placement picks the voters of each new shard
//!    among the declared nodes (or the initial members); each opens an
//!    empty replica, and one creates the shard's Raft group with them.
//! 2. **fence**: every shard, old and new, applies `Op::Fence` for the new
//!    count. From then on it takes a queue it holds nothing of only when
//!    the queue hashes to it among the new count, and it answers the
//!    queues it keeps that hash elsewhere.
//! 3. **route**: the routing (new count, those queues pinned where they
//!    are) is proposed on the metadata shard; nodes learn it from their
//!    replica of it or from their peers ([`crate::directory`]).
//!
//! No job moves between Raft groups: a queue that holds anything stays
//! where it is, and only queues with nothing stored follow the new hash.
//! Between steps 2 and 3 a node with the old routing may send a new queue
//! to a shard that no longer takes it: the shard refuses it (retry), and
//! never creates it in the wrong place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_placement::{Cluster, Shard};
use tokio::sync::mpsc;
use tonic::Status;

use crate::context::{NodeContext, Route, ShardHandle};
use crate::coordinator::METADATA_SHARD;
use crate::forward::{self, forwarded};
use crate::ops::{NodeRecord, Op, OpResult};
use crate::raft_types::NodeId;
use crate::routing::{Routing, MAX_SHARDS};
use crate::security::Caller;

/// How often this node's replica of the metadata shard is looked at.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);
/// How long a new shard may take to elect its first leader, and a shard
/// to answer a fence.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
const LOOK_EVERY: Duration = Duration::from_millis(200);

type Updates = mpsc::Sender<Result<pb::GrowProgress, Status>>;

/// Keeps `ctx.routing` as this node's replica of the metadata shard has
/// it, while the node holds one.
pub async fn follow_local(ctx: Arc<NodeContext>) {
    loop {
        if let Some(meta) = ctx.local(METADATA_SHARD) {
            let newer = {
                let state = meta.shared.state();
                state
                    .routing()
                    .filter(|r| r.version > ctx.routing.version())
                    .cloned()
            };
            if let Some(routing) = newer {
                ctx.routing.offer(routing);
            }
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// Checks a `GrowShardsRequest` on any node.
pub fn check(ctx: &NodeContext, req: &pb::GrowShardsRequest) -> Result<u32, Status> {
    if ctx.layout.is_full() {
        return Err(Status::failed_precondition(
            "this cluster has no replication factor: every node holds every shard, and the shard count cannot grow; create the cluster with replication_factor to grow it later",
        ));
    }
    if req.shard_count == 0 || req.shard_count > MAX_SHARDS {
        return Err(Status::invalid_argument(format!(
            "shard_count must be in 1..={MAX_SHARDS} (got {})",
            req.shard_count
        )));
    }
    Ok(req.shard_count)
}

/// Runs a growth to `shard_count` shards on this node, which leads the
/// metadata shard `meta`, sending each step to `updates`.
pub async fn run(
    ctx: &NodeContext,
    meta: Arc<ShardHandle>,
    shard_count: u32,
    caller: Caller,
    updates: Updates,
) {
    let grower = Grower {
        ctx,
        caller,
        updates: updates.clone(),
    };
    if let Err(e) = grower.grow(&meta, shard_count).await {
        let _ = updates.send(Err(e)).await;
    }
}

struct Grower<'a> {
    ctx: &'a NodeContext,
    caller: Caller,
    updates: Updates,
}

impl Grower<'_> {
    async fn say(&self, step: &str, detail: String) {
        tracing::info!(step, %detail, "growing the shard count");
        let _ = self
            .updates
            .send(Ok(pb::GrowProgress {
                step: step.to_owned(),
                detail,
            }))
            .await;
    }

    async fn grow(&self, meta: &ShardHandle, shard_count: u32) -> Result<(), Status> {
        // Two growths at once would fence for one count and route by the
        // other: the second waits, then starts from what the first did.
        let _one_at_a_time = self.ctx.growing.lock().await;
        let current = self.current_routing(meta).await?;
        if shard_count < current.shard_count {
            return Err(Status::failed_precondition(format!(
                "the cluster has {} shards; the shard count only grows (asked for {shard_count})",
                current.shard_count
            )));
        }
        if shard_count == current.shard_count {
            self.say(
                "done",
                format!("the cluster has {shard_count} shards already"),
            )
            .await;
            return Ok(());
        }
        self.create_shards(current.shard_count, shard_count).await?;
        let mut pins = Vec::new();
        for shard in 0..shard_count {
            let pinned = self.fence(shard, shard_count).await?;
            self.say(
                "fence",
                format!(
                    "shard {shard} takes new queues that hash to it among {shard_count} and keeps {} queue(s) that hash elsewhere",
                    pinned.len()
                ),
            )
            .await;
            pins.extend(pinned.into_iter().map(|queue| (queue, shard)));
        }
        let routing = current.grown(shard_count, pins);
        let (version, pinned) = (routing.version, routing.pins.len());
        let op = Op::SetRouting {
            routing: routing.clone(),
        };
        match submit(meta, op).await? {
            OpResult::RoutingSet => {}
            OpResult::Failed(e) => {
                return Err(Status::aborted(format!(
                    "{e}; run the growth again: it starts from the routing in force"
                )))
            }
            other => return Err(Status::internal(format!("unexpected result {other:?}"))),
        }
        self.ctx.routing.offer(routing);
        self.say(
            "route",
            format!("routing version {version}: {shard_count} shards, {pinned} queue(s) pinned where they were"),
        )
        .await;
        self.say("done", format!("the cluster has {shard_count} shards"))
            .await;
        Ok(())
    }

    /// The routing in force, read after confirming this node still leads
    /// the metadata shard.
    async fn current_routing(&self, meta: &ShardHandle) -> Result<Routing, Status> {
        match tokio::time::timeout(STEP_TIMEOUT, meta.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Status::unavailable(format!(
                    "this node cannot confirm it leads shard {METADATA_SHARD} ({e}); retry"
                )))
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "leadership of shard {METADATA_SHARD} not confirmed in time; retry"
                )))
            }
        }
        let state = meta.shared.state();
        Ok(state
            .routing()
            .cloned()
            .unwrap_or_else(|| Routing::initial(self.ctx.layout.shard_count)))
    }

    /// The nodes replicas go on: the declared ones, or the members the
    /// cluster was created with when none were declared.
    fn nodes(&self) -> Vec<NodeRecord> {
        crate::coordinator::declared(self.ctx).unwrap_or_else(|| {
            let mut nodes: BTreeMap<NodeId, String> = BTreeMap::new();
            for voters in self.ctx.layout.voters.values() {
                nodes.extend(voters.iter().map(|(id, addr)| (*id, addr.clone())));
            }
            nodes
                .into_iter()
                .map(|(id, addr)| NodeRecord {
                    id,
                    addr,
                    zone: None,
                    draining: false,
                })
                .collect()
        })
    }

    /// Creates the Raft groups of shards `from..to` that do not have a
    /// leader yet, and waits until each has one.
    async fn create_shards(&self, from: u32, to: u32) -> Result<(), Status> {
        let nodes = self.nodes();
        let seen = crate::coordinator::observe(self.ctx, &nodes).await;
        for shard in 0..from {
            if !seen.shards.contains_key(&shard) {
                return Err(Status::unavailable(format!(
                    "shard {shard}'s leader did not answer; nothing was changed; retry"
                )));
            }
        }
        let factor = self.ctx.layout.replication_factor.unwrap_or(1) as usize;
        let mut shards: BTreeMap<u32, Shard> = seen.shards.clone();
        for shard in from..to {
            shards.entry(shard).or_default();
        }
        let cluster = Cluster {
            nodes: crate::coordinator::placement_nodes(&nodes),
            shards,
            replication_factor: factor,
        };
        let target = raftq_placement::target(&cluster)
            .map_err(|why| Status::failed_precondition(format!("{why}; nothing was changed")))?;
        let addr_of = |node: NodeId| {
            seen.addrs
                .get(&node)
                .or_else(|| nodes.iter().find(|n| n.id == node).map(|n| &n.addr))
                .cloned()
                .ok_or_else(|| {
                    Status::unavailable(format!("the address of node {node} is not known"))
                })
        };
        let new: Vec<u32> = (from..to)
            .filter(|s| !seen.shards.contains_key(s))
            .collect();
        for &shard in &new {
            let voters: Vec<NodeId> = target
                .voters
                .get(&shard)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let members: Vec<pb::Member> = voters
                .iter()
                .map(|&id| {
                    Ok(pb::Member {
                        node_id: id,
                        addr: addr_of(id)?,
                        voter: true,
                        matched_index: 0,
                    })
                })
                .collect::<Result<_, Status>>()?;
            // The preferred leader creates the group: it campaigns first.
            let creator = target
                .leaders
                .get(&shard)
                .copied()
                .or_else(|| voters.first().copied())
                .ok_or_else(|| Status::internal(format!("no voters placed for shard {shard}")))?;
            for member in &members {
                let create_with = if member.node_id == creator {
                    members.clone()
                } else {
                    Vec::new()
                };
                let req = pb::OpenReplicaRequest { shard, create_with };
                let mut client = ClusterAdminClient::new(self.ctx.peer(&member.addr)?);
                crate::mover::call(client.open_replica(forwarded(req, &self.caller)))
                    .await
                    .map_err(|e| {
                        Status::new(
                            e.code(),
                            format!(
                                "opening shard {shard} on node {}: {}",
                                member.node_id,
                                e.message()
                            ),
                        )
                    })?;
            }
            self.say(
                "create_shards",
                format!("shard {shard}: raft group created on nodes {voters:?}"),
            )
            .await;
        }
        // Each new shard elects its first leader.
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let seen = crate::coordinator::observe(self.ctx, &nodes).await;
            let leaderless: BTreeSet<u32> = (from..to)
                .filter(|s| !seen.shards.contains_key(s))
                .collect();
            if leaderless.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "new shards {leaderless:?} have no leader after {STEP_TIMEOUT:?}; the routing is unchanged; retry"
                )));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Fences `shard` for `shard_count` shards through its leader; returns
    /// the queues it keeps that hash elsewhere.
    async fn fence(&self, shard: u32, shard_count: u32) -> Result<Vec<String>, Status> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            match fence_shard(self.ctx, shard, shard_count, &self.caller).await {
                Ok(pinned) => return Ok(pinned),
                // A new shard this node holds no replica of is known here
                // once a peer reports its leader (within a second).
                Err(e)
                    if e.code() == tonic::Code::Unavailable
                        || (e.code() == tonic::Code::InvalidArgument
                            && shard >= self.ctx.shard_count()) =>
                {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Status::unavailable(format!(
                            "shard {shard} could not be fenced: {}; the routing is unchanged; retry",
                            e.message()
                        )));
                    }
                    tokio::time::sleep(LOOK_EVERY).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// `FenceShard`: fences `shard` on its leader (forwarded there when this
/// node does not lead it).
pub async fn fence_shard(
    ctx: &NodeContext,
    shard: u32,
    shard_count: u32,
    caller: &Caller,
) -> Result<Vec<String>, Status> {
    match ctx.route_as(shard, forward::Arrival::Client)? {
        Route::Local(handle) => match submit(&handle, Op::Fence { shard_count }).await? {
            OpResult::Pinned(pinned) => Ok(pinned),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        },
        Route::Leader(leader) => {
            let req = pb::FenceShardRequest { shard, shard_count };
            let answer = leader
                .relay(leader.cluster().fence_shard(forwarded(req, caller)))
                .await?;
            Ok(answer.into_inner().pinned)
        }
    }
}

/// Proposes one op on a shard this node leads.
async fn submit(shard: &ShardHandle, op: Op) -> Result<OpResult, Status> {
    let results = crate::mover::call(async {
        shard
            .batcher
            .submit(vec![op])
            .await
            .map_err(|e| Status::unavailable(format!("shard {}: {e}; retry", shard.id)))
    })
    .await?;
    results
        .into_iter()
        .next()
        .ok_or_else(|| Status::internal("no result for the op"))
}
