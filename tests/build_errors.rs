//! `Builder::build`: every refusal it can give, the cleanup after a failed `on_create`, and
//! the shape of what it builds (explicit types, thread names).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{Conn, Counts, DbError, TIMEOUT, builder};
use tasker::{BuildError, TaskContext, TaskManager};

#[test]
fn missing_on_create_is_refused() {
    let r = TaskManager::<Conn, DbError>::builder()
        .worker_count(1)
        .pin_workers(false)
        .build();
    assert!(matches!(r, Err(BuildError::MissingOnCreate)), "{r:?}");
}

#[test]
fn zero_workers_are_refused() {
    let counts = Counts::new();
    let r = builder(&counts).worker_count(0).build();
    assert!(matches!(r, Err(BuildError::ZeroWorkers)), "{r:?}");
    assert_eq!(counts.created(), 0, "validation comes before any on_create");
}

#[test]
fn max_worker_count_below_worker_count_is_refused() {
    let counts = Counts::new();
    let r = builder(&counts).worker_count(3).max_worker_count(2).build();
    assert!(
        matches!(
            r,
            Err(BuildError::MaxBelowBase {
                worker_count: 3,
                max_worker_count: 2
            })
        ),
        "{r:?}"
    );
    assert_eq!(counts.created(), 0);
    // Equal is fine.
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    assert_eq!(m.stats().max_workers, 2);
    m.stop().unwrap();
}

#[test]
fn zero_burst_interval_is_refused() {
    let counts = Counts::new();
    let r = builder(&counts)
        .worker_count(1)
        .burst_interval(Duration::ZERO)
        .build();
    assert!(matches!(r, Err(BuildError::ZeroBurstInterval)), "{r:?}");
    assert_eq!(counts.created(), 0);
}

#[test]
fn zero_queue_capacity_is_refused() {
    let counts = Counts::new();
    let r = builder(&counts).worker_count(1).queue_capacity(0).build();
    assert!(matches!(r, Err(BuildError::ZeroQueueCapacity)), "{r:?}");
    assert_eq!(counts.created(), 0);
}

#[test]
fn zero_stack_size_is_refused() {
    let counts = Counts::new();
    let r = builder(&counts).worker_count(1).stack_size(0).build();
    assert!(matches!(r, Err(BuildError::ZeroStackSize)), "{r:?}");
    assert_eq!(counts.created(), 0);
}

/// A builder whose `on_create` fails (with `Connect`) on its `fail_on`-th call (1-based).
fn failing_on_call(counts: &Counts, fail_on: usize) -> tasker::Builder<Conn, DbError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = counts.clone();
    builder(counts).on_create(move || {
        if calls.fetch_add(1, Ordering::SeqCst) + 1 == fail_on {
            Err(DbError::Connect)
        } else {
            Ok(c.make())
        }
    })
}

#[test]
fn failing_on_create_in_the_pool_destroys_everything_already_made() {
    // Calls 1 and 2 fill the run_task pool, call 3 fails there.
    let counts = Counts::new();
    let r = failing_on_call(&counts, 3)
        .worker_count(1)
        .resource_pool_size(4)
        .build();
    assert!(
        matches!(r, Err(BuildError::ResourceCreation(DbError::Connect))),
        "{r:?}"
    );
    assert_eq!(counts.created(), 2);
    assert_eq!(
        counts.destroyed(),
        2,
        "build destroyed what it made before returning"
    );
}

#[test]
fn failing_on_create_in_a_worker_destroys_everything_already_made() {
    // No pool: the workers make calls 1..=3 on their threads, and one of them fails.
    let counts = Counts::new();
    let r = failing_on_call(&counts, 3)
        .worker_count(3)
        .resource_pool_size(0)
        .build();
    assert!(
        matches!(r, Err(BuildError::ResourceCreation(DbError::Connect))),
        "{r:?}"
    );
    assert_eq!(counts.created(), 2);
    assert_eq!(
        counts.destroyed(),
        2,
        "build destroyed what it made before returning"
    );
}

#[test]
fn failing_on_create_with_pool_and_workers_destroys_everything_already_made() {
    // Defaults: a pool of worker_count (calls 1, 2), then the workers (3 fails, 4 succeeds).
    let counts = Counts::new();
    let r = failing_on_call(&counts, 3).worker_count(2).build();
    assert!(
        matches!(r, Err(BuildError::ResourceCreation(DbError::Connect))),
        "{r:?}"
    );
    assert_eq!(counts.created(), 3);
    assert_eq!(
        counts.destroyed(),
        3,
        "build destroyed what it made before returning"
    );
}

#[test]
fn a_panicking_on_create_is_refused_with_its_message() {
    let counts = Counts::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = counts.clone();
    let r = builder(&counts)
        .on_create(move || {
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                panic!("on_create exploded");
            }
            Ok(c.make())
        })
        .worker_count(2)
        .resource_pool_size(0)
        .build();
    match r {
        Err(BuildError::ResourceCreationPanicked { message }) => {
            assert_eq!(message, "on_create exploded")
        }
        other => panic!("expected ResourceCreationPanicked, got {other:?}"),
    }
    assert_eq!(counts.created(), 1);
    assert_eq!(counts.destroyed(), 1);
}

#[test]
fn an_unspawnable_worker_thread_is_refused() {
    // A stack larger than the address space: the OS cannot start the thread.
    let counts = Counts::new();
    let r = builder(&counts)
        .worker_count(1)
        .resource_pool_size(2)
        .stack_size(1 << 50)
        .build();
    assert!(matches!(r, Err(BuildError::Spawn(_))), "{r:?}");
    assert_eq!(counts.created(), 2);
    assert_eq!(counts.destroyed(), 2, "the pool was destroyed");
}

#[test]
fn builder_with_explicit_types_compiles_and_builds() {
    let m = TaskManager::<Conn, DbError>::builder()
        .on_create(|| Ok(Conn { id: 77 }))
        .worker_count(1)
        .pin_workers(false)
        .build()
        .unwrap();
    assert_eq!(
        m.queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id)),
        Ok(77)
    );
    assert_eq!(m.stats().base_workers, 1);
    m.stop().unwrap();

    // And by inference from on_create alone, with a non-trivial stack size.
    let m = TaskManager::builder()
        .on_create(|| Ok::<u8, std::io::Error>(3))
        .worker_count(1)
        .stack_size(256 * 1024)
        .pin_workers(false)
        .build()
        .unwrap();
    assert_eq!(
        m.queue_task(|r: &mut u8, _: &TaskContext| Ok(*r)).unwrap(),
        3
    );
    m.stop().unwrap();
}

#[test]
fn worker_threads_are_named_prefix_dash_index() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .thread_name_prefix("dbpool")
        .build()
        .unwrap();
    // Two tasks that each hold their worker until both have reported: one per worker.
    let (name_tx, name_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let name_tx = name_tx.clone();
            let release_rx = release_rx.clone();
            m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
                let name = std::thread::current().name().map(str::to_owned);
                name_tx.send(name).unwrap();
                let _ = release_rx.lock().unwrap().recv_timeout(TIMEOUT);
                Ok(())
            })
        })
        .collect();
    let names: BTreeSet<Option<String>> = (0..2)
        .map(|_| {
            name_rx
                .recv_timeout(TIMEOUT)
                .expect("both workers should run a task")
        })
        .collect();
    for _ in 0..2 {
        release_tx.send(()).unwrap();
    }
    for h in handles {
        h.wait().unwrap();
    }
    let expected: BTreeSet<Option<String>> = ["dbpool-0", "dbpool-1"]
        .into_iter()
        .map(|s| Some(s.to_owned()))
        .collect();
    assert_eq!(names, expected);

    m.stop().unwrap();

    // The default prefix is "tasker".
    let m = builder(&counts).worker_count(1).build().unwrap();
    let name = m
        .queue_task(|_: &mut Conn, _: &TaskContext| {
            Ok(std::thread::current().name().map(str::to_owned))
        })
        .unwrap();
    assert_eq!(name.as_deref(), Some("tasker-0"));
    m.stop().unwrap();
}

#[test]
fn a_thread_name_prefix_with_a_nul_byte_is_refused() {
    let counts = Counts::new();
    let err = builder(&counts)
        .worker_count(1)
        .thread_name_prefix("bad\0name")
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::InvalidThreadName), "{err:?}");
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn counts_above_their_limits_are_refused_naming_the_setting() {
    let counts = Counts::new();
    let max = tasker::Builder::<Conn, DbError>::MAX_WORKERS;
    let r = builder(&counts).worker_count(max + 1).build();
    assert!(
        matches!(r, Err(BuildError::TooLarge { setting: "worker_count", value, .. }) if value == max + 1),
        "{r:?}"
    );
    // Before this limit, `build` called on_create for each of the pool's resources until
    // memory ran out.
    let r = builder(&counts)
        .worker_count(1)
        .resource_pool_size(usize::MAX)
        .build();
    assert!(
        matches!(
            r,
            Err(BuildError::TooLarge {
                setting: "resource_pool_size",
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(counts.created(), 0, "validation comes before any on_create");
}

#[test]
fn worker_count_alone_is_valid_up_to_the_limit() {
    // The default `max_worker_count` (twice `worker_count`) is capped at the limit instead of
    // failing with a setting the user never set. A failing pool resource ends the build
    // before any thread is made.
    let max = tasker::Builder::<Conn, DbError>::MAX_WORKERS;
    let r = TaskManager::<Conn, DbError>::builder()
        .on_create(|| Err(DbError::Connect))
        .worker_count(max)
        .resource_pool_size(1)
        .pin_workers(false)
        .build();
    assert!(
        matches!(r, Err(BuildError::ResourceCreation(DbError::Connect))),
        "{r:?}"
    );
}

#[test]
fn a_burst_interval_below_a_millisecond_is_refused() {
    let counts = Counts::new();
    let r = builder(&counts)
        .worker_count(1)
        .burst_interval(Duration::from_nanos(1))
        .build();
    assert!(
        matches!(r, Err(BuildError::BurstIntervalTooShort { burst_interval }) if burst_interval == Duration::from_nanos(1)),
        "{r:?}"
    );
    let m = builder(&counts)
        .worker_count(1)
        .burst_interval(Duration::from_millis(1))
        .build()
        .expect("1 ms is the floor");
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}
