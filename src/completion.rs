//! How an outcome reaches its submitter: a one-shot completion slot behind [`TaskHandle`] (and
//! the blocking deliveries), or a callback.
//!
//! # The slot protocol
//!
//! A [`Slot`] is shared by the task cell in the queue (the *producer*) and the [`TaskHandle`]
//! (the *consumer*), the cell's two owners (`cells::Shared`). Its `state` word moves through:
//!
//! ```text
//!            claim (worker takes the task)          fill (outcome written)
//!  PENDING ──────────────────────────────> CLAIMED ─────────────────────────> READY ──> TAKEN
//!     │                                                                        (consumer)
//!     └── cancel (consumer) ──> CANCELLED ──> TAKEN (consumer reads `Cancelled`)
//! ```
//!
//! Who may touch what:
//! - Only the producer moves `PENDING -> CLAIMED` and `CLAIMED -> READY`; only the consumer
//!   moves `PENDING -> CANCELLED` and `READY | CANCELLED -> TAKEN`. The two racing transitions
//!   out of `PENDING` are compare-and-swaps, so exactly one wins: a task is either cancelled
//!   (and never runs) or claimed (and the cancel returns `false`).
//! - `value` is written by the producer only while it holds `CLAIMED`, and read by the consumer
//!   only after it loaded `READY` with `Acquire`, which pairs with the producer's `Release`
//!   store of `READY`. So the two never touch `value` at the same time.
//! - After writing `READY` the producer calls `waker.wake()`. The consumer registers its waker
//!   *before* re-checking `state`; `AtomicWaker` guarantees that a wake racing a register is
//!   not lost (either the wake sees the new waker, or the re-check sees `READY`).
//! - `parked` is written only by the consumer (a blocking wait, before it registers its
//!   waker) and read only by the producer (after its `wake`); it decides nothing about the
//!   outcome (see below).
//!
//! # A blocking wait, and how its caller gets a CPU back
//!
//! [`TaskHandle::wait`] (and every blocking `queue_task*`, which waits on a handle):
//! 1. *Spin*: poll the slot with `spin_loop` hints, up to ~4 µs (an idle round trip is
//!    ~0.3 µs; a futex sleep and wake costs 4–47 µs, DESIGN.md §5), except:
//!    - (1a) a blocking submission's push wakes no worker (`TaskManager::enqueue`): a worker
//!      that is searching takes the task within a few hundred nanoseconds, and the wake-up
//!      syscall (which on this machine costs the caller several microseconds when it must
//!      bring a halted CPU back) would only delay the caller's own wait. The caller owes
//!      that wake-up: after ~0.5 µs with its task still queued it calls `notify_one`, and
//!      at the latest before it parks. Once the task is taken it owes nothing: a wake-up is
//!      for the task it follows, and no other task's relies on it (`scheduler::sleep`). The
//!      loom model `submit_racing_a_sleeping_worker_is_run` submits this way.
//!    - (1b) when after ~1 µs the task is still queued, and other tasks are queued too, every
//!      worker is busy: park now. Never `yield_now`, never spin on: on a machine whose cores
//!      are all held by pinned busy workers, a yield hands the caller's CPU to the worker
//!      there, and the kernel (EEVDF) gives it back only when that worker's slice ends,
//!      milliseconds later; a longer spin takes a CPU from a worker and makes the caller use
//!      up its fair share, so it waits for a slice later instead. A blocking submission looks
//!      at the queues then (only then: the look reads lines the workers write, ~0.1 µs of an
//!      idle round trip); a handle does not know its manager's queues and parks.
//!    - (1c) after the full spin, a blocking submission yields a few times before it parks, as
//!      a worker's search does.
//! 2. *Park*: set `parked`, then register the thread's waker, re-check, park (the
//!    re-check and the wake-up are the slot protocol's above).
//! 3. The worker's fill: `READY`, `waker.wake()`, then it swaps `parked` to `false`: `true`
//!    means it just woke a parked caller, and the fill counts it in the process-wide
//!    [`WAITERS`]: it bumps the `woken` epoch and adds one to `runnable` (woken, not yet
//!    running).
//! 4. Every worker reads both between two tasks (one line, written only at such a wake-up and
//!    its step 5, never per task) and yields its CPU when the epoch moved, and again at
//!    every look while `runnable` is above zero ([`WokenWaiters::yield_if_woken`]). The
//!    woken caller is queued on one of the CPUs; the worker pinned there yields to it right
//!    after its current task, instead of running on to the end of its slice. A yield on a
//!    CPU where nobody waits returns at once.
//! 5. The wait, once it runs again with its outcome (or at its deadline), swaps `parked` to
//!    `false` too: exactly one of the two swaps finds `true`, so a wait is uncounted exactly
//!    when the fill counted it. One yield per wake-up was not enough: the wake-up of a caller
//!    queued on the *other* CPU reaches that CPU's scheduler a few microseconds later (an
//!    interrupt between vCPUs), and when that worker's task ended first, it yielded to nobody
//!    and ran a whole next task before the caller got the CPU.
//!
//! Why the fill sees `parked` when it matters: if the caller blocks in step 2's park, its
//! re-check found no outcome, so (by `AtomicWaker`'s guarantee) the fill's `wake` read the
//! waker the caller's `register` published, with `AcqRel` on the waker's word; the caller's
//! `parked = true` is sequenced before that `register`, so it happens before the fill's swap
//! of `parked`. A `parked` seen by a fill whose caller never blocked costs a few spare yields
//! until that caller's step 5. Either way `parked` is a hint for the CPU, never for the
//! outcome: the wake-up itself is the slot protocol's, unchanged. A future (`.await`) never
//! sets it. `runnable` cannot leak: every wait that set `parked` ends in step 5 (both of its
//! returns go through it), and it is the only other writer of `parked`.
//!
//! Measured (`benches/priority.rs`, group `priority_blocking`: a blocking priority call
//! behind 20,000 queued 20 µs tasks on 2 pinned workers; full runs of ~133k calls on this
//! 2-core machine while other sessions' builds ran, load average 5-15). Submit to answer,
//! p50 / p99 / p99.9. Before (a ~4 µs spin, then 4 yields, then park): 4-8 ms / 12-64 ms /
//! 14-324 ms. Steps 1-2 alone (a 1 µs spin without yields, then park): 5.3 µs / 41 µs / 3.9
//! ms: the parked caller still waits now and then for a busy worker's slice to end. All four
//! steps: 3.9-5.3 µs / 43-53 µs / 70-235 µs, for `wait()` on a handle alike. Longer spins
//! behind the backlog were worse: 4 µs 8.5 µs / 49 µs / 3.9 ms; 10 µs 13 µs / 52-96 µs;
//! 100 µs 14 µs / 0.9-2.2 ms. The idle round trip (`benches/latency.rs`, `latency_runs`)
//! kept its figures (15 runs each, alternated, medians: p50 1.28 µs / p99 8.6 µs against
//! 1.27 / 9.1 µs before, on the same loaded machine); looking at the queues at every blocking
//! submission instead of only at step 1b cost it ~0.1 µs.
//!
//! Step 4 yielding until the woken caller has run (steps 3-5), against one yield per
//! wake-up: 7 runs of `BENCH_ROUNDS=3` each (3 of them of this code, 4 of a first version
//! that counted in the worker instead of the fill), alternated with the one-yield code, on
//! an otherwise idle machine. p99 of blocking `queue_task_with_priority` 43.4-49.7 µs
//! (median 46.7) against 46.5-54.2 (median 51.3); of `wait()` on a handle 39.4-48.6 (median
//! 46.9) against 45.2-54.1 (median 52.1): at or under 50 µs in 14 of 14 figures, against 4
//! of 14. p50 3.4-5.1 µs against 3.8-5.4. The idle round trip and fire-and-forget kept their
//! figures (no blocking wait parks there, and the second count shares the epoch's line).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::cells::Shared;
use crate::error::TaskError;
use crate::observe::{Observer, Site};
use crate::sync::thread::{self, Thread};
use crate::sync::{
    AtomicBool, AtomicU32, AtomicWaker, Ordering, StdArc, StdAtomicIsize, StdAtomicUsize,
    UnsafeCell,
};
use crate::unwind::{self, PanicMessage};

/// A blocking wait polls its slot with this many `spin_loop` hints in between (one poll reads
/// one word the worker writes once): the outcome is seen within ~60 ns of its arrival while
/// the wait spins (see [`Backoff`](crate::sync::Backoff) for what a hint costs).
const WAIT_PAUSES: u32 = 2;
/// `spin_loop` hints after which a blocking submission whose task is still queued wakes a
/// worker (~0.5 µs; step 1a in the module docs).
const WAIT_SPIN_UNTAKEN: u32 = 16;
/// `spin_loop` hints after which a wait whose task is still queued behind busy workers parks
/// (~1 µs; step 1b in the module docs).
const WAIT_SPIN_QUEUED: u32 = 32;
/// `spin_loop` hints a blocking wait spends before it parks (or yields first, step 1c): ~4
/// µs, a worker's own search budget (`sync::SPIN_BUDGET`).
const WAIT_SPIN: u32 = 128;
/// `yield_now` calls of step 1c, as a worker's search makes (`sync::YIELDS`).
const WAIT_YIELDS: u32 = 4;

const PENDING: u32 = 0;
const CLAIMED: u32 = 1;
const CANCELLED: u32 = 2;
const READY: u32 = 3;
const TAKEN: u32 = 4;

/// What [`Slot::claim`] found.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The producer holds the slot: it may run the task and must fill the slot.
    Held,
    /// The consumer cancelled first: the task must not run.
    Cancelled,
}

/// A one-shot outcome slot shared by a task cell and its handle.
pub(crate) struct Slot<T, E> {
    state: AtomicU32,
    value: UnsafeCell<Option<Result<T, TaskError<E>>>>,
    waker: AtomicWaker,
    /// Set by a blocking wait before it parks (after its spin): the fill that wakes it tells
    /// its worker so (see "A parked waiter gets its CPU back" in the module docs).
    parked: AtomicBool,
}

// SAFETY: (1) `value` is only accessed under the state protocol above, which gives the producer
// and the consumer exclusive access in turn, with Release/Acquire ordering between the turns;
// (2) the value is moved between threads, so `T` and `E` must be `Send`. No `&T` is ever shared,
// so `Sync` does not need `T: Sync`.
unsafe impl<T: Send, E: Send> Sync for Slot<T, E> {}
// SAFETY: owning a slot means owning at most one `Result<T, TaskError<E>>`; it is `Send` when
// they are.
unsafe impl<T: Send, E: Send> Send for Slot<T, E> {}

impl<T, E> Slot<T, E> {
    pub(crate) fn new() -> Self {
        Slot {
            state: AtomicU32::new(PENDING),
            value: UnsafeCell::new(None),
            waker: AtomicWaker::new(),
            parked: AtomicBool::new(false),
        }
    }

    /// Producer: takes the slot before running the task. Idempotent for the producer (a retried
    /// task claims again and finds `CLAIMED`, which only it can have set).
    pub(crate) fn claim(&self) -> Claim {
        match self
            .state
            .compare_exchange(PENDING, CLAIMED, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) | Err(CLAIMED) => Claim::Held,
            Err(_) => Claim::Cancelled,
        }
    }

    /// Producer: publishes the outcome. Does nothing if the consumer cancelled first. True
    /// when a blocking wait was parked (or about to park) on the slot: it was just woken, and
    /// is counted as such until it runs (step 3 in the module docs).
    pub(crate) fn fill(&self, outcome: Result<T, TaskError<E>>) -> bool {
        if self.claim() == Claim::Cancelled {
            return false;
        }
        self.value.with_mut(|value| {
            // SAFETY: the state is CLAIMED and only this producer could have set it; the
            // consumer does not read `value` before it sees READY, which is stored below
            // (Release).
            unsafe { *value = Some(outcome) }
        });
        self.state.store(READY, Ordering::Release);
        self.waker.wake();
        // Exactly one of this swap and the wait's own (`Slot::resumed`) finds `true`: the
        // woken wait is counted here and uncounted there, once each.
        let woke = self.parked.swap(false, Ordering::Relaxed);
        if woke {
            WokenWaiters::woke_one();
        }
        woke
    }

    /// Consumer, step 5: a wait that set `parked` ends (with an outcome, or at its
    /// deadline). If the fill's swap found `parked` first, the fill counted this wait as woken
    /// and not yet running; it runs now, and uncounts itself.
    fn resumed(&self) {
        if !self.parked.swap(false, Ordering::Relaxed) {
            WokenWaiters::resumed();
        }
    }

    /// Consumer: `PENDING -> CANCELLED`. True when the task had not started and now never will.
    pub(crate) fn cancel(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Consumer: the task has not started (nor been cancelled).
    fn is_queued(&self) -> bool {
        self.state.load(Ordering::Relaxed) == PENDING
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(
            self.state.load(Ordering::Acquire),
            CANCELLED | READY | TAKEN
        )
    }

    /// Consumer: the outcome, if there is one. `Some` at most once.
    ///
    /// # Panics
    /// If the outcome was already taken (a future polled after it completed).
    fn try_take(&self) -> Option<Result<T, TaskError<E>>> {
        match self.state.load(Ordering::Acquire) {
            READY => {
                self.state.store(TAKEN, Ordering::Relaxed);
                let value = self.value.with_mut(|value| {
                    // SAFETY: READY was loaded with Acquire, pairing with the producer's
                    // Release store after its write; the producer never touches `value`
                    // again, and this consumer is the only one (`TaskHandle` is not `Clone`).
                    unsafe { (*value).take() }
                });
                Some(value.expect("a READY slot holds an outcome"))
            }
            CANCELLED => {
                self.state.store(TAKEN, Ordering::Relaxed);
                Some(Err(TaskError::Cancelled))
            }
            TAKEN => panic!("TaskHandle polled after it completed"),
            _ => None,
        }
    }
}

/// Step 4's two counts, on one line (a worker reads both between two tasks). Process-wide:
/// the CPU a woken caller needs may be held by another manager's worker. Std atomics in every
/// build: they order nothing (hints to yield), so loom need not interleave them.
struct Waiters {
    /// Bumped each time a fill woke a parked blocking wait.
    woken: StdAtomicUsize,
    /// Blocking waits woken by a fill that have not run since: +1 by the fill that woke one,
    /// -1 by the wait once it runs again ([`Slot::resumed`]). May dip below zero for a moment:
    /// the fill counts after its wake-up, so the wait can run first.
    runnable: StdAtomicIsize,
}

static WAITERS: CachePadded<Waiters> = CachePadded::new(Waiters {
    woken: StdAtomicUsize::new(0),
    runnable: StdAtomicIsize::new(0),
});

/// [`WAITERS`] as it is (`woken`, `runnable`), for the loom models: each of their executions
/// runs alone in its process, so a model can check that the counts it moved are balanced.
#[cfg(loom)]
pub(crate) fn waiter_counts() -> (usize, isize) {
    (
        WAITERS.woken.load(Ordering::Relaxed),
        WAITERS.runnable.load(Ordering::Relaxed),
    )
}

/// A worker's view of [`WAITERS`]: the `woken` epoch it last answered.
pub(crate) struct WokenWaiters {
    seen: usize,
}

impl WokenWaiters {
    pub(crate) fn new() -> Self {
        WokenWaiters {
            seen: WAITERS.woken.load(Ordering::Relaxed),
        }
    }

    /// Step 3: a fill just woke a parked blocking wait.
    #[cold]
    fn woke_one() {
        WAITERS.woken.fetch_add(1, Ordering::Relaxed);
        WAITERS.runnable.fetch_add(1, Ordering::Relaxed);
    }

    /// Step 5: a wait counted by [`Self::woke_one`] runs again.
    #[cold]
    fn resumed() {
        WAITERS.runnable.fetch_sub(1, Ordering::Relaxed);
    }

    /// Step 4, between two tasks: yields the CPU if a parked wait was woken since the last
    /// look, and again at every look while a woken wait has not run yet (the woken caller may
    /// be queued on this CPU). True when it yielded.
    #[inline]
    pub(crate) fn yield_if_woken(&mut self) -> bool {
        let now = WAITERS.woken.load(Ordering::Relaxed);
        if now == self.seen && WAITERS.runnable.load(Ordering::Relaxed) <= 0 {
            return false;
        }
        self.seen = now;
        yield_cpu();
        true
    }
}

/// Under loom a yield is no courtesy to anyone: no-op.
#[inline]
fn yield_cpu() {
    #[cfg(not(loom))]
    thread::yield_now();
}

/// Wakes a thread blocked in [`TaskHandle::wait`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: StdArc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.unpark();
    }
}

crate::sync::thread_local! {
    /// One waker per thread, made the first time the thread blocks on a handle.
    static THREAD_WAKER: Waker = Waker::from(StdArc::new(ThreadWaker(thread::current())));
}

/// The receiving end of a task submitted with one of the `*_async` methods.
///
/// Wait for it with [`wait`](Self::wait) or [`wait_timeout`](Self::wait_timeout), or `.await` it
/// on any executor. Dropping a handle does not cancel the task; [`cancel`](Self::cancel) does,
/// if the task has not started.
///
/// ```
/// # use tasker::TaskManager;
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<u64, std::io::Error>(0))
///     .worker_count(1)
///     .build()?;
/// let handle = manager.queue_task_async(|n, _ctx| {
///     *n += 1;
///     Ok(*n)
/// });
/// assert_eq!(handle.wait().unwrap(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a handle does nothing unless waited on; dropping it does not cancel the task"]
pub struct TaskHandle<T, E> {
    /// The slot, inside the cell it shares with its task (a [`TaskCell`](crate::task) whose
    /// port is a [`Slot`]); the handle is one of the cell's two owners.
    cell: Shared<dyn AsSlot<T, E>>,
}

/// Gives the handle its slot, wherever the slot lives, and its cancel.
pub(crate) trait AsSlot<T, E>: Send + Sync {
    fn slot(&self) -> &Slot<T, E>;
    /// `PENDING -> CANCELLED`, then lets go of what the task held (its closure, its queue
    /// place). True when the task had not started and now never will.
    fn cancel(&self) -> bool;
    /// The manager the task was submitted to (`Shared::id`), 0 if none.
    fn owner(&self) -> usize;
}

impl<T: Send, E: Send> AsSlot<T, E> for Slot<T, E> {
    fn slot(&self) -> &Slot<T, E> {
        self
    }

    fn cancel(&self) -> bool {
        Slot::cancel(self)
    }

    fn owner(&self) -> usize {
        0
    }
}

impl<T, E> TaskHandle<T, E> {
    pub(crate) fn new(cell: Shared<dyn AsSlot<T, E>>) -> Self {
        TaskHandle { cell }
    }

    #[inline]
    fn slot(&self) -> &Slot<T, E> {
        self.cell.slot()
    }

    /// True once the task has an outcome (done, failed, refused or cancelled).
    ///
    /// ```
    /// # use std::sync::mpsc;
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(1)
    ///     .build()?;
    /// // Hold the only worker, so what is queued next waits.
    /// let (started_tx, started_rx) = mpsc::channel();
    /// let (release_tx, release_rx) = mpsc::channel::<()>();
    /// let busy = manager.queue_task_async(move |_, _| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap();
    ///     Ok(0)
    /// });
    /// started_rx.recv()?;
    /// let queued = manager.queue_task_async(|_, _| Ok(1));
    /// assert!(!queued.is_finished());
    /// release_tx.send(())?;
    /// assert_eq!(busy.wait()?, 0);
    /// assert_eq!(queued.wait()?, 1); // `wait` after `is_finished` is true returns at once
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_finished(&self) -> bool {
        self.slot().is_finished()
    }

    /// Cancels the task if it has not started. Returns `true` when it had not started and now
    /// never will (its outcome is then [`TaskError::Cancelled`]); `false` when it already ran,
    /// is running, or already has an outcome.
    ///
    /// A successful cancel lets go of the task at once: its closure is dropped here, on this
    /// thread, and its place in a bounded queue is free for the next submission. A panic in
    /// that `Drop` is caught (the cancel stands) and reported through the `tracing` facade
    /// (target `tasker`): a handle does not reach its manager's [`Logger`](crate::Logger) or
    /// counters.
    ///
    /// ```
    /// # use std::sync::mpsc;
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(1)
    ///     .build()?;
    /// // Hold the only worker, so what is queued next waits.
    /// let (started_tx, started_rx) = mpsc::channel();
    /// let (release_tx, release_rx) = mpsc::channel::<()>();
    /// let busy = manager.queue_task_async(move |_, _| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap();
    ///     Ok(0)
    /// });
    /// started_rx.recv()?;
    /// use tasker::TaskError;
    ///
    /// let queued = manager.queue_task_async(|_, _| Ok(1));
    /// assert!(queued.cancel()); // it had not started: now it never will
    /// assert!(matches!(queued.wait(), Err(TaskError::Cancelled)));
    /// release_tx.send(())?;
    /// assert!(!busy.cancel()); // it had started
    /// assert_eq!(busy.wait()?, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.cell.cancel()
    }

    /// Blocks until the task has an outcome.
    ///
    /// Spins briefly, then parks the thread.
    ///
    /// On a worker of the manager the task was submitted to (inside one of its tasks), a wait
    /// for a task that has not started could wait for itself: every worker may be waiting on
    /// a task only a worker can run. So there the task, if it has not started, is cancelled
    /// and the wait answers [`TaskError::WouldDeadlock`] at once; a task already running
    /// elsewhere (or finished) is waited for as usual. [`wait_timeout`](Self::wait_timeout)
    /// does the same; `.await` and [`is_finished`](Self::is_finished) are unaffected. Inside
    /// tasks, prefer a callback.
    ///
    /// ```
    /// use tasker::{TaskError, TaskManager};
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .build()?;
    /// assert_eq!(manager.queue_task_async(|_, _| Ok(2)).wait()?, 2);
    ///
    /// // Inside a task of the same (one-worker) manager, the inner task could never start.
    /// let inner = manager.clone();
    /// let answer = manager.queue_task(move |_, _| {
    ///     Ok(inner.queue_task_async(|_, _| Ok(1)).wait())
    /// })?;
    /// assert!(matches!(answer, Err(TaskError::WouldDeadlock)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(self) -> Result<T, TaskError<E>> {
        match self.wait_until(None, None) {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("a wait without deadline returns an outcome"),
        }
    }

    /// Blocks until the task has an outcome or `timeout` passes. On timeout the handle is given
    /// back, still live, so the caller can wait again, cancel, or drop it.
    ///
    /// ```
    /// # use std::sync::mpsc;
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .max_worker_count(1)
    ///     .build()?;
    /// // Hold the only worker, so what is queued next waits.
    /// let (started_tx, started_rx) = mpsc::channel();
    /// let (release_tx, release_rx) = mpsc::channel::<()>();
    /// let busy = manager.queue_task_async(move |_, _| {
    ///     started_tx.send(()).unwrap();
    ///     release_rx.recv().unwrap();
    ///     Ok(0)
    /// });
    /// started_rx.recv()?;
    /// use std::time::Duration;
    ///
    /// let queued = manager.queue_task_async(|_, _| Ok(1));
    /// // Not done within 10 ms: the handle comes back.
    /// let queued = queued.wait_timeout(Duration::from_millis(10)).unwrap_err();
    /// release_tx.send(())?;
    /// busy.wait()?;
    /// assert_eq!(queued.wait_timeout(Duration::from_secs(60)).ok().map(Result::ok), Some(Some(1)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, TaskError<E>>, Self> {
        // A timeout too large for `Instant` means "no deadline".
        self.wait_until(Instant::now().checked_add(timeout), None)
    }

    /// A blocking submission's wait (`submit`): `submitted` looks at its manager's queues and
    /// wakes its workers; `owes_wake`: its push woke nobody yet (steps 1a and 1b in the
    /// module docs).
    pub(crate) fn wait_for_submitted(
        self,
        submitted: &dyn Submitted,
        owes_wake: bool,
    ) -> Result<T, TaskError<E>> {
        let submitted = Submission {
            manager: submitted,
            owes_wake: std::cell::Cell::new(owes_wake),
        };
        match self.wait_until(None, Some(&submitted)) {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("a wait without deadline returns an outcome"),
        }
    }

    fn wait_until(
        self,
        deadline: Option<Instant>,
        submitted: Option<&Submission<'_>>,
    ) -> Result<Result<T, TaskError<E>>, Self> {
        let owner = self.cell.owner();
        if owner != 0 && crate::shared::current_manager() == owner && self.cell.cancel() {
            return Ok(Err(TaskError::WouldDeadlock));
        }
        // Step 1.
        if let Some(outcome) = self.spin(submitted) {
            return Ok(outcome);
        }
        // Step 1a, at the latest: a parked caller cannot pay it.
        if let Some(submitted) = submitted {
            submitted.pay_wake(self.slot());
        }
        // Step 2: say so before registering (the order the hint relies on, see module docs).
        // A swap, not a store: the two swaps of steps 3 and 5 must each read the latest value,
        // and loom lets a plain store slip between the read and the write of a racing RMW
        // (tokio-rs/loom#254); the flag is written once per parked wait. `Release`: a thread
        // that reads it set with `Acquire` (the tests' helpers) sees what the wait did before
        // (its step 1a payment); on x86-64 the swap is a full barrier either way.
        let _ = self.slot().parked.swap(true, Ordering::Release);
        THREAD_WAKER.with(|waker| self.slot().waker.register(waker));
        loop {
            // Registered before this check: a fill after it wakes us (see module docs).
            if let Some(outcome) = self.slot().try_take() {
                self.slot().resumed();
                return Ok(outcome);
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.slot().resumed();
                        return Err(self);
                    }
                    thread::park_timeout(deadline - now);
                }
            }
        }
    }

    /// Step 1 of a blocking wait: polls the slot, `WAIT_PAUSES` `spin_loop` hints apart. The
    /// outcome, if it came. `submitted`: a blocking submission's manager (`None` for a
    /// handle). Under loom a spin only multiplies interleavings: straight to the blocking
    /// path.
    fn spin(&self, submitted: Option<&Submission<'_>>) -> Option<Result<T, TaskError<E>>> {
        if cfg!(loom) {
            return None;
        }
        let slot = self.slot();
        let mut spent = 0;
        loop {
            if let Some(outcome) = slot.try_take() {
                return Some(outcome);
            }
            // Step 1a: still queued after ~0.5 µs: nobody was searching, wake a worker.
            if spent == WAIT_SPIN_UNTAKEN
                && let Some(submitted) = submitted
            {
                submitted.pay_wake(slot);
            }
            // Step 1b: still queued after ~1 µs, behind busy workers: park.
            if spent == WAIT_SPIN_QUEUED
                && slot.is_queued()
                && submitted.is_none_or(|s| s.manager.backlog())
            {
                return None;
            }
            if spent >= WAIT_SPIN {
                break;
            }
            for _ in 0..WAIT_PAUSES {
                std::hint::spin_loop();
            }
            spent += WAIT_PAUSES;
        }
        // Step 1c: a blocking submission on a pool that was not busy gives its CPU away a few
        // times before it parks, as a worker's search does (see `sync::Backoff`).
        if submitted.is_some() {
            for _ in 0..WAIT_YIELDS {
                thread::yield_now();
                if let Some(outcome) = slot.try_take() {
                    return Some(outcome);
                }
            }
        }
        None
    }
}

/// What a blocking submission's wait asks of its manager (`submit`; steps 1a and 1b in the
/// module docs).
pub(crate) trait Submitted {
    /// Wakes a worker if one is needed (`Sleep::notify_one`): the wake-up the submission's
    /// push skipped.
    fn wake(&self);
    /// `true` when other tasks are queued besides this one (the workers are busy).
    fn backlog(&self) -> bool;
}

/// A blocking submission being waited for: its manager, and whether the wake-up of step 1a
/// is still owed.
struct Submission<'a> {
    manager: &'a dyn Submitted,
    owes_wake: std::cell::Cell<bool>,
}

impl Submission<'_> {
    /// Step 1a: pays the owed wake-up if the task is still queued (once taken, the task
    /// needs no wake-up, and no other task relies on this one's: see `scheduler::sleep`).
    fn pay_wake<T, E>(&self, slot: &Slot<T, E>) {
        if self.owes_wake.replace(false) && slot.is_queued() {
            self.manager.wake();
        }
    }
}

impl<T, E> Future for TaskHandle<T, E> {
    type Output = Result<T, TaskError<E>>;

    /// # Panics
    /// If polled again after it returned `Ready` (as most futures do).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(outcome) = self.slot().try_take() {
            return Poll::Ready(outcome);
        }
        self.slot().waker.register(cx.waker());
        match self.slot().try_take() {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl<T, E> fmt::Debug for TaskHandle<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Panics caught in user code while a task's outcome was handed over or the task was let
/// go: a callback, or the `Drop` of a closure, of a value nobody will read, of an error. Each
/// with where it happened. They never change the outcome; the worker reports each one
/// ([`Observer::caught`]), which logs and counts it. No allocation unless something panicked.
///
/// One pointer (`None` when nothing panicked), so that it, and the `Result` a task's run
/// returns it in, travel in registers: as a 24-byte `Vec` it went through memory on every
/// task, and the worker's next load of it waited for the stores.
#[must_use = "caught panics must be reported"]
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // one word, not three: the second allocation is on a panic only
pub(crate) struct Caught(Option<Box<Vec<(Site, PanicMessage)>>>);

impl Caught {
    /// Nothing panicked.
    #[inline]
    pub(crate) fn nothing() -> Self {
        Caught(None)
    }

    /// Keeps `result`'s panic, if any, with its site.
    #[inline]
    pub(crate) fn add(&mut self, site: Site, result: Result<(), PanicMessage>) {
        if let Err(message) = result {
            self.0.get_or_insert_default().push((site, message));
        }
    }

    /// These and `other`'s.
    #[inline]
    pub(crate) fn and(self, other: Caught) -> Caught {
        match (self.0, other.0) {
            (Some(mut these), Some(others)) => {
                these.extend(*others);
                Caught(Some(these))
            }
            (these, None) => Caught(these),
            (None, others) => Caught(others),
        }
    }

    /// True when nothing panicked.
    #[cfg(any(test, loom))]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|these| these.is_empty())
    }

    /// Reports each to `observer`.
    #[inline]
    pub(crate) fn report(self, observer: &Observer<'_>) {
        for (site, message) in self.0.into_iter().flat_map(|these| *these) {
            observer.caught(site, Err(message));
        }
    }
}

/// What handing over an outcome ended with: the panics caught on the way.
pub(crate) type Delivered = Caught;

/// A user callback. Its panics are caught and reported (to be logged): they never take a
/// worker down.
pub(crate) struct Callback<C>(pub(crate) C);

impl<C> Callback<C> {
    /// Hands over the outcome (the callback runs on this thread).
    pub(crate) fn deliver<T, E>(self, outcome: Result<T, TaskError<E>>) -> Delivered
    where
        C: FnOnce(Result<T, TaskError<E>>),
    {
        let cb = self.0;
        let mut caught = Caught::nothing();
        caught.add(Site::Callback, unwind::catch(|| cb(outcome)));
        caught
    }
}

/// Where a task cell's outcome goes, kept inside the cell: a handle's [`Slot`], or a
/// callback.
pub(crate) trait Port<T, E>: Send + Sync {
    fn claim(&self) -> Claim;
    /// Hands over the outcome, unless one was already handed over.
    fn deliver(&self, outcome: Result<T, TaskError<E>>) -> Delivered;
}

impl<T: Send, E: Send> Port<T, E> for Slot<T, E> {
    #[inline]
    fn claim(&self) -> Claim {
        Slot::claim(self)
    }
    #[inline]
    fn deliver(&self, outcome: Result<T, TaskError<E>>) -> Delivered {
        if self.is_finished() {
            // Cancelled: nobody will read this outcome, and dropping it is user code.
            let mut caught = Caught::nothing();
            caught.add(
                Site::Drop("an outcome nobody reads"),
                unwind::drop_quietly(outcome),
            );
            caught
        } else {
            // A parked wait woken here is counted by the fill (step 3 in the module docs).
            self.fill(outcome);
            Caught::nothing()
        }
    }
}

/// A callback, taken when the outcome is handed over.
pub(crate) struct CallbackPort<C>(UnsafeCell<Option<Callback<C>>>);

impl<C> CallbackPort<C> {
    pub(crate) fn new(cb: C) -> Self {
        CallbackPort(UnsafeCell::new(Some(Callback(cb))))
    }
}

// SAFETY: (1) the callback is touched only by the holder of the cell's unique `JobRef` (see
// `task`'s module docs), one thread at a time; (2) it is moved to that thread, so `C: Send` suffices.
unsafe impl<C: Send> Sync for CallbackPort<C> {}

impl<T, E, C> Port<T, E> for CallbackPort<C>
where
    C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
{
    #[inline]
    fn claim(&self) -> Claim {
        Claim::Held
    }
    #[inline]
    fn deliver(&self, outcome: Result<T, TaskError<E>>) -> Delivered {
        let cb = self.0.with_mut(|cb| {
            // SAFETY: only the `JobRef` holder calls `deliver` (`task`'s module docs):
            // exclusive access.
            unsafe { (*cb).take() }
        });
        match cb {
            Some(cb) => cb.deliver(outcome),
            None => {
                let mut caught = Caught::nothing();
                caught.add(
                    Site::Drop("an outcome nobody reads"),
                    unwind::drop_quietly(outcome),
                );
                caught
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cells::unsize;

    /// A handle on a bare slot, and the slot for the test to fill (its two owners).
    fn handle_and_slot<T: Send + 'static, E: Send + 'static>()
    -> (TaskHandle<T, E>, Shared<Slot<T, E>>) {
        let (handle, slot) = Shared::pair(Slot::new());
        (
            TaskHandle::new(unsize!(Shared, handle => dyn AsSlot<T, E>)),
            slot,
        )
    }

    #[test]
    fn caught_panics_are_kept_in_order_when_joined() {
        let one = |site, text: &str| {
            let mut c = Caught::nothing();
            c.add(site, Err(text.to_owned()));
            c
        };
        let sites = |c: Caught| c.0.map(|these| *these).unwrap_or_default();
        assert!(Caught::nothing().and(Caught::nothing()).is_empty());
        assert_eq!(
            sites(Caught::nothing().and(one(Site::Callback, "cb"))),
            [(Site::Callback, "cb".to_owned())]
        );
        assert_eq!(
            sites(one(Site::OnDestroy, "d").and(Caught::nothing())),
            [(Site::OnDestroy, "d".to_owned())]
        );
        assert_eq!(
            sites(one(Site::Callback, "cb").and(one(Site::Drop("a value"), "v"))),
            [
                (Site::Callback, "cb".to_owned()),
                (Site::Drop("a value"), "v".to_owned())
            ]
        );
    }

    #[test]
    fn fill_then_take() {
        let slot: Slot<u32, ()> = Slot::new();
        assert_eq!(slot.claim(), Claim::Held);
        assert!(!slot.cancel(), "a claimed slot cannot be cancelled");
        slot.fill(Ok(7));
        assert!(slot.is_finished());
        assert_eq!(slot.try_take(), Some(Ok(7)));
    }

    #[test]
    fn cancel_wins_over_a_later_claim_and_fill() {
        let slot: Slot<u32, ()> = Slot::new();
        assert!(slot.cancel());
        assert_eq!(slot.claim(), Claim::Cancelled);
        slot.fill(Ok(7)); // dropped: the consumer cancelled first
        assert_eq!(slot.try_take(), Some(Err(TaskError::Cancelled)));
    }

    #[test]
    fn pending_slot_has_no_outcome() {
        let slot: Slot<String, ()> = Slot::new();
        assert!(!slot.is_finished());
        assert_eq!(slot.try_take(), None);
    }

    #[test]
    fn racing_fill_and_wait_delivers_once() {
        // Miri runs this too (the `Slot` unsafe code): a few rounds are enough there.
        let rounds = if cfg!(miri) { 3 } else { 200 };
        for _ in 0..rounds {
            let (handle, slot) = handle_and_slot::<Vec<u8>, ()>();
            let producer = thread::spawn(move || slot.fill(Ok(vec![1, 2, 3])));
            assert_eq!(handle.wait(), Ok(vec![1, 2, 3]));
            producer.join().unwrap();
        }
    }

    /// A wait that found no outcome in its spin parks, saying so first, and gets the one
    /// outcome; the fill and the woken wait each take the flag back (one of them finds it
    /// set: the fill then counted the wait as woken, and the wait uncounted itself; the
    /// wait may also run before the fill's swap, and then neither counts). Whether a backlog
    /// cut the spin short or not.
    #[test]
    fn a_parked_wait_gets_its_outcome() {
        for backlog in [false, true] {
            let (handle, slot) = handle_and_slot::<Vec<u8>, ()>();
            let waiter = thread::spawn(move || {
                let manager = FakeManager::new(backlog);
                handle.wait_for_submitted(&manager, false)
            });
            while !slot.parked.load(Ordering::Acquire) {
                thread::yield_now();
            }
            slot.fill(Ok(vec![4, 2]));
            assert_eq!(waiter.join().unwrap(), Ok(vec![4, 2]));
            assert!(!slot.parked.load(Ordering::Relaxed));
        }
    }

    /// A wait whose outcome came first never parks, and its fill reports nobody woken: a
    /// worker yields only for a caller that was parked.
    #[test]
    fn a_fill_before_the_wait_wakes_nobody() {
        for backlog in [None, Some(false), Some(true)] {
            let (handle, slot) = handle_and_slot::<u8, ()>();
            assert!(!slot.fill(Ok(3)));
            let outcome = match backlog {
                None => handle.wait(),
                Some(backlog) => handle.wait_for_submitted(&FakeManager::new(backlog), true),
            };
            assert_eq!(outcome, Ok(3));
            assert!(!slot.parked.load(Ordering::Relaxed));
        }
    }

    /// A blocking submission's wait looks at the queues only while its task is still queued:
    /// a started task is waited for (spin, then park) without a look.
    #[test]
    fn a_wait_for_a_started_task_never_looks_at_the_queues() {
        let (handle, slot) = handle_and_slot::<u8, ()>();
        assert_eq!(slot.claim(), Claim::Held);
        let manager = std::sync::Arc::new(FakeManager::new(false));
        let waiter = parked_waiter(handle, &slot, &manager, true);
        slot.fill(Ok(1));
        assert_eq!(waiter.join().unwrap(), Ok(1));
        assert_eq!(
            manager.counts(),
            (0, 0),
            "no look, and no wake for a started task"
        );
    }

    /// A blocking submission whose task nobody takes pays the wake-up its push skipped, once,
    /// before it parks. A wait that owes nothing wakes nobody.
    #[test]
    fn a_wait_for_an_untaken_task_wakes_a_worker_once_before_it_parks() {
        for owes_wake in [true, false] {
            let (handle, slot) = handle_and_slot::<u8, ()>();
            let manager = std::sync::Arc::new(FakeManager::new(false));
            let waiter = parked_waiter(handle, &slot, &manager, owes_wake);
            assert_eq!(manager.wakes.load(Ordering::Relaxed), u32::from(owes_wake));
            slot.fill(Ok(5));
            assert_eq!(waiter.join().unwrap(), Ok(5));
            assert_eq!(manager.wakes.load(Ordering::Relaxed), u32::from(owes_wake));
        }
    }

    /// A thread that makes a blocking submission's wait on `handle` through `manager`,
    /// returned once that wait parked.
    fn parked_waiter<T: Send + 'static>(
        handle: TaskHandle<T, ()>,
        slot: &Slot<T, ()>,
        manager: &std::sync::Arc<FakeManager>,
        owes_wake: bool,
    ) -> thread::JoinHandle<Result<T, TaskError<()>>> {
        let manager = manager.clone();
        let waiter = thread::spawn(move || handle.wait_for_submitted(&*manager, owes_wake));
        // Acquire: pairs with the wait's `Release` swap, so what the wait did before it
        // parked (its step 1a payment) is seen here.
        while !slot.parked.load(Ordering::Acquire) {
            thread::yield_now();
        }
        waiter
    }

    /// A manager stand-in for blocking waits: counts wakes and looks.
    struct FakeManager {
        backlog: bool,
        wakes: AtomicU32,
        looks: AtomicU32,
    }

    impl FakeManager {
        fn new(backlog: bool) -> Self {
            FakeManager {
                backlog,
                wakes: AtomicU32::new(0),
                looks: AtomicU32::new(0),
            }
        }

        fn counts(&self) -> (u32, u32) {
            (
                self.wakes.load(Ordering::Relaxed),
                self.looks.load(Ordering::Relaxed),
            )
        }
    }

    impl Submitted for FakeManager {
        fn wake(&self) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }

        fn backlog(&self) -> bool {
            self.looks.fetch_add(1, Ordering::Relaxed);
            self.backlog
        }
    }

    /// A blocking submission's wait whose task is still queued behind others looks once, and
    /// parks (the fill that answers it says it woke it).
    #[test]
    fn a_wait_behind_a_backlog_looks_once_and_parks() {
        let (handle, slot) = handle_and_slot::<u8, ()>();
        let manager = std::sync::Arc::new(FakeManager::new(true));
        let waiter = parked_waiter(handle, &slot, &manager, false);
        slot.fill(Ok(2));
        assert_eq!(waiter.join().unwrap(), Ok(2));
        assert_eq!(manager.counts(), (0, 1));
    }

    /// A wait that times out after parking gives its handle back, and the next wait
    /// still gets the one outcome. The wait that gave up took its `parked` back first: a
    /// fill would otherwise count it as woken and not yet running, and nobody would ever
    /// uncount it (every worker would then yield between all its tasks).
    #[test]
    fn a_wait_that_timed_out_after_parking_waits_again() {
        let (handle, slot) = handle_and_slot::<u8, ()>();
        let handle = handle
            .wait_timeout(Duration::from_millis(1))
            .expect_err("nothing filled the slot");
        assert!(!slot.parked.load(Ordering::Relaxed));
        let waiter = thread::spawn(move || handle.wait());
        slot.fill(Ok(9));
        assert_eq!(waiter.join().unwrap(), Ok(9));
    }

    /// A worker yields after a parked caller was woken since its last look, and at every
    /// look after that while the woken caller has not run. (The counts are process-wide and
    /// other tests' fills and waits move them too, each by one for a moment: eight woken
    /// waits here stay counted whatever they do.)
    #[test]
    fn a_worker_yields_until_a_woken_waiter_runs() {
        let mut worker = WokenWaiters::new();
        for _ in 0..8 {
            WokenWaiters::woke_one();
        }
        assert!(worker.yield_if_woken(), "the epoch moved");
        assert!(
            worker.yield_if_woken(),
            "the woken waits have not run yet: yield again"
        );
        for _ in 0..8 {
            WokenWaiters::resumed();
        }
    }

    #[test]
    fn wait_timeout_gives_the_handle_back() {
        let (handle, slot) = handle_and_slot::<u8, ()>();
        let handle = handle
            .wait_timeout(Duration::from_millis(5))
            .expect_err("nothing filled the slot");
        slot.fill(Ok(1));
        assert_eq!(
            handle.wait_timeout(Duration::from_secs(5)).ok(),
            Some(Ok(1))
        );
    }
}
