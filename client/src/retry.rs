//! Retrying calls that failed for a passing reason.

use std::future::Future;
use std::time::Duration;

use crate::Error;

/// How a call that failed for a passing reason (no leader yet, leadership
/// moving, a node restarting, a broken connection) is retried: with
/// exponential backoff until `deadline` has passed since the first try.
/// Refusals (bad input, an unknown job, a stale lease) are never retried.
///
/// A retried call whose first try was cut off in flight may have taken
/// effect: give jobs an idempotency key to enqueue each exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub deadline: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Rides out a leader election or a rolling restart: 30 s in all,
    /// 50 ms doubling to 1 s between tries.
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// One try only.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            deadline: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    /// Runs `call` until it succeeds, fails in a way retrying cannot fix,
    /// or the next try would start after the deadline.
    pub async fn run<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = self.initial_backoff;
        loop {
            match call().await {
                Ok(answer) => return Ok(answer),
                Err(status) => {
                    let error = Error::from(status);
                    if !error.is_retryable() || started.elapsed() + backoff > self.deadline {
                        return Err(error);
                    }
                    tracing::debug!(%error, ?backoff, "call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn retries_passing_failures_only_and_stops_at_the_deadline() {
        let policy = RetryPolicy {
            deadline: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
        };
        let tries = AtomicU32::new(0);
        let answer = policy
            .run(|| {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 | 1 => Err(tonic::Status::unavailable("electing")),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        assert_eq!(answer.ok(), Some(2));

        let tries = AtomicU32::new(0);
        let refused = policy
            .run(|| {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(tonic::Status::invalid_argument("bad")) }
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a refusal is not retried");

        let started = tokio::time::Instant::now();
        let gave_up = policy
            .run(|| async { Err::<(), _>(tonic::Status::unavailable("no leader")) })
            .await;
        assert!(gave_up.is_err());
        // It gave up only once the next try would start past the deadline.
        assert!(started.elapsed() + policy.max_backoff >= policy.deadline);
    }
}
