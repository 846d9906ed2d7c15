//! Built-in metrics: totals, sliding-window rates, latency percentiles, and the public
//! snapshots ([`TaskStats`], [`TaskMetrics`]).
//!
//! # Who writes what
//!
//! - Each worker owns one cache-padded [`WorkerMetrics`] and is its only writer: totals and
//!   rate windows are single-writer atomics (a load and a store, no read-modify-write), its
//!   latency histograms are local and published on a tick ([`recorder`]).
//! - Arrivals from other threads are counted by submitters into [`Metrics::arrivals`],
//!   sharded windows: the first eight submitting threads alive at a time each own one (plain
//!   loads and stores), later ones share the other eight (read-modify-write). A task made on
//!   a worker (inside a task, a callback, a hook) is counted in that worker's own tally,
//!   single-writer like the rest of it.
//! - `run_task` outcomes are counted by callers into [`Metrics::outside`] (read-modify-write,
//!   since many threads share it; `run_task` latencies are the caller's own and are not
//!   recorded in the histograms).
//! - A snapshot ([`Metrics::snapshot`]) only reads atomics and briefly locks each worker's
//!   published histograms to merge them.

pub(crate) mod collector;
#[cfg(feature = "metrics")]
pub(crate) mod facade;
pub(crate) mod recorder;
pub(crate) mod window;

use std::cell::Cell;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::clock::{Clock, Stamp};
use crate::recycle::ReplaceReason;
use crate::sync::stats::AtomicU64;
use crate::sync::{Ordering, StdAtomicUsize};
use collector::MetricsCollector;
use recorder::{Published, new_histogram};
use window::{Ticks, Window};

/// Arrival windows; submitters spread over them by thread ([`thread_shard`]). The lifecycle
/// spreads threads other than workers over as many counts.
#[cfg(not(loom))]
pub(crate) const ARRIVAL_SHARDS: usize = 16;
/// One under loom: models stay small (arrivals are statistics, not protocol), and the shard
/// never depends on the std counter below, which outlives each model execution.
#[cfg(loom)]
pub(crate) const ARRIVAL_SHARDS: usize = 1;

/// Shards `0..OWNED_SHARDS` each belong to one live thread at a time (its only writer: plain
/// loads and stores, no read-modify-write); the rest are shared by the threads that came
/// when all of those were taken (read-modify-write).
#[cfg(not(loom))]
pub(crate) const OWNED_SHARDS: usize = 8;
#[cfg(loom)]
pub(crate) const OWNED_SHARDS: usize = 0;

/// A total or window written by one thread only: a plain load and store.
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// [`bump`], publishing the writes before it: a reader that loads `counter` with `Acquire`
/// sees them (see [`Tally::panicked`]).
#[inline]
fn bump_release(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
}

/// One writer's totals and rate windows.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    /// A subset of `failed`. So that a snapshot never shows more panicked than failed tasks,
    /// a writer bumps `failed` first and then `panicked` with `Release`; a snapshot loads
    /// `panicked` with `Acquire` and then `failed`, which is then at least as new.
    pub(crate) panicked: AtomicU64,
    pub(crate) replaced: AtomicU64,
    /// Replaced by the lifecycle policy, by [`ReplaceReason`] (see `recycle`).
    pub(crate) recycled: [AtomicU64; 3],
    pub(crate) completions: Window,
    pub(crate) failures: Window,
    pub(crate) retries: Window,
    /// Nanoseconds spent running tasks (recorded only while bursting is on).
    pub(crate) busy: Window,
    /// Tasks accepted on this worker's thread (made inside its tasks, callbacks or hooks); a
    /// worker's own tally only. Submissions from other threads count in the sharded
    /// [`Metrics`] counters.
    pub(crate) arrived: AtomicU64,
    pub(crate) arrivals: Window,
}

/// A worker's metrics: its tally and its published histograms.
#[derive(Default)]
pub(crate) struct WorkerMetrics {
    pub(crate) tally: Tally,
    pub(crate) published: Published,
}

/// How one task ended, for the tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    Failed,
    Panicked,
    Retried,
}

impl Tally {
    /// Single-writer record (a worker's own tally).
    #[inline]
    fn record_own(&self, ended: Ended, tick: u64) {
        match ended {
            Ended::Completed => {
                bump(&self.completed);
                self.completions.record_n_single_writer(tick, 1);
            }
            Ended::Failed => {
                bump(&self.failed);
                self.failures.record_n_single_writer(tick, 1);
            }
            Ended::Panicked => {
                bump(&self.failed);
                bump_release(&self.panicked);
                self.failures.record_n_single_writer(tick, 1);
            }
            Ended::Retried => {
                bump(&self.retried);
                self.retries.record_n_single_writer(tick, 1);
            }
        }
    }

    /// Shared record (many writers): read-modify-write.
    fn record_shared(&self, ended: Ended, tick: u64) {
        let add = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match ended {
            Ended::Completed => {
                add(&self.completed);
                self.completions.record(tick);
            }
            Ended::Failed | Ended::Panicked => {
                add(&self.failed);
                if ended == Ended::Panicked {
                    // After `failed`: see `Tally::panicked`.
                    self.panicked.fetch_add(1, Ordering::Release);
                }
                self.failures.record(tick);
            }
            Ended::Retried => {
                add(&self.retried);
                self.retries.record(tick);
            }
        }
    }

    #[inline]
    fn replaced_own(&self) {
        bump(&self.replaced);
    }

    fn replaced_shared(&self) {
        self.replaced.fetch_add(1, Ordering::Relaxed);
    }

    fn recycled_slot(reason: ReplaceReason) -> usize {
        match reason {
            ReplaceReason::Lifetime => 0,
            ReplaceReason::Uses => 1,
            ReplaceReason::Validation => 2,
        }
    }
}

/// Which owned shards a live thread holds. A thread takes a free one on its first
/// submission (`Acquire`) and gives it back when it exits (`Release`, from its thread-local's
/// destructor): everything the last owner wrote to the shard happens before the next owner's
/// first plain load of it.
#[cfg(not(loom))]
static SHARD_OWNERS: [std::sync::atomic::AtomicBool; OWNED_SHARDS] =
    [const { std::sync::atomic::AtomicBool::new(false) }; OWNED_SHARDS];

/// A thread's shard; gives an owned one back when the thread exits.
struct ShardSlot(Cell<usize>);

impl Drop for ShardSlot {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        if let Some(owned) = SHARD_OWNERS.get(self.0.get()) {
            owned.store(false, Ordering::Release);
        }
    }
}

crate::sync::thread_local! {
    /// This thread's arrival shard, picked on first use.
    static SHARD: ShardSlot = const { ShardSlot(Cell::new(usize::MAX)) };
}
static NEXT_SHARD: StdAtomicUsize = StdAtomicUsize::new(0);

/// This thread's shard, below [`ARRIVAL_SHARDS`]: a free owned one on first use, else one of
/// the shared ones, round-robin. A thread whose thread-locals are being torn down uses a
/// shared one.
#[inline]
#[cfg_attr(loom, allow(clippy::modulo_one))] // one shard under loom: always shard 0
pub(crate) fn thread_shard() -> usize {
    SHARD
        .try_with(|s| {
            let mut v = s.0.get();
            if v == usize::MAX {
                v = pick_shard();
                s.0.set(v);
            }
            v
        })
        .unwrap_or(OWNED_SHARDS)
}

/// Whether shard `s` is owned by the calling thread (so written by it alone).
#[inline]
#[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))] // none is owned under loom
fn is_owned(s: usize) -> bool {
    s < OWNED_SHARDS
}

/// A free owned shard if there is one, else a shared one.
#[cold]
#[cfg_attr(loom, allow(clippy::modulo_one))] // one shared shard under loom
fn pick_shard() -> usize {
    #[cfg(not(loom))]
    for (i, owned) in SHARD_OWNERS.iter().enumerate() {
        if !owned.load(Ordering::Relaxed)
            && owned
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return i;
        }
    }
    OWNED_SHARDS + NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % (ARRIVAL_SHARDS - OWNED_SHARDS)
}

/// The manager-wide metrics state.
pub(crate) struct Metrics {
    /// The task-path clock; its stamps are the ticks' time.
    pub(crate) clock: Clock,
    pub(crate) ticks: Ticks,
    arrivals: Box<[CachePadded<Window>]>,
    arrived: Box<[CachePadded<AtomicU64>]>,
    /// `run_task` outcomes (many writers).
    pub(crate) outside: CachePadded<Tally>,
    /// Panics caught in user code other than task bodies (many writers, cold).
    user_panics: AtomicU64,
    pub(crate) collector: Option<Box<dyn MetricsCollector>>,
    #[cfg(feature = "metrics")]
    pub(crate) facade: facade::Facade,
}

impl Metrics {
    pub(crate) fn new(
        window: Duration,
        collector: Option<Box<dyn MetricsCollector>>,
        #[allow(unused_variables)] pool: &str,
    ) -> Self {
        Metrics {
            #[cfg(feature = "metrics")]
            facade: facade::Facade::new(pool),
            clock: Clock::new(),
            ticks: Ticks::new(window),
            arrivals: (0..ARRIVAL_SHARDS).map(|_| Default::default()).collect(),
            arrived: (0..ARRIVAL_SHARDS).map(|_| Default::default()).collect(),
            outside: Default::default(),
            user_panics: AtomicU64::new(0),
            collector,
        }
    }

    /// Now, on the task-path clock.
    #[inline]
    pub(crate) fn now(&self) -> Stamp {
        self.clock.now()
    }

    /// A task was accepted at `at`; `own`: the calling worker's tally (single writer), `None`
    /// off the workers (a thread's shard, read-modify-write).
    #[inline]
    pub(crate) fn arrival(&self, at: Stamp, own: Option<&Tally>) {
        let tick = self.ticks.tick(at);
        match own {
            Some(tally) => {
                bump(&tally.arrived);
                tally.arrivals.record_n_single_writer(tick, 1);
            }
            None => {
                let s = thread_shard();
                if is_owned(s) {
                    bump(&self.arrived[s]);
                    self.arrivals[s].record_n_single_writer(tick, 1);
                } else {
                    self.arrived[s].fetch_add(1, Ordering::Relaxed);
                    self.arrivals[s].record(tick);
                }
            }
        }
        #[cfg(feature = "metrics")]
        self.facade.arrival();
    }

    /// User code panicked where tasker catches it (see `unwind`).
    #[cold]
    pub(crate) fn user_panicked(&self) {
        self.user_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// A worker's task ended (or was re-queued) at `at_nanos` (see [`Self::now`]); `tally`
    /// is the worker's own.
    #[inline]
    pub(crate) fn worker_ended(&self, tally: &Tally, ended: Ended, at_nanos: u64) {
        tally.record_own(ended, self.ticks.tick(at_nanos));
        #[cfg(feature = "metrics")]
        self.facade.ended(ended);
    }

    /// A worker ran a task for `exec_nanos`, ending at `at_nanos` (for the burst controller).
    #[inline]
    pub(crate) fn worker_busy(&self, tally: &Tally, exec_nanos: u64, at_nanos: u64) {
        tally
            .busy
            .record_n_single_writer(self.ticks.tick(at_nanos), exec_nanos);
    }

    /// The load over the window ending now, as the burst controller reads it.
    pub(crate) fn load<'a>(&self, workers: impl Iterator<Item = &'a WorkerMetrics>) -> Load {
        let nanos = self.now();
        let tick = self.ticks.tick(nanos);
        let (mut ended, mut busy, mut arrivals) = (0, 0, 0);
        for w in workers {
            ended += w.tally.completions.count(tick) + w.tally.failures.count(tick);
            busy += w.tally.busy.count(tick);
            arrivals += w.tally.arrivals.count(tick);
        }
        arrivals += self.arrivals.iter().map(|w| w.count(tick)).sum::<u64>();
        Load {
            arrival_rate: window::rate(arrivals, &self.ticks, nanos),
            ended_rate: window::rate(ended, &self.ticks, nanos),
            busy_rate: window::rate(busy, &self.ticks, nanos),
        }
    }

    /// A `run_task` call ended at `at`.
    pub(crate) fn outside_ended(&self, ended: Ended, at: Stamp) {
        self.outside.record_shared(ended, self.ticks.tick(at));
        #[cfg(feature = "metrics")]
        self.facade.ended(ended);
    }

    /// A resource was replaced; `own` is the worker's tally, `None` for `run_task`'s pool.
    pub(crate) fn replaced(&self, own: Option<&Tally>) {
        match own {
            Some(tally) => tally.replaced_own(),
            None => self.outside.replaced_shared(),
        }
        #[cfg(feature = "metrics")]
        self.facade.replaced();
    }

    /// A resource was replaced by the lifecycle policy; `own` as for [`Self::replaced`].
    #[cold]
    pub(crate) fn recycled(&self, own: Option<&Tally>, reason: ReplaceReason) {
        let i = Tally::recycled_slot(reason);
        match own {
            Some(tally) => bump(&tally.recycled[i]),
            None => {
                self.outside.recycled[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        #[cfg(feature = "metrics")]
        self.facade.recycled(i);
    }

    /// Panics caught in user code so far.
    #[cfg(test)]
    pub(crate) fn user_panics(&self) -> u64 {
        self.user_panics.load(Ordering::Relaxed)
    }

    /// A task ran: its execution and queue-wait times (the histograms are the worker's own;
    /// this is for the facade).
    #[inline]
    pub(crate) fn timed(
        &self,
        #[allow(unused_variables)] exec_nanos: u64,
        #[allow(unused_variables)] wait_nanos: u64,
    ) {
        #[cfg(feature = "metrics")]
        self.facade.timed(exec_nanos, wait_nanos);
    }

    /// Sums the workers' state into a [`TaskMetrics`].
    pub(crate) fn snapshot<'a>(
        &self,
        workers: impl Iterator<Item = &'a WorkerMetrics>,
    ) -> TaskMetrics {
        let nanos = self.now();
        let tick = self.ticks.tick(nanos);
        let mut m = TaskMetrics::default();
        let mut exec = new_histogram();
        let mut wait = new_histogram();
        let (mut completions, mut failures, mut retries) = (0, 0, 0);
        let (mut arrived, mut arrivals) = (0, 0);
        let mut add_tally = |t: &Tally, m: &mut TaskMetrics| {
            // `panicked` before `failed`, with `Acquire`: see `Tally::panicked`.
            m.total_tasks_panicked += t.panicked.load(Ordering::Acquire);
            m.total_tasks_completed += t.completed.load(Ordering::Relaxed);
            m.total_tasks_failed += t.failed.load(Ordering::Relaxed);
            m.total_tasks_retried += t.retried.load(Ordering::Relaxed);
            m.total_resources_replaced += t.replaced.load(Ordering::Relaxed);
            m.resources_replaced_lifetime += t.recycled[0].load(Ordering::Relaxed);
            m.resources_replaced_uses += t.recycled[1].load(Ordering::Relaxed);
            m.resources_replaced_validation += t.recycled[2].load(Ordering::Relaxed);
            completions += t.completions.count(tick);
            failures += t.failures.count(tick);
            retries += t.retries.count(tick);
            arrived += t.arrived.load(Ordering::Relaxed);
            arrivals += t.arrivals.count(tick);
        };
        for w in workers {
            add_tally(&w.tally, &mut m);
            // Same bounds everywhere: `add` cannot fail.
            let _ = exec.add(&*w.published.exec.lock().unwrap_or_else(|e| e.into_inner()));
            let _ = wait.add(&*w.published.wait.lock().unwrap_or_else(|e| e.into_inner()));
        }
        add_tally(&self.outside, &mut m);
        m.total_user_panics = self.user_panics.load(Ordering::Relaxed);
        m.total_tasks_arrived = arrived
            + self
                .arrived
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .sum::<u64>();

        let ended = m.total_tasks_completed + m.total_tasks_failed;
        if ended > 0 {
            m.success_rate = m.total_tasks_completed as f64 / ended as f64;
            m.failure_rate = m.total_tasks_failed as f64 / ended as f64;
        }
        let arrivals = arrivals + self.arrivals.iter().map(|w| w.count(tick)).sum::<u64>();
        m.task_arrival_rate = window::rate(arrivals, &self.ticks, nanos);
        m.task_completion_rate = window::rate(completions, &self.ticks, nanos);
        m.task_failure_rate = window::rate(failures, &self.ticks, nanos);
        m.task_retry_rate = window::rate(retries, &self.ticks, nanos);
        m.rate_window = self.ticks.window();

        m.tasks_timed = exec.len();
        if !exec.is_empty() {
            m.average_execution_time = Duration::from_nanos(exec.mean() as u64);
            m.min_execution_time = Duration::from_nanos(exec.min());
            m.max_execution_time = Duration::from_nanos(exec.max());
            m.p50_execution_time = quantile(&exec, 0.50);
            m.p95_execution_time = quantile(&exec, 0.95);
            m.p99_execution_time = quantile(&exec, 0.99);
            m.p999_execution_time = quantile(&exec, 0.999);
        }
        if !wait.is_empty() {
            m.average_wait_time = Duration::from_nanos(wait.mean() as u64);
            m.p50_wait_time = quantile(&wait, 0.50);
            m.p99_wait_time = quantile(&wait, 0.99);
            m.p999_wait_time = quantile(&wait, 0.999);
            m.max_wait_time = Duration::from_nanos(wait.max());
        }
        m
    }
}

/// Rates over the metrics window, for the burst controller.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Load {
    /// Tasks accepted per second.
    pub(crate) arrival_rate: f64,
    /// Tasks ended (any outcome) by workers per second.
    pub(crate) ended_rate: f64,
    /// Nanoseconds of task execution per second, summed over workers.
    pub(crate) busy_rate: f64,
}

fn quantile(h: &Histogram<u64>, q: f64) -> Duration {
    Duration::from_nanos(h.value_at_quantile(q))
}

/// A point-in-time view of the manager's workers and queues. Cheap: a few atomic loads.
///
/// ```
/// use tasker::TaskManager;
///
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .worker_count(2)
///     .max_worker_count(2)
///     .resource_pool_size(0)
///     .build()?;
/// let stats = manager.stats();
/// assert_eq!(stats.base_workers, 2);
/// assert_eq!(stats.burst_workers, 0);
/// assert_eq!(stats.available_resources, 0);
/// println!("{} queued, {} pending", stats.queued_tasks, stats.pending_tasks);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Workers made at build (`worker_count`).
    pub base_workers: usize,
    /// Workers that hold a resource and take tasks.
    pub active_workers: usize,
    /// Burst slots up: activated by the controller and not parked (0 while bursting is off).
    pub burst_workers: usize,
    /// Burst slots parked (`max_workers - base_workers - burst_workers`).
    pub parked_workers: usize,
    /// Workers allowed at most (`max_worker_count`).
    pub max_workers: usize,
    /// Normal tasks waiting in a queue.
    pub queued_tasks: usize,
    /// Priority tasks (and retries) waiting in a queue.
    pub priority_tasks: usize,
    /// Accepted tasks without an outcome yet (queued, running or retrying).
    pub pending_tasks: usize,
    /// Idle resources in the `run_task` pool.
    pub available_resources: usize,
}

/// Totals, rates and latency percentiles since build.
///
/// Totals are exact. Execution time runs from a task's start to its end; for a task that
/// succeeded, the end is after its value was handed over (a callback's own run time included). Rates are per second over the sliding
/// window (`rate_window`, set with
/// [`Builder::metrics_window`](crate::Builder::metrics_window)), not since start. Latencies
/// cover tasks run by workers (not `run_task`), with 1% precision; each worker publishes its
/// latencies every few milliseconds and before it sleeps, so they trail the totals by at most
/// that much.
///
/// ```
/// # let manager = tasker::TaskManager::builder()
/// #     .on_create(|| Ok::<u64, std::io::Error>(0))
/// #     .worker_count(1)
/// #     .build()?;
/// for i in 0..10 {
///     let _ = manager.queue_task(move |_, _| if i < 9 { Ok(()) } else { Err(std::io::Error::other("x")) });
/// }
/// manager.stop()?; // every count is in once the workers are joined
/// let m = manager.metrics();
/// assert_eq!((m.total_tasks_completed, m.total_tasks_failed), (9, 1));
/// assert_eq!(m.success_rate, 0.9);
/// assert!(m.min_execution_time <= m.p50_execution_time);
/// assert!(m.p50_execution_time <= m.p99_execution_time);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskMetrics {
    /// Tasks accepted (queued, or `run_task` calls).
    pub total_tasks_arrived: u64,
    /// Tasks that ended `Ok`.
    pub total_tasks_completed: u64,
    /// Tasks that ended with any error (failed, panicked, killed, cancelled).
    pub total_tasks_failed: u64,
    /// Times a task was re-queued after an unhealthy error.
    pub total_tasks_retried: u64,
    /// Tasks that panicked (also counted in `total_tasks_failed`).
    pub total_tasks_panicked: u64,
    /// Resources destroyed and replaced after an unhealthy error or a panic.
    pub total_resources_replaced: u64,
    /// Healthy resources replaced before their next task because they reached
    /// [`resource_max_lifetime`](crate::Builder::resource_max_lifetime) (not counted in
    /// `total_resources_replaced`, which counts broken ones).
    pub resources_replaced_lifetime: u64,
    /// Healthy resources replaced because they reached
    /// [`resource_max_uses`](crate::Builder::resource_max_uses).
    pub resources_replaced_uses: u64,
    /// Resources replaced because [`validate`](crate::Builder::validate) rejected them after
    /// they sat idle.
    pub resources_replaced_validation: u64,
    /// Panics caught in user code other than task bodies: callbacks, `check_health`,
    /// `on_destroy`, the `Drop` of closures, values, errors, resources and panic payloads,
    /// the [`Logger`](crate::Logger) and the [`MetricsCollector`].
    /// Each was caught and (but for the logger's own) logged; none changed an outcome.
    pub total_user_panics: u64,
    /// `completed / (completed + failed)`, 0 before any task ended.
    pub success_rate: f64,
    /// `failed / (completed + failed)`, 0 before any task ended.
    pub failure_rate: f64,
    /// Accepted tasks per second over the window.
    pub task_arrival_rate: f64,
    /// Tasks ended `Ok` per second over the window.
    pub task_completion_rate: f64,
    /// Tasks ended with an error per second over the window.
    pub task_failure_rate: f64,
    /// Re-queues per second over the window.
    pub task_retry_rate: f64,
    /// The window the rates are measured over.
    pub rate_window: Duration,
    /// Task runs whose latencies are in the percentiles below.
    pub tasks_timed: u64,
    /// Mean time a task ran.
    pub average_execution_time: Duration,
    /// Shortest run.
    pub min_execution_time: Duration,
    /// Longest run.
    pub max_execution_time: Duration,
    /// Median run.
    pub p50_execution_time: Duration,
    /// 95th percentile run.
    pub p95_execution_time: Duration,
    /// 99th percentile run.
    pub p99_execution_time: Duration,
    /// 99.9th percentile run.
    pub p999_execution_time: Duration,
    /// Mean time from queued to started.
    pub average_wait_time: Duration,
    /// Median wait.
    pub p50_wait_time: Duration,
    /// 99th percentile wait.
    pub p99_wait_time: Duration,
    /// 99.9th percentile wait.
    pub p999_wait_time: Duration,
    /// Longest wait.
    pub max_wait_time: Duration,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// No two live threads hold the same owned arrival shard, a thread gives its owned shard
    /// back when it exits, and arrivals from more threads than there are owned shards (some
    /// sharing the rest) are all counted, then again by threads that reuse the shards.
    #[test]
    fn arrival_shards_are_owned_one_thread_at_a_time_and_count_every_arrival() {
        const THREADS: usize = 2 * OWNED_SHARDS + 4;
        const EACH: u64 = 20_000;
        let metrics = Arc::new(Metrics::new(Duration::from_secs(1), None, "t"));
        for round in 1..=2u64 {
            let barrier = Arc::new(std::sync::Barrier::new(THREADS));
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (metrics, barrier) = (metrics.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let at = metrics.now();
                        for _ in 0..EACH {
                            metrics.arrival(at, None);
                        }
                        let shard = thread_shard();
                        // Every thread holds its shard until all have counted.
                        barrier.wait();
                        shard
                    })
                })
                .collect();
            let mut owned: Vec<usize> = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&s| is_owned(s))
                .collect();
            let held = owned.len();
            // Round 2 gets owned shards only if round 1's threads gave theirs back (the other
            // tests' live threads hold a few at most).
            assert!(held > 0, "round {round}: no thread got an owned shard");
            owned.sort_unstable();
            owned.dedup();
            assert_eq!(owned.len(), held, "an owned shard held by two live threads");
            let arrived = metrics.snapshot(std::iter::empty()).total_tasks_arrived;
            assert_eq!(arrived, round * THREADS as u64 * EACH);
        }
    }

    /// A snapshot taken while a worker records panics never shows more panicked tasks than
    /// failed ones: every panicked task is also a failed one, and a reader must not see the
    /// first count move without the second.
    #[test]
    fn a_snapshot_never_shows_more_panicked_than_failed() {
        let metrics = Arc::new(Metrics::new(Duration::from_secs(1), None, "t"));
        let worker = Arc::new(WorkerMetrics::default());
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (metrics, worker, done) = (metrics.clone(), worker.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    let at = metrics.now();
                    metrics.worker_ended(&worker.tally, Ended::Panicked, at);
                    metrics.outside_ended(Ended::Panicked, at);
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            })
        };
        let mut snapshots = 0u64;
        while !done.load(std::sync::atomic::Ordering::Acquire) || snapshots == 0 {
            let m = metrics.snapshot(std::iter::once(&*worker));
            assert!(
                m.total_tasks_panicked <= m.total_tasks_failed,
                "snapshot {snapshots}: panicked {} > failed {}",
                m.total_tasks_panicked,
                m.total_tasks_failed
            );
            snapshots += 1;
        }
        writer.join().unwrap();
        let m = metrics.snapshot(std::iter::once(&*worker));
        assert_eq!(
            (m.total_tasks_panicked, m.total_tasks_failed),
            (400_000, 400_000)
        );
    }
}
