//! The resource lifecycle knobs: `resource_max_lifetime`, `resource_max_uses`, `validate` with
//! `validate_after_idle`. A retired resource is destroyed and replaced between tasks, on the
//! worker's thread and at `run_task` checkout; a task never runs on a resource the policy
//! retired; replacements are counted by reason and reported; creates == destroys.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Conn, Counts, DbError, builder};
use tasker::{BuildError, MetricsCollector, ReplaceReason, TaskContext, TaskManager, WorkerEvent};

/// Records worker events.
#[derive(Default)]
struct Events(Mutex<Vec<WorkerEvent>>);

impl MetricsCollector for Events {
    fn record_worker_event(&self, event: WorkerEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// The id of the resource a task ran on.
fn conn_id(conn: &mut Conn, _: &TaskContext) -> Result<usize, DbError> {
    Ok(conn.id)
}

#[test]
fn max_uses_replaces_a_resource_after_that_many_tasks() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .resource_max_uses(3)
        .metrics_collector(events.clone())
        .build()
        .unwrap();
    let ids: Vec<usize> = (0..7)
        .map(|_| manager.queue_task(conn_id).unwrap())
        .collect();
    // Three tasks per resource, in order: ids 0,0,0,1,1,1,2.
    assert_eq!(ids, [0, 0, 0, 1, 1, 1, 2]);
    let m = manager.metrics();
    assert_eq!(m.resources_replaced_uses, 2);
    assert_eq!(m.resources_replaced_lifetime, 0);
    assert_eq!(m.resources_replaced_validation, 0);
    // Broken-resource replacements are a different count.
    assert_eq!(m.total_resources_replaced, 0);
    manager.stop().unwrap();
    assert_eq!(counts.created(), 3);
    assert_eq!(counts.destroyed(), 3);
    let events = events.0.lock().unwrap();
    let recycled: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::ResourceRecycled { .. }))
        .collect();
    assert_eq!(
        recycled,
        [&WorkerEvent::ResourceRecycled {
            worker: 0,
            reason: ReplaceReason::Uses
        }; 2]
    );
}

#[test]
fn max_lifetime_replaces_an_old_resource_before_its_next_task() {
    let counts = Counts::new();
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .resource_max_lifetime(Duration::from_millis(30))
        .build()
        .unwrap();
    let first = manager.queue_task(conn_id).unwrap();
    // Older than its lifetime by the next task, whatever the scheduling.
    thread::sleep(Duration::from_millis(60));
    let second = manager.queue_task(conn_id).unwrap();
    assert_ne!(first, second);
    assert!(manager.metrics().resources_replaced_lifetime >= 1);
    manager.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_long_lifetime_keeps_the_resource() {
    let counts = Counts::new();
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_max_lifetime(Duration::from_secs(3600))
        .build()
        .unwrap();
    let ids: HashSet<usize> = (0..20)
        .map(|_| manager.queue_task(conn_id).unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(manager.metrics().resources_replaced_lifetime, 0);
    manager.stop().unwrap();
}

/// A resource whose task marked it stale.
struct Stale {
    stale: bool,
    id: usize,
}

fn stale_manager(
    made: &Arc<AtomicUsize>,
    validated: &Arc<AtomicUsize>,
    idle: Duration,
) -> TaskManager<Stale, DbError> {
    let (m, v) = (made.clone(), validated.clone());
    TaskManager::builder()
        .on_create(move || {
            Ok(Stale {
                stale: false,
                id: m.fetch_add(1, SeqCst),
            })
        })
        .validate(move |conn: &mut Stale| {
            v.fetch_add(1, SeqCst);
            !conn.stale
        })
        .validate_after_idle(idle)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .pin_workers(false)
        .build()
        .unwrap()
}

#[test]
fn validate_zero_idle_checks_before_every_task_and_no_task_sees_a_rejected_resource() {
    let (made, validated) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let manager = stale_manager(&made, &validated, Duration::ZERO);
    // The first task on a fresh resource is not validated.
    let first = manager
        .queue_task(|conn: &mut Stale, _: &TaskContext| {
            conn.stale = true;
            Ok(conn.id)
        })
        .unwrap();
    assert_eq!(validated.load(SeqCst), 0);
    for _ in 0..5 {
        let (stale, id) = manager
            .queue_task(|conn: &mut Stale, _: &TaskContext| Ok((conn.stale, conn.id)))
            .unwrap();
        assert!(!stale, "a task ran on a resource validate rejected");
        assert_ne!(id, first);
    }
    // Validated before each of the five: rejected once, then accepted four times.
    assert_eq!(validated.load(SeqCst), 5);
    assert_eq!(manager.metrics().resources_replaced_validation, 1);
    manager.stop().unwrap();
}

#[test]
fn validate_is_not_called_before_the_idle_time() {
    let (made, validated) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let manager = stale_manager(&made, &validated, Duration::from_secs(3600));
    for _ in 0..10 {
        manager
            .queue_task(|conn: &mut Stale, _: &TaskContext| {
                conn.stale = true;
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(validated.load(SeqCst), 0);
    assert_eq!(made.load(SeqCst), 1);
    manager.stop().unwrap();
}

#[test]
fn validate_runs_after_an_idle_gap() {
    let (made, validated) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let manager = stale_manager(&made, &validated, Duration::from_millis(20));
    manager
        .queue_task(|conn: &mut Stale, _: &TaskContext| {
            conn.stale = true;
            Ok(())
        })
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    let stale = manager
        .queue_task(|conn: &mut Stale, _: &TaskContext| Ok(conn.stale))
        .unwrap();
    assert!(!stale);
    assert_eq!(validated.load(SeqCst), 1);
    assert_eq!(made.load(SeqCst), 2);
    manager.stop().unwrap();
}

#[test]
fn a_panicking_validate_replaces_the_resource_and_is_counted() {
    let counts = Counts::new();
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .validate(|_: &mut Conn| panic!("validate broke"))
        .validate_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(manager.queue_task(conn_id).unwrap(), 0);
    assert_eq!(manager.queue_task(conn_id).unwrap(), 1);
    let m = manager.metrics();
    assert_eq!(m.resources_replaced_validation, 1);
    assert_eq!(m.total_user_panics, 1);
    manager.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn run_task_checkout_applies_the_policy_to_pooled_resources() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(1)
        .resource_max_uses(1)
        .metrics_collector(events.clone())
        .build()
        .unwrap();
    // Pool resource first (made at build, id 0), the worker's next (id 1).
    let a = manager.run_task(conn_id).unwrap();
    let b = manager.run_task(conn_id).unwrap();
    assert_eq!(a, 0);
    assert_ne!(a, b);
    assert_eq!(manager.stats().available_resources, 1);
    assert_eq!(manager.metrics().resources_replaced_uses, 1);
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .contains(&WorkerEvent::PoolResourceRecycled {
                reason: ReplaceReason::Uses
            })
    );
    manager.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_failing_on_create_during_a_replacement_backs_off_and_the_task_still_runs() {
    let made = Arc::new(AtomicUsize::new(0));
    let destroyed = Arc::new(AtomicUsize::new(0));
    let (m, d) = (made.clone(), destroyed.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let manager = TaskManager::builder()
        .on_create(move || {
            // The second call (the first replacement) fails once.
            if c.fetch_add(1, SeqCst) == 1 {
                return Err(DbError::Connect);
            }
            Ok(Conn {
                id: m.fetch_add(1, SeqCst),
            })
        })
        .on_destroy(move |_: Conn| {
            d.fetch_add(1, SeqCst);
            Ok(())
        })
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .resource_max_uses(1)
        .pin_workers(false)
        .build()
        .unwrap();
    assert_eq!(manager.queue_task(conn_id).unwrap(), 0);
    assert_eq!(manager.queue_task(conn_id).unwrap(), 1);
    assert_eq!(calls.load(SeqCst), 3);
    manager.stop().unwrap();
    assert_eq!(made.load(SeqCst), destroyed.load(SeqCst));
}

#[test]
fn many_tasks_on_several_workers_keep_creates_equal_to_destroys() {
    let counts = Counts::new();
    let manager = builder(&counts)
        .worker_count(2)
        .max_worker_count(3)
        .resource_max_uses(5)
        .resource_max_lifetime(Duration::from_millis(5))
        .validate(|conn: &mut Conn| !conn.id.is_multiple_of(3))
        .validate_after_idle(Duration::ZERO)
        .build()
        .unwrap();
    let outcomes: Vec<_> = (0..2_000)
        .map(|i| {
            if i % 10 == 0 {
                let m = manager.clone();
                thread::spawn(move || m.run_task(conn_id))
                    .join()
                    .unwrap()
                    .map(|_| ())
            } else {
                manager.queue_task_async(conn_id).wait().map(|_| ())
            }
        })
        .collect();
    assert!(outcomes.iter().all(Result::is_ok));
    let m = manager.metrics();
    let recycled =
        m.resources_replaced_uses + m.resources_replaced_lifetime + m.resources_replaced_validation;
    assert!(recycled > 0);
    manager.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn zero_lifetime_and_zero_uses_are_typed_build_errors() {
    let counts = Counts::new();
    let zero_life = builder(&counts)
        .worker_count(1)
        .resource_max_lifetime(Duration::ZERO)
        .build();
    assert!(matches!(zero_life, Err(BuildError::ZeroResourceLifetime)));
    let zero_uses = builder(&counts)
        .worker_count(1)
        .resource_max_uses(0)
        .build();
    assert!(matches!(zero_uses, Err(BuildError::ZeroResourceUses)));
    // Refused before anything was made.
    assert_eq!(counts.created(), 0);
}

/// Keeps every info line.
#[derive(Default, Clone)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl tasker::Logger for Lines {
    fn debug(&self, _: &str) {}
    fn info(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
    fn warn(&self, _: &str) {}
    fn error(&self, _: &str) {}
}

#[test]
fn each_replacement_is_logged_with_its_reason() {
    let counts = Counts::new();
    let lines = Lines::default();
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .resource_max_uses(1)
        .logger(lines.clone())
        .build()
        .unwrap();
    manager.queue_task(conn_id).unwrap();
    manager.queue_task(conn_id).unwrap();
    manager.stop().unwrap();
    let lines = lines.0.lock().unwrap();
    let recycled: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("before its next task"))
        .collect();
    assert_eq!(
        recycled,
        [
            "worker 0: replacing the resource before its next task [kind=resource_recycled reason=uses]"
        ]
    );
}
