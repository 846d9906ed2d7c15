//! One test per loom model in `tasker::loom_models` (the model bodies live in the library,
//! next to the crate-internal types they drive; they build and drive the real manager).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p loom-tests --release
//! ```
//!
//! Each test runs its model in a child process (this test binary, filtered to that one test).
//! A model that fails makes loom panic while other model threads still hold loom objects,
//! and their destructors then abort the process: in a child, that abort fails only its own
//! test, and the other models still run. The child's output (loom's message, the model's
//! execution count and time) goes straight to the terminal.
//!
//! Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use std::process::Command;

use tasker::loom_models;

/// Set in a child: run the model itself.
const CHILD: &str = "TASKER_LOOM_MODEL_CHILD";

fn run(name: &str, model: fn()) {
    if std::env::var_os(CHILD).is_some() {
        model();
        return;
    }
    let status = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD, "1")
        .status()
        .expect("run the model in a child process");
    assert!(
        status.success(),
        "loom model {name} failed ({status}): see its output above"
    );
}

/// One test per model, named after it, run in its own child process.
macro_rules! models {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), loom_models::$name);
            }
        )*
    };
}

models!(
    last_handle_dropped_while_a_task_clones_its_lent_manager,
    submit_racing_a_worker_falling_asleep_loses_no_wakeup,
    submit_racing_a_sleeping_worker_is_run,
    a_task_made_inside_a_task_is_stolen_by_an_idle_peer,
    completion_slot_complete_vs_wait_vs_cancel_vs_drop,
    cancel_racing_the_worker_claim_answers_once,
    stop_racing_a_submission_neither_strands_nor_runs_twice,
    kill_racing_queued_and_running_tasks_resolves_each_once,
    kill_queued_racing_the_worker_resolves_each_once,
    stop_racing_tasks_made_on_a_worker_that_holds_outcomes_back,
    unhealthy_requeue_racing_stop,
    burst_slot_parking_while_a_task_arrives,
    parked_burst_slot_does_not_miss_shutdown,
    a_full_queue_waiter_gets_the_room_a_worker_frees,
    a_full_queue_waiter_is_answered_when_stop_begins,
    cell_cache_magazines_put_racing_a_take_have_one_owner,
    cell_cache_two_takes_racing_for_one_magazine_have_one_owner,
);
