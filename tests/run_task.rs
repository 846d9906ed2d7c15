//! `run_task` runs on the caller's thread with a pooled resource, or a temporary one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Conn, Counts, DbError, builder};
use tasker::{TaskContext, TaskError};

#[test]
fn run_task_uses_a_pooled_resource() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(1)
        .build()
        .unwrap();
    assert_eq!(counts.created(), 2, "one for the pool, one for the worker");
    let caller = std::thread::current().id();

    let (id, thread) = m
        .run_task(|c: &mut Conn, _: &TaskContext| Ok((c.id, std::thread::current().id())))
        .unwrap();
    assert_eq!(thread, caller, "run_task runs on the caller's thread");
    let again = m
        .run_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_eq!(again, id, "the pooled resource came back to the pool");
    assert_eq!(counts.created(), 2, "no extra on_create");
    assert_eq!(counts.destroyed(), 0);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn run_task_with_an_empty_pool_makes_a_temporary_resource() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .build()
        .unwrap();
    assert_eq!(counts.created(), 1);

    let first = m
        .run_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_eq!(counts.created(), 2);
    assert_eq!(
        counts.destroyed(),
        1,
        "the temporary resource was destroyed after"
    );
    let second = m
        .run_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_ne!(first, second, "each call makes its own");
    assert_eq!(counts.created(), 3);
    assert_eq!(counts.destroyed(), 2);
    assert_eq!(
        m.stats().available_resources,
        0,
        "temporaries are not pooled"
    );
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn run_task_with_failing_on_create_and_an_empty_pool_gives_resource_creation() {
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let m = tasker::TaskManager::builder()
        .on_create(move || {
            if f.load(Ordering::SeqCst) {
                Err(DbError::Connect)
            } else {
                Ok(Conn { id: 0 })
            }
        })
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .pin_workers(false)
        .build()
        .unwrap();
    fail.store(true, Ordering::SeqCst);
    let ran = AtomicBool::new(false);
    let r = m.run_task(|_: &mut Conn, _: &TaskContext| {
        ran.store(true, Ordering::SeqCst);
        Ok(())
    });
    assert_eq!(r, Err(TaskError::ResourceCreation(DbError::Connect)));
    assert!(
        !ran.load(Ordering::SeqCst),
        "the task needs a resource to run"
    );
    // The workers are unaffected: theirs was made at build.
    assert_eq!(
        m.queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id)),
        Ok(0)
    );
    m.stop().unwrap();
}

#[test]
fn run_task_after_stop_gives_shutting_down() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    m.stop().unwrap();
    let ran = AtomicBool::new(false);
    let r = m.run_task(|_: &mut Conn, _: &TaskContext| {
        ran.store(true, Ordering::SeqCst);
        Ok(())
    });
    assert_eq!(r, Err(TaskError::ShuttingDown));
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        counts.created(),
        counts.destroyed(),
        "nothing made after stop"
    );
}

#[test]
fn stats_available_resources_reflects_the_pool() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(3)
        .build()
        .unwrap();
    assert_eq!(m.stats().available_resources, 3);

    // While a run_task holds one, the pool has one less; nested, two less.
    let (outer, inner) = m
        .run_task(|_: &mut Conn, _: &TaskContext| {
            let outer = m.stats().available_resources;
            let inner = m
                .run_task(|_: &mut Conn, _: &TaskContext| Ok(m.stats().available_resources))
                .unwrap();
            Ok::<_, DbError>((outer, inner))
        })
        .unwrap();
    assert_eq!((outer, inner), (2, 1));
    assert_eq!(m.stats().available_resources, 3);
    m.stop().unwrap();
    assert_eq!(m.stats().available_resources, 0, "stop destroyed the pool");
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn run_task_replaces_a_broken_pooled_resource_and_does_not_retry() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(1)
        .max_retries(3)
        .build()
        .unwrap();
    let before = m
        .run_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    let mut runs = 0;
    let r = m.run_task(|_: &mut Conn, ctx: &TaskContext| {
        runs += 1;
        assert_eq!(ctx.attempt(), 1);
        Err::<(), _>(DbError::Broken)
    });
    assert_eq!(
        r,
        Err(TaskError::Failed {
            error: DbError::Broken,
            attempts: 1
        })
    );
    assert_eq!(runs, 1);
    // The broken one was destroyed and the pool refilled.
    assert_eq!(counts.destroyed(), 1);
    assert_eq!(m.stats().available_resources, 1);
    let after = m
        .run_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_ne!(after, before);

    // A panic is caught and also replaces the resource.
    let r = m.run_task(|_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
        panic!("run_task panics")
    });
    assert_eq!(
        r,
        Err(TaskError::Panicked {
            message: "run_task panics".into()
        })
    );
    assert_eq!(counts.destroyed(), 2);
    assert_eq!(m.stats().available_resources, 1);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}
