//! The manager's clock: nanoseconds since the manager was built, read on the task path.
//!
//! Every accepted task is stamped once when it is queued and once when it ends (DESIGN §5), so
//! the clock read is on the hot path twice per task. `Instant::now()` costs ~37 ns on this
//! 2-vCPU VM (`clock_gettime` through the vDSO); reading the CPU's time-stamp counter and
//! scaling it costs ~14 ns. Where the CPU has an invariant TSC, [`quanta`] calibrates it once per
//! process (well under a millisecond here, at the first `build`) and [`Clock::now`] reads it;
//! elsewhere `quanta` falls back to the OS clock by itself. Under Miri and loom the clock is
//! `Instant` (neither can execute `rdtsc`).
//!
//! Stamps are plain `u64` nanoseconds, so a task cell carries 8 bytes of time, not an
//! `Instant`'s 16, and the metrics' windows take them as they are. Where a stamp leaves the
//! crate (a [`TaskLifecycle`](crate::TaskLifecycle) handed to a collector) it is turned into an
//! `Instant` by [`Clock::instant`]: the `Instant` taken at build plus the stamp. Should two
//! cores' counters disagree slightly, the task path clamps its stamps so that a task never
//! starts before it was queued nor ends before it started.

use std::time::{Duration, Instant};

/// Nanoseconds since the manager's clock started.
pub(crate) type Stamp = u64;

/// A manager's clock (see the module docs).
pub(crate) struct Clock {
    origin: Instant,
    #[cfg(not(any(miri, loom)))]
    source: quanta::Clock,
    #[cfg(not(any(miri, loom)))]
    origin_raw: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        #[cfg(not(any(miri, loom)))]
        {
            let source = quanta::Clock::new();
            let origin_raw = source.raw();
            Clock {
                origin: Instant::now(),
                source,
                origin_raw,
            }
        }
        #[cfg(any(miri, loom))]
        Clock {
            origin: Instant::now(),
        }
    }

    /// Now, as a stamp.
    #[inline]
    pub(crate) fn now(&self) -> Stamp {
        #[cfg(not(any(miri, loom)))]
        {
            self.source
                .delta_as_nanos(self.origin_raw, self.source.raw())
        }
        #[cfg(any(miri, loom))]
        {
            self.origin.elapsed().as_nanos() as u64
        }
    }

    /// A stamp as an `Instant`, for collectors.
    pub(crate) fn instant(&self, stamp: Stamp) -> Instant {
        self.origin + Duration::from_nanos(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamps measure real time: bracketed by `Instant` reads, a stamped interval is never
    /// shorter than the sleep inside it nor longer than the bracket (1 % slack for the
    /// counter's calibration), and a stamp maps back inside its bracket. Preemption only
    /// widens the brackets, so a busy machine cannot make this fail.
    #[test]
    fn stamps_advance_with_real_time_and_map_back_to_instants() {
        let clock = Clock::new();
        let outer_start = Instant::now();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock.now();
        let outer = outer_start.elapsed().as_nanos() as u64;
        let seen = b.saturating_sub(a);
        assert!(
            seen >= 19_000_000,
            "stamps moved {seen} ns over a 20 ms sleep"
        );
        assert!(
            seen <= outer + outer / 100 + 1_000,
            "stamps {seen} ns vs bracket {outer} ns"
        );

        let tolerance = Duration::from_millis(1);
        let before = Instant::now();
        let stamp = clock.now();
        let after = Instant::now();
        let mapped = clock.instant(stamp);
        assert!(
            mapped + tolerance >= before && mapped <= after + tolerance,
            "mapped stamp {mapped:?} outside [{before:?}, {after:?}]"
        );
    }
}
