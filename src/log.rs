//! The [`Logger`] extension point.
//!
//! The lines themselves are written by the observation point (`observe.rs`), the only caller
//! of a logger: never per task on a success path, only on failures and lifecycle events
//! (resource replaced, `on_destroy` failed, pin failed, shutdown, ...). A logger's panic is
//! caught there and counted.

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
