//! A caller blocked on its answer behind busy workers: it spins briefly, parks, and is woken
//! with exactly its own answer, whatever ends the wait (the task, `kill`, `stop`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use common::{Conn, Counts, DbError, Gate, eventually, fixed};
use tasker::{TaskContext, TaskError, TaskManager};

/// Tasks queued behind the held worker before the caller submits, so the caller's blocking
/// submission finds a backlog (its wait spins briefly, then parks).
const BACKLOG: usize = 3;

/// A one-worker manager whose worker is held at `gate`, with `BACKLOG` tasks queued behind it
/// (each counts its run in the returned counter).
fn held_with_backlog(gate: &Gate) -> (TaskManager<Conn, DbError>, Arc<AtomicUsize>) {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let waiter = gate.waiter();
    m.queue_task_once_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            waiter.enter();
            Ok(())
        },
        |_| {},
    );
    gate.wait_started();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..BACKLOG {
        let ran = ran.clone();
        m.queue_task_with_callback(
            move |_: &mut Conn, _: &TaskContext| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
            |_| {},
        );
    }
    (m, ran)
}

/// Waits until the caller's task is queued, then gives the caller time to spin out and park
/// (not asserted: the test holds whether or not it parked by then).
fn until_queued(m: &TaskManager<Conn, DbError>, queued: usize) {
    assert!(eventually(|| {
        let s = m.stats();
        s.queued_tasks + s.priority_tasks == queued
    }));
    thread::sleep(Duration::from_millis(20));
}

/// True once the manager refuses new tasks (a shutdown has begun). A probe that is accepted
/// instead just runs later (or is killed), touching nothing the tests count.
fn refused(m: &TaskManager<Conn, DbError>) -> bool {
    let (tx, rx) = mpsc::channel();
    m.queue_task_with_callback(
        |_: &mut Conn, _: &TaskContext| Ok(()),
        move |outcome| {
            let _ = tx.send(outcome);
        },
    );
    matches!(rx.try_recv(), Ok(Err(TaskError::ShuttingDown)))
}

#[test]
fn a_caller_parked_behind_a_backlog_gets_exactly_its_answer() {
    let gate = Gate::new();
    let (m, ran) = held_with_backlog(&gate);
    let runs = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (m, runs) = (m.clone(), runs.clone());
        thread::spawn(move || {
            m.queue_task_with_priority(move |_: &mut Conn, _: &TaskContext| {
                runs.fetch_add(1, Ordering::Relaxed);
                Ok(42)
            })
        })
    };
    until_queued(&m, BACKLOG + 1);
    gate.open();
    assert_eq!(caller.join().unwrap(), Ok(42));
    m.stop().unwrap();
    assert_eq!(
        runs.load(Ordering::Relaxed),
        1,
        "the caller's task ran once"
    );
    assert_eq!(ran.load(Ordering::Relaxed), BACKLOG);
}

#[test]
fn a_handle_waited_on_behind_a_backlog_gets_exactly_its_answer() {
    let gate = Gate::new();
    let (m, _ran) = held_with_backlog(&gate);
    let handle = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok("last"));
    let caller = thread::spawn(move || handle.wait());
    until_queued(&m, BACKLOG + 1);
    gate.open();
    assert_eq!(caller.join().unwrap(), Ok("last"));
    m.stop().unwrap();
}

#[test]
fn a_caller_parked_behind_a_backlog_is_answered_killed_by_kill() {
    let gate = Gate::new();
    let (m, ran) = held_with_backlog(&gate);
    let caller = {
        let m = m.clone();
        thread::spawn(move || m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(1)))
    };
    until_queued(&m, BACKLOG + 1);
    // `kill` resolves what is queued, then joins the worker, which is still held: open the
    // gate once the kill has begun.
    let killer = {
        let m = m.clone();
        thread::spawn(move || m.kill())
    };
    assert!(eventually(|| refused(&m)));
    gate.open();
    assert_eq!(caller.join().unwrap(), Err(TaskError::Killed));
    killer.join().unwrap().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 0, "killed tasks never run");
}

#[test]
fn a_caller_parked_behind_a_backlog_is_answered_after_stop_runs_the_queue() {
    let gate = Gate::new();
    let (m, ran) = held_with_backlog(&gate);
    let caller = {
        let m = m.clone();
        thread::spawn(move || m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(7)))
    };
    until_queued(&m, BACKLOG + 1);
    let stopper = {
        let m = m.clone();
        thread::spawn(move || m.stop())
    };
    assert!(eventually(|| refused(&m)));
    gate.open();
    assert_eq!(caller.join().unwrap(), Ok(7));
    stopper.join().unwrap().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), BACKLOG);
}

/// Many callers at once behind two busy workers (a backlog of spinning tasks kept up by the
/// callers themselves): every blocking call, priority or not, by submission or by handle,
/// gets its own answer, once.
#[test]
fn many_callers_behind_busy_workers_each_get_their_own_answer() {
    const CALLERS: usize = 6;
    const CALLS: usize = 150;
    let counts = Counts::new();
    let m = fixed(&counts, 2);
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let m = m.clone();
            thread::spawn(move || {
                for i in 0..CALLS {
                    // Keep both workers busy: a few short spinning tasks ahead of each call.
                    for _ in 0..3 {
                        m.queue_task_with_callback(
                            |_: &mut Conn, _: &TaskContext| {
                                let until = std::time::Instant::now() + Duration::from_micros(20);
                                while std::time::Instant::now() < until {
                                    std::hint::spin_loop();
                                }
                                Ok(())
                            },
                            |_| {},
                        );
                    }
                    let body = move |_: &mut Conn, _: &TaskContext| Ok((c, i));
                    let answer = match i % 3 {
                        0 => m.queue_task_with_priority(body),
                        1 => m.queue_task(body),
                        _ => m.queue_task_with_priority_async(body).wait(),
                    };
                    assert_eq!(answer, Ok((c, i)));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
    m.stop().unwrap();
}
