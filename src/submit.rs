//! [`TaskBuilder`]: one submission with its options (priority, deadline) and one delivery.
//!
//! `manager.task(f)` and `manager.task_once(f)` start one; `.priority()`, `.deadline(at)` and
//! `.timeout(d)` set its options; `.wait()`, `.spawn()` or `.callback(cb)` submit it. The
//! twelve `queue_task*` methods of [`TaskManager`] are this builder without a deadline, so
//! every submission takes the same path: one task cell, then the manager's one enqueue path.
//!
//! # Deadlines
//!
//! A deadline bounds when a task may *start*. It is checked (1) at submission: already past,
//! the task is answered [`TaskError::DeadlineExceeded`] at once and never queued; (2) while a
//! blocking submission waits for room in a bounded queue: the wait ends at the deadline with
//! the same answer; (3) when a worker takes the task from a queue: past, it is answered
//! `DeadlineExceeded` unrun. A task that started runs to its end (its retries included) and
//! can read [`TaskContext::deadline`] to give up early.

use std::fmt;
use std::time::{Duration, Instant};

use crate::completion::TaskHandle;
use crate::error::TaskError;
use crate::manager::TaskManager;
use crate::task::{self, Body, Deadline, Many, Once, TaskContext};

/// One submission being configured: made by [`TaskManager::task`] (a re-runnable `FnMut`
/// task, retried after unhealthy errors) or [`TaskManager::task_once`] (`FnOnce`: at most
/// once, `ONCE = true`). Nothing is queued until one delivery is chosen: [`wait`](Self::wait),
/// [`spawn`](Self::spawn) or [`callback`](Self::callback).
///
/// ```
/// use std::time::Duration;
/// use tasker::{TaskError, TaskManager};
///
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<u64, std::io::Error>(0))
///     .worker_count(1)
///     .build()?;
///
/// // Blocking, with priority and a deadline.
/// let n = manager
///     .task(|n, _| {
///         *n += 1;
///         Ok(*n)
///     })
///     .priority()
///     .timeout(Duration::from_secs(5))
///     .wait()?;
/// assert_eq!(n, 1);
///
/// // A handle; a deadline already past is answered at once, and the task never runs.
/// let late = manager
///     .task_once(|_, _| Ok(()))
///     .deadline(std::time::Instant::now() - Duration::from_millis(1))
///     .spawn();
/// assert!(matches!(late.wait(), Err(TaskError::DeadlineExceeded)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a task is submitted only by `wait`, `spawn` or `callback`"]
pub struct TaskBuilder<'m, R, E, F, const ONCE: bool = false> {
    manager: &'m TaskManager<R, E>,
    f: F,
    priority: bool,
    deadline: Option<Instant>,
}

impl<R, E, F, const ONCE: bool> fmt::Debug for TaskBuilder<'_, R, E, F, ONCE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskBuilder")
            .field("once", &ONCE)
            .field("priority", &self.priority)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<'m, R, E, F, const ONCE: bool> TaskBuilder<'m, R, E, F, ONCE> {
    pub(crate) fn new(manager: &'m TaskManager<R, E>, f: F) -> Self {
        TaskBuilder {
            manager,
            f,
            priority: false,
            deadline: None,
        }
    }

    /// Queues it on the priority queue: it starts before every normal task still queued.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let n = manager.task(|_, _| Ok(1)).priority().wait()?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn priority(mut self) -> Self {
        self.priority = true;
        self
    }

    /// Priority or not, as `priority` says (for code that decides at run time).
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let urgent = true;
    /// let n = manager.task(|_, _| Ok(1)).with_priority(urgent).wait()?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_priority(mut self, priority: bool) -> Self {
        self.priority = priority;
        self
    }

    /// The task must start by `at`, or it never runs and answers
    /// [`TaskError::DeadlineExceeded`] (see the module docs of the three checks). Replaces an
    /// earlier deadline or timeout.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::time::{Duration, Instant};
    /// use tasker::TaskError;
    ///
    /// let at = Instant::now() + Duration::from_secs(60);
    /// assert_eq!(manager.task(|_, _| Ok(1)).deadline(at).wait()?, 1);
    /// // A deadline already past: the task never runs.
    /// let late = manager.task(|_, _| Ok(2)).deadline(Instant::now()).wait();
    /// assert!(matches!(late, Err(TaskError::DeadlineExceeded)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(at);
        self
    }

    /// The task must start within `timeout` from now: [`deadline`](Self::deadline) at
    /// `Instant::now() + timeout` (no deadline if that overflows).
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::time::Duration;
    ///
    /// let handle = manager.task(|_, _| Ok(1)).timeout(Duration::from_secs(5)).spawn();
    /// assert_eq!(handle.wait()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = Instant::now().checked_add(timeout);
        self
    }
}

impl<R: Send + 'static, E: Send + 'static, F> TaskBuilder<'_, R, E, F, false> {
    /// Submits it and blocks until its outcome. Waits for room when the queue is bounded and
    /// full (until the deadline, if one is set). Called from inside a task of this same
    /// manager it answers [`TaskError::WouldDeadlock`] at once.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let n = manager.task(|count, _| { *count += 1; Ok(*count) }).wait()?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait<T>(self) -> Result<T, TaskError<E>>
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        blocking(self.manager, Many(self.f), self.priority, self.deadline)
    }

    /// Submits it and returns a [`TaskHandle`] to wait on, poll, `.await` or cancel. A full
    /// bounded queue answers [`TaskError::QueueFull`] through the handle.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let handle = manager.task(|_, ctx| Ok(ctx.attempt())).spawn();
    /// assert_eq!(handle.wait()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<T>(self) -> TaskHandle<T, E>
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        handle(self.manager, Many(self.f), self.priority, self.deadline)
    }

    /// Submits it; `cb` receives its outcome exactly once, on a worker thread (or on this
    /// thread when it is answered at submission: refused, queue full, deadline past).
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// manager.task(|_, _| Ok("done")).callback(move |outcome| tx.send(outcome).unwrap());
    /// assert_eq!(rx.recv()?.ok(), Some("done"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn callback<T, C>(self, cb: C)
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
        C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    {
        callback(self.manager, Many(self.f), cb, self.priority, self.deadline);
    }
}

impl<R: Send + 'static, E: Send + 'static, F> TaskBuilder<'_, R, E, F, true> {
    /// As for a re-runnable task's [`wait`](TaskBuilder::wait); never re-run.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let key = String::from("idempotency-key");
    /// let echoed = manager.task_once(move |_, _| Ok(key)).wait()?;
    /// assert_eq!(echoed, "idempotency-key");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait<T>(self) -> Result<T, TaskError<E>>
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        blocking(
            self.manager,
            Once(Some(self.f)),
            self.priority,
            self.deadline,
        )
    }

    /// As for a re-runnable task's [`spawn`](TaskBuilder::spawn); never re-run.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let rows = vec![1, 2, 3];
    /// let handle = manager.task_once(move |_, _| Ok(rows.len())).priority().spawn();
    /// assert_eq!(handle.wait()?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn spawn<T>(self) -> TaskHandle<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        handle(
            self.manager,
            Once(Some(self.f)),
            self.priority,
            self.deadline,
        )
    }

    /// As for a re-runnable task's [`callback`](TaskBuilder::callback); never re-run.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let name = String::from("once");
    /// manager.task_once(move |_, _| Ok(name)).callback(move |outcome| tx.send(outcome).unwrap());
    /// assert_eq!(rx.recv()?.ok().as_deref(), Some("once"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn callback<T, C>(self, cb: C)
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
        C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    {
        callback(
            self.manager,
            Once(Some(self.f)),
            cb,
            self.priority,
            self.deadline,
        );
    }
}

fn blocking<R, E, T, B>(
    manager: &TaskManager<R, E>,
    body: B,
    priority: bool,
    deadline: Option<Instant>,
) -> Result<T, TaskError<E>>
where
    R: Send + 'static,
    E: Send + 'static,
    T: Send + 'static,
    B: Body<R, E, T>,
{
    let shared = manager.shared();
    if shared.is_current_worker() {
        return Err(TaskError::WouldDeadlock);
    }
    let now = shared.metrics.now();
    let (room, owner) = (shared.capacity.clone(), shared.id());
    let (job, handle) = match deadline {
        None => task::with_handle(body, priority, now, room, owner),
        Some(at) => task::with_handle(Deadline { body, at }, priority, now, room, owner),
    };
    let owes_wake = manager.enqueue(job, priority, true, deadline);
    handle.wait_for_submitted(shared, owes_wake)
}

fn handle<R, E, T, B>(
    manager: &TaskManager<R, E>,
    body: B,
    priority: bool,
    deadline: Option<Instant>,
) -> TaskHandle<T, E>
where
    R: Send + 'static,
    E: Send + 'static,
    T: Send + 'static,
    B: Body<R, E, T>,
{
    let shared = manager.shared();
    let now = shared.metrics.now();
    let (room, owner) = (shared.capacity.clone(), shared.id());
    let (job, handle) = match deadline {
        None => task::with_handle(body, priority, now, room, owner),
        Some(at) => task::with_handle(Deadline { body, at }, priority, now, room, owner),
    };
    manager.enqueue(job, priority, false, deadline);
    handle
}

fn callback<R, E, T, B, C>(
    manager: &TaskManager<R, E>,
    body: B,
    cb: C,
    priority: bool,
    deadline: Option<Instant>,
) where
    R: Send + 'static,
    E: Send + 'static,
    T: Send + 'static,
    B: Body<R, E, T>,
    C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
{
    let now = manager.shared().metrics.now();
    let job = match deadline {
        None => task::with_callback(body, cb, priority, now),
        Some(at) => task::with_callback(Deadline { body, at }, cb, priority, now),
    };
    manager.enqueue(job, priority, false, deadline);
}
