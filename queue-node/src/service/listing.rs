//! `ListJobs` on the shard's leader: the request checked, pages taken from
//! the state's in-memory indexes ([`crate::fsm::ShardState::list_jobs`]),
//! and the page's contents read in one batch — for its headers, the one
//! filter the state cannot check, and for payloads when asked.

use raftq_api::v1 as pb;
use raftq_api::{validate, JobId};
use tonic::Status;

use super::{convert, invalid, with_contents};
use crate::context::ShardHandle;
use crate::fsm::{JobFilter, JobPage};
use crate::ops::{JobState, QueueDefaults};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_SCAN: usize = 100_000;
const MAX_SCAN: u32 = 1_000_000;

/// A checked `ListJobsRequest`.
pub(crate) struct Listing {
    filter: JobFilter,
    job_id: Option<JobId>,
    header: Option<(String, Option<String>)>,
    limit: usize,
    max_scan: usize,
    before: Option<JobId>,
    include_payload: bool,
}

impl Listing {
    pub fn of(req: &pb::ListJobsRequest) -> Result<Listing, Status> {
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n @ 1..=MAX_LIMIT => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit must be in 1..={MAX_LIMIT} (got {n})"
                )))
            }
        };
        let max_scan = match req.max_scan {
            0 => DEFAULT_SCAN,
            n @ 1..=MAX_SCAN => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "max_scan must be in 1..={MAX_SCAN} (got {n})"
                )))
            }
        };
        let state = match pb::JobState::try_from(req.state) {
            Ok(pb::JobState::Unspecified) => None,
            Ok(pb::JobState::Scheduled) => Some(JobState::Scheduled),
            Ok(pb::JobState::Ready) => Some(JobState::Ready),
            Ok(pb::JobState::Leased) => Some(JobState::Leased),
            Ok(pb::JobState::Dead) => Some(JobState::Dead),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state {} is not a job state: use SCHEDULED, READY, LEASED, DEAD or leave it unset for all",
                    req.state
                )))
            }
        };
        let id = |field: &str, value: &str| match value {
            "" => Ok(None),
            id => validate::job_id(field, id).map(Some).map_err(invalid),
        };
        let header = match (req.header_key.as_str(), req.header_value.as_str()) {
            ("", "") => None,
            ("", _) => {
                return Err(Status::invalid_argument(
                    "header_value needs header_key: name the header whose value to match",
                ))
            }
            (key, "") => Some((key.to_string(), None)),
            (key, value) => Some((key.to_string(), Some(value.to_string()))),
        };
        if !req.job_id.is_empty() && !req.before.is_empty() {
            return Err(Status::invalid_argument(
                "before: a listing of one job (job_id) has no pages; drop before",
            ));
        }
        let text = |value: &str| (!value.is_empty()).then(|| value.to_string());
        Ok(Listing {
            filter: JobFilter {
                state,
                idempotency_key: text(&req.idempotency_key),
                error_contains: text(&req.error_contains),
            },
            job_id: id("job_id", &req.job_id)?,
            header,
            limit,
            max_scan,
            before: id("before", &req.before)?,
            include_payload: req.include_payload,
        })
    }

    /// The page, on the leader of `queue`'s shard.
    pub async fn serve(
        self,
        shard: &ShardHandle,
        queue: &str,
        defaults: &QueueDefaults,
    ) -> Result<pb::ListJobsResponse, Status> {
        let mut answer = pb::ListJobsResponse::default();
        let mut before = self.before;
        loop {
            // Without a header filter every candidate is an answer; with
            // one, candidates come a page at a time until enough match.
            let page: JobPage = {
                let state = shard.shared.state();
                let budget = self.max_scan - answer.scanned as usize;
                match self.job_id {
                    Some(id) => state.list_one(queue, id, &self.filter, defaults),
                    None => state.list_jobs(
                        queue,
                        &self.filter,
                        before,
                        self.limit - answer.jobs.len(),
                        budget,
                        defaults,
                    ),
                }
            };
            answer.scanned += page.scanned;
            for (view, content) in with_contents(shard, page.jobs).await? {
                if let Some((key, value)) = &self.header {
                    let matches = content
                        .headers
                        .iter()
                        .any(|(k, v)| k == key && value.as_ref().is_none_or(|want| v == want));
                    if !matches {
                        continue;
                    }
                }
                let mut job = convert::job(&view, &content);
                if !self.include_payload {
                    job.payload = Default::default();
                }
                answer.jobs.push(job);
            }
            before = page.next_before;
            let budget_left = (answer.scanned as usize) < self.max_scan;
            if before.is_none() || answer.jobs.len() >= self.limit || !budget_left {
                break;
            }
        }
        answer.next_before = before.map(|id| id.to_string()).unwrap_or_default();
        Ok(answer)
    }
}
