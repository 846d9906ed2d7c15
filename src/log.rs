//! Lifecycle log lines, through the `tracing` facade under target `tasker`.
//!
//! Nothing here is called per task on a success path: only on failures and lifecycle events.

pub(crate) fn callback_panicked(message: &str) {
    tracing::error!(target: "tasker", message, "a task callback panicked; the worker carries on");
}

pub(crate) fn destroy_failed() {
    tracing::warn!(target: "tasker", "on_destroy returned an error; the resource is gone");
}

pub(crate) fn destroy_panicked(message: &str) {
    tracing::warn!(target: "tasker", message, "on_destroy panicked; the resource is gone");
}

pub(crate) fn health_check_panicked(message: &str) {
    tracing::warn!(target: "tasker", message, "check_health panicked; treating the error as unhealthy");
}

pub(crate) fn create_failed(worker: usize, panic: Option<&str>, retry_in: std::time::Duration) {
    tracing::warn!(
        target: "tasker",
        worker,
        panic,
        retry_in_ms = retry_in.as_millis() as u64,
        "on_create failed while replacing a resource; the worker is inactive until it succeeds"
    );
}

pub(crate) fn pool_refill_failed() {
    tracing::warn!(target: "tasker", "on_create failed while refilling the run_task pool; it shrinks by one");
}

pub(crate) fn pin_failed(worker: usize, core: usize) {
    tracing::warn!(target: "tasker", worker, core, "could not pin the worker thread; it runs unpinned");
}

pub(crate) fn resource_replaced(worker: usize, panicked: bool) {
    tracing::info!(target: "tasker", worker, panicked, "resource broken; destroying it and making a new one");
}

pub(crate) fn shutdown(kill: bool) {
    tracing::info!(target: "tasker", kill, "shutdown begun");
}
