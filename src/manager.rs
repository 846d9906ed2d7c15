//! [`TaskManager`]: every public submit and run method, funnelled into one enqueue path
//! ([`TaskManager::enqueue`], through the submission builder in `submit`), plus shutdown and
//! snapshots.

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::attempt::{self, Ran};
use crate::builder::Builder;
use crate::clock::Stamp;
use crate::completion::TaskHandle;
use crate::error::{ShutdownError, TaskError};
use crate::handle::{Counted, Handle, Lent};
use crate::lifecycle::{Admitted, Finished};
use crate::metrics::collector::TaskOutcome;
use crate::metrics::{TaskMetrics, TaskStats};
use crate::observe::{Event, Site, TaskEnd};
use crate::recycle::Age;
use crate::resource_pool::CreateError;
use crate::scheduler::Queued;
use crate::scheduler::capacity::Reserve;
use crate::shared::Shared;
use crate::submit::TaskBuilder;
use crate::sync::thread::JoinHandle;
use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicUsize, Mutex, Ordering};
use crate::task::{JobRef, TaskContext};
use crate::unwind;

const RUNNING: u32 = 0;
const STOPPING: u32 = 1;
const KILLING: u32 = 2;

/// A pool of pinned worker threads, each owning a resource, that runs the tasks it is given.
///
/// Cheap to clone: clones share one manager. Dropping the last clone stops it gracefully
/// (like [`stop`](Self::stop)) unless `stop` or `kill` was called.
///
/// Every task accepted gets exactly one outcome, `Ok(T)` or a [`TaskError`], whatever happens
/// (errors, panics, retries, `stop`, `kill`, racing submitters).
///
/// ```
/// use std::io;
/// use tasker::{TaskError, TaskManager};
///
/// let manager = TaskManager::builder()
///     .on_create(|| Ok::<Vec<u64>, io::Error>(Vec::new()))
///     .worker_count(2)
///     .build()?;
///
/// // Blocking: the answer comes back to this thread.
/// let len = manager.queue_task(|log, _ctx| {
///     log.push(1);
///     Ok(log.len())
/// })?;
/// assert!(len >= 1);
///
/// // A plain error is returned as `Failed`, with the number of runs.
/// let err = manager
///     .queue_task(|_, _| Err::<(), _>(io::Error::other("no")))
///     .unwrap_err();
/// assert!(matches!(err, TaskError::Failed { attempts: 1, .. }));
///
/// manager.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[repr(transparent)] // a worker's `Handle` view is lent as a `&TaskManager` (`LentManager`)
pub struct TaskManager<R, E> {
    /// One of the user's counted handles on the shared state (see `handle`: the workers hold
    /// strong references of their own, which do not keep the manager from stopping).
    inner: Handle<Shared<R, E>>,
}

impl<R, E> Clone for TaskManager<R, E> {
    fn clone(&self) -> Self {
        TaskManager {
            inner: self.inner.clone(),
        }
    }
}

impl<R, E> fmt::Debug for TaskManager<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &*self.inner;
        f.debug_struct("TaskManager")
            .field("workers", &s.workers.len())
            .field("pending_tasks", &s.lifecycle.pending())
            .field("closed", &s.lifecycle.is_closed())
            .finish()
    }
}

/// A worker's view of its manager, lent to the tasks it runs as a `&TaskManager`
/// ([`TaskContext::manager`]): not one of the user's handles, so it does not keep the manager
/// running (see `handle`).
pub(crate) struct LentManager<'a, R, E> {
    lent: Lent<'a, Shared<R, E>>,
}

impl<'a, R, E> LentManager<'a, R, E> {
    /// A view over the worker's own strong reference, valid while `shared` is borrowed.
    pub(crate) fn new(shared: &'a Arc<Shared<R, E>>) -> Self {
        LentManager {
            lent: Handle::lend(shared),
        }
    }
}

impl<R, E> std::ops::Deref for LentManager<'_, R, E> {
    type Target = TaskManager<R, E>;

    fn deref(&self) -> &TaskManager<R, E> {
        let handle: &Handle<Shared<R, E>> = &self.lent;
        // SAFETY: `TaskManager` is `repr(transparent)` over its one field, a
        // `Handle<Shared<R, E>>`, so the two have one layout; the reference keeps the
        // lifetime of the borrow of `self`, within which the view is valid (`Lent`).
        unsafe { &*(handle as *const Handle<Shared<R, E>> as *const TaskManager<R, E>) }
    }
}

/// What `stop`, `kill` and the last handle's drop share (a part of `Shared`, set up by the
/// builder; the threads are handed over by `TaskManager::from_parts`).
pub(crate) struct Control {
    /// `RUNNING`, `STOPPING` or `KILLING`: which of `stop`/`kill` was called.
    phase: AtomicU32,
    /// Worker threads (and the burst controller's); taken by the first caller that finds
    /// every worker exited, and joined then.
    threads: Mutex<Option<Vec<JoinHandle<()>>>>,
    /// A `stop_timeout` gave up on tasks still running: dropping the last clone then does
    /// not wait for them (their workers finish and exit on their own).
    gave_up: AtomicBool,
    /// The user's live handles (`TaskManager` clones; see `handle`). On a line of its own:
    /// a program that clones the manager per task writes it per task, and the state
    /// around it is read per task.
    handles: CachePadded<AtomicUsize>,
}

impl Control {
    pub(crate) fn new() -> Self {
        Control {
            phase: AtomicU32::new(RUNNING),
            threads: Mutex::new(None),
            gave_up: AtomicBool::new(false),
            handles: CachePadded::new(AtomicUsize::new(1)),
        }
    }
}

/// Dropping the last handle stops the manager (it may run again, when a task's clone of the
/// manager its worker lent it outlives the user's handles: the stop is idempotent).
impl<R, E> Counted for Shared<R, E> {
    fn handles(&self) -> &AtomicUsize {
        &self.control.handles
    }

    fn last_handle_dropped(&self) {
        if self
            .control
            .phase
            .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.begin_shutdown(false);
        }
        // Also when the shutdown was begun elsewhere (from inside a task, say): the last
        // clone returns only once the manager has shut down.
        if !self.control.gave_up.load(Ordering::Acquire) {
            self.join(None);
        }
    }
}

impl<R, E> Shared<R, E> {
    fn begin_shutdown(&self, kill: bool) {
        self.observer().observe(Event::ShutdownBegun { kill }, None);
        if kill {
            self.cancelled.store(true, Ordering::Release);
        }
        let _ = self.lifecycle.close(kill);
        // Sleeping workers must see the new state (the exit condition, or `Killed` mode);
        // submitters waiting for queue room must refuse.
        self.wake_all();
    }

    /// Waits until every worker exited and every resource is destroyed (`true`), or until
    /// `deadline` (`false`). From inside a task of this manager (a worker thread, or inside
    /// `run_task`) it returns `true` at once: that task is itself pending, so waiting for the
    /// drain would wait for itself. The workers then exit on their own once drained, each
    /// destroying its resource, the last one emptying the pool.
    ///
    /// Any number of callers may wait at once (`stop` here, a drop there): each waits for the
    /// last worker's exit (`Shared::exited`); the first to find it open joins the threads,
    /// which have ended or are ending.
    fn join(&self, deadline: Option<Instant>) -> bool {
        if self.is_inside() {
            return true;
        }
        if !self.exited.wait_until(deadline) {
            return false;
        }
        let threads = self
            .control
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(threads) = threads {
            for t in threads {
                // Workers abort rather than unwind (see `worker`), so join cannot fail.
                let _ = t.join();
            }
            self.publish_gauges();
        }
        true
    }
}

impl<R: Send + 'static, E: Send + 'static> TaskManager<R, E> {
    /// Starts configuring a manager. `R` and `E` are inferred from `on_create`, or named:
    /// `TaskManager::<Conn, MyError>::builder()`.
    ///
    /// ```
    /// use tasker::TaskManager;
    ///
    /// // R and E inferred from on_create...
    /// let inferred = TaskManager::builder()
    ///     .on_create(|| Ok::<String, std::io::Error>(String::new()))
    ///     .worker_count(1)
    ///     .build()?;
    /// // ...or named, for a builder set up before its hooks.
    /// let named = TaskManager::<String, std::io::Error>::builder()
    ///     .on_create(|| Ok(String::new()))
    ///     .worker_count(1)
    ///     .build()?;
    /// # drop((inferred, named));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> Builder<R, E> {
        Builder::new()
    }

    pub(crate) fn from_parts(shared: Arc<Shared<R, E>>, threads: Vec<JoinHandle<()>>) -> Self {
        *shared
            .control
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(threads);
        TaskManager {
            inner: Handle::new(shared),
        }
    }

    /// What the clones share, for the submission builder (`submit`) and the loom models
    /// (which act as the burst controller).
    #[inline]
    pub(crate) fn shared(&self) -> &Shared<R, E> {
        &self.inner
    }

    /// The one enqueue path: the deadline, admission (queue room, then the shutdown gate),
    /// then one task cell pushed to an injector. A refused task is answered here, on the
    /// caller's thread.
    ///
    /// A blocking submission (`blocking`) waits for room in a full bounded queue, and its
    /// push wakes no worker: `true` comes back when the task was queued, and the caller then
    /// owes `sleep.notify_one()` unless the task is taken first (`completion`'s step 1a).
    /// Every other submission wakes a worker here, if one is needed, and gets `false`.
    pub(crate) fn enqueue(
        &self,
        job: JobRef<R, E>,
        priority: bool,
        blocking: bool,
        deadline: Option<Instant>,
    ) -> bool {
        let shared = &*self.inner;
        // Check (1) of `submit`'s deadlines (the cell carries it for check (3)).
        if let Some(at) = deadline
            && Instant::now() >= at
        {
            self.refused(job, TaskError::DeadlineExceeded);
            return false;
        }
        if let Some(cap) = &shared.capacity {
            let closed = || shared.lifecycle.is_closed();
            let reserved = match (blocking, deadline) {
                (false, _) => cap.try_reserve(),
                (true, None) => cap.reserve_blocking(closed),
                // Check (2).
                (true, Some(at)) => match cap.reserve_until(closed, at) {
                    Reserve::Reserved => true,
                    Reserve::Closed => false,
                    Reserve::DeadlinePassed => {
                        self.refused(job, TaskError::DeadlineExceeded);
                        return false;
                    }
                },
            };
            if !reserved {
                let error = if shared.lifecycle.is_closed() {
                    TaskError::ShuttingDown
                } else {
                    TaskError::QueueFull
                };
                self.refused(job, error);
                return false;
            }
        }
        match shared.admit() {
            Ok(ticket) => {
                let at = job.queued_at();
                shared
                    .observer()
                    .observe(Event::Arrived { at, priority }, shared.own_tally());
                if blocking {
                    shared.push_quietly(Queued { job, ticket }, priority);
                    return true;
                }
                shared.push(Queued { job, ticket }, priority);
                false
            }
            Err(drained) => {
                if let Some(cap) = &shared.capacity {
                    cap.release();
                }
                if drained == Finished::Drained {
                    shared.wake_all();
                }
                self.refused(job, TaskError::ShuttingDown);
                false
            }
        }
    }

    /// Answers a refused task on the caller's thread.
    #[cold]
    fn refused(&self, job: JobRef<R, E>, error: TaskError<E>) {
        job.fail(error).report(&self.inner.observer());
    }

    // ----- the submission builder -----

    /// Starts a submission of a re-runnable task (retried after unhealthy errors), to which
    /// options are added ([`priority`](TaskBuilder::priority),
    /// [`deadline`](TaskBuilder::deadline), [`timeout`](TaskBuilder::timeout)) before one
    /// delivery submits it: [`wait`](TaskBuilder::wait), [`spawn`](TaskBuilder::spawn) or
    /// [`callback`](TaskBuilder::callback). The `queue_task*` methods are shorthands for it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker::TaskManager;
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<Vec<u32>, std::io::Error>(Vec::new()))
    ///     .worker_count(1)
    ///     .build()?;
    /// let handle = manager
    ///     .task(|log, _| {
    ///         log.push(7);
    ///         Ok(log.len())
    ///     })
    ///     .timeout(Duration::from_secs(1))
    ///     .spawn();
    /// assert_eq!(handle.wait()?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task<T, F>(&self, f: F) -> TaskBuilder<'_, R, E, F>
    where
        F: FnMut(&mut R, &TaskContext) -> Result<T, E>,
    {
        TaskBuilder::new(self, f)
    }

    /// Starts a submission of an at-most-once task (`FnOnce`: never re-run), as
    /// [`task`](Self::task) does.
    ///
    /// ```
    /// use tasker::TaskManager;
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<u32, std::io::Error>(0))
    ///     .worker_count(1)
    ///     .build()?;
    /// let token = String::from("charge card 42");
    /// let done = manager
    ///     .task_once(move |_, _| Ok(token))
    ///     .priority()
    ///     .wait()?;
    /// assert_eq!(done, "charge card 42");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_once<T, F>(&self, f: F) -> TaskBuilder<'_, R, E, F, true>
    where
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E>,
    {
        TaskBuilder::new(self, f)
    }

    // ----- blocking deliveries -----

    /// Queues a task and blocks until its outcome. Retried on unhealthy errors.
    ///
    /// Waits for room when the queue is bounded and full. Called from inside a task of this
    /// same manager it returns [`TaskError::WouldDeadlock`] at once (see there).
    ///
    /// ```
    /// use tasker::TaskManager;
    ///
    /// // Each worker owns a counter; a task borrows its worker's.
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<u64, std::io::Error>(0))
    ///     .worker_count(1)
    ///     .build()?;
    /// let n = manager.queue_task(|count, _ctx| {
    ///     *count += 1;
    ///     Ok(*count)
    /// })?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task<T, F>(&self, f: F) -> Result<T, TaskError<E>>
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task(f).wait()
    }

    /// Like [`queue_task`](Self::queue_task), on the priority queue: it starts before every
    /// normal task still queued.
    ///
    /// Priority is strict: workers take priority tasks first, so a steady flood of them
    /// starves normal tasks for as long as it lasts (nothing ages a waiting task), and retries
    /// go to the priority queue too. Keep priority for the latency-critical few.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let attempt = manager.queue_task_with_priority(|_, ctx| Ok(ctx.attempt()))?;
    /// assert_eq!(attempt, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_priority<T, F>(&self, f: F) -> Result<T, TaskError<E>>
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task(f).priority().wait()
    }

    /// Like [`queue_task`](Self::queue_task), but runs at most once: never retried.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// // A FnOnce may move what it captures out: it runs at most once.
    /// let receipt = String::from("charged");
    /// let got = manager.queue_task_once(move |_, _| Ok(receipt))?;
    /// assert_eq!(got, "charged");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_once<T, F>(&self, f: F) -> Result<T, TaskError<E>>
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task_once(f).wait()
    }

    /// Like [`queue_task_once`](Self::queue_task_once), on the priority queue: at most once,
    /// and before every normal task still queued.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let order = vec![1, 2, 3];
    /// let total = manager.queue_task_with_priority_once(move |_, _| Ok(order.into_iter().sum::<u32>()))?;
    /// assert_eq!(total, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_priority_once<T, F>(&self, f: F) -> Result<T, TaskError<E>>
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task_once(f).priority().wait()
    }

    // ----- callback deliveries -----

    /// Queues a task; `cb` receives its outcome, exactly once, on a worker thread (or on this
    /// thread if the task is refused). A panicking `cb` is caught and logged.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// manager.queue_task_with_callback(|_, _| Ok(21 * 2), move |outcome| {
    ///     tx.send(outcome).unwrap();
    /// });
    /// assert_eq!(rx.recv()?.ok(), Some(42));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_callback<T, F, C>(&self, f: F, cb: C)
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
        C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    {
        self.task(f).callback(cb);
    }

    /// Like [`queue_task_with_callback`](Self::queue_task_with_callback), on the priority
    /// queue.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// manager.queue_task_with_priority_with_callback(|_, ctx| Ok(ctx.attempt()), move |outcome| {
    ///     tx.send(outcome).unwrap();
    /// });
    /// assert_eq!(rx.recv()?.ok(), Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_priority_with_callback<T, F, C>(&self, f: F, cb: C)
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
        C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    {
        self.task(f).priority().callback(cb);
    }

    /// Like [`queue_task_with_callback`](Self::queue_task_with_callback), but runs at most
    /// once (`FnOnce`): never retried.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let name = String::from("report.csv");
    /// manager.queue_task_once_with_callback(move |_, _| Ok(name.len()), move |outcome| {
    ///     tx.send(outcome).unwrap();
    /// });
    /// assert_eq!(rx.recv()?.ok(), Some(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_once_with_callback<T, F, C>(&self, f: F, cb: C)
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
        C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    {
        self.task_once(f).callback(cb);
    }

    /// Like [`queue_task_with_callback`](Self::queue_task_with_callback), on the priority
    /// queue and at most once.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// use std::sync::mpsc;
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let name = String::from("urgent");
    /// manager.queue_task_with_priority_once_with_callback(move |_, _| Ok(name), move |outcome| {
    ///     tx.send(outcome).unwrap();
    /// });
    /// assert_eq!(rx.recv()?.ok().as_deref(), Some("urgent"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_priority_once_with_callback<T, F, C>(&self, f: F, cb: C)
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
        C: FnOnce(Result<T, TaskError<E>>) + Send + 'static,
    {
        self.task_once(f).priority().callback(cb);
    }

    // ----- handle deliveries -----

    /// Queues a task and returns a [`TaskHandle`] to wait on, poll, `.await` or cancel.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let handle = manager.queue_task_async(|count, _| {
    ///     *count += 10;
    ///     Ok(*count)
    /// });
    /// // ... other work meanwhile; then wait (or `.await` it in async code).
    /// assert_eq!(handle.wait()?, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_async<T, F>(&self, f: F) -> TaskHandle<T, E>
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task(f).spawn()
    }

    /// Like [`queue_task_async`](Self::queue_task_async), on the priority queue.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let handle = manager.queue_task_with_priority_async(|_, _| Ok("first"));
    /// assert_eq!(pollster::block_on(handle)?, "first");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_priority_async<T, F>(&self, f: F) -> TaskHandle<T, E>
    where
        T: Send + 'static,
        F: FnMut(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task(f).priority().spawn()
    }

    /// Like [`queue_task_async`](Self::queue_task_async), but runs at most once (`FnOnce`):
    /// never retried.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let payload = vec![0u8; 16];
    /// let handle = manager.queue_task_once_async(move |_, _| Ok(payload.len()));
    /// assert_eq!(handle.wait()?, 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_once_async<T, F>(&self, f: F) -> TaskHandle<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task_once(f).spawn()
    }

    /// Like [`queue_task_async`](Self::queue_task_async), on the priority queue and at most
    /// once.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// let payload = String::from("pay");
    /// let handle = manager.queue_task_with_priority_once_async(move |_, _| Ok(payload + "ment"));
    /// assert_eq!(handle.wait()?, "payment");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn queue_task_with_priority_once_async<T, F>(&self, f: F) -> TaskHandle<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E> + Send + 'static,
    {
        self.task_once(f).priority().spawn()
    }

    // ----- run now -----

    /// Runs `f` now on this thread, bypassing the queues, with a resource from the pool, or a
    /// temporary one from `on_create` (destroyed after) when the pool is empty. Never retried.
    /// A resource that comes back unhealthy (or from a panic) is destroyed, and the pool is
    /// refilled with a new one when `on_create` allows.
    ///
    /// ```
    /// # use tasker::TaskManager;
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<String, std::io::Error>("conn".into()))
    ///     .worker_count(1)
    ///     .resource_pool_size(1)
    ///     .build()?;
    /// let n = manager.run_task(|conn, _ctx| Ok(conn.len()))?;
    /// assert_eq!(n, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run_task<T, F>(&self, f: F) -> Result<T, TaskError<E>>
    where
        F: FnOnce(&mut R, &TaskContext) -> Result<T, E>,
    {
        let shared = &*self.inner;
        let ticket = match shared.admit() {
            Ok(ticket) => ticket,
            Err(drained) => {
                if drained == Finished::Drained {
                    shared.wake_all();
                }
                return Err(TaskError::ShuttingDown);
            }
        };
        // Finishes the ticket however `run_now` ends, even if it unwinds: a lost ticket would
        // hold `stop` forever.
        let _finish = FinishOnDrop {
            shared,
            ticket: Some(ticket),
        };
        let _scope = shared.enter_run_task();
        run_now(self, f)
    }

    // ----- shutdown -----

    /// Graceful shutdown: refuses new tasks, runs everything already queued (retries
    /// included), joins the workers and destroys every resource, then returns.
    ///
    /// A second call (or a call after `kill`) returns [`ShutdownError::AlreadyStopping`], once
    /// the shutdown under way has completed: whoever calls `stop`, `kill` or drops the last
    /// clone outside the manager's workers returns only when the manager has shut down, even
    /// when the shutdown was begun elsewhere (from inside a task, say).
    ///
    /// Called from inside a task of this manager (or inside its `run_task`), it begins the
    /// shutdown and returns without waiting: that task is itself part of what is drained.
    ///
    /// `stop` waits for every queued task and every running one: if a task never returns, or
    /// `on_create` keeps failing so no worker can run what is queued, `stop` waits with them.
    /// [`stop_timeout`](Self::stop_timeout) bounds the wait; `kill` (from another thread)
    /// resolves what is queued.
    ///
    /// ```
    /// use tasker::{ShutdownError, TaskManager};
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<u32, std::io::Error>(0))
    ///     .worker_count(1)
    ///     .build()?;
    /// manager.queue_task_with_callback(|n, _| Ok(*n), |_| {});
    /// manager.stop()?; // the queued task ran first
    /// assert_eq!(manager.stop(), Err(ShutdownError::AlreadyStopping));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(&self) -> Result<(), ShutdownError> {
        let begun = self.inner.control.phase.compare_exchange(
            RUNNING,
            STOPPING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if begun.is_ok() {
            self.inner.begin_shutdown(false);
        }
        self.inner.join(None);
        begun
            .map(|_| ())
            .map_err(|_| ShutdownError::AlreadyStopping)
    }

    /// Like [`stop`](Self::stop), but returns within `timeout` (plus a grace of
    /// [`SHUTDOWN_GRACE`](Self::SHUTDOWN_GRACE)).
    ///
    /// At the deadline it kills what is left: queued tasks answer [`TaskError::Killed`]
    /// (resolved on this thread if every worker is busy), running tasks see
    /// [`TaskContext::is_cancelled`]. If a task is still running after the grace, it returns
    /// [`ShutdownError::TimedOut`] with how many: those tasks finish on their workers (their
    /// outcome is delivered), each worker then destroys its resource on its own thread and
    /// exits; dropping the last clone afterwards does not wait for them.
    ///
    /// A second call returns [`ShutdownError::AlreadyStopping`] after waiting, at most
    /// `timeout`, for the shutdown under way.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasker::{ShutdownError, TaskManager};
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .build()?;
    /// // A task that ignores cancellation for a while.
    /// let (started, has_started) = std::sync::mpsc::channel();
    /// manager.queue_task_with_callback(
    ///     move |_, _| {
    ///         started.send(()).unwrap();
    ///         std::thread::sleep(Duration::from_millis(300));
    ///         Ok(())
    ///     },
    ///     |_| {},
    /// );
    /// has_started.recv()?;
    /// let stopped = manager.stop_timeout(Duration::from_millis(10));
    /// assert_eq!(stopped, Err(ShutdownError::TimedOut { running: 1 }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop_timeout(&self, timeout: Duration) -> Result<(), ShutdownError> {
        let shared = &*self.inner;
        // A timeout too long for `Instant` means "no deadline".
        let deadline = Instant::now().checked_add(timeout);
        if shared
            .control
            .phase
            .compare_exchange(RUNNING, STOPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            shared.join(deadline);
            return Err(ShutdownError::AlreadyStopping);
        }
        shared.begin_shutdown(false);
        if shared.join(deadline) {
            return Ok(());
        }
        // The deadline passed: kill what is left.
        if shared.control.phase.swap(KILLING, Ordering::AcqRel) != KILLING {
            shared.begin_shutdown(true);
        }
        shared.kill_queued();
        if shared.join(Instant::now().checked_add(Self::SHUTDOWN_GRACE)) {
            return Ok(());
        }
        shared.control.gave_up.store(true, Ordering::Release);
        Err(ShutdownError::TimedOut {
            running: shared.lifecycle.pending(),
        })
    }

    /// How long [`stop_timeout`](Self::stop_timeout) waits after its deadline, once it killed
    /// what was left, for workers between tasks (or whose task checks
    /// [`TaskContext::is_cancelled`]) to exit.
    ///
    /// ```
    /// use tasker::TaskManager;
    ///
    /// type Manager = TaskManager<(), std::io::Error>;
    /// assert!(Manager::SHUTDOWN_GRACE < std::time::Duration::from_secs(1));
    /// ```
    pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(10);

    /// Immediate shutdown: refuses new tasks, marks running tasks' contexts cancelled,
    /// resolves every queued task with [`TaskError::Killed`], joins the workers and destroys
    /// every resource. Allowed while `stop` is under way (escalation). A second `kill`
    /// returns [`ShutdownError::AlreadyKilled`], once the shutdown has completed.
    ///
    /// ```
    /// use tasker::{ShutdownError, TaskManager};
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(1)
    ///     .build()?;
    /// manager.kill()?;
    /// assert_eq!(manager.kill(), Err(ShutdownError::AlreadyKilled));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn kill(&self) -> Result<(), ShutdownError> {
        let first = self.inner.control.phase.swap(KILLING, Ordering::AcqRel) != KILLING;
        if first {
            self.inner.begin_shutdown(true);
        }
        self.inner.join(None);
        if first {
            Ok(())
        } else {
            Err(ShutdownError::AlreadyKilled)
        }
    }

    // ----- snapshots -----

    /// Workers, queues and pool right now.
    ///
    /// ```
    /// use tasker::TaskManager;
    ///
    /// let manager = TaskManager::builder()
    ///     .on_create(|| Ok::<(), std::io::Error>(()))
    ///     .worker_count(2)
    ///     .max_worker_count(4)
    ///     .resource_pool_size(1)
    ///     .build()?;
    /// let stats = manager.stats();
    /// assert_eq!(stats.base_workers, 2);
    /// assert_eq!(stats.max_workers, 4);
    /// assert_eq!(stats.available_resources, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> TaskStats {
        self.inner.stats()
    }

    /// Totals, rates over the sliding window, and latency percentiles. Cheap enough to call
    /// every few milliseconds: it reads counters and merges one pair of fixed-size histograms
    /// per worker.
    ///
    /// ```
    /// # let manager = tasker::TaskManager::builder()
    /// #     .on_create(|| Ok::<u64, std::io::Error>(0))
    /// #     .worker_count(1)
    /// #     .build()?;
    /// manager.queue_task(|_, _| Ok(()))?;
    /// let _ = manager.queue_task(|_, _| Err::<(), _>(std::io::Error::other("no")));
    /// manager.stop()?; // a worker counts a task just after handing its outcome over
    /// let metrics = manager.metrics();
    /// assert_eq!(metrics.total_tasks_completed, 1);
    /// assert_eq!(metrics.total_tasks_failed, 1);
    /// assert_eq!(metrics.success_rate, 0.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metrics(&self) -> TaskMetrics {
        let s = &*self.inner;
        s.metrics.snapshot(s.workers.iter().map(|w| &w.metrics))
    }
}

/// Gives an admission ticket back when dropped (`run_task`'s, whatever happens inside).
struct FinishOnDrop<'a, R, E> {
    shared: &'a Shared<R, E>,
    ticket: Option<Admitted>,
}

impl<R, E> Drop for FinishOnDrop<'_, R, E> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.finish(ticket);
        }
    }
}

/// `run_task`'s body, between admission and finish: one attempt (see `attempt`) on a pooled
/// or temporary resource. User code here (the body, hooks, `Drop`s, collector, logger) is all
/// called under a catch, so nothing unwinds out of it.
fn run_now<R: 'static, E: 'static, T, F>(
    manager: &TaskManager<R, E>,
    f: F,
) -> Result<T, TaskError<E>>
where
    F: FnOnce(&mut R, &TaskContext) -> Result<T, E>,
{
    let shared = &*manager.inner;
    let metrics = &shared.metrics;
    let observer = shared.observer();
    let queued_at = metrics.now();
    observer.observe(
        Event::Arrived {
            at: queued_at,
            priority: false,
        },
        None,
    );
    // Stamps are clamped to never go back: this thread may move to a CPU whose time-stamp
    // counter is a little behind.
    let ended = |started_at: Option<Stamp>, outcome: TaskOutcome| {
        let end = TaskEnd {
            queued_at,
            started_at,
            finished_at: metrics.now().max(started_at.unwrap_or(queued_at)),
            attempt: u32::from(started_at.is_some()),
            priority: false,
            outcome,
        };
        observer.observe(Event::Ended(end), None);
    };
    let (mut resource, mut age, pooled) = match checkout(shared) {
        Some((r, age)) => (r, age, true),
        None => match shared.hooks.create() {
            Ok(r) => (r, Age::new(metrics.now()), false),
            Err(e) => {
                // The body never runs: dropping it is user code too.
                observer.caught(Site::Drop("a task closure"), unwind::drop_quietly(f));
                let (outcome, error) = match e {
                    CreateError::Failed(e) => (TaskOutcome::Failed, TaskError::ResourceCreation(e)),
                    CreateError::Panicked(message) => {
                        (TaskOutcome::Panicked, TaskError::Panicked { message })
                    }
                };
                ended(None, outcome);
                return Err(error);
            }
        },
    };
    let mut ctx = TaskContext::new(shared.cancelled.clone());
    ctx.set_attempt(1);
    // SAFETY: `manager` (the caller's handle) outlives `ctx`, a local of this call.
    unsafe { ctx.set_manager(manager) };
    let started_at = Some(metrics.now().max(queued_at));
    let ran = Ran::run(&shared.hooks, &observer, &mut resource, |r| f(r, &ctx));
    let broken = ran.broken(&shared.hooks, &observer);
    let (outcome, result) = match ran {
        Ran::Ok(value) => (TaskOutcome::Completed, Ok(value)),
        Ran::Failed(error) | Ran::Broken(error) => (
            TaskOutcome::Failed,
            Err(TaskError::Failed { error, attempts: 1 }),
        ),
        Ran::Panicked(message) => (TaskOutcome::Panicked, Err(TaskError::Panicked { message })),
    };
    ended(started_at, outcome);
    if pooled && shared.recycle.is_active() {
        age.used(metrics.now());
    }
    match (broken, pooled) {
        (None, true) => shared.pool.put(resource, age),
        (None, false) => shared.hooks.destroy(resource, &observer),
        (Some(broken), pooled) => {
            attempt::destroy_broken(&shared.hooks, &observer, resource, None, broken, None);
            if pooled {
                match shared.hooks.create() {
                    Ok(r) => shared.pool.put(r, Age::new(metrics.now())),
                    Err(e) => refill_failed(shared, e),
                }
            }
        }
    }
    result
}

/// Takes a resource from `run_task`'s pool, applying the lifecycle policy (see `recycle`): a
/// resource it retires is destroyed and a new one made in its place. `None`: the pool is
/// empty, or the replacement could not be made (the pool shrinks by one; the caller then
/// makes a temporary resource as for an empty pool).
fn checkout<R, E>(shared: &Shared<R, E>) -> Option<(R, Age)> {
    let (mut resource, age) = shared.pool.take()?;
    let observer = shared.observer();
    let Some(reason) = shared
        .recycle
        .due(&mut resource, &age, || shared.metrics.now(), &observer)
    else {
        return Some((resource, age));
    };
    observer.observe(
        Event::Recycled {
            worker: None,
            reason,
        },
        None,
    );
    shared.hooks.destroy(resource, &observer);
    match shared.hooks.create() {
        Ok(r) => Some((r, Age::new(shared.metrics.now()))),
        Err(e) => {
            refill_failed(shared, e);
            None
        }
    }
}

/// `on_create` failed while refilling `run_task`'s pool: reported, and its error dropped
/// (user code).
#[cold]
fn refill_failed<R, E>(shared: &Shared<R, E>, e: CreateError<E>) {
    let observer = shared.observer();
    let (error, panic) = e.describe(&shared.hooks, &observer);
    observer.observe(
        Event::PoolRefillFailed {
            error: error.as_deref(),
            panic,
        },
        None,
    );
    if let CreateError::Failed(e) = e {
        observer.caught(Site::Drop("on_create's error"), unwind::drop_quietly(e));
    }
}
