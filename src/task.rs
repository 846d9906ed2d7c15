//! The task cell: one allocation holding the user's closure, its attempt count and where its
//! outcome goes. The queues carry it as a type-erased [`BoxJob`].

use std::marker::PhantomData;
use std::time::Instant;

use crate::completion::{Claim, Deliver, Delivered};
use crate::error::TaskError;
use crate::sync::{Arc, AtomicBool, Ordering};

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
    cancelled: Arc<AtomicBool>,
}

impl TaskContext {
    pub(crate) fn new(cancelled: Arc<AtomicBool>) -> Self {
        TaskContext {
            attempt: 0,
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
}

/// A user closure, re-runnable (`FnMut`) or at-most-once (`FnOnce`).
pub(crate) trait Body<R, E, T>: Send + 'static {
    /// Whether the worker may run it again after an unhealthy error.
    const RERUNNABLE: bool;
    fn call(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<T, E>;
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
pub(crate) trait Job<R, E>: Send {
    /// Takes the task for running. `Cancelled` means it must be dropped unrun.
    fn claim(&mut self) -> Claim;
    /// Counts and returns the attempt about to run (1 for the first).
    fn begin_attempt(&mut self) -> u32;
    /// How many times it ran so far.
    fn attempts(&self) -> u32;
    /// Whether it may run again.
    fn rerunnable(&self) -> bool;
    /// Runs it once. `Ok` means it succeeded and the value was delivered; `Err` hands the error
    /// back so the worker decides (deliver, or retry). May unwind: the worker catches that.
    fn run(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<Delivered, E>;
    /// Delivers a final error outcome.
    fn fail(self: Box<Self>, error: TaskError<E>) -> Delivered;
    /// When it was accepted.
    fn queued_at(&self) -> Instant;
    /// Whether it was submitted with priority.
    fn priority(&self) -> bool;
}

/// What the queues carry.
pub(crate) type BoxJob<R, E> = Box<dyn Job<R, E>>;

/// The one allocation per queued task.
///
/// `D: Deliver` is a bound on the struct itself so that `Drop` can deliver.
pub(crate) struct TaskCell<B, D: Deliver<T, E>, T, E> {
    body: B,
    /// `Some` until the outcome is delivered.
    delivery: Option<D>,
    attempts: u32,
    priority: bool,
    queued_at: Instant,
    _types: PhantomData<fn() -> (T, E)>,
}

impl<B, D: Deliver<T, E>, T, E> TaskCell<B, D, T, E> {
    pub(crate) fn new(body: B, delivery: D, priority: bool, queued_at: Instant) -> Self {
        TaskCell {
            body,
            delivery: Some(delivery),
            attempts: 0,
            priority,
            queued_at,
            _types: PhantomData,
        }
    }
}

impl<R, E, T, B, D> Job<R, E> for TaskCell<B, D, T, E>
where
    B: Body<R, E, T>,
    D: Deliver<T, E>,
    T: Send + 'static,
    E: 'static,
{
    #[inline]
    fn claim(&mut self) -> Claim {
        match &mut self.delivery {
            Some(d) => d.claim(),
            None => Claim::Cancelled,
        }
    }
    #[inline]
    fn begin_attempt(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }
    #[inline]
    fn attempts(&self) -> u32 {
        self.attempts
    }
    #[inline]
    fn rerunnable(&self) -> bool {
        B::RERUNNABLE
    }
    #[inline]
    fn run(&mut self, resource: &mut R, ctx: &TaskContext) -> Result<Delivered, E> {
        let value = self.body.call(resource, ctx)?;
        Ok(match self.delivery.take() {
            Some(d) => d.deliver(Ok(value)),
            None => Ok(()),
        })
    }
    fn fail(mut self: Box<Self>, error: TaskError<E>) -> Delivered {
        match self.delivery.take() {
            Some(d) => d.deliver(Err(error)),
            None => Ok(()),
        }
    }
    #[inline]
    fn queued_at(&self) -> Instant {
        self.queued_at
    }
    #[inline]
    fn priority(&self) -> bool {
        self.priority
    }
}

impl<B, D: Deliver<T, E>, T, E> Drop for TaskCell<B, D, T, E> {
    /// A safety net: a cell dropped before it delivered still answers its submitter, with
    /// `Killed`. This is the path of a cancelled cell (its slot ignores the late outcome) and
    /// of a queue dropped with cells in it; every other path delivers explicitly.
    fn drop(&mut self) {
        if let Some(d) = self.delivery.take() {
            // Nobody to tell if a callback panics here: the catch in `Callback` already ran.
            let _ = d.deliver(Err(TaskError::Killed));
        }
    }
}
