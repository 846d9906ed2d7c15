//! Loom models of the protocols, each named after the race it rules out.
//!
//! Built only with `RUSTFLAGS="--cfg loom"`; `loom-tests/tests/models.rs` runs one test per
//! model (`.ci/loom.sh`). Each model drives the real protocol types (`Sleep`, `Lifecycle`,
//! `Slot` and the task cell, `SlotState`, `Queues` over the `sync::deque` stand-in) under the
//! primitives of `crate::sync`, and uses a small copy of the code that calls them:
//!
//! - `Pool` copies what `Shared` and `TaskManager` do around the protocols: `submit`
//!   (`TaskManager::submit` without capacity or metrics), `push`, `finish` and `wake_all`
//!   (`Shared`), `begin_shutdown` (`Inner::begin_shutdown`);
//! - `ModelWorker` copies `WorkerLoop`'s `run`, `next_task`, `handle`, `burst_loop`, `park`
//!   and `make_resource`, without metrics, logging or clocks, with an `on_create` that always
//!   succeeds and a `check_health` that finds every error unhealthy.
//!
//! Keep those copies in step with `worker.rs`, `shared.rs` and `manager.rs`: a model is only
//! as good as its copy.
//!
//! The models' own tallies (which outcome a task got, how often it ran) are std atomics
//! (`StdAtomicUsize`), and the harness shares its state through std's `Arc` (`StdArc`):
//! loom does not interleave those, so they add no executions (each loom `Arc` clone or drop
//! is one more step to interleave). Tallies are read only after every thread was joined.
//!
//! The execution counts and times in each model's docs were measured in release mode with
//! `LOOM_MAX_PREEMPTIONS=3` (`.ci/loom.sh`), one model at a time, on a 2-core machine that was
//! running benchmarks meanwhile: the times are wall-clock and pessimistic. Counts depend on
//! the shim's stand-ins (`crate::sync`): change those and measure again.

use std::time::Instant;

use crate::burst::{ACTIVE, PARK_REQUESTED, PARKED, SlotState, Wakeup};
use crate::completion::{Claim, TaskHandle};
use crate::error::TaskError;
use crate::lifecycle::{Admitted, Finished, Lifecycle};
use crate::scheduler::sleep::{Sleep, Slept};
use crate::scheduler::{Queued, Queues};
use crate::sync::deque::Worker;
use crate::sync::{
    Arc, AtomicBool, AtomicUsize, Backoff, Ordering, StdArc, StdAtomicUsize, UnsafeCell, thread,
};
use crate::task::{self, JobRef, Many, TaskContext};

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Explores `model` and prints how many executions that took, and how long.
///
/// With `LOOM_MAX_PREEMPTIONS` set this is `loom::model` (which reads every `LOOM_*`
/// variable, and with `LOOM_LOG=trace LOOM_LOCATION=1` prints each execution's steps: the
/// last one printed is the failing interleaving). Without it, a `loom::model::Builder` bounded
/// at `DEFAULT_PREEMPTIONS`, so that a bare `cargo test` stays quick.
fn explore(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let executions = StdArc::new(StdAtomicUsize::new(0));
    let counter = executions.clone();
    let counted = move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    };
    let bound = std::env::var("LOOM_MAX_PREEMPTIONS").ok();
    let start = Instant::now();
    if bound.is_some() {
        loom::model(counted);
    } else {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
        builder.check(counted);
    }
    eprintln!(
        "loom model {name}: {} executions in {:.2?} (preemption bound {})",
        executions.load(Ordering::Relaxed),
        start.elapsed(),
        bound.unwrap_or_else(|| DEFAULT_PREEMPTIONS.to_string()),
    );
}

// ----- tasks and what became of them -----

/// The one error the models' tasks return; `check_health` finds it unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unhealthy;

type Job = JobRef<(), Unhealthy>;
type Task = Queued<(), Unhealthy>;
type Outcome<T> = Result<T, TaskError<Unhealthy>>;

/// What became of one task: how often its body ran, and every outcome it was given.
#[derive(Default)]
struct Tally {
    ran: StdAtomicUsize,
    completed: StdAtomicUsize,
    failed: StdAtomicUsize,
    killed: StdAtomicUsize,
    refused: StdAtomicUsize,
    cancelled: StdAtomicUsize,
}

impl Tally {
    fn record<T>(&self, outcome: &Outcome<T>) {
        let counter = match outcome {
            Ok(_) => &self.completed,
            Err(TaskError::Failed { .. }) => &self.failed,
            Err(TaskError::Killed) => &self.killed,
            Err(TaskError::ShuttingDown) => &self.refused,
            Err(TaskError::Cancelled) => &self.cancelled,
            Err(_) => panic!("no model task can end like this"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn get(counter: &StdAtomicUsize) -> usize {
        counter.load(Ordering::Relaxed)
    }

    fn ran(&self) -> usize {
        Self::get(&self.ran)
    }

    /// Every outcome given, whichever it was: a task must end with exactly one.
    fn outcomes(&self) -> usize {
        [
            &self.completed,
            &self.failed,
            &self.killed,
            &self.refused,
            &self.cancelled,
        ]
        .into_iter()
        .map(Self::get)
        .sum()
    }

    /// The one outcome a task got (after every thread was joined).
    fn only(&self) -> &'static str {
        assert_eq!(self.outcomes(), 1, "a task must get exactly one outcome");
        if Self::get(&self.completed) == 1 {
            "completed"
        } else if Self::get(&self.failed) == 1 {
            "failed"
        } else if Self::get(&self.killed) == 1 {
            "killed"
        } else if Self::get(&self.refused) == 1 {
            "refused"
        } else {
            "cancelled"
        }
    }
}

/// A callback task whose body succeeds from attempt `fail_first + 1` on.
fn callback_task(tally: &StdArc<Tally>, fail_first: u32) -> Job {
    let (body_tally, cb_tally) = (tally.clone(), tally.clone());
    task::with_callback(
        Many(move |_: &mut (), ctx: &TaskContext| {
            body_tally.ran.fetch_add(1, Ordering::Relaxed);
            if ctx.attempt() <= fail_first {
                Err(Unhealthy)
            } else {
                Ok(ctx.attempt())
            }
        }),
        move |outcome: Outcome<u32>| cb_tally.record(&outcome),
        false,
        0,
    )
}

/// A handle task whose body always succeeds.
fn handle_task(tally: &StdArc<Tally>) -> (Job, TaskHandle<u32, Unhealthy>) {
    let body_tally = tally.clone();
    task::with_handle(
        Many(move |_: &mut (), ctx: &TaskContext| {
            body_tally.ran.fetch_add(1, Ordering::Relaxed);
            Ok(ctx.attempt())
        }),
        false,
        0,
    )
}

// ----- the code around the protocols -----

/// What `Shared` and `TaskManager` do around the protocols (see the module docs).
struct Pool {
    queues: Queues<(), Unhealthy>,
    sleep: Sleep,
    lifecycle: Lifecycle,
    /// Read by every `TaskContext`; set by `kill`.
    cancelled: Arc<AtomicBool>,
    /// One per worker; only the burst slots' (from `base` on) are used.
    slots: Box<[SlotState]>,
    base: usize,
    max_retries: u32,
}

impl Pool {
    /// `base` base workers and `burst` burst slots (parked); the local deques are returned
    /// for the worker threads.
    fn new(base: usize, burst: usize) -> (StdArc<Pool>, Vec<Worker<Task>>) {
        let n = base + burst;
        let (queues, locals) = Queues::new(n);
        let pool = Pool {
            queues,
            sleep: Sleep::new(),
            lifecycle: Lifecycle::new(),
            cancelled: Arc::new(AtomicBool::new(false)),
            slots: (0..n).map(|_| SlotState::default()).collect(),
            base,
            max_retries: 1,
        };
        (StdArc::new(pool), locals)
    }

    /// `TaskManager::submit`. True when accepted.
    fn submit(&self, job: Job) -> bool {
        match self.lifecycle.admit() {
            Ok(ticket) => {
                self.push(Queued { job, ticket }, false);
                true
            }
            Err(drained) => {
                if drained == Finished::Drained {
                    self.wake_all();
                }
                let _ = job.fail(TaskError::ShuttingDown);
                false
            }
        }
    }

    /// `Shared::push`.
    fn push(&self, queued: Task, priority: bool) {
        if priority {
            self.queues.priority.push(queued);
        } else {
            self.queues.normal.push(queued);
        }
        self.sleep.notify_one();
    }

    /// `Shared::finish`.
    fn finish(&self, ticket: Admitted) {
        if self.lifecycle.finish(ticket) == Finished::Drained {
            self.wake_all();
        }
    }

    /// `Shared::wake_all` (the models have no capacity bound and no backoff condvar).
    fn wake_all(&self) {
        if self.lifecycle.is_closed() {
            for slot in &self.slots[self.base..] {
                slot.close();
            }
        }
        self.sleep.wake_all();
    }

    /// `Inner::begin_shutdown`: what `stop` (`kill == false`) and `kill` do before joining.
    fn begin_shutdown(&self, kill: bool) {
        if kill {
            self.cancelled.store(true, Ordering::Relaxed);
        }
        let _ = self.lifecycle.close(kill);
        self.wake_all();
    }
}

/// Starts worker `index` on its own thread: a base worker runs until drained, a burst slot
/// runs its parked/active loop.
fn spawn_worker(pool: &StdArc<Pool>, index: usize, local: Worker<Task>) -> thread::JoinHandle<()> {
    let pool = pool.clone();
    thread::spawn(move || {
        let mut worker = ModelWorker {
            ctx: TaskContext::new(pool.cancelled.clone()),
            pool: &pool,
            index,
            local,
            // A burst slot starts without a resource; `burst_loop` makes it.
            has_resource: index < pool.base,
        };
        if index < pool.base {
            let _ = worker.run();
        } else {
            worker.burst_loop();
        }
    })
}

/// `WorkerLoop`, without metrics, logging or clocks (see the module docs).
struct ModelWorker<'a> {
    pool: &'a Pool,
    index: usize,
    local: Worker<Task>,
    ctx: TaskContext,
    has_resource: bool,
}

#[must_use]
enum RunEnd {
    Exit,
    Park,
}

enum Next {
    Task(Task),
    Exit,
    Park,
}

impl ModelWorker<'_> {
    fn slot(&self) -> &SlotState {
        &self.pool.slots[self.index]
    }

    /// `WorkerLoop::park_requested`.
    fn park_requested(&self) -> bool {
        self.index >= self.pool.base && self.slot().park_requested()
    }

    /// `WorkerLoop::run`.
    fn run(&mut self) -> RunEnd {
        loop {
            if self.park_requested() {
                return RunEnd::Park;
            }
            if !self.has_resource && !self.make_resource() {
                if self.pool.lifecycle.is_drained() {
                    return RunEnd::Exit;
                }
                if self.park_requested() {
                    return RunEnd::Park;
                }
            }
            match self.next_task() {
                Next::Task(queued) => self.handle(queued),
                Next::Exit => return RunEnd::Exit,
                Next::Park => return RunEnd::Park,
            }
        }
    }

    /// `WorkerLoop::make_resource` with an `on_create` that always succeeds.
    fn make_resource(&mut self) -> bool {
        let life = &self.pool.lifecycle;
        if life.is_killed() || life.is_drained() || self.park_requested() {
            return false;
        }
        self.has_resource = true;
        true
    }

    /// `WorkerLoop::burst_loop`.
    fn burst_loop(&mut self) {
        let pool = self.pool;
        loop {
            let wakeup = self.slot().wait_activation(|| pool.lifecycle.is_closed());
            if wakeup == Wakeup::Exit || pool.lifecycle.is_drained() {
                return;
            }
            self.has_resource = true;
            match self.run() {
                RunEnd::Exit => return,
                RunEnd::Park => self.park(),
            }
        }
    }

    /// `WorkerLoop::park` (resources not kept while parked).
    fn park(&mut self) {
        let pool = self.pool;
        while let Some(queued) = self.local.pop() {
            pool.queues.normal.push(queued);
        }
        if pool.queues.has_work() {
            pool.sleep.notify_one();
        }
        self.has_resource = false;
        let _ = self.slot().parked_on_request();
    }

    /// `WorkerLoop::next_task`.
    fn next_task(&mut self) -> Next {
        let pool = self.pool;
        if let Some(task) = pool.queues.find_task(self.index, &self.local) {
            return Next::Task(task);
        }
        let backoff = Backoff::with_max_pauses(1);
        let mut woken = false;
        loop {
            if let Some(task) = pool.queues.find_task(self.index, &self.local) {
                if woken {
                    pool.sleep.work_found(pool.queues.has_work());
                }
                return Next::Task(task);
            }
            if pool.lifecycle.is_drained() {
                return Next::Exit;
            }
            if self.park_requested() {
                return Next::Park;
            }
            if !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            let slept = pool.sleep.sleep(|| {
                if let Some(task) = pool.queues.find_task(self.index, &self.local) {
                    Some(Ok(task))
                } else if pool.lifecycle.is_drained() || self.park_requested() {
                    Some(Err(()))
                } else {
                    None
                }
            });
            match slept {
                Slept::Found(task) => {
                    pool.sleep.work_found(pool.queues.has_work());
                    return Next::Task(task);
                }
                Slept::Exit if pool.lifecycle.is_drained() => return Next::Exit,
                Slept::Exit => return Next::Park,
                Slept::Woken => {
                    woken = true;
                    backoff.reset();
                }
            }
        }
    }

    /// `WorkerLoop::handle` (no capacity bound; the bodies do not panic).
    fn handle(&mut self, queued: Task) {
        let pool = self.pool;
        let Queued { job, ticket } = queued;
        // Step 2.
        if job.claim() == Claim::Cancelled {
            drop(job);
            pool.finish(ticket);
            return;
        }
        // Step 3.
        if pool.lifecycle.is_killed() {
            let _ = job.fail(TaskError::Killed);
            pool.finish(ticket);
            return;
        }
        // Step 4.
        let attempt = job.begin_attempt();
        self.ctx.set_attempt(attempt);
        assert!(
            self.has_resource,
            "a worker runs tasks only while it holds a resource"
        );
        // Step 5.
        if let Err(error) = job.run(&mut (), &self.ctx) {
            // Unhealthy: the resource is replaced, the task retried if it may be.
            self.has_resource = false;
            if job.rerunnable() && attempt <= pool.max_retries && !pool.lifecycle.is_killed() {
                pool.push(Queued { job, ticket }, true);
                return;
            }
            let _ = job.fail(TaskError::Failed {
                error,
                attempts: attempt,
            });
        }
        // Step 6.
        pool.finish(ticket);
    }
}

// ----- the models -----

/// A stand-in for a lock-free queue: a count of tasks, pushed with a `Release` add and found
/// by an `Acquire` load before a CAS takes one. It is the weakest queue the sleep protocol
/// must work with: nothing but the protocol's own fences orders a push against a sleeper's
/// re-check, and the load may return a stale count. (The `sync::deque` stand-in shows a look
/// at a queue as the queue is at that point of the interleaving, which would hide this.)
struct Counted(AtomicUsize);

impl Counted {
    fn push(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    fn take(&self) -> Option<()> {
        let mut n = self.0.load(Ordering::Acquire);
        while n > 0 {
            match self
                .0
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(()),
                Err(actual) => n = actual,
            }
        }
        None
    }

    fn has_work(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// `next_task`'s search and sleep, over a `Counted` queue: returns once it took a task.
fn find_or_sleep(sleep: &Sleep, queue: &Counted) {
    if queue.take().is_some() {
        return;
    }
    let mut woken = false;
    loop {
        if queue.take().is_some() {
            if woken {
                sleep.work_found(queue.has_work());
            }
            return;
        }
        match sleep.sleep(|| queue.take().map(Ok)) {
            Slept::Found(()) => {
                sleep.work_found(queue.has_work());
                return;
            }
            Slept::Exit => unreachable!("the re-check never asks to exit"),
            Slept::Woken => woken = true,
        }
    }
}

/// **Sleep/wake: a submission racing a worker that falls asleep loses no wake-up.**
///
/// A worker runs the search-then-sleep steps of `next_task` over a queue stand-in that gives
/// no ordering of its own (`Counted`), while submitters push and `notify_one`. A lost
/// wake-up leaves the worker blocked on the futex with a task queued: loom reports the
/// deadlock. Scenarios: one submitter; two submitters (the worker must get both, through the
/// `WAKE_PENDING` skip and the `work_found` chain). Ends with no sleeper counted.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): one submitter 52 executions, two
/// submitters 5 897; 0.6 s in all.
///
/// It bites: without the fence at the top of `notify_one`, loom finds the lost wake-up (the
/// worker asleep with the task queued, the main thread joining it) in its first executions.
pub fn submit_racing_a_worker_falling_asleep_loses_no_wakeup() {
    for submitters in [1, 2] {
        explore(&format!("sleep: {submitters} submitter(s)"), move || {
            let sleep = StdArc::new(Sleep::new());
            let queue = StdArc::new(Counted(AtomicUsize::new(0)));
            let worker = {
                let (sleep, queue) = (sleep.clone(), queue.clone());
                thread::spawn(move || {
                    for _ in 0..submitters {
                        find_or_sleep(&sleep, &queue);
                    }
                })
            };
            let others: Vec<_> = (1..submitters)
                .map(|_| {
                    let (sleep, queue) = (sleep.clone(), queue.clone());
                    thread::spawn(move || {
                        queue.push();
                        sleep.notify_one();
                    })
                })
                .collect();
            queue.push();
            sleep.notify_one();
            for t in others {
                t.join().unwrap();
            }
            worker.join().unwrap();
            assert!(!queue.has_work(), "the worker took every task");
            assert_eq!(sleep.sleepers(), 0);
        });
    }
}

/// A task's value that checks its own lifetime: the producer writes it, and whoever drops it
/// (the consumer, or the last owner of the task cell) touches it again. Loom fails the model
/// if that drop is not ordered after the write, which is what a use-after-free of the cell
/// would look like. Drops are counted, so a leak or a double drop shows too.
struct Witness {
    value: UnsafeCell<u32>,
    drops: StdArc<StdAtomicUsize>,
}

impl Witness {
    fn new(value: u32, drops: &StdArc<StdAtomicUsize>) -> Self {
        let witness = Witness {
            value: UnsafeCell::new(0),
            drops: drops.clone(),
        };
        // SAFETY: not shared yet.
        witness.value.with_mut(|v| unsafe { *v = value });
        witness
    }

    fn read(&self) -> u32 {
        // SAFETY: loom checks this read against the producer's write.
        self.value.with(|v| unsafe { *v })
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        // SAFETY: `&mut self`; loom checks the access against the producer's write.
        self.value.with_mut(|v| unsafe { *v = 0 });
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the producer side of the completion model does with the task.
#[derive(Debug, Clone, Copy)]
enum Producer {
    /// A worker claims and runs it (`handle`, steps 2, 4, 5).
    Run,
    /// A worker claims it after `kill` and resolves it unrun (step 3).
    Kill,
}

/// What the consumer side does with the handle.
#[derive(Debug, Clone, Copy)]
enum Consumer {
    /// `TaskHandle::wait` (registers the thread's waker, parks).
    Wait,
    /// `.await` on a minimal executor (`loom::future::block_on`: polls, then waits for the
    /// waker).
    Poll,
    /// `cancel`, then `wait`.
    CancelThenWait,
    /// Drops the handle unread.
    Drop,
}

/// **Completion slot: complete vs. wait vs. cancel vs. drop.**
///
/// A worker thread claims the task cell made by `task::with_handle` and runs it (or, after a
/// `kill`, resolves it unrun), then lets go of its `JobRef`, while the submitter waits on the
/// handle, polls it as a future, cancels it then waits, or drops it. Checked: the consumer
/// gets exactly one outcome and the right one; `cancel` returns `true` iff the body never ran
/// (for a task that would run); the value's write is ordered before every later access to it,
/// including the drop of the cell by whichever side lets go last (a use-after-free would
/// break that order: loom's `Arc` and `UnsafeCell` check it); every value made is dropped
/// exactly once.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 8 scenarios (2 producers x 4 consumers);
/// per producer: wait 119 executions, poll 721, cancel then wait 62, drop 4; 1 812 in all,
/// 0.2 s.
///
/// It bites: with `fill` storing `READY` `Relaxed` instead of `Release`, loom reports the
/// consumer's read of the value racing the producer's write.
pub fn completion_slot_complete_vs_wait_vs_cancel_vs_drop() {
    for producer in [Producer::Run, Producer::Kill] {
        for consumer in [
            Consumer::Wait,
            Consumer::Poll,
            Consumer::CancelThenWait,
            Consumer::Drop,
        ] {
            explore(
                &format!("completion: {producer:?} vs {consumer:?}"),
                move || completion_case(producer, consumer),
            );
        }
    }
}

fn completion_case(producer: Producer, consumer: Consumer) {
    const VALUE: u32 = 7;
    let ran = StdArc::new(StdAtomicUsize::new(0));
    let drops = StdArc::new(StdAtomicUsize::new(0));
    let (job, handle) = {
        let (ran, drops) = (ran.clone(), drops.clone());
        task::with_handle::<(), Unhealthy, Witness, _>(
            Many(move |_: &mut (), _: &TaskContext| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(Witness::new(VALUE, &drops))
            }),
            false,
            0,
        )
    };
    let worker = thread::spawn(move || match job.claim() {
        // `resolve_unrun` for a cancelled task: the cell is let go, the slot keeps `Cancelled`.
        Claim::Cancelled => drop(job),
        Claim::Held => match producer {
            Producer::Run => {
                assert_eq!(job.begin_attempt(), 1);
                let mut ctx = TaskContext::new(Arc::new(AtomicBool::new(false)));
                ctx.set_attempt(1);
                assert!(matches!(job.run(&mut (), &ctx), Ok(Ok(()))));
                // The drop net after a delivered outcome changes nothing.
                drop(job);
            }
            Producer::Kill => {
                let _ = job.fail(TaskError::Killed);
            }
        },
    });
    let (cancelled, outcome) = match consumer {
        Consumer::Wait => (false, Some(handle.wait())),
        Consumer::Poll => (false, Some(loom::future::block_on(handle))),
        Consumer::CancelThenWait => {
            let cancelled = handle.cancel();
            (cancelled, Some(handle.wait()))
        }
        Consumer::Drop => {
            drop(handle);
            (false, None)
        }
    };
    worker.join().unwrap();
    let ran = ran.load(Ordering::Relaxed);
    assert!(ran <= 1);
    if cancelled {
        assert_eq!(ran, 0, "a cancelled task never runs");
    } else if let Producer::Run = producer
        && let Consumer::CancelThenWait = consumer
    {
        assert_eq!(
            ran, 1,
            "a cancel that failed found the task claimed, and it ran"
        );
    }
    match (outcome, producer) {
        (None, _) => {}
        (Some(Err(TaskError::Cancelled)), _) => assert!(cancelled),
        (Some(Ok(witness)), Producer::Run) => {
            assert!(!cancelled);
            assert_eq!(witness.read(), VALUE);
        }
        (Some(Err(TaskError::Killed)), Producer::Kill) => assert!(!cancelled),
        (Some(other), _) => panic!(
            "unexpected outcome {:?} for {producer:?}",
            other.map(|w| w.read())
        ),
    }
    assert_eq!(
        drops.load(Ordering::Relaxed),
        ran,
        "every value dropped exactly once"
    );
}

/// **Stop racing a submission: the task is neither stranded nor run twice.**
///
/// One base worker runs its loop (search, sleep, exit once drained) while a submitter
/// submits one task and the main thread begins `stop`. The task is either refused
/// (`ShuttingDown`, never run) or accepted, and then run exactly once before the worker
/// exits: the worker must not exit with it queued (it would be stranded: loom would see no
/// outcome) nor sleep through it (loom reports the deadlock). Second scenario: a task was
/// accepted before the worker started, and the submission races both. Third: two submitters
/// race `stop`, so one can be refused while the other is accepted and not yet pushed: the
/// refused one's brief `+1/-1` on the lifecycle word must not let the worker exit with the
/// accepted task on its way.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): one task 3 532 executions, with a task
/// queued before 2 514, two submitters 91 385; 13 s in all.
pub fn stop_racing_a_submission_neither_strands_nor_runs_twice() {
    for (queued_before, submitters) in [(false, 1), (true, 1), (false, 2)] {
        explore(
            &format!("stop vs {submitters} submitter(s) (task queued before: {queued_before})"),
            move || {
                let (pool, mut locals) = Pool::new(1, 0);
                let early = StdArc::new(Tally::default());
                if queued_before {
                    assert!(pool.submit(callback_task(&early, 0)));
                }
                let worker = spawn_worker(&pool, 0, locals.remove(0));
                let racing: Vec<_> = (0..submitters)
                    .map(|_| {
                        let tally = StdArc::new(Tally::default());
                        let (pool, mine) = (pool.clone(), tally.clone());
                        let submitter = thread::spawn(move || pool.submit(callback_task(&mine, 0)));
                        (tally, submitter)
                    })
                    .collect();
                pool.begin_shutdown(false);
                let racing: Vec<_> = racing
                    .into_iter()
                    .map(|(tally, submitter)| (tally, submitter.join().unwrap()))
                    .collect();
                worker.join().unwrap();
                for (tally, accepted) in racing {
                    match tally.only() {
                        "completed" => assert!(accepted && tally.ran() == 1),
                        "refused" => assert!(!accepted && tally.ran() == 0),
                        other => panic!("stop gave a task the outcome {other}"),
                    }
                }
                if queued_before {
                    assert_eq!(early.only(), "completed");
                    assert_eq!(early.ran(), 1);
                }
                assert!(!pool.queues.has_work(), "nothing stranded in a queue");
                assert!(pool.lifecycle.is_drained());
            },
        );
    }
}

/// **Kill racing queued and running tasks resolves each exactly once.**
///
/// A task is queued before the worker starts (a callback), a second is submitted while the
/// main thread kills the manager (a handle, waited on after `kill`). The worker may be
/// running the first when `kill` lands, or have either queued. Each task gets exactly one
/// outcome: `Ok` when its body ran (a running task finishes its attempt), `Killed` when it
/// was resolved unrun, `ShuttingDown` for a refused submission; and the worker exits.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 3 620 executions, 0.4 s.
pub fn kill_racing_queued_and_running_tasks_resolves_each_once() {
    explore("kill vs queued and running tasks", || {
        let (pool, mut locals) = Pool::new(1, 0);
        let first = StdArc::new(Tally::default());
        assert!(pool.submit(callback_task(&first, 0)));
        let worker = spawn_worker(&pool, 0, locals.remove(0));
        let second = StdArc::new(Tally::default());
        let submitter = {
            let (pool, second) = (pool.clone(), second.clone());
            thread::spawn(move || {
                let (job, handle) = handle_task(&second);
                let accepted = pool.submit(job);
                (accepted, handle)
            })
        };
        pool.begin_shutdown(true);
        let (accepted, handle) = submitter.join().unwrap();
        let outcome = handle.wait();
        worker.join().unwrap();
        // The handle's outcome is the second task's only one.
        second.record(&outcome);
        match (second.only(), second.ran()) {
            ("completed", 1) => assert!(accepted),
            ("killed", 0) => assert!(accepted),
            ("refused", 0) => assert!(!accepted),
            (other, ran) => panic!("second task: {other} after {ran} run(s)"),
        }
        match (first.only(), first.ran()) {
            ("completed", 1) | ("killed", 0) => {}
            (other, ran) => panic!("first task: {other} after {ran} run(s)"),
        }
        assert!(!pool.queues.has_work());
        assert!(pool.lifecycle.is_drained());
    });
}

/// **An unhealthy task's re-queue racing stop: the retry still runs before the workers
/// exit.**
///
/// A task fails unhealthy on its first attempt and succeeds on its second. Two base workers
/// (the retry goes to the priority queue and may be taken by the other, perhaps sleeping,
/// worker) run while the main thread begins `stop`. The task keeps its admission ticket
/// across the re-queue, so the workers cannot see the manager drained before the retry ran:
/// it completes exactly once, after exactly two runs, and both workers exit. Second scenario:
/// `kill` instead of `stop`: exactly one outcome, `Ok` after two runs, `Failed` after one
/// (killed before the re-queue), or `Killed` (killed before a run).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): stop 6 086 executions, kill 4 958; 1.0 s
/// in all.
///
/// It bites: a worker that gives the ticket back when it re-queues (and takes a fresh one)
/// lets `stop` drain first; the retry is then refused and the task ends `Killed`.
pub fn unhealthy_requeue_racing_stop() {
    for kill in [false, true] {
        explore(
            &format!(
                "unhealthy re-queue vs {}",
                if kill { "kill" } else { "stop" }
            ),
            move || {
                let (pool, locals) = Pool::new(2, 0);
                let tally = StdArc::new(Tally::default());
                assert!(pool.submit(callback_task(&tally, 1)));
                let workers: Vec<_> = locals
                    .into_iter()
                    .enumerate()
                    .map(|(i, local)| spawn_worker(&pool, i, local))
                    .collect();
                pool.begin_shutdown(kill);
                for w in workers {
                    w.join().unwrap();
                }
                match (tally.only(), tally.ran()) {
                    ("completed", 2) => {}
                    ("failed", 1) | ("killed", 0) | ("killed", 1) if kill => {}
                    (other, ran) => panic!("the retried task: {other} after {ran} run(s)"),
                }
                assert!(!pool.queues.has_work());
                assert!(pool.lifecycle.is_drained());
            },
        );
    }
}

/// **A burst slot parking while a task arrives: the task is not stranded.**
///
/// A base worker and a burst slot run their loops. The controller has just activated the
/// slot (its thread has not seen that yet), then asks it to park, waking the sleepers as its
/// `Down` decision does, and a task arrives; the controller's steps and the submitter's run on
/// the main thread, which then waits on the task's handle. The slot may see the request at
/// any point of its loop (before it left its parked wait, searching, asleep) while the task
/// is being pushed. The task must run, exactly once, with no shutdown to rescue it: if the
/// slot parked with the task in its hands, or both workers slept through it, the handle
/// waits forever and loom reports the deadlock; a slot that spins instead of parking exhausts
/// loom's branch budget. Then `stop`, and every thread exits.
///
/// This model found a bug, now fixed: asked to park before it saw its activation, the slot
/// found `PARK_REQUESTED` in `wait_activation`, which waited for the word to leave `PARKED`,
/// so the wait returned at once and the slot spun until shutdown (loom stopped it after
/// 1 000 branches of the first execution). `wait_activation` now moves `PARK_REQUESTED` to
/// `PARKED` before it waits (unit test `a_slot_activated_then_asked_to_park_before_it_ran_*`
/// in `burst.rs`).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 112 067 executions, 16-22 s. (A second
/// scenario, the task pushed before the request, took 354 910 executions and 72 s: dropped
/// for time. With one task, a batch steal never
/// leaves anything in a local deque, so `park`'s hand-back is not exercised here.)
pub fn burst_slot_parking_while_a_task_arrives() {
    explore("burst slot asked to park while a task arrives", || {
        let (pool, locals) = Pool::new(1, 1);
        let tally = StdArc::new(Tally::default());
        let (job, handle) = handle_task(&tally);
        // The controller activated the slot; the slot's thread has not seen it yet.
        assert!(pool.slots[1].activate());
        let workers: Vec<_> = locals
            .into_iter()
            .enumerate()
            .map(|(i, local)| spawn_worker(&pool, i, local))
            .collect();
        // The controller's `Down` decision for this slot.
        if pool.slots[1].request_park() {
            pool.sleep.wake_all();
        }
        assert!(pool.submit(job));
        assert_eq!(handle.wait(), Ok(1));
        pool.begin_shutdown(false);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(tally.ran(), 1);
        // Parked, closed, or still asked to park (it saw the drain first): never active.
        assert_ne!(pool.slots[1].load(), ACTIVE);
    });
}

/// **A parked burst slot does not miss shutdown.**
///
/// The proof in `burst.rs`: a parked slot checks the lifecycle's `CLOSED` bit before it
/// waits on its state word, and shutdown sets `CLOSED` before it moves `PARKED` slots to
/// `CLOSED` and wakes them. Scenarios, each racing `stop` on the main thread:
/// 1. the slot is parked (waiting, or about to wait);
/// 2. the slot was asked to park and is parking (its `PARK_REQUESTED -> PARKED` races
///    shutdown's `PARKED -> CLOSED`);
/// 3. the controller activates the parked slot meanwhile (the slot then runs, finds the
///    manager drained and exits).
///
/// In each the slot's thread must exit (else loom reports the deadlock).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): parked 54 executions, parking 27,
/// activated 2 126; 0.2 s in all.
pub fn parked_burst_slot_does_not_miss_shutdown() {
    for start in [PARKED, PARK_REQUESTED, ACTIVE] {
        let name = match start {
            PARKED => "parked",
            PARK_REQUESTED => "parking",
            _ => "activated by the controller",
        };
        explore(&format!("parked slot vs shutdown ({name})"), move || {
            let (pool, mut locals) = Pool::new(0, 1);
            let slot = &pool.slots[0];
            let controller = match start {
                PARK_REQUESTED => {
                    assert!(slot.activate() && slot.request_park());
                    None
                }
                ACTIVE => {
                    let pool = pool.clone();
                    Some(thread::spawn(move || {
                        let _ = pool.slots[0].activate();
                    }))
                }
                _ => None,
            };
            let parking = start == PARK_REQUESTED;
            let slot_thread = {
                let pool = pool.clone();
                let local = locals.remove(0);
                thread::spawn(move || {
                    let mut worker = ModelWorker {
                        ctx: TaskContext::new(pool.cancelled.clone()),
                        pool: &pool,
                        index: 0,
                        local,
                        has_resource: parking,
                    };
                    if parking {
                        // Between tasks, `run` noticed the request: park, then wait.
                        assert!(matches!(worker.run(), RunEnd::Park));
                        worker.park();
                    }
                    worker.burst_loop();
                })
            };
            pool.begin_shutdown(false);
            if let Some(c) = controller {
                c.join().unwrap();
            }
            slot_thread.join().unwrap();
        });
    }
}
