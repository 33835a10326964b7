//! Ending worker streams before a node stops.
//!
//! A worker stream lives as long as its worker, so a stopping node must end
//! them itself: each session stops taking new jobs, applies the results it
//! has already received, and closes with UNAVAILABLE so the SDK reconnects
//! to another node and sends the rest there (lease tokens are valid on any
//! node). Without this the gRPC server's graceful shutdown would wait on
//! the streams forever, and results in flight would be lost to lease
//! expiry.

use std::time::Duration;

use tokio::sync::watch;

/// How long a stopping node waits for its worker streams to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct WorkerDrain {
    draining: watch::Sender<bool>,
    sessions: watch::Sender<usize>,
}

/// Held by one worker session; counts it and tells it when to stop.
pub struct SessionGuard {
    draining: watch::Receiver<bool>,
    sessions: watch::Sender<usize>,
}

impl Default for WorkerDrain {
    fn default() -> Self {
        WorkerDrain {
            draining: watch::channel(false).0,
            sessions: watch::channel(0).0,
        }
    }
}

impl WorkerDrain {
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    pub fn session(&self) -> SessionGuard {
        self.sessions.send_modify(|n| *n += 1);
        SessionGuard {
            draining: self.draining.subscribe(),
            sessions: self.sessions.clone(),
        }
    }

    /// Tells every session to finish, and waits (up to `timeout`) until
    /// they have. Returns how many were still open.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.draining.send_replace(true);
        let mut sessions = self.sessions.subscribe();
        let _ = tokio::time::timeout(timeout, sessions.wait_for(|n| *n == 0)).await;
        let open = *sessions.borrow();
        open
    }
}

impl SessionGuard {
    /// Resolves once the node starts draining.
    pub async fn draining(&mut self) {
        let _ = self.draining.wait_for(|d| *d).await;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_sessions_to_finish() {
        let drain = std::sync::Arc::new(WorkerDrain::default());
        let mut a = drain.session();
        let b = drain.session();
        drop(b);
        let session = tokio::spawn(async move {
            a.draining().await;
            // Finish up, then go.
            drop(a);
        });
        assert_eq!(drain.drain(Duration::from_secs(5)).await, 0);
        session.await.unwrap();
        assert!(drain.is_draining());
    }

    #[tokio::test]
    async fn drain_gives_up_after_its_timeout() {
        let drain = WorkerDrain::default();
        let _stuck = drain.session();
        assert_eq!(drain.drain(Duration::from_millis(50)).await, 1);
    }
}
