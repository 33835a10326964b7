//! The gRPC API. Handlers validate a request, route it to the shard that
//! owns it, and either turn it into ops for the shard's batcher (on the
//! leader) or forward it whole to the leader. They never write storage;
//! they read it only for the contents of the jobs they answer with
//! ([`with_contents`]).

mod admin;
mod cluster;
mod convert;
mod listing;
mod membership;
mod queue;
mod scaler;
mod shard_map;

use std::sync::Arc;
use std::time::Duration;

pub use admin::QueueAdminService;
pub use cluster::{local_status, ClusterService};
pub use queue::QueueService;
use raftq_api::validate::Invalid;
pub use scaler::ScalerService;
use tonic::Status;

use crate::batcher::SubmitError;
pub(crate) use crate::context::Route;
use crate::context::{NodeContext, ShardHandle};
pub(crate) use crate::forward::forwarded;
use crate::ops::{JobContent, JobView, Op, OpError, OpResult};
use crate::security::{Call, Caller};

/// How long a request waits for its batch to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.0)
}

/// The gRPC code of a refused op.
pub(crate) fn op_code(e: &OpError) -> tonic::Code {
    match e {
        OpError::JobNotFound { .. } | OpError::NotDead { .. } => tonic::Code::NotFound,
        OpError::LeaseLost { .. } | OpError::Leased { .. } => tonic::Code::FailedPrecondition,
        // The node routed by an older table; the retry goes by the newer.
        OpError::WrongShard { .. } => tonic::Code::Unavailable,
        OpError::RoutingChanged { .. } => tonic::Code::Aborted,
    }
}

pub(crate) fn op_status(e: OpError) -> Status {
    Status::new(op_code(&e), e.to_string())
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

/// The contents of `ids` (`None` where a job is gone), as a gRPC result.
pub(crate) async fn read_contents(
    shard: &ShardHandle,
    ids: Vec<raftq_api::JobId>,
) -> Result<Vec<Option<JobContent>>, Status> {
    shard
        .contents
        .read(ids)
        .await
        .map_err(|e| Status::internal(format!("shard {}: {e}", shard.id)))
}

/// `views` as served: each with its payload and headers, read from disk in
/// one batch. A job that left the state in between (acked by the holder of
/// a later lease, purged) is left out: it is no longer the caller's.
pub(crate) async fn with_contents(
    shard: &ShardHandle,
    views: Vec<JobView>,
) -> Result<Vec<(JobView, JobContent)>, Status> {
    let contents = read_contents(shard, views.iter().map(|v| v.id).collect()).await?;
    Ok(views
        .into_iter()
        .zip(contents)
        .filter_map(|(view, content)| match content {
            Some(content) => Some((view, content)),
            None => {
                tracing::warn!(shard = shard.id, job = %view.id, "job gone before its content was read; left out of the answer");
                None
            }
        })
        .collect())
}

pub(crate) fn unexpected(result: OpResult) -> Status {
    match result {
        OpResult::Failed(e) => op_status(e),
        other => Status::internal(format!("unexpected state machine result {other:?}")),
    }
}

pub(crate) type Ctx = Arc<NodeContext>;

/// `PERMISSION_DENIED` unless `caller` may make `call` on the queue of each
/// job of `ids` that exists (jobs name no queue in their ids, so the
/// leader looks them up before proposing anything).
pub(crate) fn may_on_jobs(
    caller: &Caller,
    call: Call,
    shard: &ShardHandle,
    ids: impl IntoIterator<Item = raftq_api::JobId>,
) -> Result<(), Status> {
    if call.role().is_none_or(|role| caller.everywhere(role)) {
        return Ok(());
    }
    let queues: Vec<Arc<str>> = {
        let state = shard.shared.state();
        ids.into_iter()
            .filter_map(|id| state.queue_of(id))
            .collect()
    };
    queues.iter().try_for_each(|q| caller.may(call, q))
}
