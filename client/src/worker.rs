use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::{FutureExt, TraceContextExt};
use raftq_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{Client, Error};

/// A leased job handed to a worker's handler.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub queue: String,
    pub payload: Bytes,
    pub headers: HashMap<String, String>,
    pub priority: i32,
    /// 1 on the first delivery, 2 on the first retry, ... (counted afresh
    /// after a requeue from the dead-letter set)
    pub attempt: u32,
    pub max_attempts: u32,
    /// The error the previous attempt reported, if any.
    pub last_error: String,
    pub lease_expires_at_ms: i64,
}

impl Job {
    fn from_leased(leased: pb::LeasedJob) -> Option<(Job, pb::LeaseToken)> {
        let job = leased.job?;
        let token = leased.token?;
        Some((
            Job {
                id: job.id,
                queue: job.queue,
                payload: job.payload,
                headers: job.headers,
                priority: job.priority,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                last_error: job.last_error,
                lease_expires_at_ms: leased.lease_expires_at_ms,
            },
            token,
        ))
    }
}

enum Outcome {
    Ack(pb::LeaseToken),
    Nack(pb::NackItem),
    Extend(pb::LeaseToken),
}

/// Runs a handler over a queue's jobs, over one worker stream.
///
/// Up to `concurrency` handlers run at once. While a handler runs, its lease
/// is extended every third of the lease. `Ok` acks the job; `Err(e)` nacks
/// it with `e` as the error text (the job retries after its backoff, or is
/// dead-lettered after its last attempt). Acks, nacks, extends and the
/// request for more jobs travel together in one frame. A dropped stream is
/// reopened with backoff.
pub struct Worker {
    client: Client,
    queue: String,
    worker_id: String,
    concurrency: u32,
    lease: Option<Duration>,
}

impl Worker {
    pub fn new(client: Client, queue: impl Into<String>) -> Worker {
        Worker {
            client,
            queue: queue.into(),
            worker_id: format!("worker-{}", std::process::id()),
            concurrency: 1,
            lease: None,
        }
    }

    /// How many jobs run at once (default 1).
    pub fn concurrency(mut self, n: u32) -> Worker {
        self.concurrency = n.max(1);
        self
    }

    /// Lease length asked for each job (default: the queue's).
    pub fn lease(mut self, lease: Duration) -> Worker {
        self.lease = Some(lease);
        self
    }

    /// The name this worker reports (default `worker-<pid>`).
    pub fn worker_id(mut self, id: impl Into<String>) -> Worker {
        self.worker_id = id.into();
        self
    }

    /// Runs until the stream fails for good.
    pub async fn run<F, Fut, E>(self, handler: F) -> Result<(), Error>
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.run_until(handler, std::future::pending()).await
    }

    /// Runs until `shutdown` completes, then stops asking for jobs, lets
    /// running handlers finish, reports their results and returns.
    pub async fn run_until<F, Fut, E>(
        self,
        handler: F,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel::<Outcome>();
        let mut in_flight: u32 = 0;
        let mut stopping = false;
        let mut retry_delay = Duration::from_millis(100);
        let mut unsent: Vec<Outcome> = Vec::new();
        tokio::pin!(shutdown);
        loop {
            let (frames, frames_rx) = mpsc::channel::<pb::WorkerFrame>(64);
            let mut open = pb::WorkerFrame {
                open: Some(pb::WorkerOpen {
                    queue: self.queue.clone(),
                    worker_id: self.worker_id.clone(),
                    lease_ms: self.lease.map(|l| l.as_millis() as i64),
                }),
                credit: if stopping {
                    0
                } else {
                    self.concurrency.saturating_sub(in_flight)
                },
                ..Default::default()
            };
            for o in unsent.drain(..) {
                add_outcome(&mut open, o, &mut 0);
            }
            // The channel is fresh and has room: this cannot fail.
            let _ = frames.try_send(open);
            let client = self.client.for_queue(&self.queue);
            let mut inbound = match client
                .queue()
                .worker_stream(ReceiverStream::new(frames_rx))
                .await
            {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    client.observe_failure(&status).await;
                    let error = Error::from(status);
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    tracing::warn!(%error, "worker stream failed; reconnecting");
                    tokio::time::sleep(retry_delay).await;
                    retry_delay = (retry_delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                if stopping && in_flight == 0 {
                    // Close our side and let the node apply what we sent:
                    // dropping the stream now could lose the last acks.
                    drop(frames);
                    let drained = async { while let Ok(Some(_)) = inbound.message().await {} };
                    let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
                    return Ok(());
                }
                tokio::select! {
                    _ = &mut shutdown, if !stopping => {
                        stopping = true;
                    }
                    message = inbound.message() => match message {
                        Ok(Some(frame)) => {
                            retry_delay = Duration::from_millis(100);
                            for result in frame.results {
                                if result.code != 0 {
                                    tracing::warn!(job = ?result.token.map(|t| t.job_id), message = %result.message, "job result rejected");
                                }
                            }
                            for leased in frame.jobs {
                                // Stopping: not started, so not reported; the
                                // node hands it back when we close the stream.
                                if stopping {
                                    continue;
                                }
                                let Some((job, token)) = Job::from_leased(leased) else { continue };
                                in_flight += 1;
                                tokio::spawn(run_job(handler.clone(), job, token, outcomes_tx.clone()));
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            client.observe_failure(&status).await;
                            let error = Error::from(status);
                            if !error.is_retryable() {
                                return Err(error);
                            }
                            tracing::warn!(%error, "worker stream broke; reconnecting");
                            break;
                        }
                    },
                    Some(first) = outcomes.recv() => {
                        let mut frame = pb::WorkerFrame::default();
                        let mut finished = 0;
                        add_outcome(&mut frame, first, &mut finished);
                        while let Ok(more) = outcomes.try_recv() {
                            add_outcome(&mut frame, more, &mut finished);
                        }
                        in_flight -= finished.min(in_flight);
                        if !stopping {
                            frame.credit = finished;
                        }
                        if let Err(mpsc::error::SendError(frame)) = frames.send(frame).await {
                            unsent.extend(frame.acks.into_iter().map(Outcome::Ack));
                            unsent.extend(frame.nacks.into_iter().map(Outcome::Nack));
                            break;
                        }
                    }
                }
            }
            tokio::time::sleep(retry_delay).await;
            retry_delay = (retry_delay * 2).min(Duration::from_secs(5));
        }
    }
}

fn add_outcome(frame: &mut pb::WorkerFrame, outcome: Outcome, finished: &mut u32) {
    match outcome {
        Outcome::Ack(t) => {
            *finished += 1;
            frame.acks.push(t);
        }
        Outcome::Nack(n) => {
            *finished += 1;
            frame.nacks.push(n);
        }
        Outcome::Extend(t) => frame.extends.push(t),
    }
}

async fn run_job<F, Fut, E>(
    handler: Arc<F>,
    job: Job,
    token: pb::LeaseToken,
    outcomes: mpsc::UnboundedSender<Outcome>,
) where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let lease = Duration::from_millis((job.lease_expires_at_ms - now_ms).max(300) as u64);
    let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
    let cx = crate::trace_context::handler_context(&job.queue, &job.id, job.attempt, &job.headers);
    let work = handler(job).with_context(cx.clone());
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = extend.tick() => {
                let _ = outcomes.send(Outcome::Extend(token.clone()));
            }
        }
    };
    let span = cx.span();
    let outcome = match result {
        Ok(()) => Outcome::Ack(token),
        Err(e) => {
            let error = error_text(e.to_string());
            span.set_status(opentelemetry::trace::Status::error(error.clone()));
            Outcome::Nack(pb::NackItem {
                token: Some(token),
                retry_delay_ms: None,
                error,
                dead: false,
            })
        }
    };
    span.end();
    let _ = outcomes.send(outcome);
}

/// A handler's error as a nack carries it: at most the server's limit in
/// bytes (not characters), cut on a character boundary and marked as cut.
fn error_text(mut text: String) -> String {
    const MARK: &str = "…";
    let limit = raftq_api::limits::MAX_ERROR_BYTES;
    if text.len() <= limit {
        return text;
    }
    let mut end = limit - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;
    use raftq_api::limits::MAX_ERROR_BYTES;

    #[test]
    fn error_text_fits_the_byte_limit_on_a_char_boundary() {
        assert_eq!(error_text("short".into()), "short");
        let exact = "a".repeat(MAX_ERROR_BYTES);
        assert_eq!(error_text(exact.clone()), exact);
        // 3-byte characters: 4,000 of them are 12,000 bytes.
        for text in [
            "é".repeat(4000),
            "€".repeat(4000),
            format!("a{}", "😀".repeat(2000)),
        ] {
            let cut = error_text(text.clone());
            assert!(cut.len() <= MAX_ERROR_BYTES, "{} bytes", cut.len());
            assert!(cut.ends_with('…'));
            assert!(text.starts_with(cut.trim_end_matches('…')));
        }
    }
}
