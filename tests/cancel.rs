//! `TaskHandle::cancel`: true only for a task that had not started, which then never runs.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Conn, Counts, DbError, Gate, TIMEOUT, builder, eventually};
use tasker::{TaskContext, TaskError, TaskManager};

/// A single-worker manager whose worker is blocked on the returned gate.
fn blocked_manager(
    counts: &Counts,
) -> (
    TaskManager<Conn, DbError>,
    Gate,
    tasker::TaskHandle<(), DbError>,
) {
    let m = builder(counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    let waiter = gate.waiter();
    let blocker = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok(())
    });
    gate.wait_started();
    (m, gate, blocker)
}

#[test]
fn cancelling_a_queued_task_means_it_never_runs() {
    let counts = Counts::new();
    let (m, gate, blocker) = blocked_manager(&counts);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let h = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        r.store(true, Ordering::SeqCst);
        Ok(1)
    });
    // A task queued after it, not cancelled, still runs.
    let after = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(2));

    assert!(h.cancel(), "the task had not started");
    assert!(h.is_finished(), "a cancelled task has its outcome");
    assert!(!h.cancel(), "a second cancel finds it already cancelled");

    gate.open();
    blocker
        .wait_timeout(TIMEOUT)
        .expect("blocker hung")
        .unwrap();
    assert_eq!(after.wait_timeout(TIMEOUT).expect("hung"), Ok(2));
    assert_eq!(
        h.wait_timeout(TIMEOUT).expect("hung"),
        Err(TaskError::Cancelled)
    );
    m.stop().unwrap();
    assert!(!ran.load(Ordering::SeqCst), "the cancelled body ran");
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn cancelling_queued_tasks_of_every_handle_mode() {
    let counts = Counts::new();
    let (m, gate, blocker) = blocked_manager(&counts);
    let runs = Arc::new(AtomicUsize::new(0));
    let body = || {
        let runs = runs.clone();
        move |_: &mut Conn, _: &TaskContext| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    };
    let handles = vec![
        m.queue_task_async(body()),
        m.queue_task_with_priority_async(body()),
        m.queue_task_once_async(body()),
        m.queue_task_with_priority_once_async(body()),
    ];
    for h in &handles {
        assert!(h.cancel());
    }
    gate.open();
    blocker
        .wait_timeout(TIMEOUT)
        .expect("blocker hung")
        .unwrap();
    for h in handles {
        assert_eq!(
            h.wait_timeout(TIMEOUT).expect("hung"),
            Err(TaskError::Cancelled)
        );
    }
    m.stop().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn cancel_on_a_running_task_returns_false() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    let waiter = gate.waiter();
    let h = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok("ran to the end")
    });
    gate.wait_started();
    assert!(!h.cancel(), "the task is running");
    gate.open();
    assert_eq!(h.wait_timeout(TIMEOUT).expect("hung"), Ok("ran to the end"));
    m.stop().unwrap();
}

#[test]
fn cancel_on_a_finished_task_returns_false() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    let h = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(9));
    assert!(eventually(|| h.is_finished()));
    assert!(!h.cancel(), "the task already finished");
    assert_eq!(
        h.wait(),
        Ok(9),
        "a refused cancel leaves the outcome intact"
    );
    m.stop().unwrap();
}

#[test]
fn cancel_on_a_task_queued_for_a_retry_returns_false() {
    // Ran once (then broke and was re-queued): it has started, so it cannot be cancelled.
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .max_retries(1)
        .build()
        .unwrap();
    let first_run = Gate::new();
    let waiter = first_run.waiter();
    let h = m.queue_task_async(move |_: &mut Conn, ctx: &TaskContext| {
        if ctx.attempt() == 1 {
            waiter.enter();
            return Err(DbError::Broken);
        }
        Ok(ctx.attempt())
    });
    first_run.wait_started();
    // Queued ahead of the retry, this keeps the single worker busy while the retry waits.
    let busy = Gate::new();
    let busy_waiter = busy.waiter();
    let p = m.queue_task_with_priority_async(move |_: &mut Conn, _: &TaskContext| {
        busy_waiter.enter();
        Ok(0)
    });
    first_run.open();
    busy.wait_started();
    assert!(
        eventually(|| m.stats().priority_tasks == 1),
        "the retry is queued"
    );
    assert!(
        !h.cancel(),
        "a task that already ran once is not cancellable"
    );
    busy.open();
    assert_eq!(p.wait_timeout(TIMEOUT).expect("hung"), Ok(0));
    assert_eq!(h.wait_timeout(TIMEOUT).expect("hung"), Ok(2));
    m.stop().unwrap();
}
