//! The `ClusterAdmin` service: each shard's Raft status as this node sees
//! it, and membership changes (forwarded to each shard's leader).

use std::collections::BTreeSet;

use openraft::{BasicNode, ServerState};
use raftq_api::v1 as pb;
use tonic::{Request, Response, Status};

use super::{forwarded, membership, Ctx, Route};
use crate::context::ShardHandle;
use crate::drain::DRAIN_TIMEOUT;
use crate::security::{Call, Caller, Port};

pub struct ClusterService {
    ctx: Ctx,
}

impl ClusterService {
    pub fn new(ctx: Ctx) -> ClusterService {
        ClusterService { ctx }
    }

    /// The shards a membership request applies to.
    fn target_shards(&self, shard: Option<u32>) -> Result<Vec<u32>, Status> {
        match shard {
            Some(id) => Ok(vec![self.ctx.shard(id)?.id]),
            None => Ok(self.ctx.held().iter().map(|s| s.id).collect()),
        }
    }

    fn authorize<T>(&self, request: &Request<T>, call: &'static str) -> Result<Caller, Status> {
        self.ctx
            .authorize(Port::Peer, request, Call::Cluster(call), None)
    }

    fn status(&self) -> pb::ClusterStatus {
        local_status(&self.ctx)
    }

    /// Creates the Raft group of a new shard on the replica just opened
    /// here, with `voters` (this node among them). Nothing to do when the
    /// replica has a membership already: the group exists.
    async fn create_group(&self, shard: u32, voters: &[pb::Member]) -> Result<(), Status> {
        if !voters.iter().any(|m| m.node_id == self.ctx.id) {
            return Err(Status::invalid_argument(format!(
                "create_with must name this node ({}) among the voters of shard {shard}",
                self.ctx.id
            )));
        }
        let handle = self.ctx.shard(shard)?;
        let initialized = handle
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::internal(format!("shard {shard}: {e}")))?;
        if initialized {
            return Ok(());
        }
        let members: std::collections::BTreeMap<u64, openraft::BasicNode> = voters
            .iter()
            .map(|m| (m.node_id, openraft::BasicNode::new(&m.addr)))
            .collect();
        match handle.raft.initialize(members).await {
            Ok(())
            | Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {
                tracing::info!(shard, voters = ?voters.iter().map(|m| m.node_id).collect::<Vec<_>>(), "created the raft group of a new shard");
                Ok(())
            }
            Err(e) => Err(raft_status("initialize", e)),
        }
    }
}

/// Each shard's Raft status as this node sees it.
pub fn local_status(ctx: &crate::context::NodeContext) -> pb::ClusterStatus {
    let routing = ctx.routing.get();
    pb::ClusterStatus {
        node_id: ctx.id,
        addr: ctx.addr.clone(),
        client_addr: ctx.client_addr.clone(),
        shards: ctx.held().iter().map(|s| shard_status(s)).collect(),
        routing_version: routing.version,
        routing: None,
    }
}

fn shard_status(shard: &ShardHandle) -> pb::ShardStatus {
    let m = shard.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| pb::Member {
            node_id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
            matched_index: matched_index(&m, *id),
        })
        .collect();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    pb::ShardStatus {
        shard: shard.id,
        leader_id: m.current_leader.unwrap_or(0),
        has_leader: m.current_leader.is_some(),
        term: m.current_term,
        commit_index: commit_index(&m, &voters),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        members,
        role: role.into(),
        epoch: m.membership_config.log_id().map_or(0, |l| l.index),
    }
}

/// On the leader: the last log index member `id` is known to have.
fn matched_index(m: &openraft::RaftMetrics<u64, BasicNode>, id: u64) -> u64 {
    match &m.replication {
        None => 0,
        Some(_) if id == m.id => m.last_log_index.unwrap_or(0),
        Some(replication) => replication
            .get(&id)
            .and_then(|log_id| log_id.map(|l| l.index))
            .unwrap_or(0),
    }
}

/// On the leader: the highest index a majority of voters has. Elsewhere the
/// applied index, a lower bound of it.
fn commit_index(m: &openraft::RaftMetrics<u64, BasicNode>, voters: &BTreeSet<u64>) -> u64 {
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let Some(replication) = &m.replication else {
        return applied;
    };
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|id| match replication.get(id) {
            Some(Some(log_id)) => log_id.index,
            _ if *id == m.id => m.last_log_index.unwrap_or(0),
            _ => 0,
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched
        .get(voters.len() / 2)
        .copied()
        .unwrap_or(0)
        .max(applied)
}

/// The declared nodes of a `SetNodes` request, checked.
fn node_records(
    nodes: &[pb::NodeSpec],
    factor: u32,
) -> Result<Vec<crate::ops::NodeRecord>, Status> {
    let mut seen = BTreeSet::new();
    let mut records = Vec::with_capacity(nodes.len());
    for node in nodes {
        if node.node_id == 0 {
            return Err(Status::invalid_argument(
                "node_id 0 is not a node id; ids start at 1",
            ));
        }
        if !seen.insert(node.node_id) {
            return Err(Status::invalid_argument(format!(
                "node {} is declared twice",
                node.node_id
            )));
        }
        if node.addr.is_empty() {
            return Err(Status::invalid_argument(format!(
                "node {} has no addr: give its peer host:port",
                node.node_id
            )));
        }
        records.push(crate::ops::NodeRecord {
            id: node.node_id,
            addr: node.addr.clone(),
            zone: (!node.zone.is_empty()).then(|| node.zone.clone()),
            draining: node.draining,
        });
    }
    let active = records.iter().filter(|n| !n.draining).count();
    if active < factor as usize {
        return Err(Status::failed_precondition(format!(
            "{active} declared node(s) would take replicas, and each shard needs {factor} voters on different nodes; declare more nodes or drain fewer"
        )));
    }
    Ok(records)
}

fn raft_status<E: std::fmt::Display>(what: &str, e: E) -> Status {
    Status::failed_precondition(format!("{what}: {e}"))
}

#[tonic::async_trait]
impl pb::cluster_admin_server::ClusterAdmin for ClusterService {
    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        // A node asking for the console's cluster view, on behalf of a
        // caller it verified: the view needs only the `read` role.
        let call = if crate::forward::is_forwarded(request.metadata()) {
            Call::ClusterView
        } else {
            Call::Cluster("Status")
        };
        self.ctx.authorize(Port::Peer, &request, call, None)?;
        let mut status = self.status();
        // Only to a node that has an older routing: the table can be long.
        if request.get_ref().routing_version < status.routing_version {
            status.routing = Some(pb::QueueRouting::from(&*self.ctx.routing.get()));
        }
        Ok(Response::new(status))
    }

    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        self.authorize(&request, "Initialize")?;
        if self.ctx.joining && !request.get_ref().bootstrap_joining_node {
            return Err(Status::failed_precondition(format!(
                "node {} was started with --join: it waits to be added to an existing cluster (AddLearner on that cluster's leader) and must not form a cluster of its own; to make it the first node of a new cluster, set bootstrap_joining_node",
                self.ctx.id
            )));
        }
        for shard in self.ctx.held().iter() {
            let initialized = shard
                .raft
                .is_initialized()
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            if !initialized {
                let me = [(self.ctx.id, BasicNode::new(&self.ctx.addr))]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>();
                shard
                    .raft
                    .initialize(me)
                    .await
                    .map_err(|e| raft_status("initialize", e))?;
            }
        }
        Ok(Response::new(self.status()))
    }

    async fn step_down(
        &self,
        request: Request<pb::StepDownRequest>,
    ) -> Result<Response<pb::StepDownResponse>, Status> {
        self.authorize(&request, "StepDown")?;
        let timeout = match request.get_ref().timeout_ms {
            0 => std::time::Duration::from_secs(10),
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        if request.get_ref().drain_workers {
            let open = self.ctx.workers.drain(timeout.min(DRAIN_TIMEOUT)).await;
            if open > 0 {
                tracing::warn!(open, "worker streams still open after the drain timeout");
            }
        }
        let handed = match request.get_ref().shard {
            Some(shard) => {
                self.ctx.shard(shard)?;
                crate::handoff::step_down_from(&self.ctx, shard, timeout).await
            }
            None => crate::handoff::step_down(&self.ctx, timeout).await,
        };
        let shards = handed
            .into_iter()
            .map(|h| pb::ShardHandoff {
                shard: h.shard,
                new_leader_id: h.new_leader.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::StepDownResponse { shards }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let caller = self.authorize(&request, "AddLearner")?;
        let req = request.get_ref().clone();
        if req.addr.is_empty() {
            return Err(Status::invalid_argument(
                "addr is empty: give the new node's host:port",
            ));
        }
        let timeout = match req.timeout_ms {
            0 => membership::DEFAULT_CATCH_UP,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        };
        for shard in self.target_shards(req.shard)? {
            match self.ctx.route(shard, &request)? {
                Route::Leader(leader) => {
                    let one = pb::AddLearnerRequest {
                        shard: Some(shard),
                        ..req.clone()
                    };
                    leader
                        .relay(leader.cluster().add_learner(forwarded(one, &caller)))
                        .await?;
                }
                Route::Local(handle) if req.no_wait => {
                    membership::add_learner_no_wait(&handle, req.node_id, &req.addr).await?;
                }
                Route::Local(handle) => {
                    membership::add_learner(&handle, req.node_id, &req.addr, timeout).await?;
                }
            }
        }
        Ok(Response::new(self.status()))
    }

    async fn remove_learner(
        &self,
        request: Request<pb::RemoveLearnerRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let caller = self.authorize(&request, "RemoveLearner")?;
        let req = *request.get_ref();
        for shard in self.target_shards(req.shard)? {
            match self.ctx.route(shard, &request)? {
                Route::Leader(leader) => {
                    let one = pb::RemoveLearnerRequest {
                        shard: Some(shard),
                        ..req
                    };
                    leader
                        .relay(leader.cluster().remove_learner(forwarded(one, &caller)))
                        .await?;
                }
                Route::Local(handle) => membership::remove_learner(&handle, req.node_id).await?,
            }
        }
        Ok(Response::new(self.status()))
    }

    type MoveReplicaStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::MoveProgress, Status>>;

    async fn move_replica(
        &self,
        request: Request<pb::MoveReplicaRequest>,
    ) -> Result<Response<Self::MoveReplicaStream>, Status> {
        let caller = self.authorize(&request, "MoveReplica")?;
        let order = crate::mover::order(&self.ctx, request.get_ref())?;
        let (updates, stream) = tokio::sync::mpsc::channel(16);
        let ctx = self.ctx.clone();
        tokio::spawn(async move { crate::mover::run(&ctx, order, caller, updates).await });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            stream,
        )))
    }

    type GrowShardsStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::GrowProgress, Status>>;

    async fn grow_shards(
        &self,
        request: Request<pb::GrowShardsRequest>,
    ) -> Result<Response<Self::GrowShardsStream>, Status> {
        let caller = self.authorize(&request, "GrowShards")?;
        let shard_count = crate::grow::check(&self.ctx, request.get_ref())?;
        let (updates, stream) = tokio::sync::mpsc::channel(16);
        match self
            .ctx
            .route(crate::coordinator::METADATA_SHARD, &request)?
        {
            Route::Local(meta) => {
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    crate::grow::run(&ctx, meta, shard_count, caller, updates).await
                });
            }
            // Run by the metadata shard's leader; its steps are passed on.
            Route::Leader(leader) => {
                let req = *request.get_ref();
                let mut steps = leader
                    .relay(leader.cluster().grow_shards(forwarded(req, &caller)))
                    .await?
                    .into_inner();
                tokio::spawn(async move {
                    loop {
                        let step = match steps.message().await {
                            Ok(Some(step)) => Ok(step),
                            Ok(None) => break,
                            Err(e) => Err(e),
                        };
                        let failed = step.is_err();
                        if updates.send(step).await.is_err() || failed {
                            break;
                        }
                    }
                });
            }
        }
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            stream,
        )))
    }

    async fn fence_shard(
        &self,
        request: Request<pb::FenceShardRequest>,
    ) -> Result<Response<pb::FenceShardResponse>, Status> {
        let caller = self.authorize(&request, "FenceShard")?;
        let req = request.get_ref();
        if req.shard_count == 0 || req.shard_count > crate::routing::MAX_SHARDS {
            return Err(Status::invalid_argument(format!(
                "shard_count must be in 1..={} (got {})",
                crate::routing::MAX_SHARDS,
                req.shard_count
            )));
        }
        if req.shard >= req.shard_count {
            return Err(Status::invalid_argument(format!(
                "shard {} is not among {} shards",
                req.shard, req.shard_count
            )));
        }
        let pinned =
            crate::grow::fence_shard(&self.ctx, req.shard, req.shard_count, &caller).await?;
        Ok(Response::new(pb::FenceShardResponse { pinned }))
    }

    async fn open_replica(
        &self,
        request: Request<pb::OpenReplicaRequest>,
    ) -> Result<Response<pb::OpenReplicaResponse>, Status> {
        self.authorize(&request, "OpenReplica")?;
        let shard = request.get_ref().shard;
        // A shard being created (GrowShards) is not in the routing yet.
        if shard >= crate::routing::MAX_SHARDS {
            return Err(Status::invalid_argument(format!(
                "shard {shard} does not exist (a cluster has at most {} shards)",
                crate::routing::MAX_SHARDS
            )));
        }
        if self.ctx.layout.is_full() {
            return Err(Status::failed_precondition(
                "this cluster has no replication factor: every node holds every shard, and replicas are not moved",
            ));
        }
        let opened = crate::replicas::open_for_move(&self.ctx, shard)
            .await
            .map_err(|e| e.status())?;
        let create_with = &request.get_ref().create_with;
        if !create_with.is_empty() {
            self.create_group(shard, create_with).await?;
        }
        Ok(Response::new(pb::OpenReplicaResponse { opened }))
    }

    async fn drop_replica(
        &self,
        request: Request<pb::DropReplicaRequest>,
    ) -> Result<Response<pb::DropReplicaResponse>, Status> {
        self.authorize(&request, "DropReplica")?;
        let shard = request.get_ref().shard;
        if self.ctx.layout.is_full() {
            return Err(Status::failed_precondition(
                "this cluster has no replication factor: every node holds every shard, and replicas are not dropped",
            ));
        }
        let dropped = crate::replicas::drop_replica(&self.ctx, shard)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(pb::DropReplicaResponse { dropped }))
    }

    async fn set_nodes(
        &self,
        request: Request<pb::SetNodesRequest>,
    ) -> Result<Response<pb::PlacementStatus>, Status> {
        let caller = self.authorize(&request, "SetNodes")?;
        let Some(factor) = self.ctx.layout.replication_factor else {
            return Err(Status::failed_precondition(
                "this cluster has no replication factor: every node holds every shard, and replicas are not placed",
            ));
        };
        let nodes = node_records(&request.get_ref().nodes, factor)?;
        let route = self
            .ctx
            .route(crate::coordinator::METADATA_SHARD, &request)?;
        match route {
            Route::Leader(leader) => {
                let req = request.get_ref().clone();
                return leader
                    .relay(leader.cluster().set_nodes(forwarded(req, &caller)))
                    .await;
            }
            Route::Local(meta) => {
                // A node that takes replicas must be there, and be that node.
                for node in nodes.iter().filter(|n| !n.draining) {
                    membership::probe(node.id, &node.addr, &self.ctx.security.dialer)
                        .await
                        .map_err(|why| {
                            Status::failed_precondition(format!(
                                "node {} at {} does not answer as node {} ({why}); nothing was changed",
                                node.id, node.addr, node.id
                            ))
                        })?;
                }
                super::submit_one(&meta, crate::ops::Op::SetNodes { nodes }).await?;
            }
        }
        Ok(Response::new(crate::coordinator::status(&self.ctx).await))
    }

    async fn get_placement(
        &self,
        request: Request<pb::GetPlacementRequest>,
    ) -> Result<Response<pb::PlacementStatus>, Status> {
        let caller = self.authorize(&request, "GetPlacement")?;
        if self.ctx.layout.replication_factor.is_none() {
            return Err(Status::failed_precondition(
                "this cluster has no replication factor: every node holds every shard",
            ));
        }
        match self
            .ctx
            .route(crate::coordinator::METADATA_SHARD, &request)?
        {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .cluster()
                            .get_placement(forwarded(pb::GetPlacementRequest {}, &caller)),
                    )
                    .await
            }
            Route::Local(_) => Ok(Response::new(crate::coordinator::status(&self.ctx).await)),
        }
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let caller = self.authorize(&request, "ChangeMembership")?;
        let req = request.get_ref().clone();
        if req.voters.is_empty() {
            return Err(Status::invalid_argument(
                "voters is empty: a cluster needs at least one voter",
            ));
        }
        let voters: BTreeSet<u64> = req.voters.iter().copied().collect();
        let mut relayed = Vec::new();
        for shard in self.target_shards(req.shard)? {
            match self.ctx.route(shard, &request)? {
                Route::Leader(leader) => {
                    let one = pb::ChangeMembershipRequest {
                        shard: Some(shard),
                        ..req.clone()
                    };
                    leader
                        .relay(leader.cluster().change_membership(forwarded(one, &caller)))
                        .await?;
                    relayed.push(shard);
                }
                Route::Local(handle) => {
                    membership::change_voters(
                        &handle,
                        self.ctx.id,
                        &voters,
                        req.retain,
                        &self.ctx.security.dialer,
                    )
                    .await?;
                }
            }
        }
        // The status answered is this node's view: let it see the changes
        // the leaders made, so a caller reads back what it asked for.
        for shard in relayed {
            let _ = self
                .ctx
                .shard(shard)?
                .raft
                .wait(Some(std::time::Duration::from_secs(5)))
                .metrics(
                    |m| {
                        m.membership_config
                            .membership()
                            .voter_ids()
                            .collect::<BTreeSet<_>>()
                            == voters
                    },
                    "the new voters known here",
                )
                .await;
        }
        Ok(Response::new(self.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u64, addr: &str, draining: bool) -> pb::NodeSpec {
        pb::NodeSpec {
            node_id: id,
            addr: addr.into(),
            zone: String::new(),
            draining,
        }
    }

    #[test]
    fn a_declaration_is_refused_with_its_reason() {
        let refused = |nodes: &[pb::NodeSpec]| node_records(nodes, 3).unwrap_err();
        let zero = refused(&[spec(0, "a:1", false)]);
        assert_eq!(zero.code(), tonic::Code::InvalidArgument);
        assert!(zero.message().contains("node_id 0"), "{zero:?}");
        let twice = refused(&[spec(1, "a:1", false), spec(1, "b:1", false)]);
        assert!(
            twice.message().contains("node 1 is declared twice"),
            "{twice:?}"
        );
        let no_addr = refused(&[spec(2, "", false)]);
        assert!(
            no_addr.message().contains("node 2 has no addr"),
            "{no_addr:?}"
        );
        let few = refused(&[
            spec(1, "a:1", false),
            spec(2, "b:1", false),
            spec(3, "c:1", true),
        ]);
        assert_eq!(few.code(), tonic::Code::FailedPrecondition);
        assert!(
            few.message()
                .contains("2 declared node(s) would take replicas"),
            "{few:?}"
        );
        let ok = node_records(
            &[
                pb::NodeSpec {
                    zone: "z1".into(),
                    ..spec(1, "a:1", false)
                },
                spec(2, "b:1", false),
                spec(3, "c:1", false),
                spec(4, "d:1", true),
            ],
            3,
        )
        .unwrap();
        assert_eq!(ok[0].zone.as_deref(), Some("z1"));
        assert_eq!(ok[1].zone, None);
        assert!(ok[3].draining);
    }
}
