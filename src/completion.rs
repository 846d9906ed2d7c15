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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::cells::Shared;
use crate::error::TaskError;
use crate::observe::{Observer, Site};
use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicU32, AtomicWaker, Backoff, Ordering, StdArc, UnsafeCell};
use crate::unwind::{self, PanicMessage};

/// A blocking wait polls its slot with at most this many `spin_loop` hints in between (one
/// poll reads one word the worker writes once): the outcome is seen within ~60 ns of its
/// arrival while the wait spins (see [`Backoff`]).
const WAIT_MAX_PAUSES: u32 = 2;

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

    /// Producer: publishes the outcome. Does nothing if the consumer cancelled first.
    pub(crate) fn fill(&self, outcome: Result<T, TaskError<E>>) {
        if self.claim() == Claim::Cancelled {
            return;
        }
        self.value.with_mut(|value| {
            // SAFETY: the state is CLAIMED and only this producer could have set it; the
            // consumer does not read `value` before it sees READY, which is stored below
            // (Release).
            unsafe { *value = Some(outcome) }
        });
        self.state.store(READY, Ordering::Release);
        self.waker.wake();
    }

    /// Consumer: `PENDING -> CANCELLED`. True when the task had not started and now never will.
    pub(crate) fn cancel(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
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
        match self.wait_until(None) {
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
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(self, deadline: Option<Instant>) -> Result<Result<T, TaskError<E>>, Self> {
        let owner = self.cell.owner();
        if owner != 0 && crate::shared::current_manager() == owner && self.cell.cancel() {
            return Ok(Err(TaskError::WouldDeadlock));
        }
        let backoff = Backoff::with_max_pauses(WAIT_MAX_PAUSES);
        while !backoff.is_completed() {
            if let Some(outcome) = self.slot().try_take() {
                return Ok(outcome);
            }
            backoff.snooze();
        }
        THREAD_WAKER.with(|waker| self.slot().waker.register(waker));
        loop {
            // Registered before this check: a fill after it wakes us (see module docs).
            if let Some(outcome) = self.slot().try_take() {
                return Ok(outcome);
            }
            match deadline {
                None => thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(self);
                    }
                    thread::park_timeout(deadline - now);
                }
            }
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
#[must_use = "caught panics must be reported"]
#[derive(Debug, Default)]
pub(crate) struct Caught(Vec<(Site, PanicMessage)>);

impl Caught {
    /// Nothing panicked.
    #[inline]
    pub(crate) fn nothing() -> Self {
        Caught(Vec::new())
    }

    /// Keeps `result`'s panic, if any, with its site.
    #[inline]
    pub(crate) fn add(&mut self, site: Site, result: Result<(), PanicMessage>) {
        if let Err(message) = result {
            self.0.push((site, message));
        }
    }

    /// These and `other`'s.
    #[inline]
    pub(crate) fn and(mut self, other: Caught) -> Caught {
        self.0.extend(other.0);
        self
    }

    /// True when nothing panicked.
    #[cfg(any(test, loom))]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reports each to `observer`.
    #[inline]
    pub(crate) fn report(self, observer: &Observer<'_>) {
        for (site, message) in self.0 {
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
