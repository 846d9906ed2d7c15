//! A node: one JetStream pull consumer per lane feeding one `TaskManager`.
//!
//! # Protocol
//! - Each lane has a fetch loop (a tokio task) and a budget of room (a semaphore with
//!   `capacity` permits). The loop takes at least one permit (waiting for room), then as many
//!   more as are free up to `batch`, and asks the server for exactly that many messages. Each
//!   message received takes one permit into its own tokio task; the permit goes back when the
//!   message is settled (acked, nak'ed or terminated). Unused permits go back when the batch
//!   ends. So a node never holds more messages than its room, and a slow node leaves work on
//!   the server for the others.
//! - A message's task submits the handler to the manager and awaits its `TaskHandle`, sending
//!   an in-progress ack every `in_progress_every` meanwhile, then settles it by the outcome.
//! - `phase` goes RUNNING -> STOPPING or RUNNING/STOPPING -> KILLED, published through a
//!   `watch` channel. Fetch loops end on any change. On KILLED each message task cancels its
//!   task handle; a task that had not started is nak'ed at once (no delay).
//! - `stop`/`kill` return once every permit is back: nothing is held any more.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, AckKind, consumer::PullConsumer, message::PublishMessage as Publish,
};
use bytes::Bytes;
use futures::StreamExt;
use tasker::{TaskError, TaskManager};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::{Error, Reason};
use crate::handlers::Handlers;
use crate::metrics::{BridgeStats, Counters, Event};
use crate::topology::{Topology, is_token};
use crate::{
    HEADER_DELIVERED, HEADER_ERROR, HEADER_NODE, HEADER_ONCE, HEADER_ORIGINAL_ID, HEADER_REASON,
    HEADER_REPLY_TO, HEADER_SEQUENCE, HEADER_STATUS,
};

type HealthFn<E> = dyn Fn(&E) -> bool + Send + Sync + 'static;

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const KILLED: u8 = 2;

/// The most room a lane may have (messages held at once).
const MAX_ROOM: usize = 1 << 20;

/// How many times a confirmed acknowledgement is tried before it counts as failed.
const ACK_TRIES: u32 = 6;

/// Sets up a [`Node`]: `Node::builder(client, manager, handlers)`, then options, then
/// [`start`](Self::start).
#[must_use = "a node builder does nothing until `start` is called"]
pub struct NodeBuilder<R, E> {
    client: async_nats::Client,
    manager: TaskManager<R, E>,
    handlers: Handlers<R, E>,
    topology: Topology,
    check_health: Option<Arc<HealthFn<E>>>,
    name: String,
    capacity: Option<usize>,
    priority_capacity: Option<usize>,
    batch: usize,
    fetch_wait: Duration,
    nak_delay: Duration,
    in_progress_every: Option<Duration>,
    on_settled: Option<Arc<SettledFn>>,
}

type SettledFn = dyn Fn(&Settled) + Send + Sync + 'static;

/// How a message was settled with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Acknowledged, confirmed by the server: it will not be delivered again.
    Acked,
    /// Given back (nak): it will be delivered again, here or elsewhere.
    Naked,
    /// Terminated after its dead letter was stored, confirmed by the server.
    Terminated,
}

/// One settled message, as passed to [`NodeBuilder::on_settled`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settled {
    /// The message's sequence in the work stream.
    pub sequence: u64,
    /// Which delivery of it this was (1 for the first).
    pub delivered: i64,
    /// What was done.
    pub settlement: Settlement,
    /// The message's payload.
    pub payload: Bytes,
}

impl<R: Send + 'static, E: Send + 'static> NodeBuilder<R, E> {
    /// Called for each settlement this node makes: an ack or a term once per message, after
    /// the server confirmed it; a nak each time a delivery is given back. For audit logs and
    /// tests; runs on the node's tokio tasks, so keep it short.
    pub fn on_settled<F>(mut self, f: F) -> Self
    where
        F: Fn(&Settled) + Send + Sync + 'static,
    {
        self.on_settled = Some(Arc::new(f));
        self
    }

    /// The cluster's names and consumer settings. Default: [`Topology::default`].
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Which errors are healthy: pass the same function as the manager's `check_health`. A
    /// healthy failure is dead-lettered; an unhealthy one (after the manager's local retries)
    /// is given back to the cluster. Default: every error is healthy, as in tasker.
    pub fn check_health<F>(mut self, f: F) -> Self
    where
        F: Fn(&E) -> bool + Send + Sync + 'static,
    {
        self.check_health = Some(Arc::new(f));
        self
    }

    /// The node's name in logs, metrics labels and dead letters. Default: `node`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The most normal-lane messages held at once (running or queued in the manager).
    /// Default: twice the manager's base workers. At most 2^20 (else `InvalidConfig`).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = Some(n);
        self
    }

    /// The most priority-lane messages held at once, a budget of its own so priority work is
    /// never stuck behind a full normal lane. Default: the manager's base workers.
    pub fn priority_capacity(mut self, n: usize) -> Self {
        self.priority_capacity = Some(n);
        self
    }

    /// The most messages asked for in one pull request. Default 64.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n;
        self
    }

    /// How long one pull request waits on the server for messages. Default 500 ms; it bounds
    /// how long `stop` and `kill` wait for the last request to end.
    pub fn fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait;
        self
    }

    /// The delay asked for when an unhealthy message is given back, so another node (or this
    /// one, with a fresh resource) takes it later. Default 1 s.
    pub fn nak_delay(mut self, delay: Duration) -> Self {
        self.nak_delay = delay;
        self
    }

    /// How often a held message's ack deadline is pushed back while its task waits or runs.
    /// Default: a third of the consumer's `ack_wait`.
    pub fn in_progress_every(mut self, every: Duration) -> Self {
        self.in_progress_every = Some(every);
        self
    }

    /// Ensures the topology exists, binds the two consumers and starts fetching. Must be
    /// called inside a tokio runtime (the node's tasks run on it).
    pub async fn start(self) -> Result<Node<R, E>, Error>
    where
        E: std::fmt::Display,
    {
        let stats = self.manager.stats();
        let capacity = self.capacity.unwrap_or(2 * stats.base_workers.max(1));
        let priority_capacity = self.priority_capacity.unwrap_or(stats.base_workers.max(1));
        if capacity == 0 || priority_capacity == 0 || self.batch == 0 {
            return Err(Error::InvalidConfig(
                "capacity, priority_capacity and batch must be at least 1",
            ));
        }
        if capacity > MAX_ROOM || priority_capacity > MAX_ROOM || self.batch > MAX_ROOM {
            return Err(Error::InvalidConfig(
                "capacity, priority_capacity and batch must be at most 1,048,576",
            ));
        }
        if self.fetch_wait < Duration::from_millis(10) {
            return Err(Error::InvalidConfig("fetch_wait must be at least 10 ms"));
        }
        let js = jetstream::new(self.client.clone());
        self.topology.ensure(&js).await?;
        let stream = js
            .get_stream(self.topology.stream_name())
            .await
            .map_err(Error::nats)?;
        let mut consumers = Vec::new();
        let mut max_deliver = i64::MAX;
        let mut ack_wait = Duration::MAX;
        for priority in [false, true] {
            let mut consumer: PullConsumer = stream
                .get_consumer(&self.topology.consumer_name(priority))
                .await
                .map_err(Error::Nats)?;
            let config = &consumer.info().await.map_err(Error::nats)?.config;
            if config.max_deliver > 0 {
                max_deliver = max_deliver.min(config.max_deliver);
            }
            ack_wait = ack_wait.min(config.ack_wait);
            consumers.push((priority, consumer));
        }
        let in_progress_every = self
            .in_progress_every
            .unwrap_or(ack_wait / 3)
            .max(Duration::from_millis(10));
        let (phase_tx, phase_rx) = watch::channel(RUNNING);
        let shared = Arc::new(Shared {
            name: self.name,
            client: self.client,
            js,
            stream,
            manager: self.manager,
            handlers: self.handlers,
            topology: self.topology,
            check_health: self.check_health,
            counters: Counters::default(),
            phase: phase_tx,
            normal_room: Arc::new(Semaphore::new(capacity)),
            priority_room: Arc::new(Semaphore::new(priority_capacity)),
            capacity,
            priority_capacity,
            batch: self.batch,
            fetch_wait: self.fetch_wait,
            nak_delay: self.nak_delay,
            in_progress_every,
            max_deliver,
            ack_wait,
            on_settled: self.on_settled,
            settled_here: Arc::default(),
        });
        let mut loops = Vec::new();
        for (priority, consumer) in consumers {
            loops.push(tokio::spawn(fetch_loop(
                Arc::clone(&shared),
                consumer,
                priority,
                phase_rx.clone(),
            )));
        }
        let advisories = tokio::spawn(advisory_loop(Arc::clone(&shared), phase_rx));
        info!(
            node = %shared.name,
            capacity, priority_capacity, max_deliver, "tasker-nats node started"
        );
        Ok(Node {
            shared,
            loops,
            advisories,
        })
    }
}

/// A running node: fetches from its cluster's stream and runs the messages on its
/// `TaskManager`.
///
/// Delivery semantics (per message, chosen by the producer):
///
/// | outcome | at-least-once (default) | at-most-once |
/// |---|---|---|
/// | before the body | — | acked (confirmed), then run |
/// | `Ok(bytes)` | reply, then ack | reply |
/// | healthy `Err` | dead letter `failed`, reply, term | dead letter `failed`, reply |
/// | unhealthy `Err` after the manager's local retries, or a panic | nak with `nak_delay` (another node may take it); on the last of `max_deliver` deliveries: dead letter `max-deliver`, reply, term | dead letter `failed`/`panicked`, reply |
/// | no handler of that name | dead letter `unknown-handler`, reply, term | the same |
/// | not started when the node is killed | nak at once | dead letter `not-run` |
///
/// Neither `stop` nor `kill` stops the manager: call its own `stop` afterwards.
pub struct Node<R, E> {
    shared: Arc<Shared<R, E>>,
    loops: Vec<JoinHandle<()>>,
    advisories: JoinHandle<()>,
}

impl<R, E> std::fmt::Debug for Node<R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<R: Send + 'static, E: Send + 'static> Node<R, E> {
    /// A builder for a node running `handlers` on `manager`, fed through `client`.
    pub fn builder(
        client: async_nats::Client,
        manager: TaskManager<R, E>,
        handlers: Handlers<R, E>,
    ) -> NodeBuilder<R, E> {
        NodeBuilder {
            client,
            manager,
            handlers,
            topology: Topology::default(),
            check_health: None,
            name: "node".to_owned(),
            capacity: None,
            priority_capacity: None,
            batch: 64,
            fetch_wait: Duration::from_millis(500),
            nak_delay: Duration::from_secs(1),
            in_progress_every: None,
            on_settled: None,
        }
    }
}

impl<R, E> Node<R, E> {
    /// What the bridge did so far.
    pub fn stats(&self) -> BridgeStats {
        self.shared.counters.snapshot()
    }

    /// Messages held right now (fetched, not yet settled), both lanes.
    pub fn held(&self) -> usize {
        self.shared.counters.held() as usize
    }

    /// Graceful: stops fetching, lets every held message run and settles it (ack, dead letter
    /// or nak as its outcome says), then returns the node's figures. The manager keeps running.
    pub async fn stop(self) -> BridgeStats {
        self.finish(STOPPING).await
    }

    /// Immediate: stops fetching and gives back (nak, no delay) every held message whose task
    /// has not started, so another node takes it at once; running tasks finish and are settled
    /// as usual. The manager keeps running (its `kill` marks running tasks cancelled).
    pub async fn kill(self) -> BridgeStats {
        self.finish(KILLED).await
    }

    async fn finish(self, to: u8) -> BridgeStats {
        self.shared.phase.send_if_modified(|p| {
            if *p < to {
                *p = to;
                true
            } else {
                false
            }
        });
        for l in self.loops {
            let _ = l.await;
        }
        // Every permit back: nothing held. The semaphores are never closed.
        let sh = &self.shared;
        let _n = sh.normal_room.acquire_many(sh.capacity as u32).await;
        let _p = sh
            .priority_room
            .acquire_many(sh.priority_capacity as u32)
            .await;
        self.advisories.abort();
        let _ = self.advisories.await;
        if let Err(e) = sh.client.flush().await {
            warn!(node = %sh.name, error = %e, "flush after stop failed");
        }
        let stats = sh.counters.snapshot();
        info!(node = %sh.name, ?stats, "tasker-nats node stopped");
        stats
    }
}

struct Shared<R, E> {
    name: String,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    manager: TaskManager<R, E>,
    handlers: Handlers<R, E>,
    topology: Topology,
    check_health: Option<Arc<HealthFn<E>>>,
    counters: Counters,
    phase: watch::Sender<u8>,
    normal_room: Arc<Semaphore>,
    priority_room: Arc<Semaphore>,
    capacity: usize,
    priority_capacity: usize,
    batch: usize,
    fetch_wait: Duration,
    nak_delay: Duration,
    in_progress_every: Duration,
    max_deliver: i64,
    ack_wait: Duration,
    on_settled: Option<Arc<SettledFn>>,
    settled_here: Arc<RecentlySettled>,
}

/// Stream sequences this node settled for good (ack or term confirmed), the most recent
/// [`RecentlySettled::CAP`]. Written by message tasks after a confirmation, read by message
/// tasks and by task bodies on the workers; one mutex, held for a hash look-up.
#[derive(Default)]
struct RecentlySettled {
    inner: Mutex<(HashSet<u64>, VecDeque<u64>)>,
}

impl RecentlySettled {
    const CAP: usize = 1 << 16;

    /// Whether `sequence` was not there yet.
    fn insert(&self, sequence: u64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if !set.insert(sequence) {
            return false;
        }
        order.push_back(sequence);
        if order.len() > Self::CAP
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }

    fn contains(&self, sequence: u64) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.contains(&sequence)
    }
}

impl<R, E> Shared<R, E> {
    fn bump(&self, event: Event) {
        self.counters.bump(&self.name, event);
    }

    /// Counts a settlement and tells the hook.
    fn settled(&self, msg: &jetstream::Message, settlement: Settlement) {
        self.bump(match settlement {
            Settlement::Acked => Event::Acked,
            Settlement::Naked => Event::Naked,
            Settlement::Terminated => Event::Terminated,
        });
        if let Some(f) = &self.on_settled {
            let (sequence, delivered) = msg
                .info()
                .map_or((0, 1), |i| (i.stream_sequence, i.delivered));
            f(&Settled {
                sequence,
                delivered,
                settlement,
                payload: msg.payload.clone(),
            });
        }
    }

    fn killed(&self) -> bool {
        *self.phase.borrow() == KILLED
    }

    fn is_healthy(&self, e: &E) -> bool {
        self.check_health.as_ref().is_none_or(|f| f(e))
    }
}

async fn fetch_loop<R, E>(
    sh: Arc<Shared<R, E>>,
    consumer: PullConsumer,
    priority: bool,
    mut phase: watch::Receiver<u8>,
) where
    R: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let room = if priority {
        Arc::clone(&sh.priority_room)
    } else {
        Arc::clone(&sh.normal_room)
    };
    let mut failures = 0u32;
    loop {
        if *phase.borrow_and_update() != RUNNING {
            break;
        }
        let mut permits = tokio::select! {
            p = Arc::clone(&room).acquire_owned() => p.expect("the room semaphore is never closed"),
            _ = phase.changed() => continue,
        };
        let more = room.available_permits().min(sh.batch - 1);
        if more > 0
            && let Ok(p) = Arc::clone(&room).try_acquire_many_owned(more as u32)
        {
            permits.merge(p);
        }
        let asked = permits.num_permits();
        let batch = consumer
            .batch()
            .max_messages(asked)
            .expires(sh.fetch_wait)
            .messages()
            .await;
        let mut messages = match batch {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                warn!(node = %sh.name, priority, error = %e, "pull request failed");
                drop(permits);
                let pause = Duration::from_millis(50 << failures.min(5));
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = phase.changed() => {}
                }
                continue;
            }
        };
        failures = 0;
        // Read the batch to its end even when stopping: a message already sent to this
        // request is settled here, not left to time out.
        while let Some(m) = messages.next().await {
            match m {
                Ok(msg) => match permits.split(1) {
                    Some(permit) => {
                        tokio::spawn(handle(Arc::clone(&sh), msg, priority, permit));
                    }
                    None => {
                        // More than asked for: give it back at once.
                        let _ = msg.ack_with(AckKind::Nak(None)).await;
                        sh.settled(&msg, Settlement::Naked);
                    }
                },
                Err(e) => {
                    debug!(node = %sh.name, priority, error = %e, "pull batch ended");
                    break;
                }
            }
        }
    }
}

/// What a message says about itself.
struct Envelope {
    handler: String,
    once: bool,
    reply_to: Option<String>,
    sequence: u64,
    delivered: i64,
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

async fn handle<R, E>(
    sh: Arc<Shared<R, E>>,
    msg: jetstream::Message,
    priority: bool,
    _permit: OwnedSemaphorePermit,
) where
    R: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    sh.counters.hold();
    struct Release<'a>(&'a Counters);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.release();
        }
    }
    let _release = Release(&sh.counters);
    sh.bump(Event::Fetched);
    let (sequence, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.delivered),
        Err(_) => (0, 1),
    };
    if delivered > 1 {
        sh.bump(Event::Redelivered);
    }
    let headers = msg.headers.as_ref();
    let env = Envelope {
        handler: msg
            .subject
            .as_str()
            .strip_prefix(&sh.topology.lane_prefix(priority))
            .unwrap_or("")
            .to_owned(),
        once: header(headers, HEADER_ONCE) == Some("1"),
        reply_to: header(headers, HEADER_REPLY_TO).map(str::to_owned),
        sequence,
        delivered,
    };
    if sh.killed() {
        give_back_now(&sh, &msg).await;
        return;
    }
    let Some(handler) = sh.handlers.get(&env.handler) else {
        let text = format!("no handler named {:?} on node {}", env.handler, sh.name);
        settle_dead(&sh, &msg, &env, Reason::UnknownHandler, &text).await;
        return;
    };
    if !env.once && sh.settled_here.contains(sequence) {
        // A stale redelivery of a message this node already settled (its confirmation came
        // after the server had handed it out again): settle again, do not run.
        let _ = msg.ack_with(AckKind::Ack).await;
        debug!(node = %sh.name, sequence, "already settled here; not run again");
        return;
    }
    let payload = msg.payload.clone();
    let skipped = Arc::new(AtomicBool::new(false));
    let body = {
        let (settled, skipped) = (Arc::clone(&sh.settled_here), Arc::clone(&skipped));
        move |r: &mut R, ctx: &tasker::TaskContext| {
            // Checked on the worker, right before the body: a confirmation that arrived while
            // this copy was queued stops it here.
            if settled.contains(sequence) {
                skipped.store(true, Ordering::Relaxed);
                return Ok(Vec::new());
            }
            handler(r, ctx, &payload)
        }
    };
    if env.once {
        if !confirm(&sh, &msg, AckKind::Ack).await {
            // Maybe acknowledged, maybe not: either way it must not run here.
            return;
        }
        sh.settled(&msg, Settlement::Acked);
        let handle = if priority {
            sh.manager.queue_task_with_priority_once_async(body)
        } else {
            sh.manager.queue_task_once_async(body)
        };
        let outcome = await_outcome(&sh, handle, None).await;
        let (reason, text) = match outcome {
            Ok(value) => {
                reply(&sh, &env, Ok(value)).await;
                return;
            }
            Err(TaskError::Failed { error, .. }) => (Reason::Failed, error.to_string()),
            Err(TaskError::Panicked { message }) => (Reason::Panicked, message),
            Err(other) => (Reason::NotRun, other.to_string()),
        };
        if publish_dead(&sh, &msg, &env, reason, &text).await {
            reply(&sh, &env, Err((reason, text))).await;
        }
        return;
    }
    let handle = if priority {
        sh.manager.queue_task_with_priority_async(body)
    } else {
        sh.manager.queue_task_async(body)
    };
    let outcome = await_outcome(&sh, handle, Some(&msg)).await;
    if skipped.load(Ordering::Relaxed) {
        // Read after the outcome, which the manager hands over with release/acquire.
        let _ = msg.ack_with(AckKind::Ack).await;
        debug!(node = %sh.name, sequence, "already settled here; not run again");
        return;
    }
    match outcome {
        Ok(value) => {
            // Reply first: a node dying between the two redoes the task (at least once) and
            // the requester has its answer either way.
            reply(&sh, &env, Ok(value)).await;
            // Two deliveries of one message can both be acked here (the server lost the first
            // ack in a crash and handed it out again before the retry got through): the
            // settlement is told once.
            if confirm(&sh, &msg, AckKind::Ack).await && sh.settled_here.insert(sequence) {
                sh.settled(&msg, Settlement::Acked);
            }
        }
        Err(TaskError::Failed { error, .. }) if sh.is_healthy(&error) => {
            settle_dead(&sh, &msg, &env, Reason::Failed, &error.to_string()).await;
        }
        Err(TaskError::Failed { error, attempts }) => {
            let text = format!("unhealthy after {attempts} attempt(s): {error}");
            give_back_later(&sh, &msg, &env, &text).await;
        }
        Err(TaskError::Panicked { message }) => {
            give_back_later(&sh, &msg, &env, &format!("panicked: {message}")).await;
        }
        Err(other) => {
            debug!(node = %sh.name, sequence, outcome = %other, "task not run here");
            give_back_now(&sh, &msg).await;
        }
    }
}

/// Awaits a task's outcome; meanwhile keeps `msg` (if any) alive with in-progress acks, and
/// on kill cancels the task if it has not started.
async fn await_outcome<R, E, T>(
    sh: &Shared<R, E>,
    mut handle: tasker::TaskHandle<T, E>,
    msg: Option<&jetstream::Message>,
) -> Result<T, TaskError<E>> {
    let mut phase = sh.phase.subscribe();
    let mut cancel_tried = false;
    let every = sh.in_progress_every;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        if !cancel_tried && *phase.borrow_and_update() == KILLED {
            cancel_tried = true;
            handle.cancel();
        }
        tokio::select! {
            out = &mut handle => return out,
            _ = tick.tick(), if msg.is_some() => {
                if let Some(m) = msg
                    && m.ack_with(AckKind::Progress).await.is_ok()
                {
                    sh.bump(Event::InProgress);
                }
            }
            r = phase.changed(), if !cancel_tried => {
                if r.is_err() {
                    cancel_tried = true;
                }
            }
        }
    }
}

/// An acknowledgement the server confirms, tried a few times (the server may be restarting).
///
/// Retries stop after half the consumer's `ack_wait`: later, the server may already have
/// handed the message to another node, and a late confirmation would settle a message that
/// is being run again there.
async fn confirm<R, E>(sh: &Shared<R, E>, msg: &jetstream::Message, kind: AckKind) -> bool {
    let mut pause = Duration::from_millis(50);
    let give_up = tokio::time::Instant::now() + sh.ack_wait / 2;
    for attempt in 1..=ACK_TRIES {
        match msg.double_ack_with(kind).await {
            Ok(()) => return true,
            Err(e) => {
                debug!(node = %sh.name, attempt, error = %e, "acknowledgement not confirmed");
                if attempt < ACK_TRIES && tokio::time::Instant::now() + pause < give_up {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
    warn!(node = %sh.name, ?kind, "acknowledgement not confirmed; the server decides");
    sh.bump(Event::AckFailure);
    false
}

async fn give_back_now<R, E>(sh: &Shared<R, E>, msg: &jetstream::Message) {
    if msg.ack_with(AckKind::Nak(None)).await.is_ok() {
        sh.settled(msg, Settlement::Naked);
    } else {
        sh.bump(Event::AckFailure);
    }
}

/// An unhealthy end: back to the cluster after `nak_delay`, or dead-lettered on the last
/// delivery.
async fn give_back_later<R, E>(
    sh: &Shared<R, E>,
    msg: &jetstream::Message,
    env: &Envelope,
    text: &str,
) {
    if env.delivered >= sh.max_deliver {
        let text = format!("delivery {} of {}: {text}", env.delivered, sh.max_deliver);
        settle_dead(sh, msg, env, Reason::MaxDeliver, &text).await;
        return;
    }
    debug!(node = %sh.name, sequence = env.sequence, text, "given back to the cluster");
    if confirm(sh, msg, AckKind::Nak(Some(sh.nak_delay))).await {
        sh.settled(msg, Settlement::Naked);
    }
}

/// Dead letter, reply, then terminate. If the dead letter cannot be stored the message is
/// given back instead, so it is not lost.
async fn settle_dead<R, E>(
    sh: &Shared<R, E>,
    msg: &jetstream::Message,
    env: &Envelope,
    reason: Reason,
    text: &str,
) {
    if !publish_dead(sh, msg, env, reason, text).await {
        if confirm(sh, msg, AckKind::Nak(Some(sh.nak_delay))).await {
            sh.settled(msg, Settlement::Naked);
        }
        return;
    }
    reply(sh, env, Err((reason, text.to_owned()))).await;
    if confirm(sh, msg, AckKind::Term).await && sh.settled_here.insert(env.sequence) {
        sh.settled(msg, Settlement::Terminated);
    }
}

/// Header values cannot hold line breaks; long texts are cut.
fn header_text(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect();
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// Publishes a dead letter (confirmed by the dead-letter stream). Its message id is the
/// original's stream sequence, so the same message is dead-lettered once even when two nodes
/// (or a node and the advisory) both try.
/// One dead letter's parts.
struct DeadLetter<'a> {
    original: Option<&'a HeaderMap>,
    payload: Bytes,
    handler: &'a str,
    sequence: u64,
    delivered: i64,
    reason: Reason,
    text: &'a str,
}

async fn publish_dead_parts<R, E>(sh: &Shared<R, E>, d: DeadLetter<'_>) -> bool {
    let DeadLetter {
        original,
        payload,
        handler,
        sequence,
        delivered,
        reason,
        text,
    } = d;
    let node = sh.name.as_str();
    let mut h = HeaderMap::new();
    if let Some(orig) = original {
        for (name, values) in orig.iter() {
            let is_id = AsRef::<str>::as_ref(name).eq_ignore_ascii_case("Nats-Msg-Id");
            for v in values {
                if is_id {
                    h.append(HEADER_ORIGINAL_ID, v.as_str());
                } else {
                    h.append(name.clone(), v.clone());
                }
            }
        }
    }
    h.insert(HEADER_REASON, reason.as_str());
    h.insert(HEADER_ERROR, header_text(text).as_str());
    h.insert(HEADER_SEQUENCE, sequence.to_string().as_str());
    h.insert(HEADER_DELIVERED, delivered.to_string().as_str());
    h.insert(HEADER_NODE, header_text(node).as_str());
    let handler = if is_token(handler) {
        handler
    } else {
        "_invalid"
    };
    let publish = Publish::build()
        .payload(payload)
        .headers(h)
        .message_id(format!("{}:{sequence}", sh.topology.stream_name()));
    let stored = match sh
        .js
        .send_publish(sh.topology.dead_subject(handler), publish)
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(Error::nats),
        Err(e) => Err(Error::nats(e)),
    };
    match stored {
        Ok(()) => {
            warn!(node, sequence, handler, %reason, error = text, "dead-lettered");
            true
        }
        Err(e) => {
            warn!(node, sequence, error = %e, "dead letter not stored");
            false
        }
    }
}

async fn publish_dead<R, E>(
    sh: &Shared<R, E>,
    msg: &jetstream::Message,
    env: &Envelope,
    reason: Reason,
    text: &str,
) -> bool {
    let ok = publish_dead_parts(
        sh,
        DeadLetter {
            original: msg.headers.as_ref(),
            payload: msg.payload.clone(),
            handler: &env.handler,
            sequence: env.sequence,
            delivered: env.delivered,
            reason,
            text,
        },
    )
    .await;
    if ok {
        sh.bump(Event::DeadLettered);
    }
    ok
}

/// Publishes the result (or error) to the requester's reply subject, if it gave one.
async fn reply<R, E>(
    sh: &Shared<R, E>,
    env: &Envelope,
    outcome: Result<Vec<u8>, (Reason, String)>,
) {
    let Some(to) = env.reply_to.as_deref() else {
        return;
    };
    if publish_reply(&sh.client, to, outcome).await {
        sh.bump(Event::Reply);
    }
}

pub(crate) async fn publish_reply(
    client: &async_nats::Client,
    to: &str,
    outcome: Result<Vec<u8>, (Reason, String)>,
) -> bool {
    let mut h = HeaderMap::new();
    let body = match outcome {
        Ok(v) => {
            h.insert(HEADER_STATUS, "ok");
            Bytes::from(v)
        }
        Err((reason, text)) => {
            h.insert(HEADER_STATUS, "error");
            h.insert(HEADER_REASON, reason.as_str());
            Bytes::from(text.into_bytes())
        }
    };
    match client.publish_with_headers(to.to_owned(), h, body).await {
        Ok(()) => true,
        Err(e) => {
            debug!(to, error = %e, "reply not sent");
            false
        }
    }
}

#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    #[serde(default)]
    deliveries: i64,
}

/// Dead-letters messages whose last delivery no node settled (the node holding it died): the
/// server announces each one once on an advisory subject; one node of the queue group takes
/// the announcement, copies the message to the dead-letter stream and deletes it.
async fn advisory_loop<R, E>(sh: Arc<Shared<R, E>>, mut phase: watch::Receiver<u8>) {
    let subject = format!(
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
        sh.topology.stream_name()
    );
    let group = format!("tasker-nats-{}", sh.topology.stream_name());
    let mut sub = match sh.client.queue_subscribe(subject, group).await {
        Ok(s) => s,
        Err(e) => {
            warn!(node = %sh.name, error = %e, "cannot follow delivery-limit advisories");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            m = sub.next() => m,
            _ = phase.changed() => break,
        };
        let Some(m) = m else { break };
        let Ok(adv) = serde_json::from_slice::<MaxDeliveries>(&m.payload) else {
            continue;
        };
        let Ok(stored) = sh.stream.get_raw_message(adv.stream_seq).await else {
            continue; // already gone (settled or dead-lettered elsewhere)
        };
        let subject = stored.subject.as_str();
        let handler = [false, true]
            .iter()
            .find_map(|&p| subject.strip_prefix(&sh.topology.lane_prefix(p)))
            .unwrap_or("")
            .to_owned();
        let text = format!(
            "delivery limit reached after {} deliveries; the last was not settled",
            adv.deliveries
        );
        let reply_to = header(Some(&stored.headers), HEADER_REPLY_TO).map(str::to_owned);
        let letter = DeadLetter {
            original: Some(&stored.headers),
            payload: stored.payload.clone(),
            handler: &handler,
            sequence: adv.stream_seq,
            delivered: adv.deliveries,
            reason: Reason::MaxDeliver,
            text: &text,
        };
        if publish_dead_parts(&sh, letter).await {
            sh.bump(Event::DeadLettered);
            if let Some(to) = reply_to
                && publish_reply(&sh.client, &to, Err((Reason::MaxDeliver, text))).await
            {
                sh.bump(Event::Reply);
            }
            if let Err(e) = sh.stream.delete_message(adv.stream_seq).await {
                debug!(node = %sh.name, error = %e, "dead-lettered message not deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_has_no_line_breaks_and_is_bounded() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        assert_eq!(header_text(""), "-");
        assert_eq!(header_text(&"x".repeat(5000)).len(), 1024);
    }

    #[test]
    fn recently_settled_remembers_the_last_cap_sequences() {
        let r = RecentlySettled::default();
        assert!(r.insert(1));
        assert!(!r.insert(1));
        for s in 2..=(RecentlySettled::CAP as u64 + 1) {
            assert!(r.insert(s));
        }
        // 1 was the oldest of CAP + 1: forgotten; the rest remembered.
        assert!(!r.contains(1));
        assert!(r.contains(2));
        assert!(r.contains(RecentlySettled::CAP as u64 + 1));
    }
}
