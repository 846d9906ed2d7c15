//! `TaskHandle`: a future on any executor, `is_finished`, and `wait_timeout`.

mod common;

use std::time::Duration;

use common::{Conn, Counts, DbError, Gate, TIMEOUT, builder, eventually};
use tasker::{TaskContext, TaskError};

#[test]
fn handles_can_be_awaited_with_block_on() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let h = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(String::from("awaited")));
    assert_eq!(pollster::block_on(h), Ok(String::from("awaited")));

    // A task that finishes only after the executor parked on it: the waker must fire.
    let gate = Gate::new();
    let waiter = gate.waiter();
    let h = m.queue_task_async(move |_: &mut Conn, ctx: &TaskContext| {
        waiter.enter();
        Ok(ctx.attempt())
    });
    gate.wait_started();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        gate.open();
    });
    assert_eq!(pollster::block_on(h), Ok(1));
    opener.join().unwrap();

    // Errors come through the future too.
    let h = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Err::<(), _>(DbError::Plain));
    assert_eq!(
        pollster::block_on(h),
        Err(TaskError::Failed {
            error: DbError::Plain,
            attempts: 1
        })
    );
    m.stop().unwrap();
}

/// A multi-thread tokio runtime, as `#[tokio::test(flavor = "multi_thread")]` makes (without
/// tokio's macros, which would cost the README's commands a second `syn` build).
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a tokio runtime")
}

#[test]
fn handles_can_be_awaited_in_a_tokio_runtime() {
    tokio_runtime().block_on(handles_awaited_in_tokio());
}

async fn handles_awaited_in_tokio() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let v = m
        .queue_task_async(|c: &mut Conn, _: &TaskContext| Ok(c.id + 1000))
        .await
        .unwrap();
    assert!(v >= 1000);
    let p = m
        .queue_task_with_priority_once_async(|_: &mut Conn, _: &TaskContext| Ok("prio"))
        .await;
    assert_eq!(p, Ok("prio"));

    // Awaited from a spawned tokio task on another runtime thread.
    let h = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(5u8));
    let joined = tokio::spawn(h).await.expect("tokio task panicked");
    assert_eq!(joined, Ok(5));

    let m2 = m.clone();
    tokio::task::spawn_blocking(move || m2.stop().unwrap())
        .await
        .unwrap();
}

#[test]
fn many_handles_can_be_joined_in_a_tokio_runtime() {
    tokio_runtime().block_on(many_handles_joined_in_tokio());
}

async fn many_handles_joined_in_tokio() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..200u64)
        .map(|i| {
            m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(i * i)
            })
        })
        .collect();
    // Each handle awaited by its own tokio task, all at once across the runtime's threads.
    let joins: Vec<_> = handles.into_iter().map(tokio::spawn).collect();
    let mut values = Vec::new();
    for join in joins {
        values.push(join.await.expect("tokio task panicked").unwrap());
    }
    assert_eq!(values, (0..200u64).map(|i| i * i).collect::<Vec<_>>());

    let m2 = m.clone();
    tokio::task::spawn_blocking(move || m2.stop().unwrap())
        .await
        .unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn is_finished_becomes_true() {
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
        Ok(11)
    });
    gate.wait_started();
    assert!(!h.is_finished(), "the task is still running");
    gate.open();
    assert!(eventually(|| h.is_finished()), "never finished");
    assert_eq!(h.wait(), Ok(11));

    // A refused task's handle is finished at once.
    m.stop().unwrap();
    let refused = m.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(0));
    assert!(refused.is_finished());
    assert_eq!(refused.wait(), Err(TaskError::ShuttingDown));
}

#[test]
fn wait_timeout_returns_the_handle_and_it_still_delivers_later() {
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
        Ok(String::from("late"))
    });
    gate.wait_started();
    let h = match h.wait_timeout(Duration::from_millis(30)) {
        Err(h) => h,
        Ok(outcome) => panic!("the task is blocked, yet wait_timeout gave {outcome:?}"),
    };
    assert!(!h.is_finished());
    // A second timed wait also gives it back.
    let h = h
        .wait_timeout(Duration::from_millis(1))
        .expect_err("still blocked");
    gate.open();
    let outcome = h.wait_timeout(TIMEOUT).expect("never delivered");
    assert_eq!(outcome, Ok(String::from("late")));
    m.stop().unwrap();
}

#[test]
fn dropping_a_handle_does_not_cancel_the_task() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        tx.send(()).unwrap();
        Ok(())
    });
    drop(h);
    rx.recv_timeout(TIMEOUT).expect("the task never ran");
    m.stop().unwrap();
}
