//! Names and settings shared by every node and producer of one cluster: the streams, their
//! subjects and the two durable consumers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::error::Error;

/// Where a cluster's work lives: one work-queue stream with a normal and a priority lane, one
/// durable pull consumer per lane shared by every node, and a dead-letter stream.
///
/// With the default prefix `tasks` and stream name `TASKS`:
///
/// | what | name |
/// |---|---|
/// | normal lane | subject `tasks.run.normal.<handler>`, consumer `TASKS_normal` |
/// | priority lane | subject `tasks.run.priority.<handler>`, consumer `TASKS_priority` |
/// | dead letters | subject `tasks.dead.<handler>`, stream `TASKS_dead` |
///
/// Every node and producer of a cluster must use the same topology; [`ensure`](Self::ensure)
/// creates what is missing and is safe to call from each of them.
///
/// ```
/// use std::time::Duration;
/// let topology = tasker_nats::Topology::new("orders").ack_wait(Duration::from_secs(10));
/// assert_eq!(topology.normal_subject("resize"), "orders.run.normal.resize");
/// assert_eq!(topology.stream_name(), "ORDERS");
/// ```
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    stream: String,
    ack_wait: Duration,
    max_deliver: i64,
    duplicate_window: Duration,
    memory: bool,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new("tasks")
    }
}

impl Topology {
    /// A topology under subject prefix `prefix` (one subject token: no `.`, `*`, `>` or
    /// spaces), stream named after it in upper case. Defaults: `ack_wait` 30 s, `max_deliver`
    /// 5, duplicate window 2 min, file storage.
    pub fn new(prefix: &str) -> Self {
        Topology {
            prefix: prefix.to_owned(),
            stream: prefix.to_ascii_uppercase().replace('-', "_"),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            duplicate_window: Duration::from_secs(120),
            memory: false,
        }
    }

    /// How long the server waits for an acknowledgement before it redelivers a message (to
    /// any node). Nodes keep long tasks alive with in-progress acks well within it.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Cluster-wide deliveries of one message, at least 1. The node that holds the last one
    /// dead-letters it instead of giving it back; if that node dies, a surviving node
    /// dead-letters it from the server's advisory.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = i64::from(max_deliver);
        self
    }

    /// How long the server remembers message ids (`Nats-Msg-Id`) to drop duplicates.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Keep the streams in memory instead of files (faster; lost when the server restarts).
    pub fn memory_storage(mut self, memory: bool) -> Self {
        self.memory = memory;
        self
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The work-queue stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The dead-letter stream's name.
    pub fn dead_stream_name(&self) -> String {
        format!("{}_dead", self.stream)
    }

    /// The durable consumer of a lane.
    pub fn consumer_name(&self, priority: bool) -> String {
        format!("{}_{}", self.stream, lane(priority))
    }

    /// The subject a normal-lane message for `handler` is published on.
    pub fn normal_subject(&self, handler: &str) -> String {
        format!("{}.run.normal.{handler}", self.prefix)
    }

    /// The subject a priority-lane message for `handler` is published on.
    pub fn priority_subject(&self, handler: &str) -> String {
        format!("{}.run.priority.{handler}", self.prefix)
    }

    /// The subject dead letters of `handler` are published on.
    pub fn dead_subject(&self, handler: &str) -> String {
        format!("{}.dead.{handler}", self.prefix)
    }

    /// `ack_wait`, as configured here.
    pub fn ack_wait_duration(&self) -> Duration {
        self.ack_wait
    }

    /// `max_deliver`, as configured here.
    pub fn max_deliver_count(&self) -> i64 {
        self.max_deliver
    }

    /// The lane prefix of `priority`'s subjects, with the trailing dot.
    pub(crate) fn lane_prefix(&self, priority: bool) -> String {
        format!("{}.run.{}.", self.prefix, lane(priority))
    }

    fn validate(&self) -> Result<(), Error> {
        if !is_token(&self.prefix) {
            return Err(Error::InvalidName(self.prefix.clone()));
        }
        if self.max_deliver < 1 {
            return Err(Error::InvalidConfig("max_deliver must be at least 1"));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(Error::InvalidConfig("ack_wait must be at least 100 ms"));
        }
        Ok(())
    }

    /// Creates the streams and consumers that do not exist yet (an existing one is left as it
    /// is). Safe to call from every node and producer.
    pub async fn ensure(&self, js: &jetstream::Context) -> Result<(), Error> {
        self.validate()?;
        let storage = if self.memory {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        };
        let work = js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{}.run.>", self.prefix)],
                retention: stream::RetentionPolicy::WorkQueue,
                storage,
                duplicate_window: self.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
        js.get_or_create_stream(stream::Config {
            name: self.dead_stream_name(),
            subjects: vec![format!("{}.dead.>", self.prefix)],
            retention: stream::RetentionPolicy::Limits,
            storage,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(Error::nats)?;
        for priority in [false, true] {
            let name = self.consumer_name(priority);
            work.get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}>", self.lane_prefix(priority)),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_deliver: self.max_deliver,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(Error::nats)?;
        }
        Ok(())
    }
}

fn lane(priority: bool) -> &'static str {
    if priority { "priority" } else { "normal" }
}

/// A non-empty subject token: no separators, wildcards or white space.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_of_each_lane_are_disjoint() {
        let t = Topology::new("jobs");
        assert!(t.normal_subject("a").starts_with(&t.lane_prefix(false)));
        assert!(t.priority_subject("a").starts_with(&t.lane_prefix(true)));
        assert!(!t.priority_subject("a").starts_with(&t.lane_prefix(false)));
        assert_eq!(t.dead_subject("a"), "jobs.dead.a");
        assert_ne!(t.consumer_name(false), t.consumer_name(true));
    }

    #[test]
    fn bad_names_and_settings_are_refused() {
        assert!(Topology::new("a.b").validate().is_err());
        assert!(Topology::new("").validate().is_err());
        assert!(Topology::new("a*").validate().is_err());
        assert!(Topology::new("ok").max_deliver(0).validate().is_err());
        assert!(
            Topology::new("ok")
                .ack_wait(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(Topology::new("ok").validate().is_ok());
    }
}
