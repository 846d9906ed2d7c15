//! # tasker
//!
//! A lock-free, work-stealing task manager for latency-sensitive services. Each worker is a
//! pinned OS thread that owns a *resource* (a database connection, a GPU context, a parser,
//! an HTTP client) made by your `on_create` and released by your `on_destroy`. You hand it
//! closures that run against a worker's resource.
//!
//! ```
//! use std::io::{self, ErrorKind};
//! use tasker::{TaskManager, TaskContext};
//!
//! struct Conn { queries: u64 }
//!
//! let manager = TaskManager::builder()
//!     .on_create(|| Ok::<_, io::Error>(Conn { queries: 0 }))
//!     .on_destroy(|_conn: Conn| Ok(()))
//!     // A reset connection is broken: the worker replaces it and the task is retried.
//!     .check_health(|e: &io::Error| e.kind() != ErrorKind::ConnectionReset)
//!     .worker_count(2)
//!     .build()?;
//!
//! let n = manager.queue_task(|conn: &mut Conn, _ctx: &TaskContext| {
//!     conn.queries += 1;
//!     Ok(conn.queries)
//! })?;
//! assert!(n >= 1);
//!
//! let handle = manager.queue_task_with_priority_async(|_: &mut Conn, ctx: &TaskContext| {
//!     Ok::<u32, io::Error>(ctx.attempt())
//! });
//! assert_eq!(handle.wait()?, 1);
//! manager.stop()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every accepted task gets exactly one outcome; every resource made is destroyed exactly
//! once; `stop` drains, `kill` resolves what is queued with [`TaskError::Killed`].
//! See the README for the full table of submission methods.

#![warn(missing_docs)]

mod attempt;
mod builder;
mod burst;
mod clock;
mod completion;
mod error;
#[doc(hidden)]
pub mod fuzzing; // Fuzz target bodies: not part of the API (see the module's docs).
mod lifecycle;
mod log;
mod manager;
mod metrics;
mod observe;
mod recycle;
mod resource_pool;
mod scheduler;
mod shared;
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
pub use log::{Logger, TracingLogger};
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
