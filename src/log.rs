//! The [`Logger`] extension point, and the crate's lifecycle log lines.
//!
//! Nothing here is called per task on a success path: only on failures and lifecycle events
//! (resource replaced, `on_destroy` failed, pin failed, shutdown, ...).

use std::fmt::Arguments;

/// Where tasker writes its lifecycle messages. The default, [`TracingLogger`], forwards to the
/// `tracing` facade under target `tasker`.
///
/// ```
/// use std::sync::Mutex;
/// use tasker::Logger;
///
/// struct Stderr;
/// impl Logger for Stderr {
///     fn debug(&self, _message: &str) {}
///     fn info(&self, message: &str) { eprintln!("info: {message}") }
///     fn warn(&self, message: &str) { eprintln!("warn: {message}") }
///     fn error(&self, message: &str) { eprintln!("error: {message}") }
/// }
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .worker_count(1)
///     .logger(Stderr)
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Logger: Send + Sync + 'static {
    /// Detail useful when debugging tasker itself.
    fn debug(&self, message: &str);
    /// Lifecycle events: shutdown begun, a resource replaced.
    fn info(&self, message: &str);
    /// Something failed and was handled: `on_destroy` failed, a pin failed, `on_create`
    /// failed while replacing a resource.
    fn warn(&self, message: &str);
    /// Something failed that you should look at: a callback panicked.
    fn error(&self, message: &str);
}

/// The default logger: the `tracing` facade, target `tasker`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingLogger;

impl Logger for TracingLogger {
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

/// The crate's log lines, each a method, formatted only when emitted.
pub(crate) struct Log<'a>(pub(crate) &'a dyn Logger);

impl Log<'_> {
    fn warn(&self, args: Arguments<'_>) {
        self.0.warn(&args.to_string());
    }

    pub(crate) fn callback_panicked(&self, message: &str) {
        self.0.error(&format!(
            "a task callback panicked ({message}); the worker carries on"
        ));
    }

    pub(crate) fn destroy_failed(&self) {
        self.warn(format_args!(
            "on_destroy returned an error; the resource is gone"
        ));
    }

    pub(crate) fn destroy_panicked(&self, message: &str) {
        self.warn(format_args!(
            "on_destroy panicked ({message}); the resource is gone"
        ));
    }

    pub(crate) fn health_check_panicked(&self, message: &str) {
        self.warn(format_args!(
            "check_health panicked ({message}); treating the error as unhealthy"
        ));
    }

    pub(crate) fn create_failed(
        &self,
        worker: usize,
        panic: Option<&str>,
        retry_in: std::time::Duration,
    ) {
        let why = panic.map_or(String::new(), |p| format!(" (panicked: {p})"));
        self.warn(format_args!(
            "worker {worker}: on_create failed{why}; inactive, retrying in {retry_in:?}"
        ));
    }

    pub(crate) fn pool_refill_failed(&self) {
        self.warn(format_args!(
            "on_create failed while refilling the run_task pool; it shrinks by one"
        ));
    }

    pub(crate) fn pin_failed(&self, worker: usize, core: usize) {
        self.warn(format_args!(
            "worker {worker}: could not pin to CPU {core}; running unpinned"
        ));
    }

    pub(crate) fn resource_replaced(&self, worker: usize, panicked: bool) {
        let why = if panicked {
            "a task panicked"
        } else {
            "unhealthy error"
        };
        self.0.info(&format!(
            "worker {worker}: resource broken ({why}); destroying it and making a new one"
        ));
    }

    pub(crate) fn burst(&self, worker: usize, up: bool) {
        let what = if up { "up (burst)" } else { "parked" };
        self.0.info(&format!("worker {worker}: {what}"));
    }

    pub(crate) fn burst_create_failed(&self, worker: usize) {
        self.warn(format_args!(
            "worker {worker}: on_create failed while activating a burst slot; it stays parked"
        ));
    }

    pub(crate) fn shutdown(&self, kill: bool) {
        let how = if kill { "kill" } else { "stop" };
        self.0.info(&format!("shutdown begun ({how})"));
    }
}
