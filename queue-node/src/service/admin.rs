//! The `QueueAdmin` service: stats, pause / resume / purge, per-queue
//! settings, job lookup and cancel, and the dead-letter set. Reads are
//! served from the leader's applied state once a read-index round has
//! confirmed its leadership (`local: true` skips both: any node, no round).

use std::time::Duration;

use raftq_api::limits::{MAX_DELAY_MS, MAX_LEASE_MS};
use raftq_api::v1 as pb;
use raftq_api::validate;
use tonic::{Request, Response, Status};

use super::listing::Listing;
use super::{
    convert, forwarded, invalid, may_on_jobs, read_contents, submit_one, unexpected, with_contents,
    Ctx, Route,
};
use crate::context::ShardHandle;
use crate::forward;
use crate::ops::{Op, OpResult, QueueConfigPatch};
use crate::security::{Call, Caller, Port};

#[derive(Clone)]
pub struct QueueAdminService {
    ctx: Ctx,
    port: Port,
}

impl QueueAdminService {
    pub fn new(ctx: Ctx, port: Port) -> QueueAdminService {
        QueueAdminService { ctx, port }
    }

    /// The caller, once it may make `call` on `queue`; and the
    /// leader-side shard of `queue`, or the leader to forward to.
    fn queue_route<T>(
        &self,
        call: Call,
        queue: &str,
        request: &Request<T>,
    ) -> Result<(Caller, Route), Status> {
        validate::queue_name(queue).map_err(invalid)?;
        let caller = self.authorize(request, call, Some(queue))?;
        let route = self.ctx.route_queue(queue, request)?;
        Ok((caller, route))
    }

    fn authorize<T>(
        &self,
        request: &Request<T>,
        call: Call,
        queue: Option<&str>,
    ) -> Result<Caller, Status> {
        self.ctx.authorize(self.port, request, call, queue)
    }

    async fn queue_op(
        &self,
        shard: &ShardHandle,
        op: Op,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        match submit_one(shard, op).await? {
            OpResult::Queue(view) => Ok(Response::new(convert::queue_info(&view))),
            other => Err(unexpected(other)),
        }
    }

    async fn set_paused(
        &self,
        request: Request<pb::QueueRef>,
        paused: bool,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let call = match paused {
            true => Call::PauseQueue,
            false => Call::ResumeQueue,
        };
        let (caller, route) = self.queue_route(call, &request.get_ref().queue, &request)?;
        match route {
            Route::Leader(leader) => {
                let mut admin = leader.admin();
                let request = forwarded(request.into_inner(), &caller);
                match paused {
                    true => leader.relay(admin.pause_queue(request)).await,
                    false => leader.relay(admin.resume_queue(request)).await,
                }
            }
            Route::Local(shard) => {
                let shard = &shard;
                let queue = request.into_inner().queue;
                self.queue_op(shard, Op::SetPaused { queue, paused }).await
            }
        }
    }

    async fn count_op(&self, shard: &ShardHandle, op: Op) -> Result<u64, Status> {
        match submit_one(shard, op).await? {
            OpResult::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }
}

fn stats(s: crate::fsm::QueueStats) -> pb::QueueStats {
    pb::QueueStats {
        queue: s.queue,
        ready: s.ready,
        scheduled: s.scheduled,
        leased: s.leased,
        dead: s.dead,
        paused: s.paused,
        enqueued_total: s.totals.enqueued,
        acked_total: s.totals.acked,
        nacked_total: s.totals.nacked,
        expired_total: s.totals.expired,
        dead_total: s.totals.died,
    }
}

/// How long a leader read waits to confirm leadership with a quorum.
const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(5);

/// Confirms this node still leads `shard` (a heartbeat round to a quorum)
/// and has applied everything committed before the read: a deposed leader
/// that has not heard of its successor must not answer with old data.
async fn linearizable(shard: &ShardHandle) -> Result<(), Status> {
    match tokio::time::timeout(READ_INDEX_TIMEOUT, shard.raft.ensure_linearizable()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Status::unavailable(format!(
            "shard {}: this node cannot confirm it still leads ({e}); retry",
            shard.id
        ))),
        Err(_) => Err(Status::unavailable(format!(
            "shard {}: leadership not confirmed by a quorum within {}s; retry",
            shard.id,
            READ_INDEX_TIMEOUT.as_secs()
        ))),
    }
}

/// Every queue of one shard this node leads, read after a read-index.
async fn shard_stats(shard: &ShardHandle) -> Result<Vec<pb::QueueStats>, Status> {
    linearizable(shard).await?;
    Ok(shard
        .shared
        .state()
        .all_stats()
        .into_iter()
        .map(stats)
        .collect())
}

/// `route` never forwards a request that was forwarded already.
fn unreachable_forward<T>(shard: u32) -> Result<T, Status> {
    Err(Status::unavailable(format!(
        "shard {shard}: leadership is moving; retry"
    )))
}

fn dead_ids(ids: &[String]) -> Result<Vec<raftq_api::JobId>, Status> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| validate::job_id(format_args!("job_ids[{i}]"), id))
        .collect::<Result<_, _>>()
        .map_err(invalid)
}

#[tonic::async_trait]
impl pb::queue_admin_server::QueueAdmin for QueueAdminService {
    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let queue = request.get_ref().queue.clone();
        let caller = self.authorize(
            &request,
            Call::Stats,
            Some(queue.as_str()).filter(|q| !q.is_empty()),
        )?;
        if request.get_ref().local {
            let mut queues = Vec::new();
            for shard in self.ctx.held().iter() {
                let state = shard.shared.state();
                if queue.is_empty() {
                    queues.extend(state.all_stats().into_iter().map(stats));
                } else if let Some(s) = state.stats(&queue) {
                    queues.push(stats(s));
                }
            }
            queues.retain(|q| caller.may_read(&q.queue));
            return Ok(Response::new(pb::StatsResponse { queues }));
        }
        if queue.is_empty() {
            if let Some(shard) = forward::forwarded_shard(request.metadata()) {
                // Another node asks this one, as the leader, for one shard.
                let queues = match self.ctx.route(shard, &request)? {
                    Route::Local(handle) => shard_stats(&handle).await?,
                    Route::Leader(_) => unreachable_forward(shard)?,
                };
                let queues = queues
                    .into_iter()
                    .filter(|q| caller.may_read(&q.queue))
                    .collect();
                return Ok(Response::new(pb::StatsResponse { queues }));
            }
            // Every shard's queues, each from its leader, all at once.
            let (request, caller) = (&request, &caller);
            let per_shard = self.ctx.shard_ids().map(|shard| async move {
                match self.ctx.route(shard, request)? {
                    Route::Local(handle) => shard_stats(&handle).await,
                    Route::Leader(leader) => {
                        let request = forward::forwarded_for_shard(
                            pb::StatsRequest::default(),
                            shard,
                            caller,
                        );
                        let remote = leader.relay(leader.admin().stats(request)).await?;
                        let this_shard =
                            |q: &pb::QueueStats| self.ctx.shard_of_queue(&q.queue) == shard;
                        Ok(remote
                            .into_inner()
                            .queues
                            .into_iter()
                            .filter(this_shard)
                            .collect())
                    }
                }
            });
            let mut queues = Vec::new();
            for answer in futures::future::join_all(per_shard).await {
                queues.extend(answer?.into_iter().filter(|q| caller.may_read(&q.queue)));
            }
            return Ok(Response::new(pb::StatsResponse { queues }));
        }
        let (caller, route) = self.queue_route(Call::Stats, &queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .stats(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                linearizable(shard).await?;
                let found = shard.shared.state().stats(&queue);
                let stats = found.map(stats).unwrap_or(pb::QueueStats {
                    queue,
                    ..Default::default()
                });
                Ok(Response::new(pb::StatsResponse {
                    queues: vec![stats],
                }))
            }
        }
    }

    async fn pause_queue(
        &self,
        request: Request<pb::QueueRef>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        self.set_paused(request, true).await
    }

    async fn resume_queue(
        &self,
        request: Request<pb::QueueRef>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        self.set_paused(request, false).await
    }

    async fn purge_queue(
        &self,
        request: Request<pb::QueueRef>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let (caller, route) =
            self.queue_route(Call::PurgeQueue, &request.get_ref().queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .purge_queue(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                let queue = request.into_inner().queue;
                let removed = self.count_op(shard, Op::PurgeQueue { queue }).await?;
                Ok(Response::new(pb::PurgeResponse { removed }))
            }
        }
    }

    async fn set_queue_config(
        &self,
        request: Request<pb::SetQueueConfigRequest>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let req = request.get_ref();
        validate::optional_duration("default_lease_ms", req.default_lease_ms, MAX_LEASE_MS)
            .map_err(invalid)?;
        validate::optional_duration("dedup_window_ms", req.dedup_window_ms, MAX_DELAY_MS)
            .map_err(invalid)?;
        if let Some(b) = &req.default_backoff {
            validate::backoff("default_backoff", b).map_err(invalid)?;
        }
        if let Some(n) = req.default_max_attempts {
            if n == 0 || n > 1000 {
                return Err(Status::invalid_argument(format!(
                    "default_max_attempts must be in 1..=1000 (got {n})"
                )));
            }
        }
        let (caller, route) = self.queue_route(Call::SetQueueConfig, &req.queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .set_queue_config(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                let req = request.into_inner();
                let patch = QueueConfigPatch {
                    lease_ms: req.default_lease_ms.map(|v| v as u64),
                    max_attempts: req.default_max_attempts,
                    backoff: req.default_backoff.as_ref().map(convert::backoff_from),
                    dedup_window_ms: req.dedup_window_ms.map(|v| v as u64),
                };
                self.queue_op(
                    shard,
                    Op::SetQueueConfig {
                        queue: req.queue,
                        patch,
                    },
                )
                .await
            }
        }
    }

    async fn get_job(&self, request: Request<pb::JobRef>) -> Result<Response<pb::Job>, Status> {
        let id = validate::job_id("job_id", &request.get_ref().job_id).map_err(invalid)?;
        let caller = self.authorize(&request, Call::GetJob, None)?;
        match self.ctx.route(id.shard, &request)? {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .get_job(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                linearizable(shard).await?;
                let view = shard.shared.state().job(id, &self.ctx.defaults);
                if let Some(view) = &view {
                    caller.may(Call::GetJob, &view.queue)?;
                }
                let served = with_contents(shard, view.into_iter().collect()).await?;
                served
                    .first()
                    .map(|(view, content)| Response::new(convert::job(view, content)))
                    .ok_or_else(|| {
                        Status::not_found(format!("job {id} not found: it was acked, cancelled or purged, or never existed"))
                    })
            }
        }
    }

    async fn cancel_job(
        &self,
        request: Request<pb::JobRef>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = validate::job_id("job_id", &request.get_ref().job_id).map_err(invalid)?;
        let caller = self.authorize(&request, Call::CancelJob, None)?;
        match self.ctx.route(id.shard, &request)? {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .cancel_job(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                may_on_jobs(&caller, Call::CancelJob, shard, [id])?;
                // Read first: the cancel deletes the content with the job.
                let content = read_contents(shard, vec![id]).await?.pop().flatten();
                match submit_one(shard, Op::Cancel { id }).await? {
                    OpResult::Job(view) => Ok(Response::new(pb::CancelJobResponse {
                        job: Some(convert::job(&view, &content.unwrap_or_default())),
                    })),
                    other => Err(unexpected(other)),
                }
            }
        }
    }

    async fn get_queue(
        &self,
        request: Request<pb::QueueRef>,
    ) -> Result<Response<pb::QueueInfo>, Status> {
        let (caller, route) =
            self.queue_route(Call::GetQueue, &request.get_ref().queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .get_queue(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                linearizable(shard).await?;
                let view = shard
                    .shared
                    .state()
                    .queue_view(&request.get_ref().queue, &self.ctx.defaults);
                Ok(Response::new(convert::queue_info(&view)))
            }
        }
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let listing = Listing::of(request.get_ref())?;
        let (caller, route) =
            self.queue_route(Call::ListJobs, &request.get_ref().queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .list_jobs(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                linearizable(shard).await?;
                let req = request.into_inner();
                Ok(Response::new(
                    listing.serve(shard, &req.queue, &self.ctx.defaults).await?,
                ))
            }
        }
    }

    async fn list_dead(
        &self,
        request: Request<pb::ListDeadRequest>,
    ) -> Result<Response<pb::ListDeadResponse>, Status> {
        let req = request.get_ref();
        let limit = match req.limit {
            0 => 100,
            n @ 1..=1000 => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit must be in 1..=1000 (got {n})"
                )))
            }
        };
        let after = match req.after.as_str() {
            "" => None,
            id => Some(validate::job_id("after", id).map_err(invalid)?),
        };
        let (caller, route) = self.queue_route(Call::ListDead, &req.queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .list_dead(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                linearizable(shard).await?;
                let jobs =
                    shard
                        .shared
                        .state()
                        .dead_page(&req.queue, after, limit, &self.ctx.defaults);
                // The page ends where the state's page ends, even if a job
                // went before its content was read.
                let full = jobs.len() == limit;
                let last = jobs.last().map(|j| j.id);
                let jobs = with_contents(shard, jobs).await?;
                let next_after = if full {
                    last.map(|id| id.to_string()).unwrap_or_default()
                } else {
                    String::new()
                };
                Ok(Response::new(pb::ListDeadResponse {
                    jobs: jobs.iter().map(|(v, c)| convert::job(v, c)).collect(),
                    next_after,
                }))
            }
        }
    }

    async fn requeue_dead(
        &self,
        request: Request<pb::DeadSelector>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let ids = dead_ids(&request.get_ref().job_ids)?;
        let (caller, route) =
            self.queue_route(Call::RequeueDead, &request.get_ref().queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .requeue_dead(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                let queue = request.into_inner().queue;
                let count = self.count_op(shard, Op::RequeueDead { queue, ids }).await?;
                Ok(Response::new(pb::CountResponse { count }))
            }
        }
    }

    async fn purge_dead(
        &self,
        request: Request<pb::DeadSelector>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let ids = dead_ids(&request.get_ref().job_ids)?;
        let (caller, route) =
            self.queue_route(Call::PurgeDead, &request.get_ref().queue, &request)?;
        match route {
            Route::Leader(leader) => {
                leader
                    .relay(
                        leader
                            .admin()
                            .purge_dead(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => {
                let shard = &shard;
                let queue = request.into_inner().queue;
                let count = self.count_op(shard, Op::PurgeDead { queue, ids }).await?;
                Ok(Response::new(pb::CountResponse { count }))
            }
        }
    }
}
