//! The [`Logger`] extension point and the structured [`LogEvent`] it receives.
//!
//! Events are built by the observation point (`observe.rs`), the only caller of a logger:
//! never per task on a success path, only on failures and lifecycle events (resource
//! replaced, `on_destroy` failed, pin failed, shutdown, ...). A logger's panic is caught there
//! and counted.

use std::fmt;
use std::time::Duration;

/// How loud a [`LogEvent`] is.
///
/// ```
/// use tasker::{LogEvent, LogLevel, Logger};
///
/// /// Passes on warnings and errors only.
/// struct Loud;
/// impl Logger for Loud {
///     fn log(&self, event: &LogEvent<'_>) {
///         if event.level >= LogLevel::Warn {
///             eprintln!("{event}");
///         }
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Per-task detail: a task that ended in an error, or was re-queued for a retry.
    Debug,
    /// Lifecycle: shutdown begun, a resource replaced or recycled, a burst slot up or parked.
    Info,
    /// Something failed and was handled: `on_destroy` or `on_create` failed, a pin failed.
    Warn,
    /// Something failed that you should look at: a callback or a collector panicked.
    Error,
}

impl LogLevel {
    /// `"debug"`, `"info"`, `"warn"` or `"error"`.
    ///
    /// ```
    /// assert_eq!(tasker::LogLevel::Warn.as_str(), "warn");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// What happened: the `kind` of a [`LogEvent`], also its `kind` field in `tracing`.
///
/// ```
/// use tasker::{LogEvent, LogKind, Logger};
///
/// /// Alerts on resources that cannot be made; ignores the rest.
/// struct Alerts;
/// impl Logger for Alerts {
///     fn log(&self, event: &LogEvent<'_>) {
///         if matches!(event.kind, LogKind::CreateFailed | LogKind::PoolRefillFailed) {
///             eprintln!("ALERT {}: {}", event.kind.as_str(), event.error.unwrap_or("?"));
///         }
///     }
/// }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// A task ended without a value: failed, panicked, killed, cancelled or past its deadline
    /// (`outcome` says which) (debug).
    TaskEnded,
    /// A task returned an unhealthy error and was re-queued (debug).
    TaskRetried,
    /// A broken resource is being destroyed and replaced; `reason` is `unhealthy_error`
    /// (`error` holds it, if formatted) or `task_panicked` (`panic` holds the message).
    ResourceReplaced,
    /// A healthy resource is replaced by the lifecycle policy; `reason` is a
    /// [`ReplaceReason`](crate::ReplaceReason) name.
    ResourceRecycled,
    /// `on_create` failed for a worker: it retries in `retry_in`, or (none) a burst slot stays
    /// parked.
    CreateFailed,
    /// `on_create` failed while refilling `run_task`'s pool: it shrinks by one.
    PoolRefillFailed,
    /// `on_destroy` returned an error; the resource is gone.
    DestroyFailed,
    /// A burst slot came up.
    BurstUp,
    /// A burst slot parked.
    BurstDown,
    /// User code panicked where tasker catches it; `site` says where, `panic` the message.
    UserPanic,
    /// A worker could not be pinned to CPU `core`.
    PinFailed,
    /// `stop` or `kill` (`reason`) began the shutdown.
    ShutdownBegun,
}

impl LogKind {
    /// A stable snake-case name: `resource_replaced`, `create_failed`, ...
    ///
    /// ```
    /// assert_eq!(tasker::LogKind::CreateFailed.as_str(), "create_failed");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::TaskEnded => "task_ended",
            LogKind::TaskRetried => "task_retried",
            LogKind::ResourceReplaced => "resource_replaced",
            LogKind::ResourceRecycled => "resource_recycled",
            LogKind::CreateFailed => "create_failed",
            LogKind::PoolRefillFailed => "pool_refill_failed",
            LogKind::DestroyFailed => "destroy_failed",
            LogKind::BurstUp => "burst_up",
            LogKind::BurstDown => "burst_down",
            LogKind::UserPanic => "user_panic",
            LogKind::PinFailed => "pin_failed",
            LogKind::ShutdownBegun => "shutdown_begun",
        }
    }
}

/// One lifecycle event as a [`Logger`] receives it: a level, a kind, a fixed message, and the
/// typed fields that apply (the others are `None`). [`TracingLogger`] emits each field as a
/// `tracing` field of the same name (`retry_in` as `retry_in_ms`); its `Display` is the
/// one-line form the string methods of [`Logger`] receive.
///
/// The user's error `E` appears in `error` only when the builder was given a formatter
/// ([`Builder::error_formatter`](crate::Builder::error_formatter)): tasker puts no bound on
/// `E`.
///
/// ```
/// use std::io;
/// use std::sync::{Arc, Mutex};
/// use tasker::{LogEvent, LogKind, Logger, TaskManager};
///
/// #[derive(Clone, Default)]
/// struct Keep(Arc<Mutex<Vec<(LogKind, Option<String>)>>>);
/// impl Logger for Keep {
///     fn log(&self, event: &LogEvent<'_>) {
///         let error = event.error.map(str::to_owned);
///         self.0.lock().unwrap().push((event.kind, error));
///     }
/// }
///
/// let keep = Keep::default();
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<u32, io::Error>(0))
///     .on_destroy(|_| Err(io::Error::other("connection reset")))
///     .error_formatter(|e| e.to_string())
///     .worker_count(1)
///     .resource_pool_size(0)
///     .logger(keep.clone())
///     .build()?;
/// manager.stop()?;
/// let seen = keep.0.lock().unwrap().clone();
/// assert!(seen.contains(&(LogKind::DestroyFailed, Some("connection reset".to_owned()))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub struct LogEvent<'a> {
    /// How loud it is.
    pub level: LogLevel,
    /// What happened.
    pub kind: LogKind,
    /// A fixed human sentence for the kind (the fields carry the particulars).
    pub message: &'static str,
    /// The worker slot it happened on (`None`: off the workers, e.g. `run_task`'s pool).
    pub worker: Option<usize>,
    /// Runs of the task so far, counting the one that just ended.
    pub attempt: Option<u32>,
    /// How a task ended: a [`TaskOutcome`](crate::TaskOutcome) name in snake case.
    pub outcome: Option<&'static str>,
    /// Why: `unhealthy_error`, `task_panicked`, `lifetime`, `uses`, `validation`, `stop`,
    /// `kill`.
    pub reason: Option<&'static str>,
    /// The user's error, as the builder's `error_formatter` wrote it.
    pub error: Option<&'a str>,
    /// A caught panic's message.
    pub panic: Option<&'a str>,
    /// Where user code panicked (`callback`, `check_health`, `on_destroy`, `validate`,
    /// `collector`, `drop`), for [`LogKind::UserPanic`].
    pub site: Option<&'static str>,
    /// What was being dropped, for a panic at site `drop`.
    pub dropping: Option<&'static str>,
    /// When a failed `on_create` is tried again.
    pub retry_in: Option<Duration>,
    /// The CPU a worker could not be pinned to.
    pub core: Option<usize>,
}

impl<'a> LogEvent<'a> {
    /// An event with no fields set.
    pub(crate) fn new(level: LogLevel, kind: LogKind, message: &'static str) -> Self {
        LogEvent {
            level,
            kind,
            message,
            worker: None,
            attempt: None,
            outcome: None,
            reason: None,
            error: None,
            panic: None,
            site: None,
            dropping: None,
            retry_in: None,
            core: None,
        }
    }
}

/// `worker 0: on_create failed; retrying [error="connection refused" retry_in=1ms]`: the
/// message, then every field that is set.
impl fmt::Display for LogEvent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.worker {
            Some(w) => write!(f, "worker {w}: {}", self.message)?,
            None => f.write_str(self.message)?,
        }
        let mut fields = Fields { f, any: false };
        fields.field("kind", &self.kind.as_str())?;
        if let Some(v) = self.attempt {
            fields.field("attempt", &v)?;
        }
        if let Some(v) = self.outcome {
            fields.field("outcome", &v)?;
        }
        if let Some(v) = self.reason {
            fields.field("reason", &v)?;
        }
        if let Some(v) = self.error {
            fields.field("error", &format_args!("{v:?}"))?;
        }
        if let Some(v) = self.panic {
            fields.field("panic", &format_args!("{v:?}"))?;
        }
        if let Some(v) = self.site {
            fields.field("site", &v)?;
        }
        if let Some(v) = self.dropping {
            fields.field("dropping", &v)?;
        }
        if let Some(v) = self.retry_in {
            fields.field("retry_in", &format_args!("{v:?}"))?;
        }
        if let Some(v) = self.core {
            fields.field("core", &v)?;
        }
        if fields.any {
            fields.f.write_str("]")?;
        }
        Ok(())
    }
}

/// Writes ` [a=1 b=2` one field at a time.
struct Fields<'f, 'g> {
    f: &'f mut fmt::Formatter<'g>,
    any: bool,
}

impl Fields<'_, '_> {
    fn field(&mut self, name: &str, value: &dyn fmt::Display) -> fmt::Result {
        let sep = if self.any { " " } else { " [" };
        self.any = true;
        write!(self.f, "{sep}{name}={value}")
    }
}

/// Where tasker writes its lifecycle events. The default, [`TracingLogger`], emits them as
/// structured `tracing` events under target `tasker`.
///
/// Implement [`log`](Logger::log) to receive each [`LogEvent`] with its typed fields; or
/// implement the string methods, which the default `log` calls with the event's one-line
/// [`Display`](LogEvent#impl-Display-for-LogEvent<'_>) form at its level (each of them does
/// nothing unless implemented).
///
/// ```
/// use tasker::Logger;
///
/// struct Stderr;
/// impl Logger for Stderr {
///     fn info(&self, message: &str) { eprintln!("info: {message}") }
///     fn warn(&self, message: &str) { eprintln!("warn: {message}") }
///     fn error(&self, message: &str) { eprintln!("error: {message}") }
/// }
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .worker_count(1)
///     .logger(Stderr)
///     .build()?;
/// manager.stop()?; // prints "info: shutdown begun [kind=shutdown_begun reason=stop]"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Logger: Send + Sync + 'static {
    /// Receives one event. The default renders it with `Display` and calls the string method
    /// of its level.
    ///
    /// ```
    /// use tasker::{LogEvent, Logger};
    ///
    /// struct Json;
    /// impl Logger for Json {
    ///     fn log(&self, e: &LogEvent<'_>) {
    ///         eprintln!(
    ///             r#"{{"level":"{}","kind":"{}","worker":{:?},"error":{:?}}}"#,
    ///             e.level.as_str(), e.kind.as_str(), e.worker, e.error,
    ///         );
    ///     }
    /// }
    /// ```
    fn log(&self, event: &LogEvent<'_>) {
        let line = event.to_string();
        match event.level {
            LogLevel::Debug => self.debug(&line),
            LogLevel::Info => self.info(&line),
            LogLevel::Warn => self.warn(&line),
            LogLevel::Error => self.error(&line),
        }
    }
    /// Per-task detail: a task that ended in an error or was retried.
    ///
    /// ```
    /// struct Everything;
    /// impl tasker::Logger for Everything {
    ///     fn debug(&self, message: &str) { eprintln!("debug: {message}") }
    ///     fn info(&self, message: &str) { eprintln!("info: {message}") }
    ///     fn warn(&self, message: &str) { eprintln!("warn: {message}") }
    ///     fn error(&self, message: &str) { eprintln!("error: {message}") }
    /// }
    /// ```
    fn debug(&self, message: &str) {
        let _ = message;
    }
    /// Lifecycle events: shutdown begun, a resource replaced.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// #[derive(Clone, Default)]
    /// struct Infos(Arc<Mutex<Vec<String>>>);
    /// impl tasker::Logger for Infos {
    ///     fn info(&self, message: &str) { self.0.lock().unwrap().push(message.to_owned()) }
    /// }
    /// let infos = Infos::default();
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .logger(infos.clone())
    ///     .build()?;
    /// manager.stop()?;
    /// assert!(infos.0.lock().unwrap()[0].starts_with("shutdown begun"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn info(&self, message: &str) {
        let _ = message;
    }
    /// Something failed and was handled: `on_destroy` failed, a pin failed, `on_create`
    /// failed while replacing a resource.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// #[derive(Clone, Default)]
    /// struct Warnings(Arc<Mutex<Vec<String>>>);
    /// impl tasker::Logger for Warnings {
    ///     fn warn(&self, message: &str) { self.0.lock().unwrap().push(message.to_owned()) }
    /// }
    /// let warnings = Warnings::default();
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .on_destroy(|()| Err(std::io::Error::other("close failed")))
    ///     .error_formatter(|e| e.to_string())
    ///     .worker_count(1)
    ///     .max_worker_count(1)
    ///     .resource_pool_size(0)
    ///     .logger(warnings.clone())
    ///     .build()?;
    /// manager.stop()?;
    /// let lines = warnings.0.lock().unwrap();
    /// assert!(lines[0].contains(r#"error="close failed""#), "{lines:?}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn warn(&self, message: &str) {
        let _ = message;
    }
    /// Something failed that you should look at: a callback panicked.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// #[derive(Clone, Default)]
    /// struct Errors(Arc<Mutex<Vec<String>>>);
    /// impl tasker::Logger for Errors {
    ///     fn error(&self, message: &str) { self.0.lock().unwrap().push(message.to_owned()) }
    /// }
    /// let errors = Errors::default();
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .logger(errors.clone())
    ///     .build()?;
    /// manager.stop()?;
    /// // A callback refused at shutdown runs on this thread; its panic is caught and logged.
    /// manager.queue_task_with_callback(|_, _| Ok(()), |_| panic!("callback bug"));
    /// assert!(errors.0.lock().unwrap()[0].contains("callback bug"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn error(&self, message: &str) {
        let _ = message;
    }
}

/// The default logger: each [`LogEvent`] becomes a `tracing` event, target `tasker`, at its
/// level, with its message and the fields that are set (`kind`, `worker`, `attempt`,
/// `outcome`, `reason`, `error`, `panic`, `site`, `dropping`, `retry_in_ms`, `core`), so a
/// subscriber can filter on them (`tasker[{kind=create_failed}]`) and export them.
///
/// ```
/// // With tracing-subscriber's `fmt()` subscriber installed, a resource broken by an error and
/// // whose replacement fails once reads:
/// //  INFO tasker: resource broken; destroying it and making a new one kind="resource_replaced" worker=0 reason="unhealthy_error" error="connection reset"
/// // DEBUG tasker: task returned an unhealthy error; re-queued with priority kind="task_retried" attempt=1 outcome="retried"
/// //  WARN tasker: on_create failed; inactive, retrying kind="create_failed" worker=0 error="connection refused" retry_in_ms=1.0
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .error_formatter(|e| e.to_string())
///     .logger(tasker::TracingLogger) // the default
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingLogger;

/// One `tracing` event per level: the level of a `tracing` callsite is a constant.
macro_rules! emit {
    ($level:expr, $e:ident) => {
        tracing::event!(
            target: "tasker",
            $level,
            kind = $e.kind.as_str(),
            worker = $e.worker,
            attempt = $e.attempt,
            outcome = $e.outcome,
            reason = $e.reason,
            error = $e.error,
            panic = $e.panic,
            site = $e.site,
            dropping = $e.dropping,
            retry_in_ms = $e.retry_in.map(|d| d.as_secs_f64() * 1e3),
            core = $e.core,
            "{}",
            $e.message
        )
    };
}

impl Logger for TracingLogger {
    fn log(&self, event: &LogEvent<'_>) {
        match event.level {
            LogLevel::Debug => emit!(tracing::Level::DEBUG, event),
            LogLevel::Info => emit!(tracing::Level::INFO, event),
            LogLevel::Warn => emit!(tracing::Level::WARN, event),
            LogLevel::Error => emit!(tracing::Level::ERROR, event),
        }
    }
    fn debug(&self, message: &str) {
        tracing::debug!(target: "tasker", "{message}");
    }
    fn info(&self, message: &str) {
        tracing::info!(target: "tasker", "{message}");
    }
    fn warn(&self, message: &str) {
        tracing::warn!(target: "tasker", "{message}");
    }
    fn error(&self, message: &str) {
        tracing::error!(target: "tasker", "{message}");
    }
}
