//! [`Builder`]: every knob, its default, validation into [`BuildError`], and the start-up
//! sequence.

use std::fmt;
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::error::BuildError;
use crate::latch::Latch;
use crate::lifecycle::Lifecycle;
use crate::log::{Logger, TracingLogger};
use crate::manager::{Control, TaskManager};
use crate::metrics::Metrics;
use crate::metrics::collector::MetricsCollector;
use crate::metrics::window;
use crate::observe::Observer;
use crate::recycle::{Age, Recycle, ValidateFn};
use crate::resource_pool::{
    CreateError, CreateFn, DestroyFn, FormatFn, HealthFn, Hooks, ResourcePool,
};
use crate::scheduler::Queues;
use crate::scheduler::capacity::Capacity;
use crate::scheduler::sleep::Sleep;
use crate::shared::Shared;
use crate::sync::{Arc, AtomicBool, AtomicUsize, Condvar, Mutex, mpsc, thread};
use crate::worker::{self, WorkerInit};

/// Configures and starts a [`TaskManager`]. Made by [`TaskManager::builder`].
///
/// ```
/// use std::time::Duration;
/// use tasker::TaskManager;
///
/// #[derive(Debug)]
/// struct Conn { id: u32 }
///
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<_, std::io::Error>(Conn { id: 7 }))
///     .on_destroy(|_conn: Conn| Ok(()))
///     .worker_count(2)
///     .max_retries(1)
///     .burst_interval(Duration::from_millis(50))
///     .thread_name_prefix("db")
///     .build()?;
/// assert_eq!(manager.stats().base_workers, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<R, E> {
    on_create: Option<Box<CreateFn<R, E>>>,
    on_destroy: Option<Box<DestroyFn<R, E>>>,
    check_health: Option<Box<HealthFn<E>>>,
    error_formatter: Option<Box<FormatFn<E>>>,
    worker_count: usize,
    max_worker_count: Option<usize>,
    burst_interval: Duration,
    max_retries: u32,
    resource_pool_size: Option<usize>,
    pin_workers: bool,
    thread_name_prefix: String,
    stack_size: Option<usize>,
    queue_capacity: Option<usize>,
    metrics_window: Duration,
    collector: Option<Box<dyn MetricsCollector>>,
    logger: Box<dyn Logger>,
    keep_burst_resources: bool,
    burst_keep_alive: Duration,
    max_lifetime: Option<Duration>,
    max_uses: Option<u64>,
    validate: Option<Box<ValidateFn<R>>>,
    validate_after_idle: Duration,
}

/// Shows the settings; the hooks, collector and logger are shown only as set or not.
impl<R, E> fmt::Debug for Builder<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("on_create", &self.on_create.is_some())
            .field("on_destroy", &self.on_destroy.is_some())
            .field("check_health", &self.check_health.is_some())
            .field("error_formatter", &self.error_formatter.is_some())
            .field("worker_count", &self.worker_count)
            .field("max_worker_count", &self.max_worker_count)
            .field("burst_interval", &self.burst_interval)
            .field("burst_keep_alive", &self.burst_keep_alive)
            .field("keep_burst_resources", &self.keep_burst_resources)
            .field("max_retries", &self.max_retries)
            .field("resource_pool_size", &self.resource_pool_size)
            .field("pin_workers", &self.pin_workers)
            .field("thread_name_prefix", &self.thread_name_prefix)
            .field("stack_size", &self.stack_size)
            .field("queue_capacity", &self.queue_capacity)
            .field("metrics_window", &self.metrics_window)
            .field("metrics_collector", &self.collector.is_some())
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static, E: Send + 'static> Default for Builder<R, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R, E> Builder<R, E> {
    /// The most worker slots (`worker_count`, `max_worker_count`) a manager may have: one OS
    /// thread each.
    ///
    /// ```
    /// use tasker::{BuildError, TaskManager};
    ///
    /// type B = tasker::Builder<(), std::io::Error>;
    /// let refused = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(B::MAX_WORKERS + 1)
    ///     .build();
    /// assert!(matches!(refused, Err(BuildError::TooLarge { setting: "worker_count", .. })));
    /// ```
    pub const MAX_WORKERS: usize = 4096;
    /// The most resources `resource_pool_size` may keep for `run_task` (all made at build).
    ///
    /// ```
    /// use tasker::{BuildError, TaskManager};
    ///
    /// type B = tasker::Builder<(), std::io::Error>;
    /// let refused = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .resource_pool_size(B::MAX_RESOURCE_POOL + 1)
    ///     .build();
    /// assert!(matches!(refused, Err(BuildError::TooLarge { setting: "resource_pool_size", .. })));
    /// ```
    pub const MAX_RESOURCE_POOL: usize = 4096;
    /// The shortest `burst_interval`: a controller deciding more often would burn a core
    /// reading the same one-second rates.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker::{BuildError, TaskManager};
    ///
    /// type B = tasker::Builder<(), std::io::Error>;
    /// assert_eq!(B::MIN_BURST_INTERVAL, Duration::from_millis(1));
    /// let refused = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .burst_interval(Duration::from_micros(10))
    ///     .build();
    /// assert!(matches!(refused, Err(BuildError::BurstIntervalTooShort { .. })));
    /// ```
    pub const MIN_BURST_INTERVAL: Duration = Duration::from_millis(1);
}

impl<R: Send + 'static, E: Send + 'static> Builder<R, E> {
    pub(crate) fn new() -> Self {
        Builder {
            on_create: None,
            on_destroy: None,
            check_health: None,
            error_formatter: None,
            worker_count: thread::available_parallelism().map_or(1, |n| n.get()),
            max_worker_count: None,
            burst_interval: Duration::from_millis(100),
            max_retries: 3,
            resource_pool_size: None,
            pin_workers: true,
            thread_name_prefix: "tasker".to_owned(),
            stack_size: None,
            queue_capacity: None,
            metrics_window: Duration::from_secs(1),
            collector: None,
            logger: Box::new(TracingLogger),
            keep_burst_resources: false,
            burst_keep_alive: Duration::from_secs(1),
            max_lifetime: None,
            max_uses: None,
            validate: None,
            validate_after_idle: Duration::from_secs(1),
        }
    }

    /// Makes a worker's resource. Required. Called on the worker's own thread (after pinning),
    /// and again there whenever the resource is replaced; also on the builder's thread for the
    /// `run_task` pool.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let made = Arc::new(AtomicUsize::new(0));
    /// let counter = made.clone();
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(move || {
    ///         // Open a connection here; its error type is the manager's `E`.
    ///         Ok::<usize, std::io::Error>(counter.fetch_add(1, Ordering::SeqCst))
    ///     })
    ///     .worker_count(2)
    ///     .resource_pool_size(1)
    ///     .build()?;
    /// // Two workers and one pooled resource for `run_task`.
    /// assert_eq!(made.load(Ordering::SeqCst), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_create<F>(mut self, f: F) -> Self
    where
        F: Fn() -> Result<R, E> + Send + Sync + 'static,
    {
        self.on_create = Some(Box::new(f));
        self
    }

    /// Releases a resource. Optional (default: drop it). Every resource made is passed here
    /// exactly once; an `Err` or a panic is logged.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let closed = Arc::new(AtomicUsize::new(0));
    /// let c = closed.clone();
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<Vec<u8>, std::io::Error>(Vec::new()))
    ///     .on_destroy(move |_buf| {
    ///         c.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     })
    ///     .worker_count(1)
    ///     .max_worker_count(1)
    ///     .resource_pool_size(0)
    ///     .build()?;
    /// manager.stop()?;
    /// assert_eq!(closed.load(Ordering::SeqCst), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_destroy<F>(mut self, f: F) -> Self
    where
        F: Fn(R) -> Result<(), E> + Send + Sync + 'static,
    {
        self.on_destroy = Some(Box::new(f));
        self
    }

    /// Decides whether a task's error leaves the resource usable. `false` means broken: the
    /// worker replaces its resource and the task is retried (unless at-most-once or out of
    /// retries). Default: every error is healthy.
    ///
    /// ```
    /// use std::io::{Error, ErrorKind};
    /// use tasker::TaskError;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<u32, Error>(0))
    ///     // A reset connection is broken; any other error leaves it usable.
    ///     .check_health(|e: &Error| e.kind() != ErrorKind::ConnectionReset)
    ///     .worker_count(1)
    ///     .max_retries(1)
    ///     .build()?;
    /// // Broken on the first run: the worker makes a new resource and the task runs again.
    /// let n = manager.queue_task(|_, ctx| match ctx.attempt() {
    ///     1 => Err(Error::from(ErrorKind::ConnectionReset)),
    ///     n => Ok(n),
    /// })?;
    /// assert_eq!(n, 2);
    /// // A healthy error is a plain failure: no retry.
    /// let plain = manager.queue_task(|_, _| Err::<(), _>(Error::from(ErrorKind::NotFound)));
    /// assert!(matches!(plain, Err(TaskError::Failed { attempts: 1, .. })));
    /// assert_eq!(manager.metrics().total_tasks_retried, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_health<F>(mut self, f: F) -> Self
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        self.check_health = Some(Box::new(f));
        self
    }

    /// How the logs show your error type: tasker passes each `E` it logs (a failed
    /// `on_create` or `on_destroy`, the unhealthy error that broke a resource) through `f`
    /// and puts the text in the [`LogEvent`](crate::LogEvent)'s `error` field. Default: none,
    /// and the logs leave the error out (tasker puts no `Debug` or `Display` bound on `E`).
    /// Called only on those cold paths; a panic in it is caught and logged.
    ///
    /// ```
    /// use std::io;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<_, io::Error>(()))
    ///     .error_formatter(|e: &io::Error| e.to_string())
    ///     .worker_count(1)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn error_formatter<F>(mut self, f: F) -> Self
    where
        F: Fn(&E) -> String + Send + Sync + 'static,
    {
        self.error_formatter = Some(Box::new(f));
        self
    }

    /// Base workers, each a pinned thread with its own resource. Must be > 0 and at most
    /// [`MAX_WORKERS`](Self::MAX_WORKERS). Default: the number of CPUs this process may use.
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(3)
    ///     .build()?;
    /// assert_eq!(manager.stats().base_workers, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn worker_count(mut self, n: usize) -> Self {
        self.worker_count = n;
        self
    }

    /// Base plus burst workers. Must be >= `worker_count` and at most
    /// [`MAX_WORKERS`](Self::MAX_WORKERS). Default: `2 * worker_count`, capped at `MAX_WORKERS`.
    ///
    /// Every slot's thread is made at build; slots above `worker_count` start parked, hold no
    /// resource, and are activated and parked by the burst controller as the load asks.
    /// Equal to `worker_count`: bursting is off (no controller thread either).
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(2)
    ///     .max_worker_count(6)
    ///     .build()?;
    /// let stats = manager.stats();
    /// assert_eq!((stats.base_workers, stats.max_workers), (2, 6));
    /// assert_eq!(stats.parked_workers, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_worker_count(mut self, n: usize) -> Self {
        self.max_worker_count = Some(n);
        self
    }

    /// How often the burst controller decides. At least
    /// [`MIN_BURST_INTERVAL`](Self::MIN_BURST_INTERVAL) (1 ms). Default: 100 ms.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(4)
    ///     .burst_interval(Duration::from_millis(20))
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn burst_interval(mut self, interval: Duration) -> Self {
        self.burst_interval = interval;
        self
    }

    /// Keep a burst slot's resource while it is parked, for resources that are expensive to
    /// create (it is destroyed at shutdown). Default: false (destroyed when the slot parks).
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(4)
    ///     .keep_burst_resources(true)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keep_burst_resources(mut self, keep: bool) -> Self {
        self.keep_burst_resources = keep;
        self
    }

    /// The least time a burst slot stays up once activated. Default: 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(4)
    ///     .burst_keep_alive(Duration::from_millis(250))
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn burst_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.burst_keep_alive = keep_alive;
        self
    }

    /// Re-runs after unhealthy errors; 0 = never retry. Default: 3, so a task runs at most 4
    /// times.
    ///
    /// ```
    /// use std::io::Error;
    /// use tasker::TaskError;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), Error>(()))
    ///     .check_health(|_: &Error| false) // every error breaks the resource
    ///     .max_retries(2)
    ///     .worker_count(1)
    ///     .build()?;
    /// let outcome = manager.queue_task(|_, _| Err::<(), _>(Error::other("down")));
    /// assert!(matches!(outcome, Err(TaskError::Failed { attempts: 3, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Resources kept for [`TaskManager::run_task`], made at build. 0 is allowed (every
    /// `run_task` then makes a temporary one); at most
    /// [`MAX_RESOURCE_POOL`](Self::MAX_RESOURCE_POOL). Default: `worker_count`.
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .resource_pool_size(2)
    ///     .build()?;
    /// assert_eq!(manager.stats().available_resources, 2);
    /// manager.run_task(|_, _| Ok(()))?; // takes one, puts it back
    /// assert_eq!(manager.stats().available_resources, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resource_pool_size(mut self, n: usize) -> Self {
        self.resource_pool_size = Some(n);
        self
    }

    /// Pin each worker to a CPU, round-robin over the CPUs this process may use. A failed pin
    /// is logged and the worker runs unpinned. Default: true.
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .pin_workers(false) // leave placement to the OS
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pin_workers(mut self, pin: bool) -> Self {
        self.pin_workers = pin;
        self
    }

    /// Worker threads are named `{prefix}-{index}` (the burst controller `{prefix}-burst`).
    /// Must not contain a NUL byte. Default: `tasker`.
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .thread_name_prefix("db")
    ///     .build()?;
    /// let name = manager.queue_task(|_, _| Ok(std::thread::current().name().map(str::to_owned)))?;
    /// assert_eq!(name.as_deref(), Some("db-0"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = prefix.into();
        self
    }

    /// Stack size of worker threads, in bytes. Must be > 0. Default: the platform's.
    ///
    /// ```
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .stack_size(8 << 20) // 8 MiB for deeply recursive tasks
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Bounds the fresh tasks waiting in the queues (retries are never refused). When full,
    /// callback and handle deliveries get [`TaskError::QueueFull`](crate::TaskError::QueueFull)
    /// and blocking deliveries wait for room. Must be > 0. Default: unbounded.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use tasker::TaskError;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(1)
    ///     .queue_capacity(1)
    ///     .build()?;
    /// // Hold the only worker, then fill the queue's one place.
    /// let (started, release) = (mpsc::channel(), mpsc::channel::<()>());
    /// let (started_tx, started_rx) = started;
    /// let (release_tx, release_rx) = release;
    /// let busy = manager.queue_task_async(move |_, _| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap();
    ///     Ok(())
    /// });
    /// started_rx.recv()?;
    /// let queued = manager.queue_task_async(|_, _| Ok(()));
    /// let refused = manager.queue_task_async(|_, _| Ok(()));
    /// assert!(matches!(refused.wait(), Err(TaskError::QueueFull)));
    /// release_tx.send(())?;
    /// busy.wait()?;
    /// queued.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = Some(n);
        self
    }

    /// The sliding window that rates in [`TaskMetrics`](crate::TaskMetrics) are measured
    /// over (10 buckets of a tenth each). Must be at least 10 ns. Default: 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .metrics_window(Duration::from_secs(10)) // smoother rates
    ///     .build()?;
    /// assert_eq!(manager.metrics().rate_window, Duration::from_secs(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics_window(mut self, window: Duration) -> Self {
        self.metrics_window = window;
        self
    }

    /// Also sends every task and worker event to `collector` (the built-in metrics keep
    /// working). Default: none.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use tasker::{MetricsCollector, TaskLifecycle};
    ///
    /// #[derive(Default)]
    /// struct Completed(AtomicU64);
    /// impl MetricsCollector for Completed {
    ///     fn record_completion(&self, _task: &TaskLifecycle) {
    ///         self.0.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let completed = Arc::new(Completed::default());
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .metrics_collector(completed.clone())
    ///     .build()?;
    /// manager.queue_task(|_, _| Ok(()))?;
    /// manager.stop()?; // once the workers are joined, everything is recorded
    /// assert_eq!(completed.0.load(Ordering::Relaxed), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics_collector(mut self, collector: impl MetricsCollector) -> Self {
        self.collector = Some(Box::new(collector));
        self
    }

    /// Where lifecycle messages go. Default: [`TracingLogger`] (the `tracing` facade, target
    /// `tasker`).
    ///
    /// ```
    /// use tasker::{LogEvent, Logger};
    ///
    /// struct Stderr;
    /// impl Logger for Stderr {
    ///     fn log(&self, event: &LogEvent<'_>) {
    ///         eprintln!("{}: {event}", event.level.as_str());
    ///     }
    /// }
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .logger(Stderr)
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn logger(mut self, logger: impl Logger) -> Self {
        self.logger = Box::new(logger);
        self
    }

    /// Replaces a resource older than `lifetime` before its next task (measured from the
    /// `on_create` that made it). Must be non-zero. Default: no limit.
    ///
    /// Applied between tasks on the worker's own thread, never while a task runs, and when
    /// [`TaskManager::run_task`] takes a resource from its pool. Each replacement is counted
    /// in [`TaskMetrics::resources_replaced_lifetime`](crate::TaskMetrics) and reported as a
    /// [`WorkerEvent::ResourceRecycled`](crate::WorkerEvent::ResourceRecycled).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker::{BuildError, TaskManager};
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<u32, std::io::Error>(0))
    ///     .worker_count(1)
    ///     .resource_max_lifetime(Duration::from_secs(30 * 60))
    ///     .build()?;
    /// manager.stop()?;
    ///
    /// let zero = TaskManager::builder()
    ///     .on_create(|| Ok::<u32, std::io::Error>(0))
    ///     .resource_max_lifetime(Duration::ZERO)
    ///     .build();
    /// assert!(matches!(zero, Err(BuildError::ZeroResourceLifetime)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resource_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// Replaces a resource after `uses` tasks ran on it, before the next one. Must be > 0.
    /// Default: no limit. Applied as [`resource_max_lifetime`](Self::resource_max_lifetime)
    /// is; counted in `resources_replaced_uses`.
    ///
    /// ```
    /// use tasker::TaskManager;
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<u32, std::io::Error>(0))
    ///     .worker_count(1)
    ///     .resource_max_uses(2)
    ///     .build()?;
    /// for _ in 0..3 {
    ///     // Each resource serves two tasks: the third runs on a new one.
    ///     manager.queue_task(|uses, _| {
    ///         *uses += 1;
    ///         Ok(*uses)
    ///     })?;
    /// }
    /// assert_eq!(manager.metrics().resources_replaced_uses, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resource_max_uses(mut self, uses: u64) -> Self {
        self.max_uses = Some(uses);
        self
    }

    /// Checks a resource that sat idle for at least
    /// [`validate_after_idle`](Self::validate_after_idle) before a task runs on it (a cheap
    /// query such as `SELECT 1`). `false`, or a panic, destroys it and makes a new one first,
    /// so a task never sees a resource that failed validation. A resource no task ran on yet
    /// was just made and is not validated. Called on the thread that holds the resource: the
    /// worker's, or `run_task`'s caller at checkout. Default: none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker::TaskManager;
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<Vec<u8>, std::io::Error>(Vec::new()))
    ///     .worker_count(1)
    ///     // A "connection" that holds a byte is stale.
    ///     .validate(|conn| conn.is_empty())
    ///     .validate_after_idle(Duration::ZERO)
    ///     .build()?;
    /// manager.queue_task(|conn, _| Ok(conn.push(1)))?;
    /// // Validated before this task: rejected, replaced by an empty one.
    /// let len = manager.queue_task(|conn, _| Ok(conn.len()))?;
    /// assert_eq!(len, 0);
    /// assert_eq!(manager.metrics().resources_replaced_validation, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut R) -> bool + Send + Sync + 'static,
    {
        self.validate = Some(Box::new(f));
        self
    }

    /// How long a resource must sit idle (since its last task ended) before
    /// [`validate`](Self::validate) checks it. `Duration::ZERO`: before every task but a fresh
    /// resource's first. Default: 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<bool, std::io::Error>(true))
    ///     .validate(|alive: &mut bool| *alive)
    ///     .validate_after_idle(Duration::ZERO) // before every task
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate_after_idle(mut self, idle: Duration) -> Self {
        self.validate_after_idle = idle;
        self
    }

    fn check(&self) -> Result<usize, BuildError<E>> {
        if self.on_create.is_none() {
            return Err(BuildError::MissingOnCreate);
        }
        if self.worker_count == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        if self.worker_count > Self::MAX_WORKERS {
            return Err(BuildError::TooLarge {
                setting: "worker_count",
                value: self.worker_count,
                max: Self::MAX_WORKERS,
            });
        }
        // The default never asks for more slots than the cap: `worker_count` alone is valid
        // up to `MAX_WORKERS`.
        let max = self
            .max_worker_count
            .unwrap_or((self.worker_count * 2).min(Self::MAX_WORKERS));
        if max < self.worker_count {
            return Err(BuildError::MaxBelowBase {
                worker_count: self.worker_count,
                max_worker_count: max,
            });
        }
        if max > Self::MAX_WORKERS {
            return Err(BuildError::TooManyWorkers {
                max_worker_count: max,
            });
        }
        if self.burst_interval.is_zero() {
            return Err(BuildError::ZeroBurstInterval);
        }
        if self.burst_interval < Self::MIN_BURST_INTERVAL {
            return Err(BuildError::BurstIntervalTooShort {
                burst_interval: self.burst_interval,
            });
        }
        if let Some(n) = self.resource_pool_size
            && n > Self::MAX_RESOURCE_POOL
        {
            return Err(BuildError::TooLarge {
                setting: "resource_pool_size",
                value: n,
                max: Self::MAX_RESOURCE_POOL,
            });
        }
        if self.metrics_window < Duration::from_nanos(window::BUCKETS as u64) {
            return Err(BuildError::ZeroMetricsWindow);
        }
        if self.queue_capacity == Some(0) {
            return Err(BuildError::ZeroQueueCapacity);
        }
        if self.stack_size == Some(0) {
            return Err(BuildError::ZeroStackSize);
        }
        if self.thread_name_prefix.contains('\0') {
            return Err(BuildError::InvalidThreadName);
        }
        if self.max_lifetime == Some(Duration::ZERO) {
            return Err(BuildError::ZeroResourceLifetime);
        }
        if self.max_uses == Some(0) {
            return Err(BuildError::ZeroResourceUses);
        }
        Ok(max)
    }

    /// Starts the workers: one thread per slot (`max_worker_count` of them) and, when there
    /// are burst slots, the burst controller's thread. No thread is made after this returns.
    /// Returns once every base worker holds its resource; if any `on_create` fails, destroys
    /// everything already made and returns the error.
    ///
    /// ```
    /// use tasker::{BuildError, TaskManager};
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .build()?;
    /// // Bad settings are typed errors, not panics.
    /// let refused = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(0)
    ///     .build();
    /// assert!(matches!(refused, Err(BuildError::ZeroWorkers)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(self) -> Result<TaskManager<R, E>, BuildError<E>> {
        let max_workers = self.check()?;
        let base = self.worker_count;
        let n = max_workers;
        let hooks = Hooks {
            on_create: self.on_create.expect("validated"),
            on_destroy: self.on_destroy,
            check_health: self.check_health,
            error_formatter: self.error_formatter,
        };

        let metrics = Metrics::new(
            self.metrics_window,
            self.collector,
            &self.thread_name_prefix,
        );
        let recycle = Recycle::new(
            self.max_lifetime,
            self.max_uses,
            self.validate,
            self.validate_after_idle,
        );
        // The run_task pool, made on this thread.
        let pool = ResourcePool::new();
        for _ in 0..self.resource_pool_size.unwrap_or(base) {
            match hooks.create() {
                Ok(r) => pool.put(r, Age::new(metrics.now())),
                Err(e) => {
                    let observer = Observer {
                        metrics: &metrics,
                        logger: &*self.logger,
                    };
                    pool.drain(&hooks, &observer);
                    return Err(e.into());
                }
            }
        }

        // Read the CPUs this process may use here, before any pinning. (Under loom every
        // model thread runs on one OS thread: nothing to pin.)
        let cores = if self.pin_workers && !cfg!(loom) {
            core_affinity::get_core_ids().filter(|c| !c.is_empty())
        } else {
            None
        };
        let (queues, locals) = Queues::new(n);
        let shared = Arc::new(Shared {
            queues,
            sleep: Sleep::new(),
            lifecycle: Lifecycle::new(n + crate::metrics::ARRIVAL_SHARDS),
            capacity: self.queue_capacity.map(|n| Arc::new(Capacity::new(n))),
            hooks,
            recycle,
            pool,
            max_retries: self.max_retries,
            cancelled: Arc::new(AtomicBool::new(false)),
            workers: (0..n)
                .map(|_| CachePadded::new(Default::default()))
                .collect(),
            metrics,
            logger: self.logger,
            live_workers: AtomicUsize::new(n),
            start_gate: Latch::new(),
            exited: Latch::new(),
            backoff: (Mutex::new(()), Condvar::new()),
            control: Control::new(),
            base_workers: base,
            bursting: max_workers > base,
            keep_burst_resources: self.keep_burst_resources,
        });

        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        let mut failure = None;
        for (index, local) in locals.into_iter().enumerate() {
            let mut builder =
                thread::Builder::new().name(format!("{}-{index}", self.thread_name_prefix));
            if let Some(size) = self.stack_size {
                builder = builder.stack_size(size);
            }
            let init = WorkerInit {
                index,
                burst: index >= base,
                local,
                core: cores.as_ref().map(|c| c[index % c.len()]),
                ready: ready_tx.clone(),
            };
            let worker_shared = shared.clone();
            match builder.spawn(move || worker::main(worker_shared, init)) {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    failure = Some(BuildError::Spawn(e));
                    // These threads will never run, so never exit.
                    for _ in index..n {
                        shared.worker_exited();
                    }
                    break;
                }
            }
        }
        drop(ready_tx);
        // Under loom there is no controller thread: its loop waits on time, which loom does
        // not model, and its decisions are arithmetic on statistics. The models act as the
        // controller instead, through the same actions it takes (`SlotState::activate`,
        // `burst::ask_to_park`).
        if failure.is_none() && shared.bursting && !cfg!(loom) {
            let controller_shared = shared.clone();
            let (interval, keep_alive) = (self.burst_interval, self.burst_keep_alive);
            match thread::Builder::new()
                .name(format!("{}-burst", self.thread_name_prefix))
                .spawn(move || crate::burst::controller(&controller_shared, interval, keep_alive))
            {
                Ok(handle) => threads.push(handle),
                Err(e) => failure = Some(BuildError::Spawn(e)),
            }
        }
        for _ in 0..threads.len().min(n) {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e.into());
                }
                // Unreachable: a worker reports before anything else can go wrong.
                Err(_) => break,
            }
        }

        if let Some(error) = failure {
            // Close before opening the gate: workers then drain (nothing) and exit, each
            // destroying the resource it made.
            let _ = shared.lifecycle.close(true);
            shared.open_start_gate();
            shared.wake_all();
            for t in threads {
                let _ = t.join();
            }
            shared.pool.drain(&shared.hooks, &shared.observer());
            return Err(error);
        }
        shared.open_start_gate();
        Ok(TaskManager::from_parts(shared, threads))
    }
}

impl<E> From<CreateError<E>> for BuildError<E> {
    fn from(e: CreateError<E>) -> Self {
        match e {
            CreateError::Failed(e) => BuildError::ResourceCreation(e),
            CreateError::Panicked(message) => BuildError::ResourceCreationPanicked { message },
        }
    }
}
