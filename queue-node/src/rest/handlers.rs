//! One handler per route: JSON in, the gRPC service called as a gRPC
//! client would, JSON out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use raftq_api::v1 as pb;
use raftq_api::v1::cluster_admin_client::ClusterAdminClient;
use raftq_api::v1::queue_admin_server::QueueAdmin;
use raftq_api::v1::queue_server::Queue;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::types::*;
use super::{Caller, Json, Query, Rest};
use crate::security::Call;

type Answer<T> = Result<axum::Json<T>, ApiError>;

fn ok<T>(value: T) -> Answer<T> {
    Ok(axum::Json(value))
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI)
}

pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no API route {method} {}: see /api/openapi.json",
        uri.path()
    ))
}

/// Unknown paths: a gRPC caller gets UNIMPLEMENTED as gRPC expresses it,
/// anything else a 404.
pub async fn fallback(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented(format!("no such method: {}", uri.path()))
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    (
        StatusCode::NOT_FOUND,
        format!("not found: {}\n", uri.path()),
    )
        .into_response()
}

#[derive(Serialize)]
pub struct WhoAmI {
    principal: String,
    /// Whether it may do everything (auth is off, or a cluster member).
    everything: bool,
    grants: Vec<Grant>,
    /// The console hides its actions for everyone.
    console_read_only: bool,
    auth_enabled: bool,
}

#[derive(Serialize)]
struct Grant {
    role: String,
    queues: String,
}

pub async fn whoami(State(rest): State<Arc<Rest>>, caller: Caller) -> Answer<WhoAmI> {
    let request = caller.request(());
    let who = rest
        .ctx
        .authorize(crate::security::Port::Client, &request, Call::WhoAmI, None)?;
    let grants = who.grants();
    ok(WhoAmI {
        principal: who.name.to_string(),
        everything: grants.is_none(),
        grants: grants
            .unwrap_or_default()
            .into_iter()
            .map(|(role, queues)| Grant {
                role: role.to_string(),
                queues,
            })
            .collect(),
        console_read_only: rest.console.read_only,
        auth_enabled: rest.ctx.security.auth_enabled(),
    })
}

/// Every node's view of the cluster: this node's own, and each other
/// member's asked over the peer port (a node that does not answer is
/// listed with the error).
pub async fn cluster(State(rest): State<Arc<Rest>>, caller: Caller) -> Answer<Value> {
    let request = caller.request(());
    let who = rest.ctx.authorize(
        crate::security::Port::Client,
        &request,
        Call::ClusterView,
        None,
    )?;
    let own = crate::service::local_status(&rest.ctx);
    let others: BTreeSet<(u64, String)> = rest
        .ctx
        .member_addrs()
        .into_iter()
        .filter(|(id, _)| *id != own.node_id)
        .collect();
    let asks = others.into_iter().map(|(id, addr)| {
        let (ctx, who) = (rest.ctx.clone(), who.clone());
        async move {
            let answer = async {
                let mut client = ClusterAdminClient::new(ctx.peer(&addr)?);
                // Asked for the caller, whom the other node checks again.
                let request = crate::forward::forwarded(pb::ClusterStatusRequest::default(), &who);
                client.status(request).await.map(|r| r.into_inner())
            };
            let answer = tokio::time::timeout(Duration::from_secs(3), answer).await;
            match answer {
                Ok(Ok(status)) => node_json(&status, None),
                Ok(Err(status)) => unreachable_node(id, &addr, status.message()),
                Err(_) => unreachable_node(id, &addr, "no answer within 3 s"),
            }
        }
    });
    let mut nodes = vec![node_json(&own, None)];
    nodes.extend(futures::future::join_all(asks).await);
    ok(json!({ "answered_by": own.node_id, "nodes": nodes }))
}

fn node_json(status: &pb::ClusterStatus, error: Option<&str>) -> Value {
    let shards: Vec<Value> = status
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard,
                "role": s.role,
                "has_leader": s.has_leader,
                "leader_id": s.leader_id,
                "term": s.term,
                "commit_index": s.commit_index,
                "applied_index": s.applied_index,
                "last_log_index": s.last_log_index,
                "members": s.members.iter().map(|m| json!({
                    "node_id": m.node_id,
                    "addr": m.addr,
                    "voter": m.voter,
                    "matched_index": m.matched_index,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "node_id": status.node_id,
        "addr": status.addr,
        "client_addr": status.client_addr,
        "reachable": error.is_none(),
        "error": error,
        "shards": shards,
    })
}

fn unreachable_node(id: u64, addr: &str, error: &str) -> Value {
    let status = pb::ClusterStatus {
        node_id: id,
        addr: addr.to_string(),
        ..Default::default()
    };
    node_json(&status, Some(error))
}

pub async fn all_stats(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Query(query): Query<StatsQuery>,
) -> Answer<Value> {
    let request = caller.request(pb::StatsRequest {
        queue: String::new(),
        local: query.local.unwrap_or(false),
    });
    let answer = rest.admin.stats(request).await?.into_inner();
    let queues: Vec<QueueStats> = answer.queues.into_iter().map(Into::into).collect();
    ok(json!({ "queues": queues }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    queue: Option<String>,
}

/// The last 15 minutes of each queue the caller may read.
pub async fn history(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Query(query): Query<HistoryQuery>,
) -> Answer<Value> {
    let request = caller.request(());
    let who = rest.ctx.authorize(
        crate::security::Port::Client,
        &request,
        Call::Stats,
        query.queue.as_deref(),
    )?;
    let wanted = |q: &str| query.queue.as_deref().is_none_or(|w| w == q) && who.may_read(q);
    ok(json!({
        "interval_ms": rest.history.interval().as_millis() as u64,
        "queues": rest.history.series(wanted),
    }))
}

pub async fn queue_info(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Answer<Value> {
    let info = rest
        .admin
        .get_queue(caller.request(pb::QueueRef {
            queue: queue.clone(),
        }))
        .await?
        .into_inner();
    let stats = rest
        .admin
        .stats(caller.request(pb::StatsRequest {
            queue,
            local: false,
        }))
        .await?
        .into_inner()
        .queues
        .pop()
        .map(QueueStats::from);
    ok(json!({ "info": QueueInfo::from(info), "stats": stats }))
}

pub async fn set_queue_config(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(config): Json<QueueConfig>,
) -> Answer<QueueInfo> {
    let request = pb::SetQueueConfigRequest {
        queue,
        default_lease_ms: config.default_lease_ms,
        default_max_attempts: config.default_max_attempts,
        default_backoff: config.default_backoff.map(Into::into),
        dedup_window_ms: config.dedup_window_ms,
    };
    let info = rest
        .admin
        .set_queue_config(caller.request(request))
        .await?
        .into_inner();
    ok(info.into())
}

pub async fn pause(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Answer<QueueInfo> {
    let info = rest
        .admin
        .pause_queue(caller.request(pb::QueueRef { queue }))
        .await?;
    ok(info.into_inner().into())
}

pub async fn resume(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Answer<QueueInfo> {
    let info = rest
        .admin
        .resume_queue(caller.request(pb::QueueRef { queue }))
        .await?;
    ok(info.into_inner().into())
}

pub async fn purge(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Answer<Value> {
    let answer = rest
        .admin
        .purge_queue(caller.request(pb::QueueRef { queue }))
        .await?;
    ok(json!({ "removed": answer.into_inner().removed }))
}

pub async fn enqueue(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(body): Json<EnqueueBody>,
) -> Result<(StatusCode, axum::Json<EnqueueAnswer>), ApiError> {
    let request = body.into_request(queue)?;
    let answer = rest
        .queue
        .enqueue(caller.request(request))
        .await?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        axum::Json(EnqueueAnswer {
            job_ids: answer.job_ids,
            duplicate: answer.duplicate,
        }),
    ))
}

pub async fn list_jobs(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Query(query): Query<ListQuery>,
) -> Answer<Page> {
    let request = query.into_request(queue)?;
    let with_payload = request.include_payload;
    let answer = rest
        .admin
        .list_jobs(caller.request(request))
        .await?
        .into_inner();
    ok(Page {
        jobs: answer
            .jobs
            .into_iter()
            .map(|job| {
                let job = Job::from(job);
                if with_payload {
                    job
                } else {
                    job.without_payload()
                }
            })
            .collect(),
        next: Some(answer.next_before).filter(|n| !n.is_empty()),
        scanned: Some(answer.scanned),
    })
}

pub async fn fetch(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(body): Json<FetchBody>,
) -> Answer<Jobs<LeasedJob>> {
    let request = pb::FetchRequest {
        queue,
        worker_id: body.worker_id,
        max_jobs: body.max_jobs,
        lease_ms: body.lease_ms,
        wait_ms: body.wait_ms,
    };
    let answer = rest
        .queue
        .fetch(caller.request(request))
        .await?
        .into_inner();
    ok(Jobs {
        jobs: answer.jobs.into_iter().map(Into::into).collect(),
    })
}

pub async fn list_dead(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Query(query): Query<DeadQuery>,
) -> Answer<Page> {
    let request = pb::ListDeadRequest {
        queue,
        limit: query.limit.unwrap_or_default(),
        after: query.after.unwrap_or_default(),
    };
    let answer = rest
        .admin
        .list_dead(caller.request(request))
        .await?
        .into_inner();
    ok(Page {
        jobs: answer.jobs.into_iter().map(Into::into).collect(),
        next: Some(answer.next_after).filter(|n| !n.is_empty()),
        scanned: None,
    })
}

pub async fn requeue_dead(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(body): Json<DeadSelector>,
) -> Answer<Count> {
    let request = pb::DeadSelector {
        queue,
        job_ids: body.job_ids,
    };
    let answer = rest.admin.requeue_dead(caller.request(request)).await?;
    ok(Count {
        count: answer.into_inner().count,
    })
}

pub async fn purge_dead(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(queue): Path<String>,
    Json(body): Json<DeadSelector>,
) -> Answer<Count> {
    let request = pb::DeadSelector {
        queue,
        job_ids: body.job_ids,
    };
    let answer = rest.admin.purge_dead(caller.request(request)).await?;
    ok(Count {
        count: answer.into_inner().count,
    })
}

pub async fn get_job(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Answer<Job> {
    let job = rest
        .admin
        .get_job(caller.request(pb::JobRef { job_id }))
        .await?;
    ok(job.into_inner().into())
}

pub async fn cancel_job(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Path(job_id): Path<String>,
) -> Answer<Value> {
    let answer = rest
        .admin
        .cancel_job(caller.request(pb::JobRef { job_id }))
        .await?
        .into_inner();
    ok(json!({ "job": answer.job.map(Job::from) }))
}

pub async fn ack(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Json(body): Json<TokensBody>,
) -> Answer<Results> {
    if body.lease_ms.is_some() {
        return Err(ApiError::field(
            "lease_ms",
            "only extend takes a lease length",
        ));
    }
    let request = pb::AckRequest {
        tokens: body.tokens.into_iter().map(Into::into).collect(),
    };
    let answer = rest.queue.ack(caller.request(request)).await?.into_inner();
    ok(Results {
        results: answer.results.into_iter().map(Into::into).collect(),
    })
}

pub async fn nack(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Json(body): Json<NackBody>,
) -> Answer<Results> {
    let answer = rest
        .queue
        .nack(caller.request(body.into_request()))
        .await?
        .into_inner();
    ok(Results {
        results: answer.results.into_iter().map(Into::into).collect(),
    })
}

pub async fn extend(
    State(rest): State<Arc<Rest>>,
    caller: Caller,
    Json(body): Json<TokensBody>,
) -> Answer<Results> {
    let request = pb::ExtendLeaseRequest {
        tokens: body.tokens.into_iter().map(Into::into).collect(),
        lease_ms: body.lease_ms,
    };
    let answer = rest
        .queue
        .extend_lease(caller.request(request))
        .await?
        .into_inner();
    ok(Results {
        results: answer.results.into_iter().map(Into::into).collect(),
    })
}
