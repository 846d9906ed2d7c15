//! The [`MetricsCollector`] extension point: your own sink for task and worker events.

use std::time::Instant;

use crate::recycle::ReplaceReason;

/// How a task ended.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tasker::{MetricsCollector, TaskLifecycle, TaskOutcome};
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
/// impl MetricsCollector for Count {
///     fn record_failure(&self, task: &TaskLifecycle) {
///         if task.outcome == TaskOutcome::Failed {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// let count = Arc::new(Count::default());
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .check_health(|_: &std::io::Error| false)
///     .max_retries(1)
///     .worker_count(1)
///     .metrics_collector(count.clone())
///     .build()?;
/// let _ = manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("no")));
/// manager.stop()?;
/// assert_eq!(count.0.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Returned `Ok`.
    Completed,
    /// Returned `Err` for the last time.
    Failed,
    /// Panicked.
    Panicked,
    /// Dropped from the queue by `kill`.
    Killed,
    /// Cancelled through its handle before it started.
    Cancelled,
    /// Not started by its deadline: it never ran.
    DeadlineExceeded,
    /// Returned an unhealthy `Err` and was re-queued (only in
    /// [`MetricsCollector::record_retry`]).
    Retried,
}

/// The life of one task (one attempt of it, for retries), as a collector sees it.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tasker::{MetricsCollector, TaskLifecycle};
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
/// impl MetricsCollector for Count {
///     fn record_completion(&self, task: &TaskLifecycle) {
///         let started = task.started_at.expect("a completed task ran");
///         assert!(task.queued_at <= started && started <= task.finished_at);
///         self.0.fetch_add(u64::from(task.attempt), Ordering::Relaxed);
///     }
/// }
/// let count = Arc::new(Count::default());
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .check_health(|_: &std::io::Error| false)
///     .max_retries(1)
///     .worker_count(1)
///     .metrics_collector(count.clone())
///     .build()?;
/// manager.queue_task(|_, _| Ok(()))?;
/// manager.stop()?;
/// assert_eq!(count.0.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub struct TaskLifecycle {
    /// When it was accepted into a queue (or when `run_task` was called).
    pub queued_at: Instant,
    /// When its last attempt started; `None` if it was resolved without running this time
    /// (killed or cancelled, possibly after earlier attempts), or `run_task` could not make a
    /// resource.
    pub started_at: Option<Instant>,
    /// When its last attempt ended (or when it was resolved unrun).
    pub finished_at: Instant,
    /// Runs so far, counting this one (0 if it never ran).
    pub attempt: u32,
    /// Submitted with priority (retries always run with priority; this is the submission's).
    pub priority: bool,
    /// How this attempt ended.
    pub outcome: TaskOutcome,
}

/// Something that happened to a worker.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tasker::{MetricsCollector, WorkerEvent};
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
/// impl MetricsCollector for Count {
///     fn record_worker_event(&self, event: WorkerEvent) {
///         if let WorkerEvent::ResourceReplaced { worker } = event {
///             assert_eq!(worker, 0);
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// let count = Arc::new(Count::default());
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .check_health(|_: &std::io::Error| false)
///     .max_retries(1)
///     .worker_count(1)
///     .metrics_collector(count.clone())
///     .build()?;
/// let _ = manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("reset")));
/// manager.stop()?;
/// assert_eq!(count.0.load(Ordering::Relaxed), 2); // the first run and its retry
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The worker's resource was broken (an unhealthy error or a panic) and was destroyed; a
    /// new one is being made.
    ResourceReplaced {
        /// The worker's index.
        worker: usize,
    },
    /// `on_create` failed while the worker tried to make a resource; it retries with backoff.
    ResourceCreationFailed {
        /// The worker's index.
        worker: usize,
    },
    /// A `run_task` pool resource was broken (an unhealthy error or a panic) and destroyed;
    /// the pool is refilled when `on_create` allows.
    PoolResourceReplaced,
    /// The worker's healthy resource was destroyed by the lifecycle policy before its next
    /// task (too old, used enough, or failed validation); a new one is being made.
    ResourceRecycled {
        /// The worker's index.
        worker: usize,
        /// Which knob fired.
        reason: ReplaceReason,
    },
    /// A `run_task` pool resource was destroyed by the lifecycle policy at checkout and
    /// replaced.
    PoolResourceRecycled {
        /// Which knob fired.
        reason: ReplaceReason,
    },
    /// A burst worker slot became active.
    BurstUp {
        /// The slot's index.
        worker: usize,
    },
    /// A burst worker slot was parked.
    BurstDown {
        /// The slot's index.
        worker: usize,
    },
}

/// Receives every task and worker event, in addition to the built-in metrics (which keep
/// working whether or not a collector is set).
///
/// Methods are called on the thread where the event happens (a worker, or a submitter for
/// arrivals), on the task path: keep them short and non-blocking. Every accepted task causes
/// exactly one terminal call, `record_completion` or `record_failure`.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tasker::{MetricsCollector, TaskContext, TaskLifecycle, TaskManager};
///
/// #[derive(Default)]
/// struct Count(AtomicU64);
/// impl MetricsCollector for Count {
///     fn record_completion(&self, _task: &TaskLifecycle) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let count = Arc::new(Count::default());
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .worker_count(1)
///     .metrics_collector(count.clone())
///     .build()?;
/// manager.queue_task(|_: &mut (), _: &TaskContext| Ok(()))?;
/// manager.stop()?;
/// assert_eq!(count.0.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait MetricsCollector: Send + Sync + 'static {
    /// A task was accepted (queued, or `run_task` began).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tasker::{MetricsCollector};
    ///
    /// #[derive(Default)]
    /// struct Count(AtomicU64);
    /// impl MetricsCollector for Count {
    ///     fn record_arrival(&self, priority: bool) {
    ///         if priority {
    ///             self.0.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     }
    /// }
    /// let count = Arc::new(Count::default());
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .check_health(|_: &std::io::Error| false)
    ///     .max_retries(1)
    ///     .worker_count(1)
    ///     .metrics_collector(count.clone())
    ///     .build()?;
    /// manager.queue_task_with_priority(|_, _| Ok(()))?;
    /// manager.queue_task(|_, _| Ok(()))?;
    /// assert_eq!(count.0.load(Ordering::Relaxed), 1); // counted at submission
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn record_arrival(&self, _priority: bool) {}
    /// A task ended `Ok`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tasker::{MetricsCollector, TaskLifecycle};
    ///
    /// #[derive(Default)]
    /// struct Count(AtomicU64);
    /// impl MetricsCollector for Count {
    ///     fn record_completion(&self, _task: &TaskLifecycle) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    /// let count = Arc::new(Count::default());
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .check_health(|_: &std::io::Error| false)
    ///     .max_retries(1)
    ///     .worker_count(1)
    ///     .metrics_collector(count.clone())
    ///     .build()?;
    /// manager.queue_task(|_, _| Ok(()))?;
    /// manager.stop()?;
    /// assert_eq!(count.0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn record_completion(&self, _task: &TaskLifecycle) {}
    /// A task ended with an error (failed, panicked, killed, cancelled).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tasker::{MetricsCollector, TaskLifecycle};
    ///
    /// #[derive(Default)]
    /// struct Count(AtomicU64);
    /// impl MetricsCollector for Count {
    ///     fn record_failure(&self, _task: &TaskLifecycle) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    /// let count = Arc::new(Count::default());
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .check_health(|_: &std::io::Error| false)
    ///     .max_retries(1)
    ///     .worker_count(1)
    ///     .metrics_collector(count.clone())
    ///     .build()?;
    /// let _ = manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("no")));
    /// manager.stop()?;
    /// assert_eq!(count.0.load(Ordering::Relaxed), 1); // after its retry, once
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn record_failure(&self, _task: &TaskLifecycle) {}
    /// A task was re-queued after an unhealthy error.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tasker::{MetricsCollector, TaskLifecycle};
    ///
    /// #[derive(Default)]
    /// struct Count(AtomicU64);
    /// impl MetricsCollector for Count {
    ///     fn record_retry(&self, task: &TaskLifecycle) {
    ///         assert_eq!(task.attempt, 1);
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    /// let count = Arc::new(Count::default());
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .check_health(|_: &std::io::Error| false)
    ///     .max_retries(1)
    ///     .worker_count(1)
    ///     .metrics_collector(count.clone())
    ///     .build()?;
    /// let _ = manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("reset")));
    /// manager.stop()?;
    /// assert_eq!(count.0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn record_retry(&self, _task: &TaskLifecycle) {}
    /// A worker event.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tasker::{MetricsCollector, WorkerEvent};
    ///
    /// #[derive(Default)]
    /// struct Count(AtomicU64);
    /// impl MetricsCollector for Count {
    ///     fn record_worker_event(&self, event: WorkerEvent) {
    ///         if matches!(event, WorkerEvent::ResourceReplaced { .. }) {
    ///             self.0.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     }
    /// }
    /// let count = Arc::new(Count::default());
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .check_health(|_: &std::io::Error| false)
    ///     .max_retries(1)
    ///     .worker_count(1)
    ///     .metrics_collector(count.clone())
    ///     .build()?;
    /// let _ = manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("reset")));
    /// manager.stop()?;
    /// assert_eq!(count.0.load(Ordering::Relaxed), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn record_worker_event(&self, _event: WorkerEvent) {}
}

impl<C: MetricsCollector + ?Sized> MetricsCollector for std::sync::Arc<C> {
    fn record_arrival(&self, priority: bool) {
        (**self).record_arrival(priority)
    }
    fn record_completion(&self, task: &TaskLifecycle) {
        (**self).record_completion(task)
    }
    fn record_failure(&self, task: &TaskLifecycle) {
        (**self).record_failure(task)
    }
    fn record_retry(&self, task: &TaskLifecycle) {
        (**self).record_retry(task)
    }
    fn record_worker_event(&self, event: WorkerEvent) {
        (**self).record_worker_event(event)
    }
}

/// A collector that does nothing (a baseline for measuring a collector's cost).
///
/// ```
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .metrics_collector(tasker::NoopCollector)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopCollector;

impl MetricsCollector for NoopCollector {}
