//! Paces the snapshot chunks this node sends, over all its shards: a move
//! that fills a new replica with a snapshot must not take the bandwidth
//! (and the disk) the shards' own replication needs.
//!
//! Owns only the schedule; the network layer asks it before each chunk.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Sends at most `bytes_per_sec` of snapshot chunks, node-wide.
pub struct SnapshotPacer {
    bytes_per_sec: u64,
    /// When the link is free again for the next chunk.
    free_at: Mutex<Option<Instant>>,
}

impl SnapshotPacer {
    /// `mib_per_sec` 0: no limit.
    pub fn new(mib_per_sec: u64) -> SnapshotPacer {
        SnapshotPacer {
            bytes_per_sec: mib_per_sec.saturating_mul(1 << 20),
            free_at: Mutex::new(None),
        }
    }

    /// Waits for `bytes`' turn: chunks go out back to back at the rate,
    /// in the order they asked.
    pub async fn pace(&self, bytes: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let takes = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let start = {
            let mut free_at = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = free_at.filter(|at| *at > now).unwrap_or(now);
            *free_at = Some(start + takes);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn chunks_go_out_at_the_rate_whoever_sends_them() {
        let pacer = std::sync::Arc::new(SnapshotPacer::new(1));
        let began = Instant::now();
        // Two shards' transfers, 4 chunks of 1 MiB in all, at 1 MiB/s: the
        // last may start 3 s after the first.
        let send = |p: std::sync::Arc<SnapshotPacer>| async move {
            p.pace(1 << 20).await;
            p.pace(1 << 20).await;
        };
        tokio::join!(send(pacer.clone()), send(pacer.clone()));
        assert_eq!(began.elapsed().as_secs(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_waits() {
        let pacer = SnapshotPacer::new(0);
        let began = Instant::now();
        for _ in 0..10 {
            pacer.pace(1 << 30).await;
        }
        assert_eq!(began.elapsed(), Duration::ZERO);
    }
}
