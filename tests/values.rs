//! What each submission mode hands back: the task's value, exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use common::{Conn, Counts, DbError, TIMEOUT, builder};
use tasker::{TaskContext, TaskError};

type Outcome<T> = Result<T, TaskError<DbError>>;

#[test]
fn blocking_modes_return_the_value() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();

    let a = m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(String::from("normal")));
    let b = m.queue_task_with_priority(|_: &mut Conn, _: &TaskContext| Ok(vec![1u8, 2, 3]));
    let owned = String::from("moved in");
    let c = m.queue_task_once(move |_: &mut Conn, _: &TaskContext| Ok(owned));
    let d = m.queue_task_with_priority_once(|_: &mut Conn, _: &TaskContext| Ok(42u64));

    assert_eq!(a, Ok(String::from("normal")));
    assert_eq!(b, Ok(vec![1, 2, 3]));
    assert_eq!(c, Ok(String::from("moved in")));
    assert_eq!(d, Ok(42));

    // The task's own value type is chosen per call, and errors come back too.
    let e = m.queue_task(|_: &mut Conn, _: &TaskContext| Err::<(), _>(DbError::Plain));
    assert_eq!(
        e,
        Err(TaskError::Failed {
            error: DbError::Plain,
            attempts: 1
        })
    );
    m.stop().unwrap();
}

#[test]
fn callback_modes_deliver_exactly_once() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<(&'static str, Outcome<u32>)>();

    let cb = |name: &'static str| {
        let calls = calls.clone();
        let tx = tx.clone();
        move |r: Outcome<u32>| {
            calls.fetch_add(1, Ordering::SeqCst);
            tx.send((name, r)).unwrap();
        }
    };
    m.queue_task_with_callback(|_: &mut Conn, _: &TaskContext| Ok(1), cb("normal"));
    m.queue_task_with_priority_with_callback(|_: &mut Conn, _: &TaskContext| Ok(2), cb("prio"));
    m.queue_task_once_with_callback(|_: &mut Conn, _: &TaskContext| Ok(3), cb("once"));
    m.queue_task_with_priority_once_with_callback(
        |_: &mut Conn, _: &TaskContext| Ok(4),
        cb("prio_once"),
    );
    // A failing task's callback is called once too, with the error.
    m.queue_task_with_callback(
        |_: &mut Conn, _: &TaskContext| Err(DbError::Plain),
        cb("failing"),
    );

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            rx.recv_timeout(TIMEOUT)
                .expect("a callback was never called"),
        );
    }
    // `stop` runs everything queued: any duplicate delivery has happened by now.
    m.stop().unwrap();
    assert!(rx.try_recv().is_err(), "a callback was called twice");
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // A refused submission's callback is called once too, before the submission returns.
    m.queue_task_once_with_callback(|_: &mut Conn, _: &TaskContext| Ok(6), cb("refused"));
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    drop(tx);
    assert_eq!(rx.try_recv(), Ok(("refused", Err(TaskError::ShuttingDown))));
    assert!(rx.try_recv().is_err());

    got.sort_by_key(|(name, _)| *name);
    assert_eq!(
        got,
        vec![
            (
                "failing",
                Err(TaskError::Failed {
                    error: DbError::Plain,
                    attempts: 1
                })
            ),
            ("normal", Ok(1)),
            ("once", Ok(3)),
            ("prio", Ok(2)),
            ("prio_once", Ok(4)),
        ]
    );
}

#[test]
fn async_handles_wait_for_the_value() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let h1 = m.queue_task_async(|c: &mut Conn, _: &TaskContext| Ok(c.id < 100));
    let h2 = m.queue_task_with_priority_async(|_: &mut Conn, _: &TaskContext| Ok("p"));
    let h3 = m.queue_task_once_async(|_: &mut Conn, _: &TaskContext| Ok(3i64));
    let h4 =
        m.queue_task_with_priority_once_async(|_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt()));
    assert_eq!(h1.wait(), Ok(true));
    assert_eq!(h2.wait(), Ok("p"));
    assert_eq!(h3.wait(), Ok(3));
    assert_eq!(h4.wait(), Ok(1));
    m.stop().unwrap();
}

#[test]
fn every_submission_mode_returns_the_value() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(u32, Outcome<u32>)>();
    let cb = |k: u32| {
        let tx = tx.clone();
        move |r: Outcome<u32>| tx.send((k, r)).unwrap()
    };
    // Each task returns its own number; the value must come back through its own mode.
    let v = |k: u32| move |_: &mut Conn, _: &TaskContext| Ok::<u32, DbError>(k);

    // Blocking.
    assert_eq!(m.queue_task(v(1)), Ok(1));
    assert_eq!(m.queue_task_with_priority(v(2)), Ok(2));
    assert_eq!(m.queue_task_once(v(3)), Ok(3));
    assert_eq!(m.queue_task_with_priority_once(v(4)), Ok(4));
    // Callback.
    m.queue_task_with_callback(v(5), cb(5));
    m.queue_task_with_priority_with_callback(v(6), cb(6));
    m.queue_task_once_with_callback(v(7), cb(7));
    m.queue_task_with_priority_once_with_callback(v(8), cb(8));
    // Handle.
    let h9 = m.queue_task_async(v(9));
    let h10 = m.queue_task_with_priority_async(v(10));
    let h11 = m.queue_task_once_async(v(11));
    let h12 = m.queue_task_with_priority_once_async(v(12));
    assert_eq!(h9.wait(), Ok(9));
    assert_eq!(h10.wait(), Ok(10));
    assert_eq!(h11.wait(), Ok(11));
    assert_eq!(h12.wait(), Ok(12));

    let mut from_callbacks: Vec<_> = (0..4)
        .map(|_| {
            rx.recv_timeout(TIMEOUT)
                .expect("a callback was never called")
        })
        .collect();
    from_callbacks.sort_by_key(|(k, _)| *k);
    assert_eq!(
        from_callbacks,
        vec![(5, Ok(5)), (6, Ok(6)), (7, Ok(7)), (8, Ok(8))]
    );
    m.stop().unwrap();
    drop(tx);
    assert!(rx.try_recv().is_err(), "a callback was called twice");
    assert_eq!(m.metrics().total_tasks_completed, 12);
}
