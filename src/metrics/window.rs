//! Sliding-window event counters: a ring of time buckets whose counts are atomics stamped with
//! their bucket's epoch.
//!
//! Time is cut into ticks of `window / BUCKETS`. A bucket word packs the tick it counts for
//! (its low 24 bits, the *tag*) and a 40-bit count:
//!
//! ```text
//!  bucket (u64): [ tag: 24 bits | count: 40 bits ]
//! ```
//!
//! Recording at tick `t` goes to bucket `t % BUCKETS` with one compare-and-swap: if the tag is
//! `t` the count grows by one; if the tag is older, the bucket is restarted at `(t, 1)`, which
//! is how old buckets expire. A recorder that stalled for a whole window and finds a tag a
//! little *newer* (up to four windows) drops its event rather than erase newer counts; a tag
//! that looks further ahead can only be a bucket left alone for so long that its tag wrapped
//! around (2^24 ticks), and is restarted. No lock; a record is a load and a CAS.
//!
//! Reading at tick `now` sums the buckets whose tag lies in `(now - BUCKETS, now]` and divides
//! by the time they span: `BUCKETS - 1` whole ticks plus the elapsed part of the current one.
//! Rates are therefore per second over the last window, not since start.

use std::time::Duration;

use crate::sync::Ordering;
use crate::sync::stats::AtomicU64;

/// Buckets per window.
pub(crate) const BUCKETS: usize = 10;
const TAG_BITS: u32 = 24;
const COUNT_BITS: u32 = 64 - TAG_BITS;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// A recorder may lag the newest tick of its bucket by up to this many ticks (four windows)
/// and have its event dropped; a tag seemingly further ahead has wrapped around and is
/// restarted. Either way the error is bounded: one late event, or at most four windows of
/// events dropped after an idle gap of just under 2^24 ticks.
const STALE_TOLERANCE: u64 = 4 * BUCKETS as u64;

/// The clock of a window: nanoseconds since some base, cut into ticks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticks {
    tick_nanos: u64,
    /// `2^64 / tick_nanos`: a tick is one multiply, not a 64-bit division (~10 ns here, paid
    /// at every submission and every task end).
    inverse: u64,
}

impl Ticks {
    pub(crate) fn new(window: Duration) -> Self {
        let nanos = window.as_nanos().min(u128::from(u64::MAX)) as u64;
        let tick_nanos = (nanos / BUCKETS as u64).max(1);
        Ticks {
            tick_nanos,
            inverse: ((1u128 << 64) / u128::from(tick_nanos)).min(u128::from(u64::MAX)) as u64,
        }
    }

    /// The tick of `nanos`: `nanos / tick_nanos`, or one less right after a tick boundary
    /// (the inverse is rounded down). Monotonic in `nanos`, which is all a window needs.
    #[inline]
    pub(crate) fn tick(&self, nanos: u64) -> u64 {
        ((u128::from(nanos) * u128::from(self.inverse)) >> 64) as u64
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(self.tick_nanos * BUCKETS as u64)
    }
}

/// One sliding-window counter.
#[derive(Default)]
pub(crate) struct Window {
    buckets: [AtomicU64; BUCKETS],
}

#[inline]
fn tag(tick: u64) -> u64 {
    tick & TAG_MASK
}

/// How far `newer` is ahead of `older`, modulo the tag space.
#[inline]
fn tag_distance(older: u64, newer: u64) -> u64 {
    newer.wrapping_sub(older) & TAG_MASK
}

impl Window {
    /// Counts one event at `tick`.
    #[inline]
    pub(crate) fn record(&self, tick: u64) {
        self.record_n(tick, 1);
    }

    /// Adds `n` at `tick` (for sums such as busy nanoseconds). Saturates at 2^40 - 1 a bucket.
    /// Any thread may record: a compare-and-swap per event.
    #[inline]
    pub(crate) fn record_n(&self, tick: u64, n: u64) {
        let bucket = &self.buckets[(tick % BUCKETS as u64) as usize];
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let Some(next) = Self::added(current, tick, n) else {
                return;
            };
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// [`record_n`](Self::record_n) for a window with one writer (a worker's own tally): a
    /// load and a store, no read-modify-write (a locked instruction waits for every store
    /// before it to leave the CPU, and on the task path those include the task cell's). Other
    /// threads only read it (`count`), and see each bucket's old or new word, never a torn
    /// one.
    #[inline]
    pub(crate) fn record_n_single_writer(&self, tick: u64, n: u64) {
        let bucket = &self.buckets[(tick % BUCKETS as u64) as usize];
        let current = bucket.load(Ordering::Relaxed);
        if let Some(next) = Self::added(current, tick, n) {
            bucket.store(next, Ordering::Relaxed);
        }
    }

    /// The bucket word after adding `n` at `tick` to `current`; `None` to drop the event.
    #[inline]
    fn added(current: u64, tick: u64, n: u64) -> Option<u64> {
        let t = tag(tick);
        let n = n.min(COUNT_MASK);
        let current_tag = current >> COUNT_BITS;
        if current_tag == t {
            let count = ((current & COUNT_MASK) + n).min(COUNT_MASK);
            Some((t << COUNT_BITS) | count)
        } else if current != 0 && tag_distance(t, current_tag) < STALE_TOLERANCE {
            // The bucket counts a tick a little ahead of this one: this recorder stalled
            // between reading the clock and recording, and its event is too old. (A tag
            // further "ahead" is really a bucket left alone so long that its tag wrapped
            // around: restart it.)
            None
        } else {
            Some((t << COUNT_BITS) | n)
        }
    }

    /// Events counted in the window that ends at `tick`.
    pub(crate) fn count(&self, tick: u64) -> u64 {
        let now = tag(tick);
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .filter(|&v| v != 0 && tag_distance(v >> COUNT_BITS, now) < BUCKETS as u64)
            .map(|v| v & COUNT_MASK)
            .sum()
    }
}

/// Events per second over the window ending at `nanos`, for counts summed from windows.
pub(crate) fn rate(count: u64, ticks: &Ticks, nanos: u64) -> f64 {
    let into_tick = nanos % ticks.tick_nanos;
    let covered = (BUCKETS as u64 - 1) * ticks.tick_nanos + into_tick;
    // Early on, the window has not filled: divide by the time that has passed.
    let covered = covered.min(nanos).max(1);
    count as f64 * 1e9 / covered as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The multiply that replaced the division: never more than one tick behind the exact
    /// quotient, never ahead, and monotonic, for tiny, default and huge tick widths.
    #[test]
    fn ticks_by_inverse_match_the_division_within_one_and_never_go_back() {
        let windows = [
            Duration::from_nanos(1),
            Duration::from_nanos(10),
            Duration::from_millis(1),
            Duration::from_secs(10),
            Duration::from_secs(3 * 3600),
            Duration::MAX,
        ];
        for window in windows {
            let ticks = Ticks::new(window);
            let d = ticks.tick_nanos;
            let mut x = 0x9e37_79b9_7f4a_7c15_u64;
            let mut samples: Vec<u64> = (0..2_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Up to ~30 years of nanoseconds, plus tick boundaries and their neighbours.
                    x % (1 << 60)
                })
                .collect();
            for k in [1u64, 2, 7, 1_000, 123_456_789] {
                let at = k.saturating_mul(d);
                samples.extend([at.saturating_sub(1), at, at.saturating_add(1)]);
            }
            samples.sort_unstable();
            let mut last = 0;
            for n in samples {
                let (got, exact) = (ticks.tick(n), n / d);
                assert!(
                    got <= exact && exact - got <= 1,
                    "{n} / {d}: {got} vs {exact}"
                );
                assert!(got >= last, "tick went back at {n}");
                last = got;
            }
        }
    }
    use crate::sync::{Arc, thread};

    const MS: u64 = 1_000_000;

    #[test]
    fn counts_inside_the_window_and_forgets_older_buckets() {
        let ticks = Ticks::new(Duration::from_secs(1)); // 10 ticks of 100 ms
        let w = Window::default();
        // 5 events per tick for ticks 0..20.
        for t in 0..20 {
            for _ in 0..5 {
                w.record(t);
            }
        }
        // At tick 19 the window holds ticks 10..=19.
        assert_eq!(w.count(19), 50);
        // Time moves on without events: buckets expire one by one.
        assert_eq!(w.count(24), 25);
        assert_eq!(w.count(29), 0);
        let r = rate(w.count(19), &ticks, 19 * 100 * MS + 50 * MS);
        // 50 events over 9.5 ticks of 100 ms.
        assert!((r - 50.0 / 0.95).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_reused_bucket_restarts() {
        let w = Window::default();
        w.record(3);
        w.record(3);
        w.record(13); // same bucket, one window later
        assert_eq!(w.count(13), 1);
    }

    /// The single-writer record keeps the same books as the shared one: counts, a reused
    /// bucket that restarts, and a stale event dropped.
    #[test]
    fn the_single_writer_record_counts_as_the_shared_one_does() {
        let (shared, single) = (Window::default(), Window::default());
        for tick in [3, 3, 4, 13, 3, 14, 14, 5] {
            shared.record_n(tick, 2);
            single.record_n_single_writer(tick, 2);
        }
        for tick in [5, 13, 14, 20] {
            assert_eq!(single.count(tick), shared.count(tick), "at tick {tick}");
        }
        assert_eq!(
            single.count(14),
            6 + 2,
            "ticks 13, 14, 14 and the 5 before them"
        );
    }

    #[test]
    fn an_event_older_than_the_bucket_is_dropped() {
        let w = Window::default();
        w.record(13);
        w.record(3); // a stalled recorder
        assert_eq!(w.count(13), 1);
    }

    #[test]
    fn rate_before_the_window_filled_uses_elapsed_time() {
        let ticks = Ticks::new(Duration::from_secs(1));
        // 30 events in the first 300 ms: 100 per second.
        let r = rate(30, &ticks, 300 * MS);
        assert!((r - 100.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_bucket_idle_for_half_the_tag_space_still_restarts() {
        let w = Window::default();
        w.record(0);
        // 2^23 + 10 ticks later the old tag looks "ahead" modulo 2^24; it must not block.
        let later = (1 << (TAG_BITS - 1)) + 10;
        w.record(later);
        assert_eq!(w.count(later), 1);
    }

    #[test]
    fn sums_add_and_saturate() {
        let w = Window::default();
        w.record_n(4, 1_000);
        w.record_n(4, 234);
        assert_eq!(w.count(4), 1_234);
        w.record_n(5, u64::MAX);
        assert_eq!(w.count(5), 1_234 + COUNT_MASK);
    }

    #[test]
    fn tags_wrap_around() {
        let w = Window::default();
        let base = (1 << TAG_BITS) - 3;
        for t in base..base + 6 {
            w.record(t);
        }
        assert_eq!(w.count(base + 5), 6);
    }

    #[test]
    fn concurrent_recorders_lose_nothing() {
        let w = Arc::new(Window::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || {
                    for _ in 0..100_000 {
                        w.record(7);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(w.count(7), 400_000);
    }
}
