//! `*_once` tasks run at most once, even after an unhealthy error, which still replaces the
//! worker's resource.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use common::{Conn, Counts, DbError, TIMEOUT, builder};
use tasker::{TaskContext, TaskError, TaskManager};

/// A single-worker manager with plenty of retries available.
fn manager(counts: &Counts) -> TaskManager<Conn, DbError> {
    builder(counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(3)
        .build()
        .unwrap()
}

/// An at-most-once task that counts its runs, records its resource id, and breaks it.
fn broken_once(
    runs: &Arc<AtomicUsize>,
    ids: &Arc<Mutex<Vec<usize>>>,
) -> impl FnOnce(&mut Conn, &TaskContext) -> Result<u32, DbError> + Send + 'static {
    let (runs, ids) = (runs.clone(), ids.clone());
    move |c: &mut Conn, _: &TaskContext| {
        runs.fetch_add(1, Ordering::SeqCst);
        ids.lock().unwrap().push(c.id);
        Err(DbError::Broken)
    }
}

const FAILED_ONCE: Result<u32, TaskError<DbError>> = Err(TaskError::Failed {
    error: DbError::Broken,
    attempts: 1,
});

/// After the four at-most-once failures: each ran once, on its own resource, and the worker
/// carries on with yet another one.
fn check_replaced(m: &TaskManager<Conn, DbError>, counts: &Counts, ids: &Arc<Mutex<Vec<usize>>>) {
    let mut ids = ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 4);
    let next = m
        .queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    ids.push(next);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        5,
        "every unhealthy failure replaced the resource"
    );
    assert_eq!(counts.created(), 5);
    assert_eq!(counts.destroyed(), 4);
    assert_eq!(m.metrics().total_tasks_retried, 0);
    assert_eq!(m.metrics().total_resources_replaced, 4);
}

#[test]
fn blocking_once_tasks_failing_unhealthy_run_exactly_once() {
    let counts = Counts::new();
    let m = manager(&counts);
    let runs = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));

    assert_eq!(m.queue_task_once(broken_once(&runs, &ids)), FAILED_ONCE);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        m.queue_task_with_priority_once(broken_once(&runs, &ids)),
        FAILED_ONCE
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Two more, to compare all four modes on the same manager.
    assert_eq!(m.queue_task_once(broken_once(&runs, &ids)), FAILED_ONCE);
    assert_eq!(
        m.queue_task_with_priority_once(broken_once(&runs, &ids)),
        FAILED_ONCE
    );
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    check_replaced(&m, &counts, &ids);
    m.stop().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 4, "no run after stop drained");
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn callback_once_tasks_failing_unhealthy_run_exactly_once() {
    let counts = Counts::new();
    let m = manager(&counts);
    let runs = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();

    for i in 0..4 {
        let tx = tx.clone();
        let cb = move |r| tx.send(r).unwrap();
        if i % 2 == 0 {
            m.queue_task_once_with_callback(broken_once(&runs, &ids), cb);
        } else {
            m.queue_task_with_priority_once_with_callback(broken_once(&runs, &ids), cb);
        }
        // One at a time, so `check_replaced` can count resources exactly.
        assert_eq!(rx.recv_timeout(TIMEOUT).expect("no outcome"), FAILED_ONCE);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    check_replaced(&m, &counts, &ids);
    m.stop().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn handle_once_tasks_failing_unhealthy_run_exactly_once() {
    let counts = Counts::new();
    let m = manager(&counts);
    let runs = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));

    for i in 0..4 {
        let h = if i % 2 == 0 {
            m.queue_task_once_async(broken_once(&runs, &ids))
        } else {
            m.queue_task_with_priority_once_async(broken_once(&runs, &ids))
        };
        assert_eq!(h.wait(), FAILED_ONCE);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    check_replaced(&m, &counts, &ids);
    m.stop().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn the_same_closure_through_a_normal_mode_is_retried() {
    // The contrast that makes the tests above meaningful: retries are on for this manager.
    let counts = Counts::new();
    let m = manager(&counts);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let outcome = m.queue_task(move |_: &mut Conn, _: &TaskContext| {
        r.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>(DbError::Broken)
    });
    assert!(matches!(
        outcome,
        Err(TaskError::Failed { attempts: 4, .. })
    ));
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    m.stop().unwrap();
}
