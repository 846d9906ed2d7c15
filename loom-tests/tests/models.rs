//! One test per loom model in `tasker::loom_models` (the model bodies live in the library,
//! next to the crate-internal types they drive).
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

#[test]
fn submit_racing_a_worker_falling_asleep_loses_no_wakeup() {
    run(
        "submit_racing_a_worker_falling_asleep_loses_no_wakeup",
        loom_models::submit_racing_a_worker_falling_asleep_loses_no_wakeup,
    );
}

#[test]
fn completion_slot_complete_vs_wait_vs_cancel_vs_drop() {
    run(
        "completion_slot_complete_vs_wait_vs_cancel_vs_drop",
        loom_models::completion_slot_complete_vs_wait_vs_cancel_vs_drop,
    );
}

#[test]
fn stop_racing_a_submission_neither_strands_nor_runs_twice() {
    run(
        "stop_racing_a_submission_neither_strands_nor_runs_twice",
        loom_models::stop_racing_a_submission_neither_strands_nor_runs_twice,
    );
}

#[test]
fn kill_racing_queued_and_running_tasks_resolves_each_once() {
    run(
        "kill_racing_queued_and_running_tasks_resolves_each_once",
        loom_models::kill_racing_queued_and_running_tasks_resolves_each_once,
    );
}

#[test]
fn unhealthy_requeue_racing_stop() {
    run(
        "unhealthy_requeue_racing_stop",
        loom_models::unhealthy_requeue_racing_stop,
    );
}

#[test]
fn burst_slot_parking_while_a_task_arrives() {
    run(
        "burst_slot_parking_while_a_task_arrives",
        loom_models::burst_slot_parking_while_a_task_arrives,
    );
}

#[test]
fn parked_burst_slot_does_not_miss_shutdown() {
    run(
        "parked_burst_slot_does_not_miss_shutdown",
        loom_models::parked_burst_slot_does_not_miss_shutdown,
    );
}
