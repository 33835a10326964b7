//! The gRPC API. Handlers validate a request, route it to the shard that
//! owns it, and either turn it into ops for the shard's batcher (on the
//! leader) or forward it whole to the leader. They never touch storage.

mod admin;
mod cluster;
mod convert;
mod queue;

use std::sync::Arc;
use std::time::Duration;

pub use admin::QueueAdminService;
pub use cluster::ClusterService;
pub use queue::QueueService;
use raftq_api::validate::Invalid;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::batcher::SubmitError;
use crate::node::{NodeContext, ShardHandle};
use crate::ops::{Op, OpError, OpResult};

/// Set on forwarded requests so they are never forwarded twice.
const FORWARDED: &str = "x-raftq-forwarded";
/// How long a request waits for its batch to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.0)
}

pub(crate) fn op_status(e: OpError) -> Status {
    match e {
        OpError::NotFound(m) => Status::not_found(m),
        OpError::FailedPrecondition(m) => Status::failed_precondition(m),
    }
}

/// Where a request for a shard goes.
pub(crate) enum Route<'a> {
    Local(&'a ShardHandle),
    Leader(Channel),
}

impl NodeContext {
    /// The shard that owns `queue`.
    pub(crate) fn shard_of_queue(&self, queue: &str) -> u32 {
        raftq_api::shard_of(queue, self.shards.len() as u32)
    }

    pub(crate) fn shard(&self, id: u32) -> Result<&ShardHandle, Status> {
        self.shards.get(id as usize).ok_or_else(|| {
            Status::invalid_argument(format!(
                "shard {id} does not exist (this cluster has {} shard(s)); check the job id",
                self.shards.len()
            ))
        })
    }

    pub(crate) fn route<T>(&self, shard: u32, request: &Request<T>) -> Result<Route<'_>, Status> {
        self.route_as(shard, is_forwarded(request.metadata()))
    }

    /// Like [`NodeContext::route`]; `forwarded` says the request already
    /// came from another node (it is then never forwarded again).
    pub(crate) fn route_as(&self, shard: u32, forwarded: bool) -> Result<Route<'_>, Status> {
        let handle = self.shard(shard)?;
        let metrics = handle.raft.metrics();
        let (leader, addr) = {
            let m = metrics.borrow();
            let leader = m.current_leader;
            let addr = leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            (leader, addr)
        };
        match (leader, addr) {
            (Some(l), _) if l == self.id => Ok(Route::Local(handle)),
            (Some(l), Some(addr)) => {
                if forwarded {
                    return Err(Status::unavailable(format!(
                        "shard {shard}: leadership is moving (this node now sees node {l} as leader); retry"
                    )));
                }
                Ok(Route::Leader(self.peer(&addr)?))
            }
            _ => Err(Status::unavailable(format!(
                "shard {shard} has no leader right now (election in progress or quorum lost); retry shortly"
            ))),
        }
    }
}

pub(crate) fn is_forwarded(metadata: &tonic::metadata::MetadataMap) -> bool {
    metadata.contains_key(FORWARDED)
}

/// Builds the forwarded copy of a request.
pub(crate) fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// Proposes `ops` on the shard and waits for their results.
pub(crate) async fn submit(shard: &ShardHandle, ops: Vec<Op>) -> Result<Vec<OpResult>, Status> {
    let n = ops.len();
    let results = match tokio::time::timeout(COMMIT_TIMEOUT, shard.batcher.submit(ops)).await {
        Err(_) => {
            return Err(Status::unavailable(format!(
            "shard {} did not commit within {}s (quorum lost?); the request may still take effect",
            shard.id,
            COMMIT_TIMEOUT.as_secs()
        )))
        }
        Ok(Err(SubmitError::NotLeader { leader })) => {
            return Err(Status::unavailable(match leader {
                Some((id, addr)) => format!(
                    "shard {}: leadership moved to node {id} ({addr}); retry",
                    shard.id
                ),
                None => format!("shard {}: leadership is changing; retry", shard.id),
            }))
        }
        Ok(Err(SubmitError::Interrupted)) => {
            return Err(Status::unavailable(format!(
                "shard {}: leadership changed while the request was in flight; it may or may not have taken effect: retry (enqueues with an idempotency key are safe to retry)",
                shard.id
            )))
        }
        Ok(Err(SubmitError::Closed)) => {
            return Err(Status::unavailable(
                "the node is shutting down; retry on another node",
            ))
        }
        Ok(Err(SubmitError::Raft(e))) => {
            return Err(Status::unavailable(format!("shard {}: {e}", shard.id)))
        }
        Ok(Ok(results)) => results,
    };
    if results.len() != n {
        return Err(Status::internal(format!(
            "expected {n} results, got {}",
            results.len()
        )));
    }
    Ok(results)
}

/// Proposes one op and returns its result.
pub(crate) async fn submit_one(shard: &ShardHandle, op: Op) -> Result<OpResult, Status> {
    submit(shard, vec![op])
        .await?
        .pop()
        .ok_or_else(|| Status::internal("no result for op"))
}

pub(crate) fn unexpected(result: OpResult) -> Status {
    match result {
        OpResult::Failed(e) => op_status(e),
        other => Status::internal(format!("unexpected state machine result {other:?}")),
    }
}

pub(crate) type Ctx = Arc<NodeContext>;
