//! Latency histograms: recorded locally by each worker, published on a tick.
//!
//! A worker records every task's execution and queue-wait time into its own plain
//! [`Histogram`]s ([`LocalRecorder`]): no atomic, no lock on the task path. Every
//! [`PUBLISH_EVERY`] (by the clock it reads anyway) and always before it parks or exits, it
//! adds them into its [`Published`] pair and resets them. Publishing takes the pair's mutexes
//! with `try_lock` on the busy path (a snapshot in progress just delays it to the next tick)
//! and with `lock` before parking (a snapshot holds them for a few microseconds). A snapshot
//! locks each worker's published pair only to merge it, never waiting on a worker that parked:
//! a parked worker holds no lock. Memory is bounded: each histogram has a fixed range
//! (1 ns to 1 hour) at two significant digits, whatever the number of tasks.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::sync::stats::Mutex;

/// Highest value tracked, in nanoseconds (larger values are clamped to it).
const MAX_NANOS: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits kept: 2 gives 1% precision in about 40 KiB per histogram.
const SIGFIG: u8 = 2;
/// How stale a published histogram may be while its worker is busy.
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(5);

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NANOS, SIGFIG).expect("constant bounds are valid")
}

/// A worker's published histograms, read by snapshots.
pub(crate) struct Published {
    pub(crate) exec: Mutex<Histogram<u64>>,
    pub(crate) wait: Mutex<Histogram<u64>>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            exec: Mutex::new(new_histogram()),
            wait: Mutex::new(new_histogram()),
        }
    }
}

/// A worker's own histograms, touched only by its thread.
pub(crate) struct LocalRecorder {
    exec: Histogram<u64>,
    wait: Histogram<u64>,
    dirty: bool,
    last_publish_nanos: u64,
}

impl LocalRecorder {
    pub(crate) fn new() -> Self {
        LocalRecorder {
            exec: new_histogram(),
            wait: new_histogram(),
            dirty: false,
            last_publish_nanos: 0,
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, exec_nanos: u64, wait_nanos: u64) {
        self.exec.saturating_record(exec_nanos.clamp(1, MAX_NANOS));
        self.wait.saturating_record(wait_nanos.clamp(1, MAX_NANOS));
        self.dirty = true;
    }

    /// Publishes if the last publish is older than [`PUBLISH_EVERY`]; never blocks. True
    /// when it was time to publish.
    #[inline]
    pub(crate) fn tick(&mut self, now_nanos: u64, published: &Published) -> bool {
        if now_nanos.saturating_sub(self.last_publish_nanos) >= PUBLISH_EVERY.as_nanos() as u64 {
            self.publish(published, false);
            self.last_publish_nanos = now_nanos;
            true
        } else {
            false
        }
    }

    /// Publishes now. With `wait`, blocks (briefly) for a snapshot in progress.
    #[cold]
    pub(crate) fn publish(&mut self, published: &Published, wait: bool) {
        if !self.dirty {
            return;
        }
        let (exec, wait_h) = if wait {
            (
                published.exec.lock().unwrap_or_else(|e| e.into_inner()),
                published.wait.lock().unwrap_or_else(|e| e.into_inner()),
            )
        } else {
            let (Ok(exec), Ok(wait_h)) = (published.exec.try_lock(), published.wait.try_lock())
            else {
                return;
            };
            (exec, wait_h)
        };
        let (mut exec, mut wait_h) = (exec, wait_h);
        // Same bounds on both sides: `add` cannot fail.
        let _ = exec.add(&self.exec);
        let _ = wait_h.add(&self.wait);
        self.exec.reset();
        self.wait.reset();
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let published = Published::default();
        let mut local = LocalRecorder::new();
        // 1..=10_000 µs, once each.
        for us in 1..=10_000u64 {
            local.record(us * 1_000, 0);
        }
        local.publish(&published, true);
        let h = published.exec.lock().unwrap();
        assert_eq!(h.len(), 10_000);
        let p50 = h.value_at_quantile(0.5) as f64 / 1_000.0;
        let p99 = h.value_at_quantile(0.99) as f64 / 1_000.0;
        assert!((p50 - 5_000.0).abs() / 5_000.0 < 0.01, "p50 {p50} µs");
        assert!((p99 - 9_900.0).abs() / 9_900.0 < 0.01, "p99 {p99} µs");
        assert!(h.max() >= 9_990_000);
    }

    #[test]
    fn publishing_moves_counts_and_resets_the_local_side() {
        let published = Published::default();
        let mut local = LocalRecorder::new();
        local.record(100, 7);
        local.tick(PUBLISH_EVERY.as_nanos() as u64, &published);
        local.record(200, 8);
        local.publish(&published, true);
        assert_eq!(published.exec.lock().unwrap().len(), 2);
        assert_eq!(published.wait.lock().unwrap().len(), 2);
        assert_eq!(local.exec.len(), 0);
    }

    #[test]
    fn a_busy_snapshot_delays_a_non_blocking_publish() {
        let published = Published::default();
        let mut local = LocalRecorder::new();
        local.record(100, 1);
        {
            let _snapshot = published.exec.lock().unwrap();
            local.publish(&published, false);
        }
        assert_eq!(published.exec.lock().unwrap().len(), 0);
        local.publish(&published, false);
        assert_eq!(published.exec.lock().unwrap().len(), 1);
    }

    #[test]
    fn memory_is_bounded_whatever_the_count() {
        let mut h = new_histogram();
        let before = h.distinct_values();
        for v in 0..1_000_000u64 {
            h.saturating_record(v * 977 % MAX_NANOS + 1);
        }
        assert_eq!(h.distinct_values(), before);
    }
}
