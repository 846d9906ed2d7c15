//! Unhealthy errors replace the worker's resource and re-run the task, up to `max_retries`;
//! healthy errors do neither.

mod common;

use std::sync::{Arc, Mutex};

use common::{Conn, Counts, DbError, builder};
use tasker::{TaskContext, TaskError};

/// What each run of a task saw: (attempt, resource id).
type Seen = Arc<Mutex<Vec<(u32, usize)>>>;

fn always_broken(
    seen: &Seen,
) -> impl FnMut(&mut Conn, &TaskContext) -> Result<(), DbError> + Send + 'static {
    let seen = seen.clone();
    move |c: &mut Conn, ctx: &TaskContext| {
        seen.lock().unwrap().push((ctx.attempt(), c.id));
        Err(DbError::Broken)
    }
}

#[test]
fn unhealthy_errors_are_retried_until_max_retries_with_a_new_resource_each_time() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(2)
        .build()
        .unwrap();
    assert_eq!(counts.created(), 1);

    let seen = Seen::default();
    let outcome = m.queue_task(always_broken(&seen));
    assert_eq!(
        outcome,
        Err(TaskError::Failed {
            error: DbError::Broken,
            attempts: 3
        })
    );
    let seen = seen.lock().unwrap().clone();
    let attempts: Vec<u32> = seen.iter().map(|&(a, _)| a).collect();
    assert_eq!(
        attempts,
        vec![1, 2, 3],
        "runs 1 + max_retries times, in order"
    );
    let mut ids: Vec<usize> = seen.iter().map(|&(_, id)| id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "each attempt ran on a fresh resource: {seen:?}"
    );

    // The last failure replaced the resource too: the next task sees a 4th one.
    let next = m
        .queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert!(!ids.contains(&next));
    assert_eq!(
        counts.created(),
        1 + 3,
        "one on_create per unhealthy failure"
    );
    assert_eq!(counts.destroyed(), 3);

    // Outcome counters are bumped right after delivery: read them once the workers joined.
    m.stop().unwrap();
    let metrics = m.metrics();
    assert_eq!(metrics.total_tasks_retried, 2, "two re-queues");
    assert_eq!(metrics.total_tasks_failed, 1);
    assert_eq!(metrics.total_tasks_completed, 1);
    assert_eq!(metrics.total_resources_replaced, 3);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_task_broken_once_succeeds_on_attempt_two() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .max_retries(2)
        .build()
        .unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    let outcome = m.queue_task(move |c: &mut Conn, ctx: &TaskContext| {
        s.lock().unwrap().push((ctx.attempt(), c.id));
        if ctx.attempt() == 1 {
            Err(DbError::Broken)
        } else {
            Ok(ctx.attempt())
        }
    });
    assert_eq!(outcome, Ok(2));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_ne!(
        seen[0].1, seen[1].1,
        "the retry did not run on the broken resource"
    );
    m.stop().unwrap();
    assert_eq!(m.metrics().total_tasks_retried, 1);
    assert_eq!(m.metrics().total_tasks_completed, 1);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn healthy_errors_are_not_retried() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(5)
        .build()
        .unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    let outcome = m.queue_task(move |c: &mut Conn, ctx: &TaskContext| {
        s.lock().unwrap().push((ctx.attempt(), c.id));
        Err::<(), _>(DbError::Plain)
    });
    assert_eq!(
        outcome,
        Err(TaskError::Failed {
            error: DbError::Plain,
            attempts: 1
        })
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "ran once");

    // The resource was kept: the next task sees the same one, and nothing new was made.
    let next = m
        .queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_eq!(next, seen[0].1);
    assert_eq!(counts.created(), 1);
    assert_eq!(counts.destroyed(), 0);
    assert_eq!(m.metrics().total_tasks_retried, 0);
    assert_eq!(m.metrics().total_resources_replaced, 0);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn max_retries_zero_never_retries() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(0)
        .build()
        .unwrap();
    let seen = Seen::default();
    let outcome = m.queue_task(always_broken(&seen));
    assert_eq!(
        outcome,
        Err(TaskError::Failed {
            error: DbError::Broken,
            attempts: 1
        })
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Not retried, but the broken resource was still replaced.
    let next = m
        .queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
        .unwrap();
    assert_ne!(next, seen.lock().unwrap()[0].1);
    assert_eq!(counts.created(), 2);
    assert_eq!(m.metrics().total_tasks_retried, 0);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn retried_tasks_are_counted_and_every_resource_is_destroyed_after_stop() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .max_retries(2)
        .build()
        .unwrap();
    let seen = Seen::default();
    // Five tasks that always break: 5 * 2 re-queues, 5 * 3 replaced resources.
    let handles: Vec<_> = (0..5)
        .map(|_| m.queue_task_async(always_broken(&seen)))
        .collect();
    for h in handles {
        assert!(matches!(
            h.wait(),
            Err(TaskError::Failed {
                error: DbError::Broken,
                attempts: 3
            })
        ));
    }
    assert_eq!(seen.lock().unwrap().len(), 15);
    m.stop().unwrap();
    assert_eq!(m.metrics().total_tasks_retried, 10);
    assert_eq!(m.metrics().total_tasks_failed, 5);
    // The pool's 2 plus the 15 broken ones at least (a replacement made after a worker's
    // last failure may or may not exist, depending on when `stop` drained it).
    assert!(counts.destroyed() >= 2 + 15);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn the_default_is_three_retries() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    let seen = Seen::default();
    let outcome = m.queue_task(always_broken(&seen));
    assert!(matches!(
        outcome,
        Err(TaskError::Failed { attempts: 4, .. })
    ));
    assert_eq!(seen.lock().unwrap().len(), 4);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}
