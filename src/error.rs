//! The error types of the public API.

use std::error::Error;
use std::fmt;

/// Why a task did not produce a value.
///
/// Every task accepted by a [`TaskManager`](crate::TaskManager) ends with exactly one
/// `Result<T, TaskError<E>>`, whatever happens to the manager.
///
/// ```
/// # let manager = tasker::TaskManager::builder()
/// #     .on_create(|| Ok::<u64, std::io::Error>(0))
/// #     .worker_count(1)
/// #     .build()?;
/// use tasker::TaskError;
///
/// match manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("disk full"))) {
///     Err(TaskError::Failed { error, attempts }) => {
///         assert_eq!(error.to_string(), "disk full");
///         assert_eq!(attempts, 1); // a healthy error (the default) is not retried
///     }
///     other => panic!("{other:?}"),
/// }
/// manager.stop()?;
/// assert!(matches!(manager.queue_task(|_, _| Ok(())), Err(TaskError::ShuttingDown)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq)]
pub enum TaskError<E> {
    /// The task returned `Err` for the last time (a healthy error, or an unhealthy one after
    /// its retries ran out).
    Failed {
        /// The error the task returned on its last attempt.
        error: E,
        /// How many times the task ran.
        attempts: u32,
    },
    /// The task panicked. The worker survived and got a fresh resource.
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// Refused at submission: `stop` or `kill` had begun.
    ShuttingDown,
    /// Dropped from the queue by `kill` before it (re-)ran.
    Killed,
    /// Cancelled through its [`TaskHandle`](crate::TaskHandle) before it started.
    Cancelled,
    /// A bounded queue was full (callback and handle deliveries only; blocking ones wait).
    QueueFull,
    /// `run_task` needed a temporary resource and `on_create` failed.
    ResourceCreation(E),
    /// A blocking submission (`queue_task*` without callback or handle) was made from inside a
    /// task running on the same manager. Waiting there could deadlock (every worker may be
    /// waiting on a task only a worker can run), so it is refused instead. Use a callback or
    /// handle delivery, or `run_task`, from inside tasks.
    WouldDeadlock,
    /// The task was not started by the deadline it was submitted with
    /// ([`TaskBuilder::deadline`](crate::TaskBuilder::deadline) or
    /// [`timeout`](crate::TaskBuilder::timeout)): it never ran. Also the answer when the
    /// deadline was already past at submission, or passed while a blocking submission waited
    /// for room in a bounded queue.
    DeadlineExceeded,
}

impl<E> TaskError<E> {
    /// The task's own error, if it failed with one.
    ///
    /// ```
    /// use tasker::TaskError;
    ///
    /// let failed: TaskError<&str> = TaskError::Failed { error: "timeout", attempts: 2 };
    /// assert_eq!(failed.into_task_error(), Some("timeout"));
    /// assert_eq!(TaskError::<&str>::Killed.into_task_error(), None);
    /// ```
    pub fn into_task_error(self) -> Option<E> {
        match self {
            TaskError::Failed { error, .. } | TaskError::ResourceCreation(error) => Some(error),
            _ => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for TaskError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Failed { error, attempts } => {
                write!(f, "task failed after {attempts} attempt(s): {error}")
            }
            TaskError::Panicked { message } => write!(f, "task panicked: {message}"),
            TaskError::ShuttingDown => f.write_str("task refused: the manager is shutting down"),
            TaskError::Killed => f.write_str("task dropped: the manager was killed"),
            TaskError::Cancelled => f.write_str("task cancelled before it started"),
            TaskError::QueueFull => f.write_str("task refused: the queue is full"),
            TaskError::ResourceCreation(e) => write!(f, "could not create a resource: {e}"),
            TaskError::WouldDeadlock => f.write_str(
                "blocking submission from inside a task of the same manager (would deadlock)",
            ),
            TaskError::DeadlineExceeded => {
                f.write_str("task not started by its deadline; it never ran")
            }
        }
    }
}

impl<E: Error + 'static> Error for TaskError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            TaskError::Failed { error, .. } | TaskError::ResourceCreation(error) => Some(error),
            _ => None,
        }
    }
}

/// Why [`Builder::build`](crate::Builder::build) refused.
///
/// ```
/// use tasker::{BuildError, TaskManager};
///
/// let refused = TaskManager::builder()
///     .on_create(|| Err::<(), _>(std::io::Error::other("connection refused")))
///     .worker_count(1)
///     .build();
/// match refused {
///     Err(BuildError::ResourceCreation(e)) => assert_eq!(e.to_string(), "connection refused"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[non_exhaustive]
#[derive(Debug)]
pub enum BuildError<E> {
    /// `on_create` was not given.
    MissingOnCreate,
    /// `worker_count` was 0.
    ZeroWorkers,
    /// `max_worker_count` was below `worker_count`.
    MaxBelowBase {
        /// The `worker_count` asked for.
        worker_count: usize,
        /// The `max_worker_count` asked for.
        max_worker_count: usize,
    },
    /// `max_worker_count` (or `2 * worker_count`, its default) was above
    /// [`Builder::MAX_WORKERS`](crate::Builder::MAX_WORKERS): one OS thread is made per slot.
    TooManyWorkers {
        /// The `max_worker_count` asked for.
        max_worker_count: usize,
    },
    /// `burst_interval` was zero.
    ZeroBurstInterval,
    /// `burst_interval` was below
    /// [`Builder::MIN_BURST_INTERVAL`](crate::Builder::MIN_BURST_INTERVAL) (1 ms).
    BurstIntervalTooShort {
        /// The `burst_interval` asked for.
        burst_interval: std::time::Duration,
    },
    /// A count was above its documented limit (`worker_count` above
    /// [`Builder::MAX_WORKERS`](crate::Builder::MAX_WORKERS), `resource_pool_size` above
    /// [`Builder::MAX_RESOURCE_POOL`](crate::Builder::MAX_RESOURCE_POOL)).
    TooLarge {
        /// The builder method whose value was too large.
        setting: &'static str,
        /// The value asked for.
        value: usize,
        /// The most it may be.
        max: usize,
    },
    /// `queue_capacity` was 0 (no task could ever be queued).
    ZeroQueueCapacity,
    /// `metrics_window` was shorter than 10 ns (one per bucket).
    ZeroMetricsWindow,
    /// `stack_size` was 0.
    ZeroStackSize,
    /// `thread_name_prefix` contained a NUL byte (thread names cannot).
    InvalidThreadName,
    /// `resource_max_lifetime` was zero (every resource would be replaced before each task).
    ZeroResourceLifetime,
    /// `resource_max_uses` was 0 (no task could ever run on a resource).
    ZeroResourceUses,
    /// `on_create` failed while making the initial resources. Everything already made was
    /// destroyed before `build` returned.
    ResourceCreation(E),
    /// `on_create` panicked while making the initial resources.
    ResourceCreationPanicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// The operating system refused to start a worker thread.
    Spawn(std::io::Error),
}

impl<E: fmt::Display> fmt::Display for BuildError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MissingOnCreate => f.write_str("on_create is required"),
            BuildError::ZeroWorkers => f.write_str("worker_count must be greater than 0"),
            BuildError::MaxBelowBase {
                worker_count,
                max_worker_count,
            } => write!(
                f,
                "max_worker_count ({max_worker_count}) is below worker_count ({worker_count})"
            ),
            BuildError::TooManyWorkers { max_worker_count } => write!(
                f,
                "max_worker_count ({max_worker_count}) is above the limit of {} worker threads",
                crate::Builder::<(), ()>::MAX_WORKERS
            ),
            BuildError::ZeroBurstInterval => f.write_str("burst_interval must be non-zero"),
            BuildError::BurstIntervalTooShort { burst_interval } => write!(
                f,
                "burst_interval ({burst_interval:?}) is below the minimum of {:?}",
                crate::Builder::<(), ()>::MIN_BURST_INTERVAL
            ),
            BuildError::TooLarge {
                setting,
                value,
                max,
            } => write!(f, "{setting} ({value}) is above its limit of {max}"),
            BuildError::ZeroQueueCapacity => f.write_str("queue_capacity must be greater than 0"),
            BuildError::ZeroMetricsWindow => f.write_str("metrics_window must be at least 10 ns"),
            BuildError::ZeroStackSize => f.write_str("stack_size must be greater than 0"),
            BuildError::InvalidThreadName => {
                f.write_str("thread_name_prefix must not contain a NUL byte")
            }
            BuildError::ZeroResourceLifetime => {
                f.write_str("resource_max_lifetime must be non-zero")
            }
            BuildError::ZeroResourceUses => f.write_str("resource_max_uses must be greater than 0"),
            BuildError::ResourceCreation(e) => write!(f, "on_create failed: {e}"),
            BuildError::ResourceCreationPanicked { message } => {
                write!(f, "on_create panicked: {message}")
            }
            BuildError::Spawn(e) => write!(f, "could not spawn a worker thread: {e}"),
        }
    }
}

impl<E: Error + 'static> Error for BuildError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BuildError::ResourceCreation(e) => Some(e),
            BuildError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// Why `stop`, `stop_timeout` or `kill` did not shut the manager down itself.
///
/// `AlreadyStopping` and `AlreadyKilled` are returned once the shutdown begun elsewhere has
/// completed (see [`TaskManager::stop`](crate::TaskManager::stop)).
///
/// ```
/// use tasker::{ShutdownError, TaskManager};
///
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .worker_count(1)
///     .build()?;
/// manager.stop()?;
/// assert_eq!(manager.stop(), Err(ShutdownError::AlreadyStopping));
/// assert_eq!(manager.kill(), Ok(())); // escalation is allowed once
/// assert_eq!(manager.kill(), Err(ShutdownError::AlreadyKilled));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownError {
    /// `stop` (or `stop_timeout`) was called after `stop` or `kill` had already begun.
    AlreadyStopping,
    /// `kill` was called after `kill` had already begun.
    AlreadyKilled,
    /// [`stop_timeout`](crate::TaskManager::stop_timeout) reached its deadline, killed what
    /// was left, and tasks were still running after the grace: they finish on their
    /// workers, which then destroy their resources and exit on their own.
    TimedOut {
        /// Tasks still running when it gave up.
        running: usize,
    },
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownError::AlreadyStopping => f.write_str("stop or kill has already begun"),
            ShutdownError::AlreadyKilled => f.write_str("kill has already begun"),
            ShutdownError::TimedOut { running } => write!(
                f,
                "stop timed out with {running} task(s) still running; they finish on their own"
            ),
        }
    }
}

impl Error for ShutdownError {}
