//! A panicking task becomes `TaskError::Panicked`; the worker survives with a fresh resource.
//! A panicking callback is contained too.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use common::{Conn, Counts, DbError, TIMEOUT, builder};
use tasker::{TaskContext, TaskError};

#[test]
fn a_panicking_task_gives_panicked_with_the_message() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();

    let r = m.queue_task(|_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
        panic!("boom: static str")
    });
    assert_eq!(
        r,
        Err(TaskError::Panicked {
            message: "boom: static str".into()
        })
    );
    let n = 7;
    let r = m.queue_task_async(
        move |_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
            panic!("boom: formatted {n}")
        },
    );
    assert_eq!(
        r.wait(),
        Err(TaskError::Panicked {
            message: "boom: formatted 7".into()
        })
    );
    m.stop().unwrap();
}

#[test]
fn a_panicking_task_is_not_retried() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .max_retries(3)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let outcome = m.queue_task(
        move |_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
            r.fetch_add(1, Ordering::SeqCst);
            panic!("once is enough")
        },
    );
    assert!(matches!(outcome, Err(TaskError::Panicked { .. })));
    m.stop().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(m.metrics().total_tasks_retried, 0);
}

#[test]
fn the_pool_keeps_working_after_a_panic_with_a_fresh_resource() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .build()
        .unwrap();
    let before = m
        .queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_eq!(counts.created(), 1);

    let r = m.queue_task(|_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
        panic!("worker task panics")
    });
    assert!(matches!(r, Err(TaskError::Panicked { .. })));

    // The single worker still takes tasks, and with a new resource.
    let handles: Vec<_> = (0..10u32)
        .map(|i| m.queue_task_async(move |c: &mut Conn, _: &TaskContext| Ok((i, c.id))))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let (value, id) = h
            .wait_timeout(TIMEOUT)
            .expect("the pool stopped working")
            .unwrap();
        assert_eq!(value as usize, i);
        assert_ne!(id, before, "the panicked task's resource was reused");
    }
    assert_eq!(counts.created(), 2, "on_create made the replacement");
    assert_eq!(counts.destroyed(), 1, "the panicked resource was destroyed");
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_panicking_callback_does_not_take_the_worker_down() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .build()
        .unwrap();
    let called = Arc::new(AtomicUsize::new(0));
    let c = called.clone();
    m.queue_task_with_callback(
        |c: &mut Conn, _: &TaskContext| Ok(c.id),
        move |_r: Result<usize, TaskError<DbError>>| {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("callback panics");
        },
    );
    // One more whose callback panics on an error outcome (delivered on another path).
    let c = called.clone();
    m.queue_task_with_callback(
        |_: &mut Conn, _: &TaskContext| Err::<usize, _>(DbError::Plain),
        move |_r: Result<usize, TaskError<DbError>>| {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("callback panics on an error");
        },
    );
    // The same single worker runs the next tasks.
    let (tx, rx) = mpsc::channel();
    m.queue_task_with_callback(
        |c: &mut Conn, _: &TaskContext| Ok(c.id),
        move |r| tx.send(r).unwrap(),
    );
    let id = rx.recv_timeout(TIMEOUT).expect("the worker died").unwrap();
    assert_eq!(
        m.queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id)),
        Ok(id)
    );
    assert_eq!(called.load(Ordering::SeqCst), 2);
    // A callback's panic says nothing about the resource: it is kept.
    assert_eq!(counts.created(), 1);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn panicked_tasks_are_counted_in_metrics() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            m.queue_task_async(|_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
                panic!("counted")
            })
        })
        .collect();
    for h in handles {
        assert!(matches!(h.wait(), Err(TaskError::Panicked { .. })));
    }
    assert_eq!(m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(())), Ok(()));
    m.stop().unwrap();
    let metrics = m.metrics();
    assert_eq!(metrics.total_tasks_panicked, 3);
    assert_eq!(
        metrics.total_tasks_failed, 3,
        "a panic is a failed task too"
    );
    assert_eq!(metrics.total_tasks_completed, 1);
    assert_eq!(metrics.total_resources_replaced, 3);
    assert_eq!(counts.created(), counts.destroyed());
}
