//! Loom models of the protocols, one file per protocol, each model named after the race it
//! rules out.
//!
//! Built only with `RUSTFLAGS="--cfg loom"`; `loom-tests/tests/models.rs` runs one test per
//! model (`.ci/loom.sh`).
//!
//! # The code under test is the code that ships
//!
//! The pool-level models build a real [`TaskManager`] with its real [`Builder`](crate::Builder),
//! submit through its public methods, and `stop` or `kill` it: the worker threads run the
//! shipped `worker::main` and `WorkerLoop`, the submitters the shipped enqueue path, shutdown
//! the shipped `stop`/`kill` and join. What differs under `cfg(loom)` is chosen in one place,
//! `crate::sync` (loom's primitives, spin loops that go straight to their blocking path,
//! statistics that loom need not interleave), plus two things `build` leaves out: pinning, and
//! the burst controller's thread, whose loop waits on time. The burst models act as the
//! controller through the actions it takes ([`SlotState::activate`](crate::slot::SlotState),
//! [`burst::ask_to_park`](crate::burst::ask_to_park)).
//!
//! Three models check a protocol type on its own, as a unit: [`sleep`] drives `Sleep` over the
//! weakest queue it must work with, [`completion`] drives one task cell from both sides, and
//! [`cells`] drives the cell cache's magazines and depot (which the pool does not use under
//! loom: cells come from the global allocator there). The first two also have a model on the
//! real pool.
//!
//! The models' own tallies (which outcome a task got, how often it ran) are std atomics
//! (`StdAtomicUsize`) shared through std's `Arc` (`StdArc`): loom does not interleave those,
//! so they add no executions. Tallies are read only after the threads that write them were
//! joined (or the manager was shut down, which joins its workers).
//!
//! The execution counts and times in each model's docs were measured in release mode with
//! `LOOM_MAX_PREEMPTIONS=3` (`.ci/loom.sh`), one model at a time, on a 2-core machine shared
//! with other builds: the times are wall-clock and pessimistic. Counts depend on the shim's
//! stand-ins (`crate::sync`) and on the code under test: change either and measure again.
//!
//! Each model's docs also name a mutation of its protocol that makes it fail ("It bites");
//! `.ci/loom-mutations.py` applies each of them to a copy of the crate and checks that its
//! models fail (run by hand: it rebuilds once per mutation).

mod burst;
mod capacity;
mod cells;
mod completion;
mod handle;
mod retry;
mod shutdown;
mod sleep;

pub use burst::{
    burst_slot_parking_while_a_task_arrives, parked_burst_slot_does_not_miss_shutdown,
};
pub use capacity::{
    a_full_queue_waiter_gets_the_room_a_worker_frees,
    a_full_queue_waiter_is_answered_when_stop_begins,
};
pub use cells::{
    cell_cache_magazines_put_racing_a_take_have_one_owner,
    cell_cache_two_takes_racing_for_one_magazine_have_one_owner,
};
pub use completion::{
    cancel_racing_the_worker_claim_answers_once, completion_slot_complete_vs_wait_vs_cancel_vs_drop,
};
pub use handle::last_handle_dropped_while_a_task_clones_its_lent_manager;
pub use retry::unhealthy_requeue_racing_stop;
pub use shutdown::{
    kill_queued_racing_the_worker_resolves_each_once,
    kill_racing_queued_and_running_tasks_resolves_each_once,
    stop_racing_a_submission_neither_strands_nor_runs_twice,
    stop_racing_tasks_made_on_a_worker_that_holds_outcomes_back,
};
pub use sleep::{
    a_task_made_inside_a_task_is_stolen_by_an_idle_peer, submit_racing_a_sleeping_worker_is_run,
    submit_racing_a_worker_falling_asleep_loses_no_wakeup,
};

use std::time::Instant;

use crate::error::TaskError;
use crate::manager::TaskManager;
use crate::sync::{Condvar, Mutex, Ordering, StdArc, StdAtomicUsize};
use crate::task::TaskContext;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Explores `model` and prints how many executions that took, and how long.
///
/// With `LOOM_MAX_PREEMPTIONS` set this is `loom::model` (which reads every `LOOM_*`
/// variable, and with `LOOM_LOG=trace LOOM_LOCATION=1` prints each execution's steps: the
/// last one printed is the failing interleaving). Without it, a `loom::model::Builder` bounded
/// at `DEFAULT_PREEMPTIONS`, so that a bare `cargo test` stays quick.
fn explore(name: &str, model: impl Fn() + Sync + Send + 'static) {
    explore_capped(name, None, model);
}

/// [`explore`], with the preemption bound capped at `cap` unless `LOOM_FULL` is set: for the
/// few models whose full bound takes minutes (each says so, with its figures at both bounds).
fn explore_capped(name: &str, cap: Option<usize>, model: impl Fn() + Sync + Send + 'static) {
    let executions = StdArc::new(StdAtomicUsize::new(0));
    let counter = executions.clone();
    let counted = move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    };
    let asked = std::env::var("LOOM_MAX_PREEMPTIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    let cap = cap.filter(|_| std::env::var_os("LOOM_FULL").is_none());
    let start = Instant::now();
    let bound = match (asked, cap) {
        (Some(asked), Some(cap)) if asked > cap => cap,
        (Some(asked), _) => {
            loom::model(counted);
            report(name, &executions, start, asked);
            return;
        }
        (None, Some(cap)) => cap.min(DEFAULT_PREEMPTIONS),
        (None, None) => DEFAULT_PREEMPTIONS,
    };
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    builder.check(counted);
    report(name, &executions, start, bound);
}

fn report(name: &str, executions: &StdAtomicUsize, start: Instant, bound: usize) {
    eprintln!(
        "loom model {name}: {} executions in {:.2?} (preemption bound {bound})",
        executions.load(Ordering::Relaxed),
        start.elapsed(),
    );
}

// ----- a real manager and its tasks -----

/// The one error the models' tasks return; their `check_health` finds it unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unhealthy;

type Manager = TaskManager<(), Unhealthy>;
type Outcome<T> = Result<T, TaskError<Unhealthy>>;

/// A real manager: `base` workers, `burst` burst slots (parked; no controller thread under
/// loom), at most one retry, an `on_create` that always succeeds, every error unhealthy, no
/// `run_task` pool (its resources would add steps to every build and shutdown), and
/// optionally a bounded queue.
fn manager(base: usize, burst: usize, capacity: Option<usize>) -> Manager {
    let mut builder = TaskManager::builder()
        .on_create(|| Ok::<(), Unhealthy>(()))
        .check_health(|_: &Unhealthy| false)
        .worker_count(base)
        .max_worker_count(base + burst)
        .max_retries(1)
        .resource_pool_size(0);
    if let Some(n) = capacity {
        builder = builder.queue_capacity(n);
    }
    builder.build().expect("a model's manager builds")
}

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
    fn new() -> StdArc<Tally> {
        StdArc::new(Tally::default())
    }

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

    /// The one outcome a task got: it must have exactly one.
    fn only(&self) -> &'static str {
        let counts = [
            (Self::get(&self.completed), "completed"),
            (Self::get(&self.failed), "failed"),
            (Self::get(&self.killed), "killed"),
            (Self::get(&self.refused), "refused"),
            (Self::get(&self.cancelled), "cancelled"),
        ];
        let total: usize = counts.iter().map(|(n, _)| n).sum();
        assert_eq!(total, 1, "a task must get exactly one outcome");
        counts.iter().find(|(n, _)| *n == 1).expect("one").1
    }

    /// The task's body: counts its runs, fails (unhealthy) on its first `fail_first`
    /// attempts, then returns its attempt number.
    fn body(
        self: &StdArc<Self>,
        fail_first: u32,
    ) -> impl FnMut(&mut (), &TaskContext) -> Result<u32, Unhealthy> + Send + 'static {
        let tally = self.clone();
        move |_, ctx| {
            tally.ran.fetch_add(1, Ordering::Relaxed);
            if ctx.attempt() <= fail_first {
                Err(Unhealthy)
            } else {
                Ok(ctx.attempt())
            }
        }
    }

    /// Submits a callback task through the public method; its outcome lands here.
    fn submit_callback(self: &StdArc<Self>, manager: &Manager, fail_first: u32) {
        let tally = self.clone();
        manager
            .queue_task_with_callback(self.body(fail_first), move |outcome| tally.record(&outcome));
    }
}

/// After shutdown: nothing left in a queue, nothing pending.
fn assert_drained(manager: &Manager) {
    let shared = manager.shared();
    assert!(!shared.queues.has_work(), "nothing stranded in a queue");
    assert!(shared.lifecycle.is_drained(), "nothing pending");
}

/// A gate a task body waits on: two flags each model gives its meaning to (a task started,
/// the gate is open, a task ran), under a lock and a condvar loom sees.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn update(&self, f: impl FnOnce(&mut (bool, bool))) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    fn wait_for(&self, f: impl Fn(&(bool, bool)) -> bool) {
        let mut state = self.state.lock().unwrap();
        while !f(&state) {
            state = self.changed.wait(state).unwrap();
        }
    }
}
