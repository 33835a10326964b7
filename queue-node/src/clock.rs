//! A shard's "now": [`ShardClock`] is the one owner of it on a node. The
//! leader stamps every batch it proposes with it (lease expiry, retry
//! delays and schedules are all counted on it) and the idle-timer ticker
//! compares deadlines with it.
//!
//! The shard's time is the time of the last applied batch, carried forward
//! on this node's monotonic clock. A node that becomes leader starts its
//! stamps there, not at its own wall clock, so a new leader whose wall
//! clock is an hour ahead does not expire every lease at once, and one an
//! hour behind does not freeze the timers. From there its [`LeaderClock`]
//! follows the wall clock, but never runs more than 1% faster or slower
//! than the monotonic clock: a wall clock stepped by an hour (a bad NTP
//! server, an operator's `date -s`) is absorbed gradually, at 1%.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far the stamps may run from monotonic time: 1 part in `SLEW_DIV`.
const SLEW_DIV: u64 = 100;
/// How often the reference point moves forward.
const REBASE_AFTER: Duration = Duration::from_secs(1);

/// One shard's clock on this node.
#[derive(Debug)]
pub struct ShardClock {
    inner: Mutex<ClockState>,
}

#[derive(Debug)]
struct ClockState {
    /// The time of the last applied batch and when it was applied here.
    applied: Option<(u64, Instant)>,
    /// The shard's time as loaded from disk, before anything was applied.
    floor: u64,
    /// The stamps of this node's current leadership, and its term.
    leader: Option<(u64, LeaderClock)>,
}

impl ShardClock {
    /// A clock for a shard whose stored state was last at `state_ms`.
    pub fn new(state_ms: u64) -> ShardClock {
        ShardClock {
            inner: Mutex::new(ClockState {
                applied: None,
                floor: state_ms,
                leader: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called after every apply with the shard's time after it. A shard
    /// that has applied no batch yet has no time (0): it is not recorded.
    pub fn applied(&self, state_ms: u64) {
        if state_ms == 0 {
            return;
        }
        self.lock().applied = Some((state_ms, Instant::now()));
    }

    /// The stamp for a batch this node proposes now as leader of `term`.
    /// The first stamp of a term starts from the shard's time.
    pub fn stamp(&self, term: u64) -> u64 {
        let (wall, now) = (wall_ms(), Instant::now());
        let mut state = self.lock();
        let shard = state.shard_time(wall, now);
        let clock = match &mut state.leader {
            Some((t, clock)) if *t == term => clock,
            slot => {
                *slot = Some((term, LeaderClock::default()));
                match slot {
                    Some((_, clock)) => clock,
                    None => unreachable!("set just above"),
                }
            }
        };
        clock.stamp_from(wall, now, shard)
    }

    /// The shard's time now, without giving out a stamp: the clock of this
    /// node's leadership in `term` if it has stamped in it, else the
    /// shard's time carried forward.
    pub fn now_ms(&self, term: u64) -> u64 {
        let (wall, now) = (wall_ms(), Instant::now());
        let state = self.lock();
        let shard = state.shard_time(wall, now);
        match &state.leader {
            Some((t, clock)) if *t == term => clock.peek(wall, now).unwrap_or(shard).max(shard),
            _ => shard,
        }
    }
}

impl ClockState {
    /// The last applied time plus the monotonic time since; before
    /// anything is applied, the wall clock (never below the stored time).
    fn shard_time(&self, wall: u64, now: Instant) -> u64 {
        match self.applied {
            Some((at_ms, at)) => {
                at_ms.saturating_add(now.saturating_duration_since(at).as_millis() as u64)
            }
            None => wall.max(self.floor),
        }
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
        self.stamp_from(wall_ms, now, wall_ms)
    }

    /// Like [`LeaderClock::stamp`]; the first stamp is `start` (the
    /// shard's time), not the wall clock.
    pub fn stamp_from(&mut self, wall_ms: u64, now: Instant, start: u64) -> u64 {
        let stamp = match self.base {
            None => start,
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

    /// The stamp [`LeaderClock::stamp`] would give now, without moving
    /// the clock; `None` before the first stamp.
    pub fn peek(&self, wall_ms: u64, now: Instant) -> Option<u64> {
        let (base, at) = self.base?;
        let elapsed = now.saturating_duration_since(at).as_millis() as u64;
        let slack = elapsed / SLEW_DIV;
        Some(
            wall_ms
                .clamp(base + elapsed - slack, base + elapsed + slack + 1)
                .max(self.last),
        )
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
    fn a_new_leader_starts_from_the_shard_time_not_its_wall_clock() {
        let start = Instant::now();
        let mut c = LeaderClock::default();
        // This node's wall clock is an hour ahead of the shard's time.
        let first = c.stamp_from(T0 + 3_600_000, start, T0);
        assert_eq!(first, T0);
        let later = run(&mut c, start, 10, 10_000, |t| T0 + 3_600_000 + t);
        // At most 1 % faster (and 1 ms per rebase) than the monotonic clock.
        assert!(later - T0 <= 10_110, "gained {} ms in 10 s", later - T0);
        // Peeking gives what a stamp would (within the 1 ms rounding).
        let peeked = c.peek(
            T0 + 3_600_000 + 10_000,
            start + Duration::from_millis(10_000),
        );
        assert!(
            peeked.is_some_and(|p| (later..=later + 1).contains(&p)),
            "{peeked:?}"
        );
    }

    #[test]
    fn the_shard_clock_carries_the_applied_time_forward_and_reseeds_per_term() {
        let clock = ShardClock::new(0);
        // Applied far in the future (another leader's clock): stamps start
        // there, not at this machine's wall clock.
        let ahead = wall_ms() + 3_600_000;
        clock.applied(ahead);
        let s1 = clock.stamp(1);
        assert!((ahead..ahead + 1_000).contains(&s1), "{s1} vs {ahead}");
        assert!(clock.now_ms(1) >= s1);
        // A later term applied from an earlier time: re-seeded from it.
        let behind = wall_ms() - 3_600_000;
        clock.applied(behind);
        let s2 = clock.stamp(2);
        assert!((behind..behind + 1_000).contains(&s2), "{s2} vs {behind}");
    }

    #[test]
    fn a_fresh_shard_starts_at_the_wall_clock() {
        let clock = ShardClock::new(0);
        clock.applied(0); // blank and membership entries carry no time
        let wall = wall_ms();
        let s = clock.stamp(1);
        assert!((wall..wall + 1_000).contains(&s), "{s} vs {wall}");
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
