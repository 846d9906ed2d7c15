//! A handle waited on inside a task of the same manager never deadlocks on the queue: a task
//! that has not started is cancelled and the wait answers `WouldDeadlock`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Conn, Counts, DbError, builder};
use tasker::{TaskContext, TaskError, TaskManager};

fn one_worker(counts: &Counts) -> TaskManager<Conn, DbError> {
    builder(counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .expect("build")
}

#[test]
fn waiting_inside_a_task_on_an_unstarted_task_answers_would_deadlock() {
    let counts = Counts::new();
    let m = one_worker(&counts);
    let ran = Arc::new(AtomicUsize::new(0));
    let (inner, r) = (m.clone(), ran.clone());
    let answers = m
        .queue_task(move |_: &mut Conn, _: &TaskContext| {
            let r1 = r.clone();
            let waited = inner
                .queue_task_async(move |_: &mut Conn, _: &TaskContext| {
                    r1.fetch_add(1, Ordering::SeqCst);
                    Ok(1)
                })
                .wait();
            let r2 = r.clone();
            let timed = inner
                .queue_task_async(move |_: &mut Conn, _: &TaskContext| {
                    r2.fetch_add(1, Ordering::SeqCst);
                    Ok(2)
                })
                .wait_timeout(Duration::from_secs(10));
            Ok((waited, timed.ok()))
        })
        .expect("the outer task");
    assert_eq!(answers.0, Err(TaskError::WouldDeadlock));
    assert_eq!(answers.1, Some(Err(TaskError::WouldDeadlock)));
    m.stop().unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a cancelled inner task never runs"
    );
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_handle_of_another_manager_is_waited_for_as_usual() {
    let counts = Counts::new();
    let m = one_worker(&counts);
    let other = one_worker(&counts);
    let o = other.clone();
    let answer = m
        .queue_task(move |_: &mut Conn, _: &TaskContext| {
            Ok(o.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(5))
                .wait())
        })
        .unwrap();
    assert_eq!(answer, Ok(5));
    m.stop().unwrap();
    other.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn outside_any_task_a_wait_waits() {
    let counts = Counts::new();
    let m = one_worker(&counts);
    let h = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(3));
    assert_eq!(h.wait(), Ok(3));
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}
