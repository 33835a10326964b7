//! The `Queue` service: enqueue, fetch, ack / nack / extend, and the
//! worker stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use raftq_api::limits::{
    MAX_ENQUEUE_BATCH, MAX_FETCH_JOBS, MAX_KEY_BYTES, MAX_LEASE_MS, MAX_TOKEN_BATCH, MAX_WAIT_MS,
};
use raftq_api::v1 as pb;
use raftq_api::validate::{self, Invalid};
use raftq_api::JobId;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{
    convert, forwarded, invalid, may_on_jobs, submit, submit_one, unexpected, with_contents, Ctx,
    Route,
};
use crate::context::ShardHandle;
use crate::drain::SessionGuard;
use crate::ops::{Op, OpResult};
use crate::raft_types::NodeId;
use crate::routing::RoutingCell;
use crate::security::{Call, Caller, Port, Role};

/// Most jobs a worker stream may ask for ahead.
const MAX_CREDIT: u32 = 10_000;
/// A worker stream with credit re-checks its queue at least this often, in
/// case a wake-up was missed (e.g. across a leader change).
const RECHECK: Duration = Duration::from_secs(1);
/// How long a draining session waits for more frames already on their way.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

pub struct QueueService {
    ctx: Ctx,
    port: Port,
}

impl QueueService {
    pub fn new(ctx: Ctx, port: Port) -> QueueService {
        QueueService { ctx, port }
    }

    fn authorize<T>(
        &self,
        request: &Request<T>,
        call: Call,
        queue: Option<&str>,
    ) -> Result<Caller, Status> {
        self.ctx.authorize(self.port, request, call, queue)
    }

    /// The one shard every token of a request lives on.
    fn shard_of_tokens<'a>(&self, ids: impl IntoIterator<Item = &'a JobId>) -> Result<u32, Status> {
        let mut shard = None;
        for id in ids {
            match shard {
                None => shard = Some(id.shard),
                Some(s) if s != id.shard => {
                    return Err(Status::invalid_argument(format!(
                        "tokens belong to shards {s} and {}; send one request per shard",
                        id.shard
                    )))
                }
                _ => {}
            }
        }
        Ok(shard.unwrap_or(0))
    }
}

/// The per-token results, or the single token's failure as the status.
fn token_results(results: Vec<OpResult>) -> Result<Vec<pb::TokenResult>, Status> {
    let outcomes = match results.into_iter().next() {
        Some(OpResult::Tokens(outcomes)) => outcomes,
        Some(other) => return Err(unexpected(other)),
        None => return Err(Status::internal("no result")),
    };
    if let [only] = outcomes.as_slice() {
        if let Err(e) = &only.result {
            return Err(super::op_status(e.clone()));
        }
    }
    Ok(outcomes.iter().map(convert::token_result).collect())
}

fn worker_id(field: &str, id: &str) -> Result<(), Status> {
    validate::short_text(field, id, MAX_KEY_BYTES).map_err(invalid)
}

#[tonic::async_trait]
impl pb::queue_server::Queue for QueueService {
    async fn enqueue(
        &self,
        request: Request<pb::EnqueueRequest>,
    ) -> Result<Response<pb::EnqueueResponse>, Status> {
        let req = request.get_ref();
        validate::queue_name(&req.queue).map_err(invalid)?;
        validate::batch_len("jobs", req.jobs.len(), MAX_ENQUEUE_BATCH).map_err(invalid)?;
        let caller = self.authorize(&request, Call::Enqueue, Some(&req.queue))?;
        // Held until the answer, here or from the leader it is forwarded to.
        let _held = self
            .ctx
            .memory
            .requests
            .hold(prost::Message::encoded_len(req))
            .map_err(Status::resource_exhausted)?;
        let shard = match self.ctx.route_queue(&req.queue, &request)? {
            Route::Leader(leader) => {
                return leader
                    .relay(
                        leader
                            .queue()
                            .enqueue(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => shard,
        };
        let shard = &*shard;
        if let Some(why) = self
            .ctx
            .memory
            .refuse_enqueue(&self.ctx.held(), req.jobs.len())
        {
            return Err(Status::resource_exhausted(why));
        }
        let req = request.into_inner();
        let jobs = req
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, j)| convert::new_job(i, j))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        match submit_one(
            shard,
            Op::Enqueue {
                queue: req.queue,
                jobs,
            },
        )
        .await?
        {
            OpResult::Enqueued(ids) => Ok(Response::new(pb::EnqueueResponse {
                job_ids: ids.iter().map(|(id, _)| id.to_string()).collect(),
                duplicate: ids.iter().map(|(_, dup)| *dup).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let req = request.get_ref();
        validate::queue_name(&req.queue).map_err(invalid)?;
        worker_id("worker_id", &req.worker_id)?;
        if req.max_jobs == 0 || req.max_jobs > MAX_FETCH_JOBS {
            return Err(Status::invalid_argument(format!(
                "max_jobs must be in 1..={MAX_FETCH_JOBS} (got {})",
                req.max_jobs
            )));
        }
        let lease_ms = convert::lease_ms("lease_ms", req.lease_ms).map_err(invalid)?;
        if !(0..=MAX_WAIT_MS).contains(&req.wait_ms) {
            return Err(Status::invalid_argument(format!(
                "wait_ms must be in 0..={MAX_WAIT_MS} (got {})",
                req.wait_ms
            )));
        }
        let caller = self.authorize(&request, Call::Fetch, Some(&req.queue))?;
        let shard = match self.ctx.route_queue(&req.queue, &request)? {
            Route::Leader(leader) => {
                return leader
                    .relay(
                        leader
                            .queue()
                            .fetch(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => shard,
        };
        let shard = &*shard;
        let req = request.into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms as u64);
        let waiter = shard.shared.waiter(&req.queue);
        loop {
            let notified = waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Nothing ready: no claim through Raft, just wait.
            let jobs = if shard.shared.state().has_ready(&req.queue) {
                let op = Op::Claim {
                    queue: req.queue.clone(),
                    worker: req.worker_id.clone(),
                    max: req.max_jobs,
                    lease_ms,
                };
                match submit_one(shard, op).await? {
                    OpResult::Claimed(jobs) => jobs,
                    other => return Err(unexpected(other)),
                }
            } else {
                Vec::new()
            };
            if !jobs.is_empty() || tokio::time::Instant::now() >= deadline {
                let jobs = with_contents(shard, jobs).await?;
                return Ok(Response::new(pb::FetchResponse {
                    jobs: jobs.iter().map(convert::leased_job).collect(),
                }));
            }
            let recheck = deadline.min(tokio::time::Instant::now() + RECHECK);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let tokens = convert::tokens("tokens", &request.get_ref().tokens).map_err(invalid)?;
        let shard_id = self.shard_of_tokens(tokens.iter().map(|(id, _)| id))?;
        let caller = self.authorize(&request, Call::Ack, None)?;
        let shard = match self.ctx.route(shard_id, &request)? {
            Route::Leader(leader) => {
                return leader
                    .relay(leader.queue().ack(forwarded(request.into_inner(), &caller)))
                    .await
            }
            Route::Local(shard) => shard,
        };
        let shard = &*shard;
        may_on_jobs(&caller, Call::Ack, shard, tokens.iter().map(|(id, _)| *id))?;
        let results = token_results(submit(shard, vec![Op::Ack { tokens }]).await?)?;
        Ok(Response::new(pb::AckResponse { results }))
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackResponse>, Status> {
        let items = convert::nacks("items", request.get_ref().items.clone()).map_err(invalid)?;
        let shard_id = self.shard_of_tokens(items.iter().map(|n| &n.id))?;
        let caller = self.authorize(&request, Call::Nack, None)?;
        let shard = match self.ctx.route(shard_id, &request)? {
            Route::Leader(leader) => {
                return leader
                    .relay(
                        leader
                            .queue()
                            .nack(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => shard,
        };
        let shard = &*shard;
        may_on_jobs(&caller, Call::Nack, shard, items.iter().map(|n| n.id))?;
        let results = token_results(submit(shard, vec![Op::Nack { items }]).await?)?;
        Ok(Response::new(pb::NackResponse { results }))
    }

    async fn extend_lease(
        &self,
        request: Request<pb::ExtendLeaseRequest>,
    ) -> Result<Response<pb::ExtendLeaseResponse>, Status> {
        let req = request.get_ref();
        let tokens = convert::tokens("tokens", &req.tokens).map_err(invalid)?;
        let lease_ms = convert::lease_ms("lease_ms", req.lease_ms).map_err(invalid)?;
        let shard_id = self.shard_of_tokens(tokens.iter().map(|(id, _)| id))?;
        let caller = self.authorize(&request, Call::ExtendLease, None)?;
        let shard = match self.ctx.route(shard_id, &request)? {
            Route::Leader(leader) => {
                return leader
                    .relay(
                        leader
                            .queue()
                            .extend_lease(forwarded(request.into_inner(), &caller)),
                    )
                    .await
            }
            Route::Local(shard) => shard,
        };
        let shard = &*shard;
        may_on_jobs(
            &caller,
            Call::ExtendLease,
            shard,
            tokens.iter().map(|(id, _)| *id),
        )?;
        let results = token_results(submit(shard, vec![Op::Extend { tokens, lease_ms }]).await?)?;
        Ok(Response::new(pb::ExtendLeaseResponse { results }))
    }

    async fn get_shard_map(
        &self,
        request: Request<pb::GetShardMapRequest>,
    ) -> Result<Response<pb::ShardMap>, Status> {
        self.authorize(&request, Call::GetShardMap, None)?;
        let req = request.into_inner();
        if req.queues.len() > MAX_TOKEN_BATCH {
            return Err(Status::invalid_argument(format!(
                "queues lists {} names; at most {MAX_TOKEN_BATCH} per request",
                req.queues.len()
            )));
        }
        for queue in &req.queues {
            validate::queue_name(queue).map_err(invalid)?;
        }
        Ok(Response::new(super::shard_map::build(
            &self.ctx,
            &req.queues,
        )))
    }

    type WorkerStreamStream = Pin<Box<dyn Stream<Item = Result<pb::ServerFrame, Status>> + Send>>;

    async fn worker_stream(
        &self,
        request: Request<Streaming<pb::WorkerFrame>>,
    ) -> Result<Response<Self::WorkerStreamStream>, Status> {
        let arrival = crate::forward::Arrival::of(request.metadata());
        let caller = self.authorize(&request, Call::WorkerStream, None)?;
        let mut inbound = request.into_inner();
        let open_timeout = Duration::from_millis(self.ctx.security.limits.open_timeout_ms);
        let first = tokio::time::timeout(open_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the worker stream sent no `open` frame within {open_timeout:?} (limits.open_timeout_ms)"
                ))
            })??
            .ok_or_else(|| Status::invalid_argument("worker stream closed before its first frame"))?;
        let open = first.open.clone().ok_or_else(|| {
            Status::invalid_argument("the first worker frame must carry `open` (queue, worker_id)")
        })?;
        validate::queue_name(&open.queue).map_err(invalid)?;
        worker_id("open.worker_id", &open.worker_id)?;
        validate::optional_duration("open.lease_ms", open.lease_ms, MAX_LEASE_MS)
            .map_err(invalid)?;
        caller.may(Call::WorkerStream, &open.queue)?;
        if self.ctx.workers.is_draining() {
            return Err(shutting_down(self.ctx.id));
        }
        let mut session = self.ctx.workers.session();
        let shard_id = self.ctx.shard_of_queue(&open.queue);
        match self.ctx.route_queue_as(&open.queue, arrival)? {
            Route::Leader(leader) => {
                let frames = futures::stream::once(async move { first })
                    .chain(inbound.filter_map(|f| futures::future::ready(f.ok())));
                let upstream = leader
                    .relay(leader.queue().worker_stream(forwarded(frames, &caller)))
                    .await?;
                // Ends with this node: the worker reconnects elsewhere.
                let until_drained = async move { session.draining().await };
                let frames = upstream
                    .into_inner()
                    .map(move |frame| frame.map_err(|status| leader.failed(status)));
                Ok(Response::new(Box::pin(frames.take_until(until_drained))))
            }
            Route::Local(_) => {
                let (tx, rx) = mpsc::channel(16);
                let ctx = self.ctx.clone();
                tokio::spawn(async move {
                    if let Ok(shard) = ctx.shard(shard_id) {
                        run_worker_session(
                            &shard,
                            Opened { open, caller },
                            first,
                            inbound,
                            tx,
                            session,
                            (ctx.id, &ctx.routing),
                        )
                        .await;
                    }
                });
                Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
            }
        }
    }
}

/// A worker stream's `open` frame and the caller allowed to open it.
struct Opened {
    open: pb::WorkerOpen,
    caller: Caller,
}

/// Serves one worker stream on the leader. Each inbound frame becomes one
/// group of ops (its acks, nacks, extends and a claim for the credit), so
/// it costs one Raft round-trip; jobs that become ready later are pushed
/// while credit remains.
async fn run_worker_session(
    shard: &ShardHandle,
    opened: Opened,
    first: pb::WorkerFrame,
    mut inbound: Streaming<pb::WorkerFrame>,
    tx: mpsc::Sender<Result<pb::ServerFrame, Status>>,
    mut session: SessionGuard,
    (node, routing): (NodeId, &RoutingCell),
) {
    let Opened { open, caller } = opened;
    let mut routing_changes = routing.changes();
    let lease_ms = open.lease_ms.map(|l| l as u64);
    let waiter = shard.shared.waiter(&open.queue);
    let mut credit: u32 = 0;
    // Jobs pushed on this stream and not yet acked, nacked or extended.
    let mut unstarted: HashMap<JobId, u32> = HashMap::new();
    let mut frame = Some(first);
    // A frame read but not yet handled, and the stream's end once seen
    // (by the select below or while merging frames), acted on in that order.
    let mut ahead = ReadAhead::default();
    loop {
        if frame.is_none() {
            frame = ahead.carried.take();
        }
        if frame.is_none() {
            match ahead.ended.take() {
                // A clean close: the worker is done with what it never
                // started (every frame before this one has been applied).
                Some(Ok(())) => {
                    release_unstarted(shard, unstarted).await;
                    return;
                }
                // A broken stream: the worker may still be running its jobs
                // and report them another way; their leases stand.
                Some(Err(_)) => return,
                None => {}
            }
        }
        let notified = waiter.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(mut f) = frame.take() {
            // Frames that arrived while the last one was applied join this
            // one: one Raft round for all of them, and a worker that sends
            // many small frames never has them pile up unread.
            if ahead.carried.is_none() && ahead.ended.is_none() {
                ahead = merge_waiting_frames(&mut f, &mut inbound);
            }
            if let Err(status) = may_report(&caller, shard, &open.queue, &f) {
                let _ = tx.send(Err(status)).await;
                return;
            }
            credit = credit.saturating_add(f.credit).min(MAX_CREDIT);
            // A claim only when something is ready: an idle stream with
            // spare credit costs no Raft round.
            let claim_credit = if shard.shared.state().has_ready(&open.queue) {
                credit
            } else {
                0
            };
            let (ops, rejected) = match frame_ops(f, &open, shard.id, lease_ms, claim_credit) {
                Ok(checked) => checked,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            reported(&ops, &mut unstarted);
            if ops.is_empty() {
                if !rejected.is_empty() {
                    let out = pb::ServerFrame {
                        jobs: Vec::new(),
                        results: rejected,
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
                continue;
            }

            let results = match submit(shard, ops).await {
                Ok(results) => results,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            let mut out = pb::ServerFrame {
                jobs: Vec::new(),
                results: rejected,
            };
            let mut claimed = 0;
            for result in results {
                match result {
                    OpResult::Tokens(outcomes) => out.results.extend(
                        outcomes
                            .iter()
                            .filter(|o| o.result != Ok(None))
                            .map(convert::token_result),
                    ),
                    OpResult::Claimed(jobs) => {
                        claimed = jobs.len() as u32;
                        unstarted.extend(jobs.iter().map(|j| (j.id, j.status.attempt)));
                        match with_contents(shard, jobs).await {
                            Ok(jobs) => out.jobs.extend(jobs.iter().map(convert::leased_job)),
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    _ => {}
                }
            }
            credit -= claimed.min(credit);
            if (!out.jobs.is_empty() || !out.results.is_empty()) && tx.send(Ok(out)).await.is_err()
            {
                return;
            }
            // Jobs came (the queue may hold more than one claim takes, by
            // count or by bytes): look again at once while credit remains.
            if credit > 0 && claimed > 0 {
                frame = Some(pb::WorkerFrame::default());
            }
            continue;
        }
        tokio::select! {
            next = inbound.message() => match next {
                Ok(Some(f)) => frame = Some(f),
                Ok(None) => ahead.ended = Some(Ok(())),
                Err(status) => ahead.ended = Some(Err(status)),
            },
            _ = &mut notified, if credit > 0 => frame = Some(pb::WorkerFrame::default()),
            _ = tokio::time::sleep(RECHECK), if credit > 0 => frame = Some(pb::WorkerFrame::default()),
            _ = tx.closed() => return,
            _ = session.draining() => {
                finish_session(shard, &open, lease_ms, &mut inbound, &tx, &mut unstarted).await;
                release_unstarted(shard, unstarted).await;
                let _ = tx.send(Err(shutting_down(node))).await;
                return;
            }
            // The shard count grew and the queue (it held nothing here)
            // now lives on another shard: its jobs will never come here.
            Ok(()) = routing_changes.changed() => {
                let now_on = routing.shard_of(&open.queue);
                if now_on != shard.id {
                    release_unstarted(shard, unstarted).await;
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "queue {:?} moved to shard {now_on} as the shard count grew; reconnect",
                            open.queue
                        ))))
                        .await;
                    return;
                }
            }
        }
    }
}

/// What was read on a worker stream and not handled yet.
#[derive(Default)]
struct ReadAhead {
    /// A frame that could not join (it carries `open`, or too many tokens):
    /// the next one to handle.
    carried: Option<pb::WorkerFrame>,
    /// The stream's end, after every frame read.
    ended: Option<Result<(), Status>>,
}

/// Merges the frames already received on `inbound` into `frame` while the
/// tokens fit one request.
fn merge_waiting_frames(
    frame: &mut pb::WorkerFrame,
    inbound: &mut Streaming<pb::WorkerFrame>,
) -> ReadAhead {
    use futures::FutureExt;
    let tokens = |f: &pb::WorkerFrame| f.acks.len() + f.nacks.len() + f.extends.len();
    loop {
        let Some(read) = inbound.message().now_or_never() else {
            return ReadAhead::default();
        };
        match read {
            Ok(Some(next)) => {
                if next.open.is_some() || tokens(frame) + tokens(&next) > MAX_TOKEN_BATCH {
                    return ReadAhead {
                        carried: Some(next),
                        ended: None,
                    };
                }
                merge_into(frame, next);
            }
            Ok(None) => {
                return ReadAhead {
                    carried: None,
                    ended: Some(Ok(())),
                }
            }
            Err(status) => {
                return ReadAhead {
                    carried: None,
                    ended: Some(Err(status)),
                }
            }
        }
    }
}

fn merge_into(frame: &mut pb::WorkerFrame, next: pb::WorkerFrame) {
    frame.acks.extend(next.acks);
    frame.nacks.extend(next.nacks);
    frame.extends.extend(next.extends);
    frame.credit = frame.credit.saturating_add(next.credit);
}

/// `PERMISSION_DENIED` if a frame reports on a job of a queue the caller
/// may not consume (a stream serves one queue, but tokens name only jobs).
fn may_report(
    caller: &Caller,
    shard: &ShardHandle,
    queue: &str,
    f: &pb::WorkerFrame,
) -> Result<(), Status> {
    if caller.everywhere(Role::Consume) {
        return Ok(());
    }
    let ids = f
        .acks
        .iter()
        .chain(&f.extends)
        .chain(f.nacks.iter().filter_map(|n| n.token.as_ref()))
        .filter_map(|t| t.job_id.parse::<JobId>().ok());
    let state = shard.shared.state();
    for id in ids {
        if let Some(q) = state.queue_of(id).filter(|q| **q != *queue) {
            caller.may(Call::WorkerStream, &q)?;
        }
    }
    Ok(())
}

fn shutting_down(node: NodeId) -> Status {
    Status::unavailable(format!(
        "node {node} is shutting down: reconnect (to any node) and send your results there"
    ))
}

/// Applies the results a draining session has already been sent (frames
/// that arrive within a moment), granting no new jobs.
async fn finish_session(
    shard: &ShardHandle,
    open: &pb::WorkerOpen,
    lease_ms: Option<u64>,
    inbound: &mut Streaming<pb::WorkerFrame>,
    tx: &mpsc::Sender<Result<pb::ServerFrame, Status>>,
    unstarted: &mut HashMap<JobId, u32>,
) {
    while let Ok(Ok(Some(f))) = tokio::time::timeout(DRAIN_GRACE, inbound.message()).await {
        let Ok((ops, rejected)) = frame_ops(f, open, shard.id, lease_ms, 0) else {
            return;
        };
        reported(&ops, unstarted);
        let results = match ops.is_empty() {
            true => Vec::new(),
            false => match submit(shard, ops).await {
                Ok(results) => results,
                Err(_) => return,
            },
        };
        let mut out = pb::ServerFrame {
            jobs: Vec::new(),
            results: rejected,
        };
        for result in results {
            if let OpResult::Tokens(outcomes) = result {
                out.results.extend(
                    outcomes
                        .iter()
                        .filter(|o| o.result != Ok(None))
                        .map(convert::token_result),
                );
            }
        }
        if !out.results.is_empty() && tx.send(Ok(out)).await.is_err() {
            return;
        }
    }
}

/// Forgets the jobs a frame reports on (acks, nacks, extends).
fn reported(ops: &[Op], unstarted: &mut HashMap<JobId, u32>) {
    for op in ops {
        match op {
            Op::Ack { tokens } | Op::Extend { tokens, .. } => {
                for (id, _) in tokens {
                    unstarted.remove(id);
                }
            }
            Op::Nack { items } => {
                for n in items {
                    unstarted.remove(&n.id);
                }
            }
            _ => {}
        }
    }
}

/// Puts the jobs a closed stream was given and never reported on back in
/// the ready queue, so other workers get them now rather than when their
/// leases run out.
async fn release_unstarted(shard: &ShardHandle, unstarted: HashMap<JobId, u32>) {
    let mut tokens: Vec<(JobId, u32)> = unstarted.into_iter().collect();
    tokens.sort_unstable();
    for chunk in tokens.chunks(MAX_TOKEN_BATCH) {
        let op = Op::Release {
            tokens: chunk.to_vec(),
        };
        if let Err(status) = submit(shard, vec![op]).await {
            // Their leases run out instead.
            tracing::info!(
                shard = shard.id,
                jobs = chunk.len(),
                reason = status.message(),
                "cannot release a closed stream's jobs"
            );
        }
    }
}

/// The ops of one worker frame; the claim goes last so the frame's acks
/// free capacity before it. Each item is checked on its own: a bad one
/// gets its own INVALID_ARGUMENT result (second value) and the valid items
/// of the frame still apply. Only a frame over the batch limits as a whole
/// is refused.
fn frame_ops(
    f: pb::WorkerFrame,
    open: &pb::WorkerOpen,
    shard: u32,
    lease_ms: Option<u64>,
    credit: u32,
) -> Result<(Vec<Op>, Vec<pb::TokenResult>), Status> {
    for (field, n) in [
        ("acks", f.acks.len()),
        ("nacks", f.nacks.len()),
        ("extends", f.extends.len()),
    ] {
        if n > 0 {
            validate::batch_len(field, n, MAX_TOKEN_BATCH).map_err(invalid)?;
        }
    }
    let mut rejected = Vec::new();
    let mut token = |field: &str, i: usize, t: pb::LeaseToken| {
        let checked = validate::lease_token(format_args!("{field}[{i}]"), Some(&t))
            .and_then(|(id, attempt)| on_shard(field, i, id, shard).map(|()| (id, attempt)));
        match checked {
            Ok(valid) => Some(valid),
            Err(why) => {
                rejected.push(convert::rejected(Some(t), why));
                None
            }
        }
    };
    let acks: Vec<_> = f
        .acks
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| token("acks", i, t))
        .collect();
    let extends: Vec<_> = f
        .extends
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| token("extends", i, t))
        .collect();
    let mut nacks = Vec::new();
    for (i, item) in f.nacks.into_iter().enumerate() {
        let given = item.token.clone();
        let checked = convert::nack(format_args!("nacks[{i}]"), item)
            .and_then(|n| on_shard("nacks", i, n.id, shard).map(|()| n));
        match checked {
            Ok(n) => nacks.push(n),
            Err(why) => rejected.push(convert::rejected(given, why)),
        }
    }
    let mut ops = Vec::new();
    if !acks.is_empty() {
        ops.push(Op::Ack { tokens: acks });
    }
    if !nacks.is_empty() {
        ops.push(Op::Nack { items: nacks });
    }
    if !extends.is_empty() {
        ops.push(Op::Extend {
            tokens: extends,
            lease_ms,
        });
    }
    if credit > 0 {
        ops.push(Op::Claim {
            queue: open.queue.clone(),
            worker: open.worker_id.clone(),
            max: credit.min(MAX_FETCH_JOBS),
            lease_ms,
        });
    }
    Ok((ops, rejected))
}

/// A stream serves one queue, so one shard: a token of another shard's
/// job cannot be one this stream was given.
fn on_shard(field: &str, i: usize, id: JobId, shard: u32) -> Result<(), Invalid> {
    if id.shard == shard {
        return Ok(());
    }
    Err(Invalid(format!(
        "{field}[{i}]: job {id} is on shard {}, but this stream's queue is on shard {shard}: report it on a stream (or Ack/Nack call) for its own queue",
        id.shard
    )))
}
