//! Latency histograms for `/metrics`, in Prometheus' cumulative-bucket
//! form. [`Histogram`] is shared and lock-free (observed from the batcher
//! and the state machine's apply); [`Counts`] is the plain form the state
//! machine keeps under its own lock (lease-to-ack times, from the batch
//! clock).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (then +Inf).
pub const BOUNDS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

fn bucket_of(seconds: f64) -> usize {
    BOUNDS
        .iter()
        .position(|bound| seconds <= *bound)
        .unwrap_or(BOUNDS.len())
}

/// A histogram many threads observe into.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), the last one +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        self.buckets[bucket_of(elapsed.as_secs_f64())].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Counts {
        let mut counts = Counts::default();
        for (to, from) in counts.buckets.iter_mut().zip(&self.buckets) {
            *to = from.load(Ordering::Relaxed);
        }
        counts.sum_seconds = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        counts
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    buckets: [u64; BOUNDS.len() + 1],
    sum_seconds: f64,
}

impl Counts {
    pub fn observe_ms(&mut self, ms: u64) {
        let seconds = ms as f64 / 1000.0;
        self.buckets[bucket_of(seconds)] += 1;
        self.sum_seconds += seconds;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_seconds
    }

    /// The `_bucket`, `_sum` and `_count` lines of metric `name` with
    /// `labels` (`a="b",c="d"`, or empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BOUNDS.iter().zip(&self.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count()
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_every_observation() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(1000));
        let mut out = String::new();
        h.snapshot().render(&mut out, "x_seconds", "shard=\"0\"");
        assert!(
            out.contains("x_seconds_bucket{shard=\"0\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"0.005\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"0.01\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"300\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{shard=\"0\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_seconds_count{shard=\"0\"} 3\n"));
        let mut c = Counts::default();
        c.observe_ms(1500);
        assert_eq!(c.count(), 1);
    }
}
