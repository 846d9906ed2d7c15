//! The task cell: one block holding the user's closure, its attempt count and where its
//! outcome goes. The queues carry it as a type-erased [`JobRef`].
//!
//! # One block per task, recycled
//!
//! A callback task is a [`Boxed`] `TaskCell` holding the closure and the callback. A handle
//! (or blocking) task is a [`Shared`] `TaskCell` holding the closure *and* the completion
//! slot: the queue's [`JobRef`] and the [`TaskHandle`](crate::TaskHandle) are its two owners,
//! and whichever lets go last drops it. Both take their memory from the cell cache
//! ([`cells`](crate::cells)): a block of 64 to 512 bytes, recycled through per-thread
//! magazines, so a steady stream of tasks does not go through the global allocator; a cell
//! over 512 bytes (a large closure) is allocated and freed like a `Box` (see `cells` for what
//! a cell costs).
//!
//! # Who touches what
//!
//! A cell's attempt count, its closure and a callback port are in `UnsafeCell`s. The attempt
//! count and the callback port are touched only through the cell's unique [`JobRef`]: a
//! `JobRef` is made once, at submission, by consuming the only `Boxed`, or one of the two
//! `Shared` owners, that can reach the cell as a [`Job`]; it is not `Clone`; and whoever
//! holds it (the submitter, a queue, then one worker) has it exclusively. The handle's owner
//! reaches the cell only as `dyn AsSlot`: its completion slot, whose own protocol
//! (`completion`) orders the two sides, and `cancel`.
//!
//! The closure is the one thing both sides may touch, and the slot's claim decides which:
//! the `JobRef` holder touches it only after its claim found `Held` (`run` follows the
//! worker's claim; `fail` claims first), and the handle only after its cancel won
//! `PENDING -> CANCELLED`, which makes every later claim find `Cancelled`. The claim and the
//! cancel are compare-and-swaps on one word, so exactly one side wins, and the loser never
//! touches the closure. So no two threads ever touch a part at once, and a worker that passes
//! a `JobRef` on (a retry) hands over through the queue's own synchronisation.
//!
//! User code may panic in the `Drop` of what a cell holds (the closure, a value whose handle
//! was dropped): the worker's side drops those under a catch and returns the panics
//! ([`Caught`]) for the worker to report; a cancel drops the closure on the caller's thread.
//! The cell's block is given back even when such a drop panics.

use std::any::TypeId;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::time::Instant;

use crate::cells::{Boxed, Shared, SharedInner, unsize};
use crate::clock::Stamp;
use crate::completion::{AsSlot, CallbackPort, Caught, Claim, Delivered, Port, Slot};
use crate::error::TaskError;
use crate::manager::TaskManager;
use crate::observe::Site;
use crate::scheduler::capacity::Capacity;
use crate::sync::{Arc, AtomicBool, Ordering, UnsafeCell};
use crate::unwind;

/// What a running task can learn about its run.
///
/// ```
/// # use tasker::{TaskManager, TaskContext};
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .worker_count(1)
///     .build()?;
/// let attempt = manager.queue_task(|_: &mut (), ctx: &TaskContext| Ok(ctx.attempt()))?;
/// assert_eq!(attempt, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TaskContext {
    attempt: u32,
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
    manager: Option<Lender>,
}

/// The manager running a task, its type erased (see [`TaskContext::manager`]).
#[derive(Clone, Copy, Debug)]
struct Lender {
    /// A `*const TaskManager<R, E>`.
    manager: *const (),
    /// `TypeId::of::<TaskManager<R, E>>()`.
    type_id: TypeId,
}

// SAFETY: a `Lender` is a shared reference to a `TaskManager` (which is `Send + Sync`), read
// only through `TaskContext::manager` while the context is borrowed and the manager alive
// (`set_manager`'s contract).
unsafe impl Send for Lender {}
// SAFETY: as for `Send`.
unsafe impl Sync for Lender {}

impl TaskContext {
    pub(crate) fn new(cancelled: Arc<AtomicBool>) -> Self {
        TaskContext {
            attempt: 0,
            deadline: None,
            cancelled,
            manager: None,
        }
    }

    /// Lends `manager` to the tasks that run with this context.
    ///
    /// # Safety
    ///
    /// `manager` must stay alive, in place, for as long as this context is used (each
    /// `TaskContext::manager` call reads it).
    pub(crate) unsafe fn set_manager<R: 'static, E: 'static>(
        &mut self,
        manager: &TaskManager<R, E>,
    ) {
        self.manager = Some(Lender {
            manager: manager as *const TaskManager<R, E> as *const (),
            type_id: TypeId::of::<TaskManager<R, E>>(),
        });
    }

    /// The manager running this task, to submit more work from inside it without a clone of
    /// the manager in every closure: a task submitted from inside a task goes to the
    /// worker's own deque, and an idle worker steals it (see "Tasks that make tasks" in the
    /// crate docs). `R` and `E` are the manager's (usually inferred from where the result
    /// is used); `None` if they are not.
    ///
    /// The manager lent here is not one of your handles: it does not keep the manager
    /// running. Once the last handle is dropped (or `stop` is called), submissions through
    /// it are answered [`TaskError::ShuttingDown`] like any other. Clone it to keep a handle
    /// beyond the task.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tasker::{TaskContext, TaskManager};
    ///
    /// static RAN: AtomicUsize = AtomicUsize::new(0);
    ///
    /// // A task that submits two children, down to `depth` 0: 2^(depth + 1) - 1 tasks.
    /// fn node(_: &mut (), ctx: &TaskContext, depth: u32) -> Result<(), Infallible> {
    ///     RAN.fetch_add(1, Ordering::Relaxed);
    ///     if depth > 0 {
    ///         let manager: &TaskManager<(), Infallible> = ctx.manager().expect("R and E");
    ///         for _ in 0..2 {
    ///             manager.queue_task_with_callback(
    ///                 move |r, ctx| node(r, ctx, depth - 1),
    ///                 |outcome| outcome.expect("no child fails"),
    ///             );
    ///         }
    ///     }
    ///     Ok(())
    /// }
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), Infallible>(()))
    ///     .worker_count(2)
    ///     .build()?;
    /// manager.queue_task(|r, ctx| node(r, ctx, 9))?;
    /// // (`stop` now would refuse the children not yet submitted.)
    /// while RAN.load(Ordering::Relaxed) < 1023 {
    ///     std::thread::sleep(std::time::Duration::from_millis(1));
    /// }
    /// manager.stop()?;
    /// assert_eq!(RAN.load(Ordering::Relaxed), 1023);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn manager<R: Send + 'static, E: Send + 'static>(&self) -> Option<&TaskManager<R, E>> {
        let lender = self.manager?;
        if lender.type_id != TypeId::of::<TaskManager<R, E>>() {
            return None;
        }
        // SAFETY: `lender.manager` is a `*const TaskManager<R, E>` (the type id says so),
        // alive while this context is used (`set_manager`'s contract); the reference
        // returned borrows `self`, so it cannot outlive that use.
        Some(unsafe { &*(lender.manager as *const TaskManager<R, E>) })
    }

    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }

    /// True once the manager is being killed: a long task should return early.
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .build()?;
    /// let (started_tx, started_rx) = mpsc::channel();
    /// let long = manager.queue_task_async(move |_, ctx| {
    ///     started_tx.send(()).unwrap();
    ///     let mut steps = 0u64;
    ///     while !ctx.is_cancelled() {
    ///         steps += 1; // one step of a long job
    ///         std::thread::yield_now();
    ///     }
    ///     Ok(steps)
    /// });
    /// started_rx.recv()?;
    /// manager.kill()?; // marks running tasks' contexts cancelled, then joins
    /// assert!(long.wait().is_ok()); // it returned early, with its own answer
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Which run this is: 1 on the first, 2 on the first retry, and so on.
    ///
    /// ```
    /// use std::io::Error;
    ///
    /// let manager = tasker::TaskManager::builder()
    ///     .on_create(|| Ok::<(), Error>(()))
    ///     .check_health(|_: &Error| false) // every error breaks the resource: retried
    ///     .worker_count(1)
    ///     .build()?;
    /// let attempt = manager.queue_task(|_, ctx| {
    ///     if ctx.attempt() < 3 { Err(Error::other("flaky")) } else { Ok(ctx.attempt()) }
    /// })?;
    /// assert_eq!(attempt, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The deadline the task was submitted with ([`TaskBuilder::deadline`] or
    /// [`timeout`](crate::TaskBuilder::timeout)), if any. It bounded when the task could
    /// start; once started, a task runs to its end, and may read this to give up early.
    ///
    /// [`TaskBuilder::deadline`]: crate::TaskBuilder::deadline
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker::TaskManager;
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .build()?;
    /// let left = manager
    ///     .task(|_, ctx| Ok(ctx.deadline().is_some()))
    ///     .timeout(Duration::from_secs(60))
    ///     .wait()?;
    /// assert!(left);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// A user closure, re-runnable (`FnMut`) or at-most-once (`FnOnce`).
pub(crate) trait Body<R, E, T>: Send + 'static {
    /// Whether the worker may run it again after an unhealthy error.
    const RERUNNABLE: bool;
    fn call(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<T, E>;
    /// The latest start it was submitted with ([`Deadline`]); `None` for the others, which
    /// so carry no deadline field at all (most tasks have none, and a handle cell is kept
    /// alive with its handle: every byte counts when many are).
    #[inline]
    fn deadline(&self) -> Option<Instant> {
        None
    }
}

/// A body submitted with a deadline (see `submit`).
pub(crate) struct Deadline<B> {
    pub(crate) body: B,
    pub(crate) at: Instant,
}

impl<R, E, T, B: Body<R, E, T>> Body<R, E, T> for Deadline<B> {
    const RERUNNABLE: bool = B::RERUNNABLE;
    #[inline]
    fn call(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<T, E> {
        self.body.call(resource, ctx)
    }
    #[inline]
    fn deadline(&self) -> Option<Instant> {
        Some(self.at)
    }
}

/// An `FnMut` task: retried on unhealthy errors.
pub(crate) struct Many<F>(pub(crate) F);

impl<R, E, T, F> Body<R, E, T> for Many<F>
where
    F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
{
    const RERUNNABLE: bool = true;
    #[inline]
    fn call(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<T, E> {
        (self.0)(resource, ctx)
    }
}

/// An `FnOnce` task: never re-run, which the type system enforces (it is consumed by its call).
pub(crate) struct Once<F>(pub(crate) Option<F>);

impl<R, E, T, F> Body<R, E, T> for Once<F>
where
    F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
{
    const RERUNNABLE: bool = false;
    #[inline]
    fn call(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<T, E> {
        // The worker calls a non-RERUNNABLE body once: `Once` is consumed here.
        let f = self.0.take().expect("an at-most-once task is run once");
        f(resource, ctx)
    }
}

/// A queued task with its type (`T`, closure, delivery) erased.
///
/// Methods take `&self` so that one trait serves both owners (`Boxed` for callback tasks,
/// `Shared` with a handle); the cell's mutable parts are in `UnsafeCell`s that only the holder
/// of the task's unique [`JobRef`] reaches (see the module docs).
trait Job<R, E>: Send + Sync {
    /// Takes the task for running. `Cancelled` means it must be dropped unrun.
    fn claim(&self) -> Claim;
    /// Counts and returns the attempt about to run (1 for the first).
    fn begin_attempt(&self) -> u32;
    /// How many times it ran so far.
    fn attempts(&self) -> u32;
    /// Whether it may run again.
    fn rerunnable(&self) -> bool;
    /// Runs it once. `Ok` means it succeeded and the value was delivered; `Err` hands the error
    /// back so the worker decides (deliver, or retry). May unwind: the worker catches that.
    fn run(&self, resource: &mut R, ctx: &TaskContext) -> Result<Delivered, E>;
    /// Delivers a final error outcome, unless one was already delivered.
    fn fail(&self, error: TaskError<E>) -> Delivered;
    /// When it was accepted (the manager's clock).
    fn queued_at(&self) -> Stamp;
    /// Whether it was submitted with priority.
    fn priority(&self) -> bool;
    /// The latest start it was submitted with, if any (`None` once delivered).
    fn deadline(&self) -> Option<Instant>;
}

/// What the queues carry: the unique reference through which a task is run and answered.
///
/// Dropping one that never delivered answers its submitter with `Killed` (a safety net: every
/// path delivers explicitly; this is also how a cancelled task's cell is let go, its slot then
/// ignoring the late outcome).
///
/// One tagged pointer (16 bytes, with a niche), so that a queued task and an
/// `Option` of one travel in two registers: as a 24-byte enum of two pointers it crossed the
/// deques' functions through memory, and the worker's first load of it waited for the stores
/// (a store-forwarding stall on every task).
pub(crate) struct JobRef<R, E> {
    /// The cell: a [`Boxed`]'s pointer, or, with [`SHARED_TAG`] set in its address, a
    /// [`Shared`]'s `SharedInner` pointer; either cast to [`AnyCell`] (the metadata, the
    /// cell's `Job` vtable, is kept). Owned: one `Boxed` or one owner's share of a `Shared`,
    /// given back by [`Self::take`].
    ptr: NonNull<AnyCell<R, E>>,
}

/// The pointee a [`JobRef`] is stored as: a struct whose tail is the cell's `dyn Job`, so that
/// both kinds of cell pointer cast to it and back keeping their vtable (a cast to `dyn Job`
/// itself would be an unsizing coercion).
struct AnyCell<R, E> {
    job: dyn Job<R, E>,
}

// SAFETY: a `JobRef` owns its cell (or one share of it) like the `Boxed` or `Shared` it was
// made from, which are `Send` for a `Send + Sync` job: every `dyn Job` is (`Job`'s bounds).
unsafe impl<R, E> Send for JobRef<R, E> {}

/// Set in a [`JobRef`]'s address when the cell is a [`Shared`] one. Free: every cell, and
/// every `SharedInner`, is at least 8-byte aligned (they hold a `usize`).
const SHARED_TAG: usize = 1;

/// A [`JobRef`]'s owner, taken back to be dropped (its fields are read only by their drops).
#[allow(dead_code)]
enum Holder<R, E> {
    Owned(Boxed<dyn Job<R, E>>),
    Shared(Shared<dyn Job<R, E>>),
}

impl<R, E> JobRef<R, E> {
    fn owned(cell: Boxed<dyn Job<R, E>>) -> Self {
        let ptr = Boxed::into_raw(cell).as_ptr() as *mut AnyCell<R, E>;
        JobRef {
            // SAFETY: cast from a `NonNull`.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
        }
    }

    fn shared(cell: Shared<dyn Job<R, E>>) -> Self {
        let ptr = Shared::into_raw(cell).as_ptr() as *mut AnyCell<R, E>;
        debug_assert_eq!(ptr.addr() & SHARED_TAG, 0);
        JobRef {
            // SAFETY: a tagged non-null address is non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr.map_addr(|a| a | SHARED_TAG)) },
        }
    }

    /// The `SharedInner` pointer of a shared cell, `None` for an owned one.
    #[inline]
    fn shared_inner(&self) -> Option<NonNull<SharedInner<dyn Job<R, E>>>> {
        let ptr = self.ptr.as_ptr();
        if ptr.addr() & SHARED_TAG == 0 {
            return None;
        }
        let inner = ptr.map_addr(|a| a & !SHARED_TAG) as *mut SharedInner<dyn Job<R, E>>;
        // SAFETY: the untagged address is the `SharedInner`'s, non-null.
        Some(unsafe { NonNull::new_unchecked(inner) })
    }

    /// The pointer of an owned cell (not tagged), as `Boxed::into_raw` gave it.
    #[inline]
    fn owned_ptr(&self) -> NonNull<dyn Job<R, E>> {
        // SAFETY: a field of a live cell's non-null pointer, taken without a reference.
        unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*self.ptr.as_ptr()).job)) }
    }

    #[inline]
    fn job(&self) -> &dyn Job<R, E> {
        match self.shared_inner() {
            // SAFETY: our share keeps the cell alive while `self` is borrowed.
            Some(inner) => unsafe { SharedInner::value(inner) },
            // SAFETY: the `Boxed` we own keeps the cell alive while `self` is borrowed.
            None => unsafe { &self.ptr.as_ref().job },
        }
    }

    /// Gives the owner back (once: the caller never uses `self` again).
    ///
    /// # Safety
    /// Called at most once per `JobRef`, which is then forgotten or being dropped.
    #[inline]
    unsafe fn take(&mut self) -> Holder<R, E> {
        match self.shared_inner() {
            // SAFETY: the pointer came from `Shared::into_raw` (`Self::shared`), with its
            // share, which moves to the new `Shared` here, once.
            Some(inner) => Holder::Shared(unsafe { Shared::from_raw(inner) }),
            // SAFETY: the pointer came from `Boxed::into_raw` (`Self::owned`); the box
            // moves to the new `Boxed` here, once.
            None => Holder::Owned(unsafe { Boxed::from_raw(self.owned_ptr()) }),
        }
    }
    #[inline]
    pub(crate) fn claim(&self) -> Claim {
        self.job().claim()
    }
    #[inline]
    pub(crate) fn begin_attempt(&self) -> u32 {
        self.job().begin_attempt()
    }
    #[inline]
    pub(crate) fn attempts(&self) -> u32 {
        self.job().attempts()
    }
    #[inline]
    pub(crate) fn rerunnable(&self) -> bool {
        self.job().rerunnable()
    }
    #[inline]
    pub(crate) fn run(&self, resource: &mut R, ctx: &TaskContext) -> Result<Delivered, E> {
        self.job().run(resource, ctx)
    }
    /// Delivers a final error outcome, then lets the task go ([`release`](Self::release)).
    #[inline]
    pub(crate) fn fail(self, error: TaskError<E>) -> Delivered {
        let caught = self.job().fail(error);
        caught.and(self.release())
    }

    /// Lets the task go once its outcome was delivered (or it was cancelled). The last owner
    /// of the cell drops it, and with it whatever user data is left in it (a value whose
    /// handle was dropped, a closure): that `Drop` is user code, so it runs under a catch and
    /// its panic is returned for the caller to report.
    #[inline]
    pub(crate) fn release(self) -> Delivered {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used again, and `ManuallyDrop` keeps `JobRef::drop` (the
        // safety net) from running, so the holder is taken exactly once.
        let holder = unsafe { this.take() };
        let mut caught = Caught::nothing();
        caught.add(Site::Drop("a finished task"), unwind::drop_quietly(holder));
        caught
    }
    #[inline]
    pub(crate) fn queued_at(&self) -> Stamp {
        self.job().queued_at()
    }
    #[inline]
    pub(crate) fn priority(&self) -> bool {
        self.job().priority()
    }
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.job().deadline()
    }
}

/// The safety net: every path of the worker and the manager delivers and then
/// [`release`](JobRef::release)s explicitly, reporting what user code panicked. This runs
/// only if a `JobRef` is dropped another way; there is nobody to report to, so what panics
/// is caught and dropped quietly.
impl<R, E> Drop for JobRef<R, E> {
    fn drop(&mut self) {
        let _ = self.job().fail(TaskError::Killed);
        // SAFETY: this is `drop`: the holder is never touched again.
        let holder = unsafe { self.take() };
        let _ = unwind::drop_quietly(holder);
    }
}

/// The one block per queued task: closure, attempt count, and where the outcome goes.
struct TaskCell<B, P, T, E> {
    /// The closure: `None` once the outcome was delivered or the task was cancelled (it is
    /// dropped then, not when the cell goes). Touched by the `JobRef` holder after a `Held`
    /// claim, or by the handle after a successful cancel (module docs).
    body: UnsafeCell<Option<B>>,
    /// Runs so far. Touched only by the `JobRef` holder.
    attempts: UnsafeCell<u32>,
    /// The bounded queue's room, for a handle task of a bounded manager: a successful cancel
    /// gives the task's place back (the worker then will not).
    room: Option<Arc<Capacity>>,
    /// The manager it was submitted to (`Shared::id`; 0 for callback tasks), so a handle
    /// waited on by one of that manager's workers can tell.
    owner: usize,
    port: P,
    priority: bool,
    queued_at: Stamp,
    _types: PhantomData<fn() -> (T, E)>,
}

// SAFETY: (1) `attempts` is touched only by the holder of the cell's unique `JobRef`, and
// `body` by that holder or, after a successful cancel, by the handle, never both (module
// docs), one thread at a time, so sharing the cell never shares them; (2) the closure moves to
// that thread, so `B: Send` suffices; (3) `port` brings its own `Sync`.
unsafe impl<B: Send, P: Sync, T, E> Sync for TaskCell<B, P, T, E> {}

impl<B, P, T, E> TaskCell<B, P, T, E> {
    fn new(
        body: B,
        port: P,
        priority: bool,
        queued_at: Stamp,
        room: Option<Arc<Capacity>>,
        owner: usize,
    ) -> Self {
        TaskCell {
            body: UnsafeCell::new(Some(body)),
            attempts: UnsafeCell::new(0),
            room,
            owner,
            port,
            priority,
            queued_at,
            _types: PhantomData,
        }
    }

    /// Runs `f` on the closure.
    ///
    /// # Safety
    /// Only the holder of the cell's `JobRef` after a `Held` claim, or the handle after a
    /// successful cancel, may call this (module docs), and `f` must not reach `body` again.
    #[inline]
    unsafe fn with_body<Q>(&self, f: impl FnOnce(&mut Option<B>) -> Q) -> Q {
        self.body.with_mut(|body| {
            // SAFETY: exclusive by the caller's contract.
            f(unsafe { &mut *body })
        })
    }

    /// Takes the closure out and drops it under a catch (user code).
    ///
    /// # Safety
    /// As for [`with_body`](Self::with_body).
    #[inline]
    unsafe fn drop_body(&self) -> Caught {
        // SAFETY: the caller's contract.
        let body = unsafe { self.with_body(Option::take) };
        let mut caught = Caught::nothing();
        caught.add(Site::Drop("a task closure"), unwind::drop_quietly(body));
        caught
    }
}

impl<R, E, T, B, P> Job<R, E> for TaskCell<B, P, T, E>
where
    B: Body<R, E, T>,
    P: Port<T, E>,
    T: Send + 'static,
    E: Send + 'static,
{
    #[inline]
    fn claim(&self) -> Claim {
        self.port.claim()
    }
    #[inline]
    fn begin_attempt(&self) -> u32 {
        self.attempts.with_mut(|attempts| {
            // SAFETY: called through the unique `JobRef`, whose holder alone touches
            // `attempts`. Saturates: `max_retries` may be `u32::MAX`.
            unsafe {
                *attempts = (*attempts).saturating_add(1);
                *attempts
            }
        })
    }
    #[inline]
    fn attempts(&self) -> u32 {
        // SAFETY: as above.
        self.attempts.with(|attempts| unsafe { *attempts })
    }
    #[inline]
    fn rerunnable(&self) -> bool {
        B::RERUNNABLE
    }
    #[inline]
    fn run(&self, resource: &mut R, ctx: &TaskContext) -> Result<Delivered, E> {
        // SAFETY: called through the unique `JobRef` after a `Held` claim (the worker claims
        // first); the access ends before anything else touches `body`, and the body cannot
        // reach its own cell. If the body unwinds, the access ends with it.
        let ran = unsafe {
            self.with_body(|body| {
                let ran = body.as_mut()?.call(resource, ctx);
                Some(ran)
            })
        };
        match ran {
            None => Ok(Caught::nothing()), // already delivered: never run again
            Some(Err(error)) => Err(error),
            Some(Ok(value)) => {
                // Done with the closure: drop it before the value is handed over (so what it
                // holds is freed by the time the submitter sees the outcome), under a catch:
                // a panic in its `Drop` must not turn a success into `Panicked`.
                // SAFETY: as above.
                let caught = unsafe { self.drop_body() };
                Ok(caught.and(self.port.deliver(Ok(value))))
            }
        }
    }
    fn fail(&self, error: TaskError<E>) -> Delivered {
        if self.port.claim() == Claim::Cancelled {
            // The handle cancelled it and dropped the closure; the outcome is `Cancelled`.
            return Caught::nothing();
        }
        // SAFETY: through the unique `JobRef`, and the claim is `Held`: the handle can no
        // longer cancel, so it never touches `body`.
        let caught = unsafe { self.drop_body() };
        caught.and(self.port.deliver(Err(error)))
    }
    #[inline]
    fn queued_at(&self) -> Stamp {
        self.queued_at
    }
    #[inline]
    fn priority(&self) -> bool {
        self.priority
    }
    #[inline]
    fn deadline(&self) -> Option<Instant> {
        // SAFETY: called through the unique `JobRef` after a `Held` claim (the worker claims
        // first, see `worker`), so the handle can no longer touch `body`; the access ends
        // here.
        unsafe { self.with_body(|body| body.as_ref().and_then(B::deadline)) }
    }
}

impl<B, T, E> AsSlot<T, E> for TaskCell<B, Slot<T, E>, T, E>
where
    B: Send,
    T: Send,
    E: Send,
{
    #[inline]
    fn slot(&self) -> &Slot<T, E> {
        &self.port
    }

    fn owner(&self) -> usize {
        self.owner
    }

    fn cancel(&self) -> bool {
        if !self.port.cancel() {
            return false;
        }
        if let Some(room) = &self.room {
            room.release();
        }
        // SAFETY: the cancel won `PENDING -> CANCELLED`, so the `JobRef` holder's claim finds
        // `Cancelled` and it never touches `body` (`run` comes after a `Held` claim, `fail`
        // checks the claim first). This handle is the only one (`TaskHandle` is not `Clone`).
        let body = unsafe { self.with_body(Option::take) };
        // The closure's `Drop` runs here, on the caller's thread, under a catch: the cancel
        // has taken effect and stands. A handle cannot reach its manager's logger or counters
        // (it would cost every task a shared reference count), so the panic is reported
        // through the `tracing` facade, target `tasker`.
        if let Err(message) = unwind::drop_quietly(body) {
            tracing::error!(
                target: "tasker",
                "a cancelled task's closure panicked in Drop (caught): {message}"
            );
        }
        true
    }
}

/// A callback task: one [`Boxed`] cell.
pub(crate) fn with_callback<R, E, T, B, C>(
    body: B,
    cb: C,
    priority: bool,
    queued_at: Stamp,
) -> JobRef<R, E>
where
    B: Body<R, E, T>,
    C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let cell = Boxed::new(TaskCell::new(
        body,
        CallbackPort::new(cb),
        priority,
        queued_at,
        None,
        0,
    ));
    JobRef::owned(unsize!(Boxed, cell => dyn Job<R, E>))
}

/// A handle (or blocking) task: one [`Shared`] cell, whose two owners are the queue's
/// `JobRef` and the handle.
///
/// `room`: the manager's bounded queue, if it has one (a successful cancel gives the task's
/// place back); `owner`: the manager's `Shared::id`.
pub(crate) fn with_handle<R, E, T, B>(
    body: B,
    priority: bool,
    queued_at: Stamp,
    room: Option<Arc<Capacity>>,
    owner: usize,
) -> (JobRef<R, E>, crate::TaskHandle<T, E>)
where
    B: Body<R, E, T>,
    T: Send + 'static,
    E: Send + 'static,
{
    let (job, handle) = Shared::pair(TaskCell::new(
        body,
        Slot::new(),
        priority,
        queued_at,
        room,
        owner,
    ));
    let handle = crate::TaskHandle::new(unsize!(Shared, handle => dyn AsSlot<T, E>));
    (
        JobRef::shared(unsize!(Shared, job => dyn Job<R, E>)),
        handle,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{AtomicUsize, thread};

    fn ctx() -> TaskContext {
        let mut ctx = TaskContext::new(Arc::new(AtomicBool::new(false)));
        ctx.set_attempt(1);
        ctx
    }

    /// What a cell costs (the figures `cells`'s docs quote): the cell of a task whose
    /// closure and callback each capture one `Arc` (as `fire_and_forget` submits them), and
    /// of a handle task returning a `u64`, fit the two smallest classes.
    #[test]
    fn cell_sizes() {
        use crate::cells::SharedInner;
        use std::mem::size_of;

        let counter = Arc::new(AtomicUsize::new(0));
        let (c1, c2) = (counter.clone(), counter.clone());
        let body = Many(move |_: &mut (), _: &TaskContext| {
            c1.fetch_add(1, Ordering::Relaxed);
            Ok::<(), ()>(())
        });
        let cb = move |_: Result<(), TaskError<()>>| drop(c2);
        fn callback_cell<B, C>(_: &B, _: &C) -> usize {
            size_of::<TaskCell<B, CallbackPort<C>, (), ()>>()
        }
        let callback = callback_cell(&body, &cb);
        let handle = size_of::<
            SharedInner<
                TaskCell<
                    Many<fn(&mut (), &TaskContext) -> Result<u64, ()>>,
                    Slot<u64, ()>,
                    u64,
                    (),
                >,
            >,
        >();
        println!("callback cell {callback} bytes, handle cell {handle} bytes");
        assert!(
            callback <= 64,
            "a small callback cell takes a 64-byte block"
        );
        assert!(handle <= 128, "a small handle cell takes a 128-byte block");
    }

    #[test]
    fn a_handle_cell_runs_and_delivers_through_its_one_block() {
        let (job, handle) = with_handle::<u32, (), _, _>(
            Many(|r: &mut u32, _: &TaskContext| {
                *r += 1;
                Ok(*r)
            }),
            false,
            0,
            None,
            0,
        );
        assert_eq!(job.claim(), Claim::Held);
        assert_eq!(job.begin_attempt(), 1);
        let mut resource = 41;
        assert!(matches!(job.run(&mut resource, &ctx()), Ok(ref c) if c.is_empty()));
        drop(job); // already delivered: the drop net changes nothing
        assert_eq!(handle.wait(), Ok(42));
    }

    #[test]
    fn a_dropped_job_answers_killed_and_a_cancelled_one_stays_cancelled() {
        let (job, handle) = with_handle::<(), (), u8, _>(
            Many(|_: &mut (), _: &TaskContext| Ok(1)),
            true,
            0,
            None,
            0,
        );
        drop(job);
        assert_eq!(handle.wait(), Err(TaskError::Killed));

        let (job, handle) = with_handle::<(), (), u8, _>(
            Many(|_: &mut (), _: &TaskContext| Ok(1)),
            true,
            0,
            None,
            0,
        );
        assert!(handle.cancel());
        assert_eq!(job.claim(), Claim::Cancelled);
        drop(job);
        assert_eq!(handle.wait(), Err(TaskError::Cancelled));
    }

    #[test]
    fn a_callback_cell_calls_back_exactly_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let job = with_callback::<(), (), u8, _, _>(
            Once(Some(|_: &mut (), _: &TaskContext| Err(()))),
            move |r: Result<u8, TaskError<()>>| {
                assert!(matches!(r, Err(TaskError::Failed { attempts: 1, .. })));
                c.fetch_add(1, Ordering::SeqCst);
            },
            false,
            0,
        );
        assert_eq!(job.begin_attempt(), 1);
        assert!(job.run(&mut (), &ctx()).is_err());
        let _ = job.fail(TaskError::Failed {
            error: (),
            attempts: 1,
        }); // consumes; the drop net after it changes nothing
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_job_moved_to_another_thread_delivers_to_the_waiting_handle() {
        // Miri runs this too (the cell's unsafe code): a few rounds are enough there.
        let rounds = if cfg!(miri) { 3 } else { 100 };
        for i in 0..rounds {
            let (job, handle) = with_handle::<u64, (), u64, _>(
                Many(move |r: &mut u64, _: &TaskContext| Ok(*r + i)),
                false,
                0,
                None,
                0,
            );
            let worker = thread::spawn(move || {
                let _ = job.claim();
                job.begin_attempt();
                let _ = job.run(&mut 1, &ctx());
            });
            assert_eq!(handle.wait(), Ok(1 + i));
            worker.join().unwrap();
        }
    }

    /// Counts its drops; panics in `Drop` when `loud`.
    struct Dropped(Arc<AtomicUsize>, bool);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            if self.1 {
                panic!("loud drop");
            }
        }
    }

    #[test]
    fn a_cancel_drops_the_closure_and_gives_the_place_back_at_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let held = Dropped(drops.clone(), false);
        let room = Arc::new(Capacity::new(1));
        assert!(room.try_reserve());
        let (job, handle) = with_handle::<(), (), u8, _>(
            Many(move |_: &mut (), _: &TaskContext| {
                let _keep = &held;
                Ok(1)
            }),
            false,
            0,
            Some(room.clone()),
            0,
        );
        assert!(handle.cancel());
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped by the cancel");
        assert!(room.try_reserve(), "the place is free again");
        // The worker's side finds it cancelled, touches nothing, and lets it go.
        assert_eq!(job.claim(), Claim::Cancelled);
        assert!(job.fail(TaskError::Killed).is_empty());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(handle.wait(), Err(TaskError::Cancelled));
    }

    #[test]
    fn panics_in_drops_on_the_worker_side_are_returned_not_thrown() {
        // A closure whose drop panics after a success: the value is still delivered.
        let drops = Arc::new(AtomicUsize::new(0));
        let loud = Dropped(drops.clone(), true);
        let (job, handle) = with_handle::<(), (), u8, _>(
            Many(move |_: &mut (), _: &TaskContext| {
                let _keep = &loud;
                Ok(7)
            }),
            false,
            0,
            None,
            0,
        );
        assert_eq!(job.claim(), Claim::Held);
        job.begin_attempt();
        let caught = job.run(&mut (), &ctx()).expect("ran");
        assert!(!caught.is_empty(), "the closure's panic is returned");
        assert!(job.release().is_empty());
        assert_eq!(handle.wait(), Ok(7));

        // A value whose drop panics, delivered after its handle was dropped: the last owner
        // (the worker's side) drops it under a catch.
        let value_drops = Arc::new(AtomicUsize::new(0));
        let for_task = value_drops.clone();
        let (job, handle) = with_handle::<(), (), Dropped, _>(
            Many(move |_: &mut (), _: &TaskContext| Ok(Dropped(for_task.clone(), true))),
            false,
            0,
            None,
            0,
        );
        drop(handle);
        assert_eq!(job.claim(), Claim::Held);
        job.begin_attempt();
        let caught = job.run(&mut (), &ctx()).expect("ran");
        assert!(caught.is_empty());
        assert!(!job.release().is_empty(), "the value's panic is returned");
        assert_eq!(value_drops.load(Ordering::SeqCst), 1);
    }
}
