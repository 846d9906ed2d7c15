//! The bridge's own counters: kept in atomics for [`Node::metrics`](crate::Node::metrics),
//! and mirrored to the `metrics` facade (counters named `tasker_nats_*_total`, labelled with
//! the node's name) and to `tracing`.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the bridge did with messages so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Messages received from the server (both lanes).
    pub fetched: u64,
    /// Of those, deliveries after the first (the server's delivery count above 1).
    pub redelivered: u64,
    /// Positive acknowledgements the server confirmed (at-least-once after success,
    /// at-most-once before running).
    pub acked: u64,
    /// Messages given back (nak), with a delay after an unhealthy end, at once on `kill`.
    pub naked: u64,
    /// Messages terminated (never redelivered) after being dead-lettered.
    pub terminated: u64,
    /// Dead letters published (by this node, advisories included).
    pub dead_lettered: u64,
    /// In-progress acknowledgements sent for long tasks.
    pub in_progress: u64,
    /// Replies published to requesters.
    pub replies: u64,
    /// Acknowledgements of any kind the server did not confirm (after retries).
    pub ack_failures: u64,
    /// The most messages this node held at once (fetched, not yet settled).
    pub held_peak: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) fetched: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) naked: AtomicU64,
    pub(crate) terminated: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) in_progress: AtomicU64,
    pub(crate) replies: AtomicU64,
    pub(crate) ack_failures: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) held_peak: AtomicU64,
}

/// Which counter an event bumps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Fetched,
    Redelivered,
    Acked,
    Naked,
    Terminated,
    DeadLettered,
    InProgress,
    Reply,
    AckFailure,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Fetched => "tasker_nats_fetched_total",
            Event::Redelivered => "tasker_nats_redelivered_total",
            Event::Acked => "tasker_nats_acked_total",
            Event::Naked => "tasker_nats_naked_total",
            Event::Terminated => "tasker_nats_terminated_total",
            Event::DeadLettered => "tasker_nats_dead_lettered_total",
            Event::InProgress => "tasker_nats_in_progress_total",
            Event::Reply => "tasker_nats_replies_total",
            Event::AckFailure => "tasker_nats_ack_failures_total",
        }
    }
}

impl Counters {
    /// Counts one event here and on the facade. The counters are statistics only (no
    /// ordering with anything else): `Relaxed`.
    pub(crate) fn bump(&self, node: &str, event: Event) {
        let c = match event {
            Event::Fetched => &self.fetched,
            Event::Redelivered => &self.redelivered,
            Event::Acked => &self.acked,
            Event::Naked => &self.naked,
            Event::Terminated => &self.terminated,
            Event::DeadLettered => &self.dead_lettered,
            Event::InProgress => &self.in_progress,
            Event::Reply => &self.replies,
            Event::AckFailure => &self.ack_failures,
        };
        c.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(event.name(), "node" => node.to_owned()).increment(1);
    }

    pub(crate) fn hold(&self) {
        let now = self.held.fetch_add(1, Ordering::Relaxed) + 1;
        self.held_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn release(&self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> BridgeStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeStats {
            fetched: l(&self.fetched),
            redelivered: l(&self.redelivered),
            acked: l(&self.acked),
            naked: l(&self.naked),
            terminated: l(&self.terminated),
            dead_lettered: l(&self.dead_lettered),
            in_progress: l(&self.in_progress),
            replies: l(&self.replies),
            ack_failures: l(&self.ack_failures),
            held_peak: l(&self.held_peak),
        }
    }
}
