//! # tasker
//!
//! A lock-free, work-stealing task manager for latency-sensitive services. Each worker is a
//! pinned OS thread that owns a *resource* (a database connection, a GPU context, a parser,
//! an HTTP client) made by your `on_create` and released by your `on_destroy`. You hand it
//! closures that run against a worker's resource.
//!
//! ```
//! use std::io::{self, ErrorKind};
//! use tasker::TaskManager;
//!
//! struct Conn { queries: u64 }
//!
//! let manager = TaskManager::builder()
//!     .on_create(|| Ok::<_, io::Error>(Conn { queries: 0 }))
//!     .on_destroy(|_conn| Ok(()))
//!     // A reset connection is broken: the worker replaces it and the task is retried.
//!     .check_health(|e| e.kind() != ErrorKind::ConnectionReset)
//!     .worker_count(2)
//!     .build()?;
//!
//! let n = manager.queue_task(|conn, _ctx| {
//!     conn.queries += 1;
//!     Ok(conn.queries)
//! })?;
//! assert!(n >= 1);
//!
//! let handle = manager.queue_task_with_priority_async(|_, ctx| {
//!     Ok(ctx.attempt())
//! });
//! assert_eq!(handle.wait()?, 1);
//! manager.stop()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every accepted task gets exactly one outcome; every resource made is destroyed exactly
//! once; `stop` drains, `kill` resolves what is queued with [`TaskError::Killed`]. The
//! sections below are the reference: every submission method, the semantics, the metrics, the
//! builder's knobs and the feature flags (the README carries the same text, checked by
//! `tests/readme_reference.rs`).
//!
#![doc = include_str!("reference.md")]
//!
//! ## Panics in your code
//!
//! Your code may panic anywhere tasker calls it: a task, a callback, `on_create`,
//! `on_destroy`, `check_health`, a [`Logger`], a [`MetricsCollector`], and the `Drop` of
//! anything tasker drops for you (a closure, a value, an error, a resource, a panic payload).
//! Each panic is caught where it happens; none takes a worker or the manager down:
//!
//! - a task's panic ends it with [`TaskError::Panicked`] (the message included), counts as an
//!   unhealthy error (its resource is replaced) and is not retried;
//! - a panicking `on_create` is a failed `on_create` (`build` returns
//!   [`BuildError::ResourceCreationPanicked`]; later, the worker retries with backoff);
//! - a panicking `check_health` counts as unhealthy; a panicking `on_destroy` is logged and
//!   counted, and the resource, handed over once, is gone either way;
//! - every other panic (a callback, a hook's `Drop`, a collector, a logger) is logged and
//!   counted in [`TaskMetrics::total_user_panics`], and the outcome already decided stands.
//!
//! A panic in tasker's own bookkeeping would be a bug in tasker: its invariants could no
//! longer be trusted, so the thread it happens on aborts the process rather than leave callers
//! waiting forever.

#![deny(missing_docs)]

mod attempt;
mod builder;
mod burst;
mod cells;
mod clock;
mod completion;
mod error;
mod handle;
mod latch;
mod lifecycle;
mod log;
mod manager;
mod metrics;
mod observe;
mod recycle;
mod resource_pool;
mod scheduler;
mod shared;
mod slot;
mod submit;
mod sync;
mod task;
mod unwind;
mod worker;

/// Loom models of the protocols (`RUSTFLAGS="--cfg loom"`, run by `loom-tests/`).
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_models;

pub use builder::Builder;
pub use completion::TaskHandle;
pub use error::{BuildError, ShutdownError, TaskError};
pub use log::{LogEvent, LogKind, LogLevel, Logger, TracingLogger};
pub use manager::TaskManager;
pub use metrics::collector::{
    MetricsCollector, NoopCollector, TaskLifecycle, TaskOutcome, WorkerEvent,
};
pub use metrics::{TaskMetrics, TaskStats};
pub use recycle::ReplaceReason;
pub use submit::TaskBuilder;
pub use task::TaskContext;

/// The README's code blocks run as doctests, so the quickstart cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
