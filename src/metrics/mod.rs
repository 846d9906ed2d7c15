//! Counters and the public snapshots ([`TaskStats`], [`TaskMetrics`]).
//!
//! Each worker owns one cache-padded [`Counters`] and is its only writer, so recording an
//! outcome is an uncontended `Relaxed` add on a line no other thread writes. A snapshot sums
//! every worker's counters plus the one for `run_task` outcomes (written by callers' threads).

use crate::sync::{AtomicU64, Ordering};

/// Outcome counters of one worker (or of `run_task` callers).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) replaced: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sums counters into a [`TaskMetrics`].
pub(crate) fn snapshot<'a>(all: impl Iterator<Item = &'a Counters>) -> TaskMetrics {
    let mut m = TaskMetrics::default();
    for c in all {
        m.total_tasks_completed += c.completed.load(Ordering::Relaxed);
        m.total_tasks_failed += c.failed.load(Ordering::Relaxed);
        m.total_tasks_retried += c.retried.load(Ordering::Relaxed);
        m.total_tasks_panicked += c.panicked.load(Ordering::Relaxed);
        m.total_resources_replaced += c.replaced.load(Ordering::Relaxed);
    }
    let ended = m.total_tasks_completed + m.total_tasks_failed;
    if ended > 0 {
        m.success_rate = m.total_tasks_completed as f64 / ended as f64;
        m.failure_rate = m.total_tasks_failed as f64 / ended as f64;
    }
    m
}

/// A point-in-time view of the manager's workers and queues. Cheap: a few atomic loads.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Workers made at build (`worker_count`).
    pub base_workers: usize,
    /// Workers that hold a resource and take tasks.
    pub active_workers: usize,
    /// Burst workers currently active (0 while bursting is off).
    pub burst_workers: usize,
    /// Workers allowed at most (`max_worker_count`).
    pub max_workers: usize,
    /// Normal tasks waiting in a queue.
    pub queued_tasks: usize,
    /// Priority tasks (and retries) waiting in a queue.
    pub priority_tasks: usize,
    /// Accepted tasks without an outcome yet (queued, running or retrying).
    pub pending_tasks: usize,
    /// Idle resources in the `run_task` pool.
    pub available_resources: usize,
}

/// Totals and ratios of task outcomes since build. Cheap: sums per-worker counters.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskMetrics {
    /// Tasks that ended `Ok`.
    pub total_tasks_completed: u64,
    /// Tasks that ended with any error (failed, panicked, killed, cancelled).
    pub total_tasks_failed: u64,
    /// Times a task was re-queued after an unhealthy error.
    pub total_tasks_retried: u64,
    /// Tasks that panicked (also counted in `total_tasks_failed`).
    pub total_tasks_panicked: u64,
    /// Resources destroyed and replaced after an unhealthy error or a panic.
    pub total_resources_replaced: u64,
    /// `completed / (completed + failed)`, 0 before any task ended.
    pub success_rate: f64,
    /// `failed / (completed + failed)`, 0 before any task ended.
    pub failure_rate: f64,
}
