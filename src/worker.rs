//! A worker slot's thread: pin, own a resource, run tasks, replace a broken resource, drain.
//!
//! # Who touches what
//!
//! The thread owns its resource (`Option<R>`, `None` while it is being replaced), its local
//! deque and its [`WorkerSlot`] counters; nobody else writes them. It shares the injectors,
//! the peers' stealers, the sleep state and the lifecycle flags and shards (see their modules).
//!
//! # A task's path through the worker ([`WorkerLoop::handle`])
//!
//! 1. `claim`: a task cancelled through its handle is let go unrun (its outcome is
//!    `Cancelled`, even when `kill` has begun since; the cancel already dropped its closure
//!    and gave its queue place back).
//! 2. A fresh task gives its queue place back (bounded queues).
//! 3. After `kill`, the task is resolved `Killed` unrun; a fresh task past its deadline is
//!    resolved `DeadlineExceeded` unrun (see `submit`).
//! 4. The lifecycle policy (see `recycle`): a resource too old, used enough, or idle and
//!    rejected by `validate` is destroyed and a new one made (with the usual backoff) before
//!    the task runs. Then run it against the resource, catching a panic.
//! 5. `Ok`: delivered inside `run`. `Err(e)` with `check_health(&e)`: delivered as `Failed`.
//!    `Err(e)` unhealthy, or a panic: the resource is destroyed (and re-made at the top of the
//!    loop); a re-runnable task with attempts left is pushed to the priority injector, keeping
//!    its admission ticket; anything else is delivered as `Failed` or `Panicked`.
//! 6. Every delivered outcome gives its ticket back to the lifecycle, and is recorded once in
//!    the worker's tally and (when set) the collector.
//!
//! # A woken caller
//!
//! Between two tasks the worker looks whether a caller parked on its answer was woken since
//! its last look (by any worker), or was woken and has not run yet, and if so yields its
//! CPU: the caller may be queued on this CPU behind this pinned, busy worker (see
//! `completion`'s module docs, steps 3-5).
//!
//! # Time
//!
//! The worker reads the clock once per task when busy: the read that ends one task also
//! starts the next one if that was found at the first look (or the next one's queue time, if
//! it was queued after that read). A successful task's value is handed over before that read,
//! so its execution time includes a callback's run time; error outcomes are handed over after
//! it, and the next task then reads the clock afresh. After a search that spun or
//! slept it reads the clock again, so an idle gap is never counted as execution time. The
//! queue time was stamped once, at submission.
//!
//! # Panic policy
//!
//! A task's panic (and a callback's, and a hook's) is caught where it is called. A panic that
//! escapes to the worker loop is a bug in this crate: its invariants can no longer be trusted,
//! so the process aborts ([`AbortOnUnwind`]) rather than leave submitters waiting forever.

use std::time::{Duration, Instant};

use crate::attempt::{self, Ran};
use crate::clock::Stamp;
use crate::completion::{Claim, Delivered, WokenWaiters};
use crate::error::TaskError;
use crate::manager::LentManager;
use crate::metrics::collector::TaskOutcome;
use crate::metrics::recorder::LocalRecorder;
use crate::observe::{Event, Site, TaskEnd};
use crate::recycle::{Age, ReplaceReason};
use crate::resource_pool::CreateError;
use crate::scheduler::sleep::Slept;
use crate::scheduler::{INJECTOR_INTERVAL, Queued};
use crate::shared::{LocalQueue, Shared, WorkerSlot};
use crate::slot::Wakeup;
use crate::sync::deque::Worker;
use crate::sync::mpsc::Sender;
use crate::sync::{Arc, Backoff, Ordering};
use crate::task::{JobRef, TaskContext};
use crate::unwind::{self, AbortOnUnwind};

/// A searching worker polls the queues with at most this many `spin_loop` hints in between
/// (~250 ns here; one poll reads several queues): a task that arrives while it spins starts
/// within that (see [`Backoff`]).
const SEARCH_MAX_PAUSES: u32 = 8;

/// Everything a worker thread starts with.
pub(crate) struct WorkerInit<R, E> {
    pub(crate) index: usize,
    /// A burst slot: starts parked, without a resource (see `burst`).
    pub(crate) burst: bool,
    pub(crate) local: Worker<Queued<R, E>>,
    pub(crate) core: Option<core_affinity::CoreId>,
    /// Where the first `on_create` outcome is reported to `build`.
    pub(crate) ready: Sender<Result<(), CreateError<E>>>,
}

/// Replacing a resource backs off from this delay...
const CREATE_BACKOFF_MIN: Duration = Duration::from_millis(1);
/// ...doubling up to this one.
const CREATE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The thread body.
pub(crate) fn main<R: 'static, E: 'static>(shared: Arc<Shared<R, E>>, init: WorkerInit<R, E>) {
    let guard = AbortOnUnwind("a worker");
    shared.enter_worker_thread(init.index);
    if let Some(core) = init.core
        && !core_affinity::set_for_current(core)
    {
        shared.observer().observe(
            Event::PinFailed {
                worker: init.index,
                core: core.id,
            },
            None,
        );
    }
    let resource = match if init.burst {
        Ok(None)
    } else {
        shared.hooks.create().map(Some)
    } {
        Ok(r) => {
            if r.is_some() {
                // Counted active before `build` returns, so `stats()` is right from the start.
                shared.workers[init.index]
                    .active
                    .store(true, Ordering::Relaxed);
            }
            // The receiver lives until every worker reported.
            let _ = init.ready.send(Ok(()));
            r
        }
        Err(e) => {
            let _ = init.ready.send(Err(e));
            None
        }
    };
    drop(init.ready);
    shared.wait_start_gate();

    // The deque lives here, in place, for the rest of the thread; the loop and the tasks it
    // runs reach it through shared references (see `LocalQueue`).
    let local = init.local;
    let local_guard = LocalQueue::install(&local);
    // What the tasks borrow as their manager (`TaskContext::manager`): a view over this
    // thread's own reference, declared before the loop so it outlives the loop's context.
    let lent = LentManager::new(&shared);
    let mut worker = WorkerLoop {
        ctx: TaskContext::new(shared.cancelled.clone()),
        slot: &shared.workers[init.index],
        index: init.index,
        local: &local,
        resource: None,
        age: Age::new(0),
        recorder: LocalRecorder::new(),
        last_clock: None,
        picks: 0,
        burst: init.burst,
        waiters: WokenWaiters::new(),
        shared: &shared,
    };
    // SAFETY: `lent` outlives `worker` (declared before it, dropped after it) and stays in
    // place.
    unsafe { worker.ctx.set_manager(&*lent) };
    if let Some(r) = resource {
        worker.set_resource(r);
    }
    if init.burst {
        worker.burst_loop();
    } else {
        let _ = worker.run();
    }
    // Nothing is held back by now (a worker leaves its loop only once drained or parked,
    // and both settle first); settling again costs a load.
    shared.settle();
    worker.release_resource();
    worker
        .recorder
        .publish(&worker.slot.metrics.published, true);
    drop(worker);
    drop(local_guard);
    shared.worker_exited();
    std::mem::forget(guard);
}

struct WorkerLoop<'a, R, E> {
    shared: &'a Shared<R, E>,
    slot: &'a WorkerSlot,
    index: usize,
    local: &'a Worker<Queued<R, E>>,
    resource: Option<R>,
    /// The resource's history, for the lifecycle policy (meaningless while `resource` is
    /// `None`; reset by `set_resource`).
    age: Age,
    ctx: TaskContext,
    recorder: LocalRecorder,
    /// The last clock read, while it can still serve as "now" (no search since).
    last_clock: Option<Stamp>,
    /// A burst slot (it may be asked to park).
    burst: bool,
    /// Searches begun, for the injector-first turn (see `scheduler::INJECTOR_INTERVAL`).
    picks: u32,
    /// The last parked-caller wake-up this worker yielded for.
    waiters: WokenWaiters,
}

/// Why the worker loop returned.
#[must_use]
enum RunEnd {
    /// Drained: the thread exits.
    Exit,
    /// A burst slot was asked to park.
    Park,
}

/// What the search for a task found.
enum Next<R, E> {
    Task(Queued<R, E>),
    Exit,
    Park,
}

/// The parts of a task that outlive delivering it, for the tally and the collector.
#[derive(Clone, Copy)]
struct Seen {
    queued_at: Stamp,
    priority: bool,
}

impl Seen {
    fn of<R, E>(job: &JobRef<R, E>) -> Self {
        Seen {
            queued_at: job.queued_at(),
            priority: job.priority(),
        }
    }

    fn end(
        self,
        started_at: Option<Stamp>,
        finished_at: Stamp,
        attempt: u32,
        outcome: TaskOutcome,
    ) -> TaskEnd {
        TaskEnd {
            queued_at: self.queued_at,
            started_at,
            finished_at,
            attempt,
            priority: self.priority,
            outcome,
        }
    }
}

impl<R, E> WorkerLoop<'_, R, E> {
    fn run(&mut self) -> RunEnd {
        loop {
            if self.park_requested() {
                return RunEnd::Park;
            }
            if self.resource.is_none() && !self.make_resource(false) {
                if self.shared.lifecycle.is_drained() {
                    return RunEnd::Exit;
                }
                if self.park_requested() {
                    return RunEnd::Park;
                }
            }
            // A caller parked on its answer was woken since the last task: it may be queued
            // on this CPU (see `completion`'s module docs, step 4).
            if self.waiters.yield_if_woken() {
                self.last_clock = None;
            }
            // Here the worker holds a resource, or the manager is being killed (tasks are then
            // resolved without one).
            match self.next_task() {
                Next::Task(queued) => self.handle(queued),
                Next::Exit => return RunEnd::Exit,
                Next::Park => return RunEnd::Park,
            }
        }
    }

    /// A burst slot's thread: parked until activated, then a worker until asked to park.
    fn burst_loop(&mut self) {
        let shared = self.shared;
        loop {
            let wakeup = self
                .slot
                .state
                .wait_activation(|| shared.lifecycle.is_closed());
            if wakeup == Wakeup::Exit || shared.lifecycle.is_drained() {
                return;
            }
            if self.resource.is_none() {
                match shared.hooks.create() {
                    Ok(r) => self.set_resource(r),
                    Err(e) => {
                        self.create_failed(e, None);
                        // No task was taken: nothing to hand back. The controller backs off
                        // before trying this slot again.
                        self.slot
                            .activation_failures
                            .fetch_add(1, Ordering::Relaxed);
                        self.slot.state.activation_failed();
                        continue;
                    }
                }
            } else {
                // A resource kept while parked.
                self.slot.active.store(true, Ordering::Relaxed);
            }
            self.slot.activation_failures.store(0, Ordering::Relaxed);
            self.observe(Event::Burst {
                worker: self.index,
                up: true,
            });
            match self.run() {
                RunEnd::Exit => return,
                RunEnd::Park => self.park(),
            }
        }
    }

    /// A burst slot parks between tasks: hands its queued tasks back, lets go of its resource
    /// (unless kept), and stores `PARKED`.
    #[cold]
    fn park(&mut self) {
        let shared = self.shared;
        shared.settle();
        while let Some(queued) = self.local.pop() {
            shared.queues.normal.push(queued);
        }
        // Whatever is queued now is for the other workers: make sure one is awake for it.
        if shared.queues.has_work() {
            shared.sleep.notify_one();
        }
        if shared.keep_burst_resources {
            self.slot.active.store(false, Ordering::Relaxed);
        } else {
            self.release_resource();
        }
        self.recorder.publish(&self.slot.metrics.published, true);
        self.last_clock = None;
        // `ActivatedAgain`: the next wait returns at once and the slot comes back up.
        let _ = self.slot.state.parked_on_request();
        self.observe(Event::Burst {
            worker: self.index,
            up: false,
        });
    }

    #[inline]
    fn park_requested(&self) -> bool {
        self.burst && self.slot.state.park_requested()
    }

    /// One pass of the queues' search order, as a pick between tasks: every
    /// `INJECTOR_INTERVAL`th pick looks at the normal injector before the local deque.
    #[inline]
    fn find_task(&mut self) -> Option<Queued<R, E>> {
        self.picks = self.picks.wrapping_add(1);
        let injector_first = self.picks.is_multiple_of(INJECTOR_INTERVAL);
        self.shared
            .queues
            .find_task(self.index, self.local, injector_first)
    }

    /// Finds a task: search, spin with backoff, then sleep. `Exit` once drained; `Park` when a
    /// burst slot is asked to park instead of sleeping.
    fn next_task(&mut self) -> Next<R, E> {
        let shared = self.shared;
        if let Some(task) = self.find_task() {
            return Next::Task(task);
        }
        // No longer taking tasks one after the other: the outcomes held back are applied
        // (see `lifecycle`), before any look at whether the manager is drained.
        shared.settle();
        // Searching: the last clock read no longer stands for "now".
        self.last_clock = None;
        let backoff = Backoff::with_max_pauses(SEARCH_MAX_PAUSES);
        let mut woken = false;
        loop {
            // Searching: the local deque was empty a moment ago, so no injector-first turn.
            if let Some(task) = shared.queues.find_task(self.index, self.local, false) {
                if woken {
                    shared.sleep.work_found(shared.queues.has_work());
                }
                return Next::Task(task);
            }
            if shared.lifecycle.is_drained() {
                return Next::Exit;
            }
            if self.park_requested() {
                return Next::Park;
            }
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            // About to sleep: publish latencies so snapshots never wait on a sleeper.
            self.recorder.publish(&self.slot.metrics.published, true);
            self.published();
            let slept = shared.sleep.sleep(|| {
                if let Some(task) = shared.queues.find_task(self.index, self.local, false) {
                    Some(Ok(task))
                } else if shared.lifecycle.is_drained() || self.park_requested() {
                    Some(Err(()))
                } else {
                    None
                }
            });
            match slept {
                Slept::Found(task) => {
                    shared.sleep.work_found(shared.queues.has_work());
                    return Next::Task(task);
                }
                Slept::Exit if shared.lifecycle.is_drained() => return Next::Exit,
                Slept::Exit => return Next::Park,
                Slept::Woken => {
                    woken = true;
                    backoff.reset();
                }
            }
        }
    }

    /// After a publish of the latencies: refresh the facade's gauges too.
    #[cold]
    fn published(&self) {
        self.shared.publish_gauges();
    }

    /// Reports an event that happened on this worker (its own tally).
    #[inline]
    fn observe(&self, event: Event<'_>) {
        self.shared
            .observer()
            .observe(event, Some(&self.slot.metrics.tally));
    }

    /// Reports an attempt's end, and what user code panicked while its outcome was handed
    /// over and the task let go.
    #[inline]
    fn ended(&self, end: TaskEnd, delivered: Delivered) {
        self.observe(Event::Ended(end));
        delivered.report(&self.shared.observer());
    }

    /// Resolves a task without running it (killed, or cancelled through its handle).
    #[cold]
    fn resolve_unrun(&mut self, job: JobRef<R, E>, outcome: TaskOutcome) {
        let seen = Seen::of(&job);
        let attempt = job.attempts();
        let delivered = match outcome {
            TaskOutcome::Killed => job.fail(TaskError::Killed),
            TaskOutcome::DeadlineExceeded => job.fail(TaskError::DeadlineExceeded),
            // The handle already holds `Cancelled` and dropped the closure.
            _ => job.release(),
        };
        let now = self.shared.metrics.now().max(seen.queued_at);
        self.ended(seen.end(None, now, attempt, outcome), delivered);
    }

    fn handle(&mut self, queued: Queued<R, E>) {
        let shared = self.shared;
        let Queued { job, ticket } = queued;
        // Step 1 (a cancel gave the place back itself).
        if job.claim() == Claim::Cancelled {
            self.resolve_unrun(job, TaskOutcome::Cancelled);
            shared.finish(ticket);
            return;
        }
        // Step 2.
        if job.attempts() == 0
            && let Some(cap) = &shared.capacity
        {
            cap.release();
        }
        // Step 3.
        if shared.kill_begun() {
            self.resolve_unrun(job, TaskOutcome::Killed);
            shared.finish(ticket);
            return;
        }
        // Step 3b: a fresh task not started by its deadline never runs (see `submit`).
        let deadline = job.deadline();
        if let Some(at) = deadline
            && job.attempts() == 0
            && Instant::now() >= at
        {
            self.resolve_unrun(job, TaskOutcome::DeadlineExceeded);
            shared.finish(ticket);
            return;
        }
        // Step 4.
        if !self.recycle_if_due() {
            // Killed while making the replacement.
            self.resolve_unrun(job, TaskOutcome::Killed);
            shared.finish(ticket);
            return;
        }
        let seen = Seen::of(&job);
        let attempt = job.begin_attempt();
        self.ctx.set_attempt(attempt);
        self.ctx.set_deadline(deadline);
        // The read that ended the previous task stands for "now". Either way a task starts no
        // earlier than it was queued: that read may predate the queueing, and two cores'
        // time-stamp counters may disagree by a little.
        let started_at = match self.last_clock.take() {
            Some(t) => t,
            None => shared.metrics.now(),
        }
        .max(seen.queued_at);
        let resource = self
            .resource
            .as_mut()
            .expect("a worker runs tasks only while it holds a resource");
        let ctx = &self.ctx;
        let observer = shared.observer();
        let ran = Ran::run(&shared.hooks, &observer, resource, |r| job.run(r, ctx));
        let finished_at = shared.metrics.now().max(started_at);
        self.age.used(finished_at);
        let exec_nanos = finished_at - started_at;
        let wait_nanos = started_at.saturating_sub(seen.queued_at);
        if shared.bursting {
            shared
                .metrics
                .worker_busy(&self.slot.metrics.tally, exec_nanos, finished_at);
        }
        self.recorder.record(exec_nanos, wait_nanos);
        shared.metrics.timed(exec_nanos, wait_nanos);
        if self
            .recorder
            .tick(finished_at, &self.slot.metrics.published)
        {
            self.published();
        }
        if let Some(broken) = ran.broken(&shared.hooks, &observer) {
            self.replace_resource(broken);
        }
        let end = |outcome| seen.end(Some(started_at), finished_at, attempt, outcome);
        // Step 5.
        let (outcome, delivered) = match ran {
            Ran::Ok(delivered) => {
                // The value was handed over inside `run`, before this clock read: the read
                // can start the next task. (Error outcomes are handed over below, after it:
                // the next task then reads the clock afresh.)
                self.last_clock = Some(finished_at);
                (TaskOutcome::Completed, delivered.and(job.release()))
            }
            Ran::Broken(error)
                if job.rerunnable() && attempt <= shared.max_retries && !shared.kill_begun() =>
            {
                self.observe(Event::Ended(end(TaskOutcome::Retried)));
                // The error is the user's: its `Drop` may panic.
                observer.caught(Site::Drop("a task's error"), unwind::drop_quietly(error));
                shared.push(Queued { job, ticket }, true);
                return;
            }
            Ran::Failed(error) | Ran::Broken(error) => {
                let failed = TaskError::Failed {
                    error,
                    attempts: attempt,
                };
                (TaskOutcome::Failed, job.fail(failed))
            }
            Ran::Panicked(message) => (
                TaskOutcome::Panicked,
                job.fail(TaskError::Panicked { message }),
            ),
        };
        self.ended(end(outcome), delivered);
        // Step 6.
        shared.finish(ticket);
    }

    fn set_resource(&mut self, resource: R) {
        self.resource = Some(resource);
        self.age = Age::new(self.shared.metrics.now());
        self.slot.active.store(true, Ordering::Relaxed);
    }

    fn release_resource(&mut self) {
        if let Some(r) = self.resource.take() {
            self.slot.active.store(false, Ordering::Relaxed);
            self.shared.hooks.destroy(r, &self.shared.observer());
        }
    }

    /// Destroys the broken resource; the top of the loop makes a new one.
    #[cold]
    fn replace_resource(&mut self, broken: attempt::Broken) {
        let shared = self.shared;
        if let Some(r) = self.resource.take() {
            self.slot.active.store(false, Ordering::Relaxed);
            attempt::destroy_broken(
                &shared.hooks,
                &shared.observer(),
                r,
                Some(self.index),
                broken,
                Some(&self.slot.metrics.tally),
            );
        }
    }

    /// Step 4's lifecycle policy: replaces the resource first if a knob says so. `false`:
    /// the manager was killed while the replacement was being made (no resource now).
    #[inline]
    fn recycle_if_due(&mut self) -> bool {
        let shared = self.shared;
        if !shared.recycle.is_active() {
            return true;
        }
        let Some(resource) = self.resource.as_mut() else {
            return true;
        };
        let last = self.last_clock;
        let due = shared.recycle.due(
            resource,
            &self.age,
            || last.unwrap_or_else(|| shared.metrics.now()),
            &shared.observer(),
        );
        // `validate` may have run: the task's start is read afresh.
        self.last_clock = None;
        match due {
            None => true,
            Some(reason) => self.recycle(reason),
        }
    }

    /// Destroys a healthy resource the policy retired and makes its successor, holding the
    /// task meanwhile. `false`: killed first.
    #[cold]
    fn recycle(&mut self, reason: ReplaceReason) -> bool {
        if let Some(r) = self.resource.take() {
            self.slot.active.store(false, Ordering::Relaxed);
            self.observe(Event::Recycled {
                worker: Some(self.index),
                reason,
            });
            self.shared.hooks.destroy(r, &self.shared.observer());
        }
        self.make_resource(true)
    }

    /// `on_create` failed for this worker: reported, and its error dropped (user code).
    #[cold]
    fn create_failed(&self, error: CreateError<E>, retry_in: Option<Duration>) {
        let observer = self.shared.observer();
        let (text, panic) = error.describe(&self.shared.hooks, &observer);
        self.observe(Event::CreateFailed {
            worker: self.index,
            error: text.as_deref(),
            panic,
            retry_in,
        });
        if let CreateError::Failed(e) = error {
            observer.caught(Site::Drop("on_create's error"), unwind::drop_quietly(e));
        }
    }

    /// Makes a resource, retrying with backoff. Returns `false` without one once the manager
    /// is killed (tasks are resolved unrun) or drained (nothing left to run). `holding`: the
    /// worker holds a task (a lifecycle replacement), so a park request waits for it.
    #[cold]
    fn make_resource(&mut self, holding: bool) -> bool {
        let shared = self.shared;
        // This may take a while (backoff), and the drain checks below need the held-back
        // outcomes applied.
        shared.settle();
        let (burst, slot) = (self.burst && !holding, self.slot);
        let gave_up = || {
            shared.lifecycle.is_killed()
                || shared.lifecycle.is_drained()
                || (burst && slot.state.park_requested())
        };
        let mut delay = CREATE_BACKOFF_MIN;
        // Searching for a resource is not running a task: read the clock afresh after.
        self.last_clock = None;
        loop {
            if gave_up() {
                return false;
            }
            match shared.hooks.create() {
                Ok(r) => {
                    self.set_resource(r);
                    return true;
                }
                Err(e) => self.create_failed(e, Some(delay)),
            }
            self.recorder.publish(&self.slot.metrics.published, true);
            let lock = shared.backoff.0.lock().unwrap_or_else(|e| e.into_inner());
            if !gave_up() {
                // Woken early by `Shared::wake_all`, which takes this lock before notifying.
                let _ = shared.backoff.1.wait_timeout(lock, delay);
            }
            delay = (delay * 2).min(CREATE_BACKOFF_MAX);
        }
    }
}
