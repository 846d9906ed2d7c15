//! The state one manager's workers and handles share.

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::completion::Claim;
use crate::error::TaskError;
use crate::latch::Latch;
use crate::lifecycle::{Admitted, Finished, Lifecycle};
use crate::log::Logger;
use crate::manager::Control;
use crate::metrics::collector::TaskOutcome;
use crate::metrics::{Metrics, TaskStats, WorkerMetrics};
use crate::observe::{Event, Observer, TaskEnd};
use crate::recycle::Recycle;
use crate::resource_pool::{Hooks, ResourcePool};
use crate::scheduler::capacity::Capacity;
use crate::scheduler::sleep::Sleep;
use crate::scheduler::{Queued, Queues};
use crate::slot::SlotState;
use crate::sync::deque::Worker;
use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicUsize, Condvar, Mutex, Ordering};

/// Per-worker state others may read.
#[derive(Default)]
pub(crate) struct WorkerSlot {
    /// For burst slots, parked or up (see `burst`); unused by base workers.
    pub(crate) state: SlotState,
    /// For burst slots, activations in a row whose `on_create` failed (the controller backs
    /// off). Written by the slot, read by the controller.
    pub(crate) activation_failures: AtomicU32,
    /// Holds a resource and takes tasks. Written only by the worker.
    pub(crate) active: AtomicBool,
    /// Totals, rate windows and published histograms (see `metrics`).
    pub(crate) metrics: WorkerMetrics,
}

pub(crate) struct Shared<R, E> {
    pub(crate) queues: Queues<R, E>,
    pub(crate) sleep: Sleep,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) capacity: Option<Arc<Capacity>>,
    pub(crate) hooks: Hooks<R, E>,
    /// The lifecycle knobs (see `recycle`).
    pub(crate) recycle: Recycle<R>,
    pub(crate) pool: ResourcePool<R>,
    pub(crate) max_retries: u32,
    /// Read by every `TaskContext::is_cancelled`; set by `kill`.
    pub(crate) cancelled: Arc<AtomicBool>,
    /// Every slot: `base_workers` base workers, then the burst slots up to `max_worker_count`.
    pub(crate) workers: Box<[CachePadded<WorkerSlot>]>,
    pub(crate) base_workers: usize,
    /// Whether there are burst slots (and so a controller, and busy-time accounting).
    pub(crate) bursting: bool,
    /// Keep a burst slot's resource while it is parked.
    pub(crate) keep_burst_resources: bool,
    pub(crate) metrics: Metrics,
    pub(crate) logger: Box<dyn Logger>,
    /// Worker threads not yet exited; the last one out empties the pool.
    pub(crate) live_workers: AtomicUsize,
    /// Workers wait here after making their first resource until `build` decides.
    pub(crate) start_gate: Latch,
    /// Opened by the last worker to exit, once it emptied the `run_task` pool: from then on
    /// every resource made is destroyed.
    pub(crate) exited: Latch,
    /// Workers whose `on_create` failed sleep here between attempts; shutdown notifies it.
    pub(crate) backoff: (Mutex<()>, Condvar),
    /// The shutdown's state and the user's handles (see `manager`).
    pub(crate) control: Control,
}

crate::sync::thread_local! {
    /// The manager whose worker this thread is (its `Shared` address), 0 elsewhere.
    static CURRENT_MANAGER: Cell<usize> = const { Cell::new(0) };
    /// On a worker thread, while its loop runs: its local deque (a
    /// `*const Worker<Queued<R, E>>` of that manager's `R` and `E`, erased), null elsewhere.
    /// See [`LocalQueue`].
    static LOCAL_QUEUE: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
    /// On a worker thread, its slot index in its manager (see [`Shared::shard`]).
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
    /// The manager whose `run_task` this thread is inside, 0 elsewhere.
    static IN_RUN_TASK: Cell<usize> = const { Cell::new(0) };
}

/// The manager whose worker the calling thread is ([`Shared::id`]), 0 on other threads.
pub(crate) fn current_manager() -> usize {
    CURRENT_MANAGER.with(|c| c.get())
}

/// A worker thread's local deque, reachable from the tasks it runs (work made inside a task
/// stays on its worker: [`Shared::push`]) for as long as this guard lives.
///
/// # Protocol
///
/// The worker's loop owns the deque for the whole life of its thread and reaches it only
/// through shared references (`Worker::push`/`pop` take `&self`). [`LocalQueue::install`]
/// stores its address in a thread-local of *this* thread, tagged by the manager
/// (`CURRENT_MANAGER`); the guard clears it before the deque can go. A push reads the pointer
/// only on the same thread, only when the thread's manager is the pushing manager (so `R` and
/// `E` are the deque's own), and only while the guard lives: the deque is alive, and only
/// shared references to it exist. Another thread never sees the pointer.
pub(crate) struct LocalQueue(());

impl LocalQueue {
    /// Makes `local` reachable from this thread's tasks until the guard drops. The caller
    /// keeps `local` alive and in place meanwhile (it borrows it for the guard's life).
    pub(crate) fn install<'a, R, E>(local: &'a Worker<Queued<R, E>>) -> LocalQueueGuard<'a> {
        LOCAL_QUEUE.with(|c| c.set(local as *const Worker<Queued<R, E>> as *const ()));
        LocalQueueGuard(std::marker::PhantomData)
    }
}

/// Clears the thread's local-queue pointer when dropped (see [`LocalQueue`]).
pub(crate) struct LocalQueueGuard<'a>(std::marker::PhantomData<&'a ()>);

impl Drop for LocalQueueGuard<'_> {
    fn drop(&mut self) {
        LOCAL_QUEUE.with(|c| c.set(std::ptr::null()));
    }
}

/// Marks the calling thread as inside a `run_task` of one manager until dropped.
pub(crate) struct RunTaskScope {
    previous: usize,
}

impl Drop for RunTaskScope {
    fn drop(&mut self) {
        IN_RUN_TASK.with(|c| c.set(self.previous));
    }
}

/// A blocking submission's wait wakes workers and looks at the queues through its manager
/// (`completion`, steps 1a and 1b).
impl<R, E> crate::completion::Submitted for Shared<R, E> {
    fn wake(&self) {
        self.sleep.notify_one();
    }

    fn backlog(&self) -> bool {
        self.queues.priority_len() + self.queues.normal_len() > 1
    }
}

impl<R, E> Shared<R, E> {
    /// `kill` has begun. Read per task: the read-mostly `cancelled` flag, set by `kill`
    /// before it closes the lifecycle.
    #[inline]
    pub(crate) fn kill_begun(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Where every event is reported (see `observe`).
    #[inline]
    pub(crate) fn observer(&self) -> Observer<'_> {
        Observer {
            metrics: &self.metrics,
            logger: &*self.logger,
        }
    }

    /// Pushes an accepted task and wakes a worker if one is needed.
    ///
    /// A normal task made on one of this manager's workers (inside a task, a callback or a
    /// hook) goes to that worker's local deque: work stays where it is made, and idle peers
    /// steal it (the wake below gets one up). Everything else goes to an injector: priority
    /// tasks and retries always (workers look at the priority injector before their own
    /// deque, so a priority task still overtakes every queued normal task), submissions from
    /// other threads in their order.
    #[inline]
    pub(crate) fn push(&self, queued: Queued<R, E>, priority: bool) {
        self.push_quietly(queued, priority);
        self.sleep.notify_one();
    }

    /// [`push`](Self::push) without the wake-up: the caller owes a `sleep.notify_one()` for
    /// this task unless the task is taken first (a blocking submission, which waits for it
    /// anyway: see `completion`'s step 1a).
    #[inline]
    pub(crate) fn push_quietly(&self, queued: Queued<R, E>, priority: bool) {
        if priority {
            self.queues.priority.push(queued);
        } else if let Some(local) = self.local_queue() {
            local.push(queued);
        } else {
            self.queues.normal.push(queued);
        }
    }

    /// This thread's local deque, when it is a worker of this manager running its loop.
    #[inline]
    fn local_queue(&self) -> Option<&Worker<Queued<R, E>>> {
        if CURRENT_MANAGER.with(|c| c.get()) != self.id() {
            return None;
        }
        let ptr = LOCAL_QUEUE.with(|c| c.get());
        // SAFETY: non-null only while this thread's `LocalQueueGuard` lives, and then it is the
        // address of this thread's deque, alive and reached only through shared references
        // (see `LocalQueue`); this thread is a worker of this manager (checked above), so the
        // deque's element type is this manager's `Queued<R, E>`. The reference does not
        // outlive this call's caller, which runs inside that guard's life on this thread.
        (!ptr.is_null()).then(|| unsafe { &*ptr.cast::<Worker<Queued<R, E>>>() })
    }

    /// An accepted task got its outcome. A worker of this manager holds the count's
    /// decrement back (see `lifecycle`, "A worker settles its outcomes in batches").
    #[inline]
    pub(crate) fn finish(&self, ticket: Admitted) {
        let finished = match self.worker_index() {
            Some(me) => self.lifecycle.finish_owned(ticket, me),
            None => self.lifecycle.finish(ticket, self.shard()),
        };
        if finished == Finished::Drained {
            self.wake_all();
        }
    }

    /// A worker of this manager is about to stop taking tasks for a while (search, sleep,
    /// park, make a resource, exit): it applies the outcomes it holds back.
    #[inline]
    pub(crate) fn settle(&self) {
        let me = self.worker_index();
        debug_assert!(me.is_some(), "only a worker holds outcomes back");
        if let Some(me) = me
            && self.lifecycle.settle(me) == Finished::Drained
        {
            self.wake_all();
        }
    }

    /// Wakes every thread that waits on a state change: sleeping workers, submitters waiting
    /// for queue room, workers backing off after a failed `on_create`, the burst controller,
    /// and (once closed) parked burst slots.
    pub(crate) fn wake_all(&self) {
        if self.lifecycle.is_closed() {
            for w in &self.workers[self.base_workers..] {
                w.state.close();
            }
        }
        self.sleep.wake_all();
        if let Some(cap) = &self.capacity {
            cap.wake_all();
        }
        self.wake_backoff();
    }

    /// Wakes the workers backing off after a failed `on_create` (and the burst controller
    /// between ticks) so they look at the state again. Taking the lock orders this notify
    /// after a waiter's check of the state, which it makes under the same lock.
    pub(crate) fn wake_backoff(&self) {
        drop(self.backoff.0.lock());
        self.backoff.1.notify_all();
    }

    /// This manager's identity (its address): what a worker thread records, and what a
    /// handle task's cell remembers as its owner.
    pub(crate) fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// Marks the calling thread as this manager's worker `index`.
    pub(crate) fn enter_worker_thread(&self, index: usize) {
        CURRENT_MANAGER.with(|c| c.set(self.id()));
        WORKER_INDEX.with(|c| c.set(index));
    }

    /// The calling thread's lifecycle shard: a worker's own (its slot index), or one of the
    /// shards after the workers', by thread, for everyone else (see `lifecycle`). So a
    /// worker counting in the tasks it makes and counting out the ones it ends writes only
    /// its own line.
    #[inline]
    pub(crate) fn shard(&self) -> usize {
        self.worker_index()
            .unwrap_or_else(|| self.workers.len() + crate::metrics::thread_shard())
    }

    /// The calling thread's worker index, on a worker of this manager.
    #[inline]
    fn worker_index(&self) -> Option<usize> {
        self.is_current_worker()
            .then(|| WORKER_INDEX.with(|c| c.get()))
    }

    /// The calling worker's own tally (it is its only writer), or `None` off the workers.
    #[inline]
    pub(crate) fn own_tally(&self) -> Option<&crate::metrics::Tally> {
        self.worker_index()
            .map(|me| &self.workers[me].metrics.tally)
    }

    /// Enters the lifecycle gate on the calling thread's shard (see `lifecycle`).
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admitted, Finished> {
        match self.worker_index() {
            Some(me) => self.lifecycle.admit_owned(me),
            None => self.lifecycle.admit(self.shard()),
        }
    }

    /// True on a worker thread of this manager (a task calling back into its manager).
    pub(crate) fn is_current_worker(&self) -> bool {
        CURRENT_MANAGER.with(|c| c.get()) == self.id()
    }

    /// Marks the calling thread as inside `run_task` of this manager (see [`Self::is_inside`]).
    pub(crate) fn enter_run_task(&self) -> RunTaskScope {
        RunTaskScope {
            previous: IN_RUN_TASK.with(|c| c.replace(self.id())),
        }
    }

    /// True when the calling thread runs a task of this manager: on one of its workers, or
    /// inside its `run_task`. Such a thread holds a task pending, so it must not wait for the
    /// manager to drain (`stop`/`kill` then begin the shutdown without joining).
    pub(crate) fn is_inside(&self) -> bool {
        self.is_current_worker() || IN_RUN_TASK.with(|c| c.get()) == self.id()
    }

    /// Opens the start gate (`build` decided); after a failed build the lifecycle is closed
    /// first, so workers then drain and exit.
    pub(crate) fn open_start_gate(&self) {
        self.start_gate.open();
    }

    pub(crate) fn wait_start_gate(&self) {
        self.start_gate.wait();
    }

    /// A worker thread is leaving; the last one empties the `run_task` pool.
    pub(crate) fn worker_exited(&self) {
        if self.live_workers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.pool.drain(&self.hooks, &self.observer());
            self.exited.open();
        }
    }

    /// After `kill`: resolves every task still queued with `Killed` on the calling thread
    /// (the workers may all be held by tasks that ignore cancellation). Each is taken from its
    /// queue once, so this races the workers safely; returns how many it resolved.
    pub(crate) fn kill_queued(&self) -> usize {
        let mut resolved = 0;
        while let Some(Queued { job, ticket }) = self.queues.steal_any() {
            let (queued_at, priority, attempt) = (job.queued_at(), job.priority(), job.attempts());
            let (outcome, delivered) = if job.claim() == Claim::Cancelled {
                (TaskOutcome::Cancelled, job.release())
            } else {
                if attempt == 0
                    && let Some(cap) = &self.capacity
                {
                    cap.release();
                }
                (TaskOutcome::Killed, job.fail(TaskError::Killed))
            };
            let observer = self.observer();
            let end = TaskEnd {
                queued_at,
                started_at: None,
                finished_at: self.metrics.now().max(queued_at),
                attempt,
                priority,
                outcome,
            };
            observer.observe(Event::Ended(end), None);
            delivered.report(&observer);
            self.finish(ticket);
            resolved += 1;
        }
        resolved
    }

    /// Refreshes the `metrics` facade's gauges (a no-op without the feature).
    pub(crate) fn publish_gauges(&self) {
        #[cfg(feature = "metrics")]
        self.metrics.facade.gauges(&self.stats());
    }

    pub(crate) fn stats(&self) -> TaskStats {
        let burst = self.burst_up();
        TaskStats {
            base_workers: self.base_workers,
            active_workers: self.active_workers(),
            burst_workers: burst,
            parked_workers: self.workers.len() - self.base_workers - burst,
            max_workers: self.workers.len(),
            queued_tasks: self.queues.normal_len(),
            priority_tasks: self.queues.priority_len(),
            pending_tasks: self.lifecycle.pending(),
            available_resources: self.pool.len(),
        }
    }

    /// Burst slots up (activating, active, or asked to park and not parked yet).
    pub(crate) fn burst_up(&self) -> usize {
        self.workers[self.base_workers..]
            .iter()
            .filter(|w| w.state.is_up())
            .count()
    }

    pub(crate) fn active_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.active.load(Ordering::Relaxed))
            .count()
    }
}
