//! The placement coordinator: on the node that leads shard 0 (the
//! metadata shard, whose Raft log holds the declared nodes), turns the
//! difference between where the replicas are and where
//! [`raftq_placement::target`] wants them into moves, at most one per node
//! at a time ([`raftq_placement::next_moves`]), and runs each with
//! [`crate::mover`].
//!
//! It keeps nothing that matters: the declared nodes are in shard 0's log,
//! the replicas in each shard's own membership, and a move resumes from
//! what the membership shows. A coordinator that loses shard 0's
//! leadership stops its moves; the next one picks them up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_placement::{Cluster, Move, Node, Shard};
use tokio::task::JoinHandle;

use crate::context::NodeContext;
use crate::forward::forwarded;
use crate::mover::{self, MoveOrder};
use crate::ops::NodeRecord;
use crate::raft_types::NodeId;
use crate::security::Caller;

/// The shard whose Raft log holds the declared nodes.
pub const METADATA_SHARD: u32 = 0;

/// The moves this node runs as coordinator.
#[derive(Default)]
pub struct Coordinator {
    moves: Mutex<BTreeMap<u32, Running>>,
    /// Since when this node has led the metadata shard without a break.
    leading_since: Mutex<Option<tokio::time::Instant>>,
}

/// A new coordinator waits this long before it starts moves, so that the
/// one before it (which looks every round) has stopped its own.
const TAKE_OVER_AFTER: Duration = Duration::from_secs(3);

struct Running {
    mv: Move,
    phase: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Coordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, Running>> {
        self.moves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the moves that ended.
    fn reap(&self) {
        self.lock().retain(|_, r| !r.task.is_finished());
    }

    /// Stops every move (another node coordinates now; it resumes them).
    pub fn stop_all(&self) {
        for (_, running) in std::mem::take(&mut *self.lock()) {
            running.task.abort();
        }
    }

    fn under_way(&self) -> Vec<Move> {
        self.lock().values().map(|r| r.mv.clone()).collect()
    }

    /// The moves under way, with the step each is at.
    pub fn moves(&self) -> Vec<pb::MoveUnderWay> {
        self.lock()
            .values()
            .filter(|r| !r.task.is_finished())
            .map(|r| pb::MoveUnderWay {
                shard: r.mv.shard,
                add_node: r.mv.add.unwrap_or(0),
                remove_node: r.mv.remove.unwrap_or(0),
                phase: r.phase.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            })
            .collect()
    }

    /// Removes learner `learner` of `shard` (through its leader at
    /// `leader_addr`) and deletes its copy.
    fn remove_stray(
        &self,
        ctx: Arc<NodeContext>,
        shard: u32,
        learner: NodeId,
        leader_addr: String,
        learner_addr: String,
    ) {
        tracing::info!(
            shard,
            learner,
            "placement: removing a learner no move wants"
        );
        let phase = Arc::new(Mutex::new("removing_learner".to_string()));
        let task = tokio::spawn(async move {
            let caller = Caller::this_node(ctx.id);
            let removed = async {
                let mut leader = ClusterAdminClient::new(ctx.peer(&leader_addr)?);
                let req = pb::RemoveLearnerRequest {
                    node_id: learner,
                    shard: Some(shard),
                };
                leader.remove_learner(forwarded(req, &caller)).await?;
                let mut node = ClusterAdminClient::new(ctx.peer(&learner_addr)?);
                node.drop_replica(forwarded(pb::DropReplicaRequest { shard }, &caller))
                    .await?;
                Ok::<_, tonic::Status>(())
            };
            if let Err(e) = removed.await {
                tracing::warn!(shard, learner, error = %e.message(), "placement: removing a stray learner failed; retried next round");
            }
        });
        let mv = Move {
            shard,
            add: None,
            remove: Some(learner),
        };
        self.lock().insert(shard, Running { mv, phase, task });
    }

    fn start(&self, ctx: Arc<NodeContext>, order: MoveOrder, mv: Move) {
        let (updates, mut steps) = tokio::sync::mpsc::channel(16);
        let phase = Arc::new(Mutex::new("starting".to_string()));
        let seen = phase.clone();
        let shard = order.shard;
        tracing::info!(shard, add = ?mv.add, remove = ?mv.remove, "placement: starting a move");
        let task = tokio::spawn(async move {
            let caller = Caller::this_node(ctx.id);
            let run = mover::run(&ctx, order, caller, updates);
            let watch = async {
                while let Some(step) = steps.recv().await {
                    match step {
                        Ok(step) => {
                            tracing::info!(
                                shard,
                                phase = step.phase,
                                detail = step.detail,
                                "placement: move step"
                            );
                            *seen.lock().unwrap_or_else(|p| p.into_inner()) = step.phase;
                        }
                        Err(e) => {
                            tracing::warn!(shard, error = %e.message(), "placement: move stopped")
                        }
                    }
                }
            };
            tokio::join!(run, watch);
        });
        self.lock().insert(shard, Running { mv, phase, task });
    }
}

/// Runs the coordinator while the node runs: a round every `every`.
pub async fn run(ctx: Arc<NodeContext>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(why) = round(&ctx).await {
            tracing::warn!(%why, "placement: no moves this round");
        }
    }
}

/// Whether this node leads the metadata shard now.
fn coordinates(ctx: &NodeContext) -> bool {
    ctx.local(METADATA_SHARD)
        .is_some_and(|meta| meta.raft.metrics().borrow().current_leader == Some(ctx.id))
}

/// The declared nodes, as this node's copy of shard 0 has them.
pub fn declared(ctx: &NodeContext) -> Option<Vec<NodeRecord>> {
    let meta = ctx.local(METADATA_SHARD)?;
    let state = meta.shared.state();
    state.nodes().map(<[NodeRecord]>::to_vec)
}

async fn round(ctx: &Arc<NodeContext>) -> Result<(), String> {
    let coordinator = &ctx.coordinator;
    coordinator.reap();
    {
        let mut since = coordinator
            .leading_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !coordinates(ctx) {
            *since = None;
            drop(since);
            coordinator.stop_all();
            return Ok(());
        }
        let started = *since.get_or_insert_with(tokio::time::Instant::now);
        if started.elapsed() < TAKE_OVER_AFTER {
            return Ok(());
        }
    }
    let (Some(declared), Some(factor)) = (declared(ctx), ctx.layout.replication_factor) else {
        return Ok(());
    };
    let seen = observe(ctx, &declared).await;
    let Some(cluster) = cluster_of(ctx, &declared, &seen.shards, factor) else {
        return Ok(());
    };
    let target = raftq_placement::target(&cluster).map_err(|r| r.to_string())?;
    let under_way = coordinator.under_way();
    let mut moves = raftq_placement::next_moves(&cluster, &target, &under_way);
    // A learner that no move wants (one cut short when its coordinator
    // stopped, and the declared nodes changed since) is removed before
    // anything else moves on that shard. One the target still wants is
    // taken up again by the move that adds it.
    let moving: BTreeSet<u32> = under_way.iter().map(|m| m.shard).collect();
    for (id, shard) in &cluster.shards {
        let stray: Vec<NodeId> = shard
            .learners
            .iter()
            .copied()
            .filter(|l| !moves.iter().any(|m| m.shard == *id && m.add == Some(*l)))
            .collect();
        if stray.is_empty() || moving.contains(id) {
            continue;
        }
        moves.retain(|m| m.shard != *id);
        let (Some(leader), Some(learner)) = (shard.leader, stray.first().copied()) else {
            continue;
        };
        let addr = |n: NodeId| seen.addrs.get(&n).cloned().unwrap_or_default();
        coordinator.remove_stray(ctx.clone(), *id, learner, addr(leader), addr(learner));
    }
    for mv in moves {
        let add = match mv.add {
            None => None,
            Some(id) => match seen.addrs.get(&id) {
                Some(addr) => Some((id, addr.clone())),
                None => return Err(format!("the address of node {id} is not known")),
            },
        };
        let order = MoveOrder {
            shard: mv.shard,
            add,
            remove: mv.remove,
            stall_after: mover::DEFAULT_STALL,
        };
        coordinator.start(ctx.clone(), order, mv);
    }
    Ok(())
}

/// What the leaders of the shards report, and every node's peer address.
pub struct Seen {
    pub shards: BTreeMap<u32, Shard>,
    pub addrs: BTreeMap<NodeId, String>,
}

/// Asks every declared node and every member this node knows for its
/// status; each shard as its leader (of the highest term) reports it.
pub async fn observe(ctx: &NodeContext, declared: &[NodeRecord]) -> Seen {
    let mut addrs = ctx.member_addrs();
    addrs.extend(declared.iter().map(|n| (n.id, n.addr.clone())));
    let answers =
        futures::future::join_all(addrs.values().map(|addr| crate::directory::ask(ctx, addr)))
            .await;
    let mut shards: BTreeMap<u32, (u64, Shard)> = BTreeMap::new();
    for status in answers.into_iter().filter_map(Result::ok) {
        let node = status.node_id;
        for view in status.shards {
            if !mover::is_leaders_view(node, &view)
                || shards
                    .get(&view.shard)
                    .is_some_and(|(term, _)| *term >= view.term)
            {
                continue;
            }
            for m in &view.members {
                addrs.entry(m.node_id).or_insert_with(|| m.addr.clone());
            }
            shards.insert(view.shard, (view.term, mover::shard_of(&view)));
        }
    }
    Seen {
        shards: shards.into_iter().map(|(id, (_, s))| (id, s)).collect(),
        addrs,
    }
}

/// The declared nodes as placement sees them.
pub fn placement_nodes(declared: &[NodeRecord]) -> BTreeMap<NodeId, Node> {
    declared
        .iter()
        .map(|n| {
            let mut node = Node::new(n.id);
            node.zone = n.zone.clone();
            node.draining = n.draining;
            (n.id, node)
        })
        .collect()
}

/// The cluster as placement sees it, once every shard's leader answered.
fn cluster_of(
    ctx: &NodeContext,
    declared: &[NodeRecord],
    shards: &BTreeMap<u32, Shard>,
    factor: u32,
) -> Option<Cluster> {
    if shards.len() < ctx.shard_count() as usize {
        return None;
    }
    let nodes = placement_nodes(declared);
    Some(Cluster {
        nodes,
        shards: shards.clone(),
        replication_factor: factor as usize,
    })
}

/// The placement as the coordinator sees it, for `GetPlacement`.
pub async fn status(ctx: &NodeContext) -> pb::PlacementStatus {
    let declared = declared(ctx).unwrap_or_default();
    let seen = observe(ctx, &declared).await;
    let mut counts: BTreeMap<NodeId, (u32, u32)> =
        declared.iter().map(|n| (n.id, (0, 0))).collect();
    for shard in seen.shards.values() {
        for voter in &shard.voters {
            counts.entry(*voter).or_default().0 += 1;
        }
        if let Some(leader) = shard.leader {
            counts.entry(leader).or_default().1 += 1;
        }
    }
    let moves = ctx.coordinator.moves();
    let factor = ctx.layout.replication_factor.unwrap_or(0);
    let needed = match cluster_of(ctx, &declared, &seen.shards, factor) {
        Some(cluster) if !declared.is_empty() => raftq_placement::target(&cluster)
            .map(|target| !raftq_placement::next_moves(&cluster, &target, &[]).is_empty())
            .unwrap_or(true),
        Some(_) => false,
        None => true,
    };
    let learners: BTreeSet<NodeId> = seen
        .shards
        .values()
        .flat_map(|s| s.learners.iter().copied())
        .collect();
    pb::PlacementStatus {
        coordinator: ctx.id,
        replication_factor: factor,
        declared: declared
            .iter()
            .map(|n| pb::NodeSpec {
                node_id: n.id,
                addr: n.addr.clone(),
                zone: n.zone.clone().unwrap_or_default(),
                draining: n.draining,
            })
            .collect(),
        nodes: counts
            .into_iter()
            .map(|(node_id, (replicas, leads))| pb::NodePlacement {
                node_id,
                replicas,
                leads,
            })
            .collect(),
        balanced: moves.is_empty() && !needed && learners.is_empty(),
        moves,
    }
}
