use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use raftq_api::v1 as pb;

use crate::retry::RetryPolicy;
use crate::{Client, Error};

/// A job to enqueue.
#[derive(Debug, Clone, Default)]
pub struct JobSpec {
    job: pb::NewJob,
}

impl JobSpec {
    pub fn new(payload: impl Into<Bytes>) -> JobSpec {
        JobSpec {
            job: pb::NewJob {
                payload: payload.into(),
                ..Default::default()
            },
        }
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> JobSpec {
        self.job.headers.insert(key.into(), value.into());
        self
    }

    pub fn headers(mut self, headers: HashMap<String, String>) -> JobSpec {
        self.job.headers.extend(headers);
        self
    }

    /// Higher runs first (default 0).
    pub fn priority(mut self, priority: i32) -> JobSpec {
        self.job.priority = priority;
        self
    }

    /// Becomes ready after `delay`.
    pub fn delay(mut self, delay: Duration) -> JobSpec {
        self.job.delay_ms = Some(delay.as_millis() as i64);
        self.job.run_at_ms = None;
        self
    }

    /// Becomes ready at `at`.
    pub fn run_at(mut self, at: SystemTime) -> JobSpec {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.job.run_at_ms = Some(ms);
        self.job.delay_ms = None;
        self
    }

    pub fn max_attempts(mut self, n: u32) -> JobSpec {
        self.job.max_attempts = n;
        self
    }

    /// Exponential retry delay: `initial * multiplier^(retry-1)`, at most `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> JobSpec {
        self.job.backoff = Some(pb::Backoff {
            initial_ms: initial.as_millis() as i64,
            max_ms: max.as_millis() as i64,
            multiplier,
        });
        self
    }

    /// Repeats of this key on the queue within its dedup window return the
    /// first job's id instead of adding a job.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> JobSpec {
        self.job.idempotency_key = key.into();
        self
    }

    pub fn into_proto(self) -> pb::NewJob {
        self.job
    }
}

/// Enqueues jobs.
#[derive(Clone, Debug)]
pub struct Producer {
    client: Client,
    retry: RetryPolicy,
}

impl Producer {
    pub fn new(client: Client) -> Producer {
        Producer {
            client,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets how failed enqueues are retried ([`RetryPolicy::default`]
    /// unless set; [`RetryPolicy::never`] for one try).
    pub fn retry(mut self, policy: RetryPolicy) -> Producer {
        self.retry = policy;
        self
    }

    /// Enqueues one job and returns its id.
    pub async fn enqueue(&self, queue: &str, job: JobSpec) -> Result<String, Error> {
        let mut ids = self.enqueue_batch(queue, vec![job]).await?;
        ids.pop()
            .ok_or_else(|| Error::Invalid("server returned no job id".into()))
    }

    /// Enqueues up to 10,000 jobs in one request (all or nothing) and
    /// returns their ids in order.
    pub async fn enqueue_batch(
        &self,
        queue: &str,
        jobs: Vec<JobSpec>,
    ) -> Result<Vec<String>, Error> {
        let request = pb::EnqueueRequest {
            queue: queue.to_string(),
            jobs: jobs
                .into_iter()
                .map(|job| {
                    let mut job = job.into_proto();
                    crate::trace_context::inject(&mut job.headers);
                    job
                })
                .collect(),
        };
        let response = self
            .retry
            .run(|| {
                // Each try asks for the route again: a failed one may have
                // taught the client where the leader went.
                let client = self.client.for_queue(queue);
                let request = request.clone();
                async move {
                    let answer = client.queue().enqueue(request).await;
                    if let Err(status) = &answer {
                        client.observe_failure(status).await;
                    }
                    answer
                }
            })
            .await?;
        Ok(response.into_inner().job_ids)
    }
}
