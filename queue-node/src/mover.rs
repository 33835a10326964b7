//! Runs one replica move (`ClusterAdmin.MoveReplica`): observes the shard
//! through its leader's status, lets [`raftq_placement::step::advance`]
//! choose the next action, and asks it of the node it concerns (open a
//! replica, add or remove a learner, hand leadership over, swap voters,
//! drop a copy) over `ClusterAdmin` on the peer port.
//!
//! Every action is idempotent and the progress is read back from the
//! shard's membership, so a move cut short (its caller gone, this node
//! restarted) resumes from where the shard is when it is asked again.
//! Safety rests on the shard's own Raft: a learner never votes, the swap
//! is one joint-consensus change, and a copy is dropped only after the
//! leader confirms the node is no member.

use std::collections::BTreeSet;
use std::time::Duration;

use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_placement::step::{self, Action, Observation, Phase, Progress, StepConfig};
use raftq_placement::{Move, Shard};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Status;

use crate::context::NodeContext;
use crate::forward::forwarded;
use crate::raft_types::NodeId;
use crate::security::Caller;

/// How often the shard is looked at while a step waits.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How long one action may take.
const ACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long leadership is given to move away from a leaving leader.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);
/// A move's default patience with a step that makes no progress.
pub const DEFAULT_STALL: Duration = Duration::from_secs(600);

/// One move, as asked.
#[derive(Debug, Clone)]
pub struct MoveOrder {
    pub shard: u32,
    /// The incoming node and its peer address.
    pub add: Option<(NodeId, String)>,
    pub remove: Option<NodeId>,
    pub stall_after: Duration,
}

/// Checks a `MoveReplicaRequest` and resolves the incoming node's address.
pub fn order(ctx: &NodeContext, req: &pb::MoveReplicaRequest) -> Result<MoveOrder, Status> {
    if req.shard >= ctx.shard_count() {
        return Err(Status::invalid_argument(format!(
            "shard {} does not exist (this cluster has {} shard(s))",
            req.shard,
            ctx.shard_count()
        )));
    }
    if req.add_node == 0 && req.remove_node == 0 {
        return Err(Status::invalid_argument(
            "add_node and remove_node are both 0: name the node that gets a replica, the one that loses one, or both",
        ));
    }
    if req.add_node != 0 && req.add_node == req.remove_node {
        return Err(Status::invalid_argument(format!(
            "add_node and remove_node are both {}: a replica cannot move to where it is",
            req.add_node
        )));
    }
    let add = match req.add_node {
        0 => None,
        node => {
            let addr = if req.add_addr.is_empty() {
                ctx.member_addrs().get(&node).cloned().ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "node {node} is not known to node {}: give its peer address (add_addr)",
                        ctx.id
                    ))
                })?
            } else {
                req.add_addr.clone()
            };
            Some((node, addr))
        }
    };
    let stall_after = match req.stall_after_ms {
        0 => DEFAULT_STALL,
        ms => Duration::from_millis(ms),
    };
    Ok(MoveOrder {
        shard: req.shard,
        add,
        remove: (req.remove_node != 0).then_some(req.remove_node),
        stall_after,
    })
}

/// The shards with a move run from this node now: one move per shard.
#[derive(Default)]
pub struct MovesUnderWay(std::sync::Mutex<BTreeSet<u32>>);

/// Held while a move of a shard runs from this node.
pub struct MoveGuard<'a> {
    moves: &'a MovesUnderWay,
    shard: u32,
}

impl MovesUnderWay {
    pub fn start(&self, shard: u32) -> Result<MoveGuard<'_>, Status> {
        let mut moving = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !moving.insert(shard) {
            return Err(Status::failed_precondition(format!(
                "a move of shard {shard} is already running from this node; wait for it to end"
            )));
        }
        Ok(MoveGuard { moves: self, shard })
    }
}

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        self.moves
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.shard);
    }
}

type Updates = mpsc::Sender<Result<pb::MoveProgress, Status>>;

/// Runs `order` to its end (done or rolled back), sending each step to
/// `updates`; stops early when nobody listens any more (a new call resumes
/// it) or when the shard cannot be observed for the stall time.
pub async fn run(ctx: &NodeContext, order: MoveOrder, caller: Caller, updates: Updates) {
    let Ok(_guard) = ctx.moves.start(order.shard).map_err(|e| {
        let _ = updates.try_send(Err(e));
    }) else {
        return;
    };
    let mover = Mover {
        ctx,
        order: &order,
        caller,
    };
    let config = StepConfig {
        caught_up_within: 1_000,
        stall_after_ms: order.stall_after.as_millis() as u64,
    };
    let started = tokio::time::Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut progress = Progress::start(
        Move {
            shard: order.shard,
            add: order.add.as_ref().map(|(id, _)| *id),
            remove: order.remove,
        },
        0,
    );
    let mut reported: Option<(Phase, u64, String)> = None;
    let mut last_seen = tokio::time::Instant::now();
    let mut last_error = String::new();
    loop {
        if updates.is_closed() {
            tracing::info!(shard = order.shard, phase = ?progress.phase, "move abandoned by its caller; asking again resumes it");
            return;
        }
        let seen = match mover.observe().await {
            Ok(seen) => seen,
            Err(e) => {
                if last_seen.elapsed() > order.stall_after {
                    let _ = updates
                        .send(Err(Status::unavailable(format!(
                            "shard {}: no leader could be asked for {:?} ({}); the move stopped at {}; ask again to resume",
                            order.shard,
                            order.stall_after,
                            e.message(),
                            phase_name(progress.phase)
                        ))))
                        .await;
                    return;
                }
                tokio::time::sleep(LOOK_EVERY).await;
                continue;
            }
        };
        last_seen = tokio::time::Instant::now();
        let (next, action) = step::advance(
            &progress,
            &Observation {
                shard: &seen.shard,
                learner_lag: seen.learner_lag,
                now_ms: now_ms(),
            },
            &config,
        );
        progress = next;
        let lag = seen.learner_lag.unwrap_or(0);
        // A step is reported when it begins, as the lag falls by
        // thousands, and when the reason it keeps failing changes.
        let report = (progress.phase, lag / 1000, last_error.clone());
        if !progress.finished() && reported.as_ref() != Some(&report) {
            let update = pb::MoveProgress {
                phase: phase_name(progress.phase).into(),
                detail: describe(&progress, &seen, &action, &last_error),
                learner_lag: lag,
            };
            if updates.send(Ok(update)).await.is_err() {
                continue;
            }
            reported = Some(report);
        }
        last_error = match mover.perform(&action, &seen).await {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::debug!(shard = order.shard, ?action, error = %e.message(), "move step failed; retrying");
                e.message().to_string()
            }
        };
        if progress.finished() {
            tracing::info!(shard = order.shard, phase = ?progress.phase, reason = ?progress.reason, "move ended");
            let _ = updates
                .send(Ok(pb::MoveProgress {
                    phase: phase_name(progress.phase).into(),
                    detail: describe(&progress, &seen, &Action::Wait, &last_error),
                    learner_lag: 0,
                }))
                .await;
            return;
        }
        if action == Action::Wait {
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::AddLearner => "add_learner",
        Phase::CatchUp => "catch_up",
        Phase::MoveLeader => "move_leader",
        Phase::Swap => "swap",
        Phase::DropOldCopy => "drop_old_copy",
        Phase::Done => "done",
        Phase::RollingBack => "rolling_back",
        Phase::RolledBack => "rolled_back",
    }
}

fn describe(p: &Progress, seen: &Seen, action: &Action, error: &str) -> String {
    let mut text = match action {
        Action::Wait => match p.phase {
            Phase::CatchUp => format!(
                "the incoming replica trails the leader by {} entries",
                seen.learner_lag
                    .map_or_else(|| "an unknown number of".into(), |l| l.to_string())
            ),
            Phase::Done => format!("voters now {:?}", seen.shard.voters),
            Phase::RolledBack => format!(
                "rolled back ({}); voters stay {:?}",
                p.reason.as_deref().unwrap_or("stalled"),
                seen.shard.voters
            ),
            _ => format!(
                "voters {:?}, learners {:?}, leader {:?}",
                seen.shard.voters, seen.shard.learners, seen.shard.leader
            ),
        },
        Action::AddLearner(n) => {
            format!("opening a replica on node {n} and adding it as a learner")
        }
        Action::TransferLeader(n) => {
            format!("handing leadership over from the leaving node (to node {n} or another voter)")
        }
        Action::SetVoters(v) => format!("changing the voters to {v:?}"),
        Action::DeleteCopy(n) => format!("deleting the old copy on node {n}"),
        Action::RemoveLearner(n) => format!("removing learner {n}"),
    };
    if !error.is_empty() {
        text.push_str(&format!(" (last attempt: {error})"));
    }
    text
}

/// The shard as its leader reports it.
struct Seen {
    shard: Shard,
    learner_lag: Option<u64>,
    /// Peer addresses of the shard's members.
    addrs: Vec<(NodeId, String)>,
    leader_addr: String,
}

struct Mover<'a> {
    ctx: &'a NodeContext,
    order: &'a MoveOrder,
    caller: Caller,
}

impl Mover<'_> {
    fn client(&self, addr: &str) -> Result<ClusterAdminClient<Channel>, Status> {
        Ok(ClusterAdminClient::new(self.ctx.peer(addr)?))
    }

    /// Where the shard's leader is, as this node knows it.
    fn leader_addr(&self) -> Result<String, Status> {
        let shard = self.order.shard;
        if let Some(handle) = self.ctx.local(shard) {
            let metrics = handle.raft.metrics();
            let m = metrics.borrow();
            if let Some(addr) = m.current_leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            }) {
                return Ok(addr);
            }
        }
        self.ctx
            .directory
            .remote_shard(shard)
            .map(|r| r.leader_peer_addr)
            .ok_or_else(|| Status::unavailable(format!("shard {shard} has no known leader")))
    }

    async fn observe(&self) -> Result<Seen, Status> {
        let shard = self.order.shard;
        let leader_addr = self.leader_addr()?;
        let status = crate::directory::ask(self.ctx, &leader_addr).await?;
        let node = status.node_id;
        let view = status
            .shards
            .into_iter()
            .find(|s| s.shard == shard && is_leaders_view(node, s))
            .ok_or_else(|| {
                Status::unavailable(format!("node {node} does not lead shard {shard} any more"))
            })?;
        let learner_lag = self.order.add.as_ref().and_then(|(id, _)| {
            view.members
                .iter()
                .find(|m| m.node_id == *id && m.matched_index > 0)
                .map(|m| view.last_log_index.saturating_sub(m.matched_index))
        });
        Ok(Seen {
            shard: shard_of(&view),
            learner_lag,
            addrs: view
                .members
                .iter()
                .map(|m| (m.node_id, m.addr.clone()))
                .collect(),
            leader_addr,
        })
    }

    fn addr_of(&self, node: NodeId, seen: &Seen) -> Result<String, Status> {
        if let Some((_, addr)) = self.order.add.as_ref().filter(|(id, _)| *id == node) {
            return Ok(addr.clone());
        }
        seen.addrs
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, addr)| addr.clone())
            .or_else(|| self.ctx.member_addrs().get(&node).cloned())
            .ok_or_else(|| Status::unavailable(format!("the address of node {node} is not known")))
    }

    async fn perform(&self, action: &Action, seen: &Seen) -> Result<(), Status> {
        let shard = self.order.shard;
        let leader = || self.client(&seen.leader_addr);
        match action {
            Action::Wait => Ok(()),
            Action::AddLearner(node) => {
                let addr = self.addr_of(*node, seen)?;
                let mut target = self.client(&addr)?;
                call(async move {
                    target
                        .open_replica(forwarded(
                            pb::OpenReplicaRequest {
                                shard,
                                ..Default::default()
                            },
                            &self.caller,
                        ))
                        .await
                        .map(drop)
                })
                .await?;
                let mut leader = leader()?;
                let req = pb::AddLearnerRequest {
                    node_id: *node,
                    addr,
                    shard: Some(shard),
                    timeout_ms: 0,
                    no_wait: true,
                };
                call(async move {
                    leader
                        .add_learner(forwarded(req, &self.caller))
                        .await
                        .map(drop)
                })
                .await
            }
            Action::TransferLeader(_) => {
                let mut leader = leader()?;
                let req = pb::StepDownRequest {
                    timeout_ms: HANDOFF_TIMEOUT.as_millis() as u32,
                    drain_workers: false,
                    shard: Some(shard),
                };
                call(async move {
                    leader
                        .step_down(forwarded(req, &self.caller))
                        .await
                        .map(drop)
                })
                .await
            }
            Action::SetVoters(voters) => {
                let mut leader = leader()?;
                let req = pb::ChangeMembershipRequest {
                    voters: voters.iter().copied().collect(),
                    retain: false,
                    shard: Some(shard),
                };
                call(async move {
                    leader
                        .change_membership(forwarded(req, &self.caller))
                        .await
                        .map(drop)
                })
                .await
            }
            Action::RemoveLearner(node) => {
                let mut leader = leader()?;
                let req = pb::RemoveLearnerRequest {
                    node_id: *node,
                    shard: Some(shard),
                };
                call(async move {
                    leader
                        .remove_learner(forwarded(req, &self.caller))
                        .await
                        .map(drop)
                })
                .await?;
                self.drop_copy(*node, seen).await
            }
            Action::DeleteCopy(node) => self.drop_copy(*node, seen).await,
        }
    }

    /// Asks `node` to delete its copy. A node that cannot be reached keeps
    /// it until it is asked again: the move itself is complete.
    async fn drop_copy(&self, node: NodeId, seen: &Seen) -> Result<(), Status> {
        let shard = self.order.shard;
        let addr = self.addr_of(node, seen)?;
        let mut client = self.client(&addr)?;
        let req = forwarded(pb::DropReplicaRequest { shard }, &self.caller);
        match tokio::time::timeout(ACTION_TIMEOUT, client.drop_replica(req)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(shard, node, error = %e.message(), "the old copy was not deleted; ask that node again (DropReplica) once it is up");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    shard,
                    node,
                    "the old copy was not deleted in time; ask that node again (DropReplica)"
                );
                Ok(())
            }
        }
    }
}

/// Whether `view`, in node `node`'s status answer, is its leader's view
/// (the one that commits).
pub fn is_leaders_view(node: NodeId, view: &pb::ShardStatus) -> bool {
    view.role == "leader" && view.leader_id == node
}

/// A leader's view of a shard, as placement reasons about it.
pub fn shard_of(view: &pb::ShardStatus) -> Shard {
    let members = |voter: bool| {
        view.members
            .iter()
            .filter(|m| m.voter == voter)
            .map(|m| m.node_id)
            .collect::<BTreeSet<NodeId>>()
    };
    Shard {
        voters: members(true),
        learners: members(false),
        leader: view.has_leader.then_some(view.leader_id),
        epoch: view.epoch,
    }
}

/// Awaits one action, for at most [`ACTION_TIMEOUT`].
pub(crate) async fn call<T>(
    f: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(ACTION_TIMEOUT, f).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {ACTION_TIMEOUT:?}"
        ))),
    }
}
