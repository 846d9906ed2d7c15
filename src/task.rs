//! The task cell: one allocation holding the user's closure, its attempt count and where its
//! outcome goes. The queues carry it as a type-erased [`JobRef`].
//!
//! # One allocation per task
//!
//! A callback task is a `Box<TaskCell>` holding the closure and the callback. A handle (or
//! blocking) task is an `Arc<TaskCell>` holding the closure *and* the completion slot: the
//! queue's [`JobRef`] and the [`TaskHandle`](crate::TaskHandle) share that one allocation.
//!
//! # Who touches what
//!
//! A cell's task part (closure, attempt count) and a callback port are in `UnsafeCell`s and
//! are touched only through the cell's unique [`JobRef`]: a `JobRef` is made once, at
//! submission, by consuming the only `Box`/`Arc` that can reach the cell as a [`Job`]; it is
//! not `Clone`; and whoever holds it (the submitter, a queue, then one worker) has it
//! exclusively. The handle's `Arc` reaches the cell only as `dyn AsSlot`, i.e. only its
//! completion slot, whose own protocol (`completion`) orders the two sides. So no two threads
//! ever touch the task part at once, and a worker that passes a `JobRef` on (a retry) hands
//! over through the queue's own synchronisation.

use std::marker::PhantomData;
use std::time::Instant;

use crate::clock::Stamp;
use crate::completion::{AsSlot, Callback, Claim, Delivered, Slot};
use crate::error::TaskError;
use crate::sync::{Arc, AtomicBool, Ordering, UnsafeCell, coerce_arc};

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
}

impl TaskContext {
    pub(crate) fn new(cancelled: Arc<AtomicBool>) -> Self {
        TaskContext {
            attempt: 0,
            deadline: None,
            cancelled,
        }
    }

    pub(crate) fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt;
    }

    /// True once the manager is being killed: a long task should return early.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Which run this is: 1 on the first, 2 on the first retry, and so on.
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
/// Methods take `&self` so that one trait serves both owners (`Box` for callback tasks, `Arc`
/// shared with a handle); the cell's mutable parts are in `UnsafeCell`s that only the holder
/// of the task's unique [`JobRef`] reaches (see the module docs).
pub(crate) trait Job<R, E>: Send + Sync {
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
pub(crate) struct JobRef<R, E>(Holder<R, E>);

enum Holder<R, E> {
    Owned(Box<dyn Job<R, E>>),
    Shared(Arc<dyn Job<R, E>>),
}

impl<R, E> JobRef<R, E> {
    #[inline]
    fn job(&self) -> &dyn Job<R, E> {
        match &self.0 {
            Holder::Owned(b) => &**b,
            Holder::Shared(a) => &**a,
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
    #[inline]
    pub(crate) fn fail(self, error: TaskError<E>) -> Delivered {
        self.job().fail(error)
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

impl<R, E> Drop for JobRef<R, E> {
    fn drop(&mut self) {
        // Nobody to tell if a callback panics here: `Callback` already caught it.
        let _ = self.job().fail(TaskError::Killed);
    }
}

/// Where a cell's outcome goes, kept inside the cell.
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
        if !self.is_finished() {
            self.fill(outcome);
        }
        Ok(())
    }
}

/// A callback, taken when the outcome is handed over.
pub(crate) struct CallbackPort<C>(UnsafeCell<Option<Callback<C>>>);

impl<C> CallbackPort<C> {
    pub(crate) fn new(cb: C) -> Self {
        CallbackPort(UnsafeCell::new(Some(Callback(cb))))
    }
}

// SAFETY: (1) the callback is touched only by the holder of the cell's unique `JobRef` (module
// docs), one thread at a time; (2) it is moved to that thread, so `C: Send` suffices.
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
            // SAFETY: only the `JobRef` holder calls `deliver` (module docs): exclusive access.
            unsafe { (*cb).take() }
        });
        match cb {
            Some(cb) => cb.deliver(outcome),
            None => Ok(()),
        }
    }
}

/// The part of a cell only the `JobRef` holder touches.
struct TaskPart<B> {
    /// `None` once the outcome was delivered (the closure is dropped early).
    body: Option<B>,
    attempts: u32,
}

/// The one allocation per queued task: closure, attempt count, and where the outcome goes.
pub(crate) struct TaskCell<B, P, T, E> {
    task: UnsafeCell<TaskPart<B>>,
    port: P,
    priority: bool,
    queued_at: Stamp,
    _types: PhantomData<fn() -> (T, E)>,
}

// SAFETY: (1) `task` is touched only by the holder of the cell's unique `JobRef` (module
// docs), one thread at a time, so sharing the cell never shares `task`; (2) the closure moves
// to that thread, so `B: Send` suffices; (3) `port` brings its own `Sync`.
unsafe impl<B: Send, P: Sync, T, E> Sync for TaskCell<B, P, T, E> {}

impl<B, P, T, E> TaskCell<B, P, T, E> {
    fn new(body: B, port: P, priority: bool, queued_at: Stamp) -> Self {
        TaskCell {
            task: UnsafeCell::new(TaskPart {
                body: Some(body),
                attempts: 0,
            }),
            port,
            priority,
            queued_at,
            _types: PhantomData,
        }
    }

    /// Runs `f` on the task part.
    ///
    /// # Safety
    /// Only the holder of the cell's `JobRef` may call this, and `f` must not reach `task`
    /// again.
    #[inline]
    unsafe fn with_task<Q>(&self, f: impl FnOnce(&mut TaskPart<B>) -> Q) -> Q {
        self.task.with_mut(|task| {
            // SAFETY: exclusive by the caller's contract (module docs).
            f(unsafe { &mut *task })
        })
    }

    /// Reads the task part.
    ///
    /// # Safety
    /// As for [`with_task`](Self::with_task).
    #[inline]
    unsafe fn read_task<Q>(&self, f: impl FnOnce(&TaskPart<B>) -> Q) -> Q {
        self.task.with(|task| {
            // SAFETY: exclusive by the caller's contract (module docs).
            f(unsafe { &*task })
        })
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
        // SAFETY: called through the unique `JobRef`; the closure does not reach `task`.
        unsafe {
            self.with_task(|task| {
                task.attempts += 1;
                task.attempts
            })
        }
    }
    #[inline]
    fn attempts(&self) -> u32 {
        // SAFETY: as above.
        unsafe { self.read_task(|task| task.attempts) }
    }
    #[inline]
    fn rerunnable(&self) -> bool {
        B::RERUNNABLE
    }
    #[inline]
    fn run(&self, resource: &mut R, ctx: &TaskContext) -> Result<Delivered, E> {
        // SAFETY: called through the unique `JobRef`; the closure ends before `deliver`, which
        // does not reach `task`, and the body cannot reach its own cell. If the body unwinds,
        // the access ends with it.
        let ran = unsafe {
            self.with_task(|task| {
                let body = task.body.as_mut()?;
                let ran = body.call(resource, ctx);
                if ran.is_ok() {
                    task.body = None;
                }
                Some(ran)
            })
        };
        match ran {
            None => Ok(Ok(())), // already delivered: never run again
            Some(ran) => Ok(self.port.deliver(Ok(ran?))),
        }
    }
    fn fail(&self, error: TaskError<E>) -> Delivered {
        // SAFETY: as above; the access ends before `deliver`.
        unsafe { self.with_task(|task| task.body = None) };
        self.port.deliver(Err(error))
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
        // SAFETY: called through the unique `JobRef`.
        unsafe { self.read_task(|task| task.body.as_ref().and_then(B::deadline)) }
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
}

/// A callback task: one `Box`.
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
    let cell = Box::new(TaskCell::new(
        body,
        CallbackPort::new(cb),
        priority,
        queued_at,
    ));
    JobRef(Holder::Owned(cell))
}

/// A handle (or blocking) task: one `Arc`, shared by the queue's `JobRef` and the handle.
pub(crate) fn with_handle<R, E, T, B>(
    body: B,
    priority: bool,
    queued_at: Stamp,
) -> (JobRef<R, E>, crate::TaskHandle<T, E>)
where
    B: Body<R, E, T>,
    T: Send + 'static,
    E: Send + 'static,
{
    let cell = Arc::new(TaskCell::new(body, Slot::new(), priority, queued_at));
    let handle = crate::TaskHandle::new(coerce_arc!(cell.clone(), dyn AsSlot<T, E>));
    (
        JobRef(Holder::Shared(coerce_arc!(cell, dyn Job<R, E>))),
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

    #[test]
    fn a_handle_cell_runs_and_delivers_through_its_one_allocation() {
        let (job, handle) = with_handle::<u32, (), _, _>(
            Many(|r: &mut u32, _: &TaskContext| {
                *r += 1;
                Ok(*r)
            }),
            false,
            0,
        );
        assert_eq!(job.claim(), Claim::Held);
        assert_eq!(job.begin_attempt(), 1);
        let mut resource = 41;
        assert!(matches!(job.run(&mut resource, &ctx()), Ok(Ok(()))));
        drop(job); // already delivered: the drop net changes nothing
        assert_eq!(handle.wait(), Ok(42));
    }

    #[test]
    fn a_dropped_job_answers_killed_and_a_cancelled_one_stays_cancelled() {
        let (job, handle) =
            with_handle::<(), (), u8, _>(Many(|_: &mut (), _: &TaskContext| Ok(1)), true, 0);
        drop(job);
        assert_eq!(handle.wait(), Err(TaskError::Killed));

        let (job, handle) =
            with_handle::<(), (), u8, _>(Many(|_: &mut (), _: &TaskContext| Ok(1)), true, 0);
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
}
