//! The JSON bodies of the REST API and their mapping to and from the gRPC
//! messages. Field names are the `.proto` ones (snake_case); durations and
//! times are integers of milliseconds; a payload travels as text
//! (`payload`) when it is UTF-8, and always as `payload_base64`. Requests
//! refuse unknown fields: a misspelt option is an error, not ignored.

use std::collections::BTreeMap;

use base64::Engine as _;
use raftq_api::v1 as pb;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Deserialize, Serialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub initial_ms: i64,
    pub max_ms: i64,
    pub multiplier: f64,
}

impl From<Backoff> for pb::Backoff {
    fn from(b: Backoff) -> pb::Backoff {
        pb::Backoff {
            initial_ms: b.initial_ms,
            max_ms: b.max_ms,
            multiplier: b.multiplier,
        }
    }
}

impl From<pb::Backoff> for Backoff {
    fn from(b: pb::Backoff) -> Backoff {
        Backoff {
            initial_ms: b.initial_ms,
            max_ms: b.max_ms,
            multiplier: b.multiplier,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// The payload as text (stored as its UTF-8 bytes) ...
    pub payload: Option<String>,
    /// ... or as base64 of any bytes (not both).
    pub payload_base64: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    pub delay_ms: Option<i64>,
    pub run_at_ms: Option<i64>,
    #[serde(default)]
    pub max_attempts: u32,
    pub backoff: Option<Backoff>,
    #[serde(default)]
    pub idempotency_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    pub jobs: Vec<NewJob>,
}

impl EnqueueBody {
    pub fn into_request(self, queue: String) -> Result<pb::EnqueueRequest, ApiError> {
        let jobs = self
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let payload = match (job.payload, job.payload_base64) {
                    (Some(_), Some(_)) => {
                        return Err(ApiError::field(
                            format!("jobs[{i}]"),
                            "give payload (text) or payload_base64, not both",
                        ))
                    }
                    (Some(text), None) => text.into_bytes(),
                    (None, Some(encoded)) => BASE64.decode(encoded.trim()).map_err(|e| {
                        ApiError::field(
                            format!("jobs[{i}].payload_base64"),
                            format!("not valid base64: {e}"),
                        )
                    })?,
                    (None, None) => Vec::new(),
                };
                Ok(pb::NewJob {
                    payload: payload.into(),
                    headers: job.headers.into_iter().collect(),
                    priority: job.priority,
                    delay_ms: job.delay_ms,
                    run_at_ms: job.run_at_ms,
                    max_attempts: job.max_attempts,
                    backoff: job.backoff.map(Into::into),
                    idempotency_key: job.idempotency_key,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(pb::EnqueueRequest { queue, jobs })
    }
}

#[derive(Debug, Serialize)]
pub struct EnqueueAnswer {
    pub job_ids: Vec<String>,
    pub duplicate: Vec<bool>,
}

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub queue: String,
    /// The payload as text, when it is UTF-8. Listings leave the payload
    /// out unless asked (`payload=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
    pub headers: BTreeMap<String, String>,
    pub priority: i32,
    pub state: &'static str,
    pub attempt: u32,
    pub max_attempts: u32,
    pub enqueued_at_ms: i64,
    pub due_at_ms: i64,
    pub last_error: String,
    pub idempotency_key: String,
    pub worker_id: String,
}

pub fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Scheduled) => "scheduled",
        Ok(pb::JobState::Ready) => "ready",
        Ok(pb::JobState::Leased) => "leased",
        Ok(pb::JobState::Dead) => "dead",
        _ => "unknown",
    }
}

/// The job state named in a query (`ready`, `DEAD`, `JOB_STATE_LEASED`).
pub fn state_of(name: &str) -> Result<pb::JobState, ApiError> {
    let name = name.to_ascii_lowercase();
    Ok(
        match name.strip_prefix("job_state_").unwrap_or(name.as_str()) {
            "" | "all" | "any" => pb::JobState::Unspecified,
            "scheduled" => pb::JobState::Scheduled,
            "ready" => pb::JobState::Ready,
            "leased" => pb::JobState::Leased,
            "dead" => pb::JobState::Dead,
            other => {
                return Err(ApiError::field(
                    "state",
                    format!("unknown job state `{other}`: use scheduled, ready, leased or dead"),
                ))
            }
        },
    )
}

impl Job {
    /// The job without its payload (a listing that did not ask for it).
    pub fn without_payload(mut self) -> Job {
        self.payload = None;
        self.payload_base64 = None;
        self.payload_bytes = None;
        self
    }
}

impl From<pb::Job> for Job {
    fn from(job: pb::Job) -> Job {
        Job {
            payload: std::str::from_utf8(&job.payload).ok().map(str::to_string),
            payload_base64: Some(BASE64.encode(&job.payload)),
            payload_bytes: Some(job.payload.len()),
            headers: job.headers.into_iter().collect(),
            state: state_name(job.state),
            id: job.id,
            queue: job.queue,
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            enqueued_at_ms: job.enqueued_at_ms,
            due_at_ms: job.due_at_ms,
            last_error: job.last_error,
            idempotency_key: job.idempotency_key,
            worker_id: job.worker_id,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LeaseToken {
    pub job_id: String,
    pub attempt: u32,
}

impl From<LeaseToken> for pb::LeaseToken {
    fn from(t: LeaseToken) -> pb::LeaseToken {
        pb::LeaseToken {
            job_id: t.job_id,
            attempt: t.attempt,
        }
    }
}

impl From<pb::LeaseToken> for LeaseToken {
    fn from(t: pb::LeaseToken) -> LeaseToken {
        LeaseToken {
            job_id: t.job_id,
            attempt: t.attempt,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FetchBody {
    #[serde(default)]
    pub worker_id: String,
    #[serde(default = "one")]
    pub max_jobs: u32,
    pub lease_ms: Option<i64>,
    #[serde(default)]
    pub wait_ms: i64,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize)]
pub struct LeasedJob {
    pub job: Job,
    pub token: LeaseToken,
    pub lease_expires_at_ms: i64,
}

impl From<pb::LeasedJob> for LeasedJob {
    fn from(l: pb::LeasedJob) -> LeasedJob {
        LeasedJob {
            job: l.job.unwrap_or_default().into(),
            token: l.token.unwrap_or_default().into(),
            lease_expires_at_ms: l.lease_expires_at_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Jobs<T> {
    pub jobs: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensBody {
    pub tokens: Vec<LeaseToken>,
    /// Extend only: the new lease length from now.
    pub lease_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NackItem {
    pub token: LeaseToken,
    pub retry_delay_ms: Option<i64>,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub dead: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NackBody {
    pub items: Vec<NackItem>,
}

impl NackBody {
    pub fn into_request(self) -> pb::NackRequest {
        pb::NackRequest {
            items: self
                .items
                .into_iter()
                .map(|i| pb::NackItem {
                    token: Some(i.token.into()),
                    retry_delay_ms: i.retry_delay_ms,
                    error: i.error,
                    dead: i.dead,
                })
                .collect(),
        }
    }
}

/// Per token: `code` is the gRPC code name (`OK`, `FAILED_PRECONDITION`
/// when the lease was lost, `NOT_FOUND`).
#[derive(Debug, Serialize)]
pub struct TokenResult {
    pub token: LeaseToken,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub lease_expires_at_ms: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl From<pb::TokenResult> for TokenResult {
    fn from(r: pb::TokenResult) -> TokenResult {
        TokenResult {
            token: r.token.unwrap_or_default().into(),
            code: super::error::code_name(tonic::Code::from_i32(r.code)),
            message: r.message,
            lease_expires_at_ms: r.lease_expires_at_ms,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub results: Vec<TokenResult>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub default_lease_ms: Option<i64>,
    pub default_max_attempts: Option<u32>,
    pub default_backoff: Option<Backoff>,
    pub dedup_window_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct QueueInfo {
    pub queue: String,
    pub paused: bool,
    pub config: QueueConfig,
}

impl From<pb::QueueInfo> for QueueInfo {
    fn from(info: pb::QueueInfo) -> QueueInfo {
        let c = info.config.unwrap_or_default();
        QueueInfo {
            queue: info.queue,
            paused: info.paused,
            config: QueueConfig {
                default_lease_ms: Some(c.default_lease_ms),
                default_max_attempts: Some(c.default_max_attempts),
                default_backoff: c.default_backoff.map(Into::into),
                dedup_window_ms: Some(c.dedup_window_ms),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub ready: u64,
    pub scheduled: u64,
    pub leased: u64,
    pub dead: u64,
    pub paused: bool,
    pub enqueued_total: u64,
    pub acked_total: u64,
    pub nacked_total: u64,
    pub expired_total: u64,
    pub dead_total: u64,
}

impl From<pb::QueueStats> for QueueStats {
    fn from(s: pb::QueueStats) -> QueueStats {
        QueueStats {
            queue: s.queue,
            ready: s.ready,
            scheduled: s.scheduled,
            leased: s.leased,
            dead: s.dead,
            paused: s.paused,
            enqueued_total: s.enqueued_total,
            acked_total: s.acked_total,
            nacked_total: s.nacked_total,
            expired_total: s.expired_total,
            dead_total: s.dead_total,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeadSelector {
    /// Empty or absent: every dead job of the queue.
    #[serde(default)]
    pub job_ids: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Count {
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Page {
    pub jobs: Vec<Job>,
    /// Pass as `before` (listings) or `after` (dead letters) for the next
    /// page; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned: Option<u64>,
}

/// Query of a job listing.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub job_id: Option<String>,
    /// `key` (has the header) or `key=value`.
    pub header: Option<String>,
    pub idempotency_key: Option<String>,
    /// Text the last error contains (case-insensitive).
    pub error: Option<String>,
    pub limit: Option<u32>,
    pub before: Option<String>,
    /// Include payloads.
    pub payload: Option<bool>,
    pub max_scan: Option<u32>,
}

impl ListQuery {
    pub fn into_request(self, queue: String) -> Result<pb::ListJobsRequest, ApiError> {
        let (header_key, header_value) = match self.header {
            None => (String::new(), String::new()),
            Some(h) => match h.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (h, String::new()),
            },
        };
        if header_key.is_empty() && !header_value.is_empty() {
            return Err(ApiError::field(
                "header",
                "give `key` or `key=value`: the header name is empty",
            ));
        }
        Ok(pb::ListJobsRequest {
            queue,
            state: state_of(self.state.as_deref().unwrap_or_default())? as i32,
            job_id: self.job_id.unwrap_or_default(),
            header_key,
            header_value,
            idempotency_key: self.idempotency_key.unwrap_or_default(),
            error_contains: self.error.unwrap_or_default(),
            limit: self.limit.unwrap_or_default(),
            before: self.before.unwrap_or_default(),
            include_payload: self.payload.unwrap_or_default(),
            max_scan: self.max_scan.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Answer from this node's applied state without asking the leaders.
    pub local: Option<bool>,
}
