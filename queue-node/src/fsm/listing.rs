//! Listing a queue's jobs newest first, for `ListJobs` and the console.
//!
//! Walks the in-memory indexes only — the job map backwards, merged with
//! the queue's fresh jobs, or the dead set — and checks the filters the
//! state can answer (state, idempotency key, error text). Filters on what
//! lives on disk (headers) are the caller's: it reads the page's contents.
//! A page stops after `max_scan` jobs examined, so a listing of a rare
//! match in a large shard holds the state for a bounded time and the
//! caller continues from `next_before`.

use std::iter::Peekable;

use raftq_api::JobId;

use super::job::{flags, JobKey};
use super::{fresh_job, queue_view, ShardState};
use crate::ops::{JobState, JobView, QueueDefaults};

/// The filters the state checks.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub idempotency_key: Option<String>,
    /// Matched case-insensitively against the last error.
    pub error_contains: Option<String>,
}

impl JobFilter {
    /// Whether jobs never touched since enqueue can match: they are ready,
    /// with no idempotency key and no error.
    fn fresh_may_match(&self) -> bool {
        self.state.is_none_or(|s| s == JobState::Ready)
            && self.idempotency_key.is_none()
            && self.error_contains.is_none()
    }
}

/// One page of a listing.
#[derive(Debug, Default)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Jobs examined.
    pub scanned: u64,
    /// Where the next page starts, when this one stopped early (full, or
    /// out of scan budget).
    pub next_before: Option<JobId>,
}

impl ShardState {
    /// Up to `limit` jobs of `queue` older than `before` that match
    /// `filter`, newest first, examining at most `max_scan` jobs.
    pub fn list_jobs(
        &self,
        queue: &str,
        filter: &JobFilter,
        before: Option<JobId>,
        limit: usize,
        max_scan: usize,
        defaults: &QueueDefaults,
    ) -> JobPage {
        let mut page = JobPage::default();
        let Some(&queue_id) = self.queue_ids.get(queue) else {
            return page;
        };
        let q = &self.queues[queue_id as usize];
        let limits = queue_view(&q.name, &q.meta, defaults);
        let before = before.map(JobKey::of);
        let error_needle = filter.error_contains.as_deref().map(str::to_lowercase);
        let candidates: Box<dyn Iterator<Item = JobKey> + '_> =
            if filter.state == Some(JobState::Dead) {
                Box::new(q.dead.iter_before_rev(before).map(|(key, ())| *key))
            } else {
                let unpacked = self
                    .jobs
                    .iter_before_rev(before)
                    .filter(move |(_, job)| job.queue == queue_id)
                    .map(|(key, _)| *key);
                if filter.fresh_may_match() {
                    let fresh = q.fresh.iter_rev_before(before).map(|(_, job)| job.key);
                    Box::new(newest_first(unpacked, fresh))
                } else {
                    Box::new(unpacked)
                }
            };
        let mut last_seen = None;
        for key in candidates {
            if page.scanned as usize >= max_scan {
                page.next_before = last_seen.map(|key: JobKey| self.id_of(key));
                return page;
            }
            page.scanned += 1;
            last_seen = Some(key);
            let Some(job) = self.jobs.get(&key).copied().or_else(|| {
                q.fresh
                    .get(key)
                    .map(|(priority, fresh)| fresh_job(queue_id, priority, &fresh))
            }) else {
                continue;
            };
            if filter.state.is_some_and(|s| s != job.state) {
                continue;
            }
            if let Some(want) = &filter.idempotency_key {
                let has = job.has(flags::IDEMPOTENCY_KEY)
                    && self.extras.idempotency_keys.get(&key).map(|k| &**k) == Some(want);
                if !has {
                    continue;
                }
            }
            if let Some(needle) = &error_needle {
                let matches = self
                    .extras
                    .error(key, &job)
                    .is_some_and(|e| e.to_lowercase().contains(needle.as_str()));
                if !matches {
                    continue;
                }
            }
            page.jobs.push(self.view_in(key, &job, &limits));
            if page.jobs.len() >= limit {
                page.next_before = Some(self.id_of(key));
                return page;
            }
        }
        page
    }

    /// Job `id` as a one-job page, if it is in `queue` and matches.
    pub fn list_one(
        &self,
        queue: &str,
        id: JobId,
        filter: &JobFilter,
        defaults: &QueueDefaults,
    ) -> JobPage {
        let next = JobId {
            position: id.position.wrapping_add(1),
            index: id.index + u64::from(id.position == u32::MAX),
            ..id
        };
        if self.key_of(id).is_none() || self.queue_of(id).as_deref() != Some(queue) {
            return JobPage::default();
        }
        let mut page = self.list_jobs(queue, filter, Some(next), 1, 1, defaults);
        page.jobs.retain(|job| job.id == id);
        page.next_before = None;
        page
    }
}

/// Two newest-first sequences of distinct keys as one.
fn newest_first<'a>(
    a: impl Iterator<Item = JobKey> + 'a,
    b: impl Iterator<Item = JobKey> + 'a,
) -> impl Iterator<Item = JobKey> + 'a {
    let (mut a, mut b): (Peekable<_>, Peekable<_>) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x > y => a.next(),
        (Some(_), Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}
