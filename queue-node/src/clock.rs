//! The leader's clock, which stamps every batch it proposes (lease expiry,
//! retry delays and schedules are all counted on it).
//!
//! It follows the wall clock, but never runs more than 1% faster or slower
//! than the monotonic clock: a wall clock stepped by an hour (a bad NTP
//! server, an operator's `date -s`) cannot expire every lease at once or
//! freeze time. A real correction is absorbed gradually instead, at 1%.

use std::time::{Duration, Instant};

/// How far the stamps may run from monotonic time: 1 part in `SLEW_DIV`.
const SLEW_DIV: u64 = 100;
/// How often the reference point moves forward.
const REBASE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct LeaderClock {
    /// A stamp given out and the monotonic instant it was given.
    base: Option<(u64, Instant)>,
    last: u64,
}

impl LeaderClock {
    /// The stamp for a batch proposed at `now`, given the wall clock's
    /// reading `wall_ms` (milliseconds since the Unix epoch).
    pub fn stamp(&mut self, wall_ms: u64, now: Instant) -> u64 {
        let stamp = match self.base {
            None => wall_ms,
            Some((base, at)) => {
                let elapsed = now.saturating_duration_since(at).as_millis() as u64;
                let slack = elapsed / SLEW_DIV;
                wall_ms.clamp(base + elapsed - slack, base + elapsed + slack + 1)
            }
        }
        .max(self.last);
        let rebase = match self.base {
            None => true,
            Some((_, at)) => now.saturating_duration_since(at) >= REBASE_AFTER,
        };
        if rebase {
            self.base = Some((stamp, now));
        }
        self.last = stamp;
        stamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    /// Feeds the clock a wall time for every 10 ms of monotonic time.
    fn run(
        clock: &mut LeaderClock,
        start: Instant,
        from_ms: u64,
        to_ms: u64,
        wall: impl Fn(u64) -> u64,
    ) -> u64 {
        let mut last = 0;
        let mut t = from_ms;
        while t <= to_ms {
            last = clock.stamp(wall(t), start + Duration::from_millis(t));
            t += 10;
        }
        last
    }

    #[test]
    fn follows_a_healthy_wall_clock_exactly() {
        let start = Instant::now();
        let mut c = LeaderClock::default();
        assert_eq!(run(&mut c, start, 0, 60_000, |t| T0 + t), T0 + 60_000);
    }

    #[test]
    fn a_forward_step_is_absorbed_at_one_percent() {
        let start = Instant::now();
        let mut c = LeaderClock::default();
        run(&mut c, start, 0, 10_000, |t| T0 + t);
        // The wall clock jumps an hour ahead; 20 s later the stamps have
        // gained at most 1% of those 20 s.
        let s = run(&mut c, start, 10_010, 30_000, |t| T0 + t + 3_600_000);
        let gained = s - (T0 + 30_000);
        assert!(gained <= 250, "gained {gained} ms in 20 s");
        assert!(
            gained >= 150,
            "still slews toward the wall clock: {gained} ms"
        );
    }

    #[test]
    fn a_backward_step_neither_freezes_nor_reverses_time() {
        let start = Instant::now();
        let mut c = LeaderClock::default();
        let before = run(&mut c, start, 0, 10_000, |t| T0 + t);
        let after = run(&mut c, start, 10_010, 20_000, |t| T0 + t - 3_600_000);
        assert!(after > before);
        let advanced = after - before;
        assert!(
            (9_700..=10_000).contains(&advanced),
            "advanced {advanced} ms in 10 s"
        );
    }

    #[test]
    fn stamps_never_go_backwards() {
        let start = Instant::now();
        let mut c = LeaderClock::default();
        let mut last = 0;
        for (i, wall) in [T0, T0 + 5_000, T0 - 5_000, T0 + 1, T0 + 2]
            .into_iter()
            .enumerate()
        {
            let s = c.stamp(wall, start + Duration::from_millis(i as u64 * 400));
            assert!(s >= last, "{s} < {last}");
            last = s;
        }
    }
}
