//! Publishing through the `metrics` crate facade (cargo feature `metrics`).
//!
//! Handles are registered once, at build, with the recorder installed at that moment (install
//! your exporter before `build`). Counters and histograms are updated where the event happens;
//! gauges are refreshed by workers on their publish tick and before they sleep. Every series
//! carries the label `pool` = the builder's `thread_name_prefix`.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `tasker_tasks_arrived_total` | counter | tasks accepted |
//! | `tasker_tasks_completed_total` | counter | tasks ended `Ok` |
//! | `tasker_tasks_failed_total` | counter | tasks ended with an error |
//! | `tasker_tasks_retried_total` | counter | re-queues after unhealthy errors |
//! | `tasker_tasks_panicked_total` | counter | tasks that panicked |
//! | `tasker_resources_replaced_total` | counter | broken resources replaced |
//! | `tasker_resources_recycled_total` | counter | healthy resources retired by the lifecycle knobs, label `reason` = `lifetime`, `uses`, `validation` |
//! | `tasker_task_execution_seconds` | histogram | time a task ran |
//! | `tasker_task_wait_seconds` | histogram | time from queued to started |
//! | `tasker_workers_active` | gauge | workers holding a resource |
//! | `tasker_tasks_queued` | gauge | normal tasks queued |
//! | `tasker_tasks_priority_queued` | gauge | priority tasks queued |
//! | `tasker_tasks_pending` | gauge | accepted tasks without an outcome |

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::Ended;
use crate::metrics::TaskStats;

pub(crate) struct Facade {
    arrived: Counter,
    completed: Counter,
    failed: Counter,
    retried: Counter,
    panicked: Counter,
    replaced: Counter,
    /// By `ReplaceReason`, in the order of `Tally::recycled`.
    recycled: [Counter; 3],
    exec: Histogram,
    wait: Histogram,
    active: Gauge,
    queued: Gauge,
    priority: Gauge,
    pending: Gauge,
}

impl Facade {
    pub(crate) fn new(pool: &str) -> Self {
        let pool = pool.to_owned();
        Facade {
            arrived: counter!("tasker_tasks_arrived_total", "pool" => pool.clone()),
            completed: counter!("tasker_tasks_completed_total", "pool" => pool.clone()),
            failed: counter!("tasker_tasks_failed_total", "pool" => pool.clone()),
            retried: counter!("tasker_tasks_retried_total", "pool" => pool.clone()),
            panicked: counter!("tasker_tasks_panicked_total", "pool" => pool.clone()),
            replaced: counter!("tasker_resources_replaced_total", "pool" => pool.clone()),
            recycled: ["lifetime", "uses", "validation"].map(|reason| {
                counter!("tasker_resources_recycled_total", "pool" => pool.clone(), "reason" => reason)
            }),
            exec: histogram!("tasker_task_execution_seconds", "pool" => pool.clone()),
            wait: histogram!("tasker_task_wait_seconds", "pool" => pool.clone()),
            active: gauge!("tasker_workers_active", "pool" => pool.clone()),
            queued: gauge!("tasker_tasks_queued", "pool" => pool.clone()),
            priority: gauge!("tasker_tasks_priority_queued", "pool" => pool.clone()),
            pending: gauge!("tasker_tasks_pending", "pool" => pool),
        }
    }

    #[inline]
    pub(crate) fn arrival(&self) {
        self.arrived.increment(1);
    }

    #[inline]
    pub(crate) fn ended(&self, ended: Ended) {
        match ended {
            Ended::Completed => self.completed.increment(1),
            Ended::Failed => self.failed.increment(1),
            Ended::Panicked => {
                self.panicked.increment(1);
                self.failed.increment(1);
            }
            Ended::Retried => self.retried.increment(1),
        }
    }

    #[inline]
    pub(crate) fn timed(&self, exec_nanos: u64, wait_nanos: u64) {
        self.exec.record(exec_nanos as f64 * 1e-9);
        self.wait.record(wait_nanos as f64 * 1e-9);
    }

    pub(crate) fn replaced(&self) {
        self.replaced.increment(1);
    }

    /// `slot` as in `Tally::recycled`.
    pub(crate) fn recycled(&self, slot: usize) {
        self.recycled[slot].increment(1);
    }

    pub(crate) fn gauges(&self, stats: &TaskStats) {
        self.active.set(stats.active_workers as f64);
        self.queued.set(stats.queued_tasks as f64);
        self.priority.set(stats.priority_tasks as f64);
        self.pending.set(stats.pending_tasks as f64);
    }
}
