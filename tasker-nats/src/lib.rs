//! # tasker-nats
//!
//! Tasker nodes on many machines, fed by one NATS JetStream stream. Each node is a
//! [`tasker::TaskManager`] (its workers own their resources, as always) bound to two durable
//! pull consumers, a normal and a priority lane. Messages name a handler registered on the
//! node and carry its payload; the node runs the handler as a task and settles the message by
//! the outcome, so tasker's guarantees carry across the network:
//!
//! - **at least once** (default): acknowledged after the outcome. An unhealthy error is
//!   retried locally (the manager's `max_retries`), then given back with a delay so another
//!   node can take it; a healthy failure is dead-lettered with its error and terminated; the
//!   consumer's `max_deliver` bounds the deliveries cluster-wide and its exhaustion is
//!   dead-lettered too. Long tasks keep their message with in-progress acks.
//! - **at most once** ([`Job::at_most_once`]): acknowledged (confirmed) before the handler
//!   runs, on tasker's `*_once` path: never redelivered, never retried.
//! - a message with a reply subject gets its result or error back ([`Producer::request`]);
//!   message ids de-duplicate submissions ([`Job::id`]).
//! - backpressure: a node fetches only as many messages as it has room for, in batches.
//! - [`Node::stop`] finishes and settles what it holds; [`Node::kill`] gives back (nak) what
//!   has not started so another node takes it at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use tasker::TaskManager;
//! use tasker_nats::{Handlers, Job, Node, Producer, Topology};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let manager = TaskManager::builder()
//!     .on_create(|| Ok::<_, std::io::Error>(0u64))
//!     .worker_count(2)
//!     .build()?;
//! let handlers = Handlers::new().register("len", |n: &mut u64, _ctx, payload: &[u8]| {
//!     *n += 1;
//!     Ok(payload.len().to_string().into_bytes())
//! })?;
//! let node = Node::builder(client.clone(), manager.clone(), handlers)
//!     .topology(Topology::new("tasks"))
//!     .start()
//!     .await?;
//!
//! let producer = Producer::new(client, Topology::new("tasks"));
//! let reply = producer.request(Job::new("len", "hello"), Duration::from_secs(5)).await?;
//! assert_eq!(reply?.as_ref(), b"5");
//!
//! node.stop().await;
//! manager.stop()?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod handlers;
mod metrics;
mod node;
mod producer;
pub mod server;
mod topology;

pub use error::{Error, Reason, RemoteError};
pub use handlers::Handlers;
pub use metrics::BridgeStats;
pub use node::{Node, NodeBuilder, Settled, Settlement};
pub use producer::{Job, Producer, Submitted};
pub use topology::Topology;

/// The README's code blocks compile as doctests, so its example cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Header: `1` marks an at-most-once job.
pub const HEADER_ONCE: &str = "Tasker-Once";
/// Header: the subject a node publishes the job's reply to.
pub const HEADER_REPLY_TO: &str = "Tasker-Reply-To";
/// Header of a reply: `ok` or `error`.
pub const HEADER_STATUS: &str = "Tasker-Status";
/// Header of an error reply or dead letter: the [`Reason`].
pub const HEADER_REASON: &str = "Tasker-Reason";
/// Header of a dead letter: the error's text.
pub const HEADER_ERROR: &str = "Tasker-Error";
/// Header of a dead letter: the job's sequence in the work stream.
pub const HEADER_SEQUENCE: &str = "Tasker-Sequence";
/// Header of a dead letter: the delivery it ended on.
pub const HEADER_DELIVERED: &str = "Tasker-Delivered";
/// Header of a dead letter: the node that wrote it.
pub const HEADER_NODE: &str = "Tasker-Node";
/// Header of a dead letter: the job's own message id (`Nats-Msg-Id`), if it had one.
pub const HEADER_ORIGINAL_ID: &str = "Tasker-Msg-Id";
