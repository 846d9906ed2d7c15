//! `metrics()`: totals equal what the test did, latency percentiles bound what the tasks did,
//! rates live over their sliding window, snapshots need neither `stop` nor awake workers, and
//! a snapshot never blocks on the workers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, Counts, DbError, Gate, TIMEOUT, builder, eventually, fixed};
use tasker::{TaskContext, TaskError, TaskMetrics};

/// What a task of the known mix does on each run.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    /// A healthy error: `Failed`, no retry, resource kept.
    Plain,
    /// Unhealthy on attempt 1 (resource replaced, re-queued), `Ok` on attempt 2.
    BrokenOnce,
    Panic,
}

fn task(
    kind: Kind,
) -> impl FnMut(&mut Conn, &TaskContext) -> Result<u32, DbError> + Send + 'static {
    move |_: &mut Conn, ctx: &TaskContext| match kind {
        Kind::Ok => Ok(ctx.attempt()),
        Kind::Plain => Err(DbError::Plain),
        Kind::BrokenOnce if ctx.attempt() == 1 => Err(DbError::Broken),
        Kind::BrokenOnce => Ok(ctx.attempt()),
        Kind::Panic => panic!("task panicked on purpose"),
    }
}

/// Polls `metrics()` until `cond` holds or [`TIMEOUT`] passes; returns the last snapshot.
fn metrics_until(
    m: &tasker::TaskManager<Conn, DbError>,
    cond: impl Fn(&TaskMetrics) -> bool,
) -> TaskMetrics {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = m.metrics();
        if cond(&s) || Instant::now() >= deadline {
            return s;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn totals_equal_a_known_mix_of_outcomes() {
    const N: u64 = 40; // ok
    const M: u64 = 9; // healthy failures
    const K: u64 = 6; // broken once, then ok
    const P: u64 = 4; // panics
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .max_retries(3)
        .build()
        .unwrap();

    let mut kinds = Vec::new();
    kinds.extend((0..N).map(|_| Kind::Ok));
    kinds.extend((0..M).map(|_| Kind::Plain));
    kinds.extend((0..K).map(|_| Kind::BrokenOnce));
    kinds.extend((0..P).map(|_| Kind::Panic));
    // Interleave the kinds so failures, retries and panics land between successes.
    let mut order: Vec<usize> = (0..kinds.len()).collect();
    order.sort_by_key(|&i| (i * 7919) % kinds.len());
    let handles: Vec<_> = order
        .iter()
        .map(|&i| {
            let kind = kinds[i];
            let h = if i % 3 == 0 {
                m.queue_task_with_priority_async(task(kind))
            } else {
                m.queue_task_async(task(kind))
            };
            (kind, h)
        })
        .collect();
    for (kind, h) in handles {
        let outcome = h.wait();
        match kind {
            Kind::Ok => assert_eq!(outcome, Ok(1)),
            Kind::Plain => assert_eq!(
                outcome,
                Err(TaskError::Failed {
                    error: DbError::Plain,
                    attempts: 1
                })
            ),
            Kind::BrokenOnce => assert_eq!(outcome, Ok(2)),
            Kind::Panic => assert!(matches!(outcome, Err(TaskError::Panicked { .. }))),
        }
    }

    // run_task outcomes are counted too: 3 ok, 2 healthy failures, 1 unhealthy failure (its
    // pool resource is replaced), 1 panic (replaced too).
    for _ in 0..3 {
        assert_eq!(m.run_task(task(Kind::Ok)), Ok(1));
    }
    for _ in 0..2 {
        assert!(matches!(
            m.run_task(task(Kind::Plain)),
            Err(TaskError::Failed { attempts: 1, .. })
        ));
    }
    assert!(matches!(
        m.run_task(|_: &mut Conn, _: &TaskContext| Err::<(), _>(DbError::Broken)),
        Err(TaskError::Failed {
            error: DbError::Broken,
            attempts: 1
        })
    ));
    assert!(matches!(
        m.run_task(task(Kind::Panic)),
        Err(TaskError::Panicked { .. })
    ));
    let (run_ok, run_failed, run_panicked, run_replaced) = (3, 3, 1, 2);

    // Outcomes are recorded right after delivery: read the totals once the workers joined.
    m.stop().unwrap();
    let s = m.metrics();
    let completed = N + K + run_ok;
    let failed = M + P + run_failed + run_panicked;
    assert_eq!(
        s.total_tasks_arrived,
        N + M + K + P + run_ok + run_failed + run_panicked
    );
    assert_eq!(s.total_tasks_completed, completed);
    assert_eq!(s.total_tasks_failed, failed, "panics count as failures too");
    assert_eq!(
        s.total_tasks_retried, K,
        "one re-queue per broken-once task"
    );
    assert_eq!(s.total_tasks_panicked, P + run_panicked);
    assert_eq!(s.total_resources_replaced, K + P + run_replaced);
    let ended = (completed + failed) as f64;
    assert_eq!(s.success_rate, completed as f64 / ended);
    assert_eq!(s.failure_rate, failed as f64 / ended);
    // Workers and pool made 4; each pool replacement was refilled. (A worker's last
    // replacement may be skipped if the drain came first, so no exact count for those.)
    assert!(counts.created() as u64 >= 4 + run_replaced);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn run_task_outcomes_are_counted_including_a_failed_temporary_resource() {
    let counts = Counts::new();
    let fail_create = Arc::new(AtomicBool::new(false));
    let (c, d, f) = (counts.clone(), counts.clone(), fail_create.clone());
    // No pool: every run_task makes (and destroys) a temporary resource.
    let m = tasker::TaskManager::builder()
        .on_create(move || {
            if f.load(Ordering::SeqCst) {
                Err(DbError::Connect)
            } else {
                Ok(c.make())
            }
        })
        .on_destroy(move |conn: Conn| {
            d.destroy(conn);
            Ok(())
        })
        .check_health(common::healthy)
        .pin_workers(false)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .build()
        .unwrap();
    assert_eq!(m.run_task(task(Kind::Ok)), Ok(1));
    assert_eq!(m.run_task(task(Kind::Ok)), Ok(1));
    assert!(matches!(
        m.run_task(task(Kind::Plain)),
        Err(TaskError::Failed { attempts: 1, .. })
    ));
    assert!(matches!(
        m.run_task(task(Kind::Panic)),
        Err(TaskError::Panicked { .. })
    ));
    fail_create.store(true, Ordering::SeqCst);
    assert_eq!(
        m.run_task(task(Kind::Ok)),
        Err(TaskError::ResourceCreation(DbError::Connect))
    );
    fail_create.store(false, Ordering::SeqCst);

    // run_task counts synchronously, on the caller's thread: no stop needed.
    let s = m.metrics();
    assert_eq!(s.total_tasks_arrived, 5);
    assert_eq!(s.total_tasks_completed, 2);
    assert_eq!(s.total_tasks_failed, 3);
    assert_eq!(s.total_tasks_panicked, 1);
    assert_eq!(s.total_tasks_retried, 0, "run_task is never retried");
    assert_eq!(
        s.total_resources_replaced, 1,
        "the panic broke its resource"
    );
    assert_eq!(s.success_rate, 2.0 / 5.0);
    assert_eq!(s.failure_rate, 3.0 / 5.0);
    assert_eq!(
        s.tasks_timed, 0,
        "run_task latencies are not in the histograms"
    );
    m.stop().unwrap();
    assert_eq!(m.metrics().total_tasks_arrived, 5);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn execution_percentiles_bound_tasks_that_sleep() {
    const SLEEP: Duration = Duration::from_millis(2);
    const OK: usize = 30;
    const BROKEN_ONCE: usize = 5;
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..OK + BROKEN_ONCE)
        .map(|i| {
            let mut inner = task(if i < OK { Kind::Ok } else { Kind::BrokenOnce });
            m.queue_task_async(move |c: &mut Conn, ctx: &TaskContext| {
                thread::sleep(SLEEP);
                inner(c, ctx)
            })
        })
        .collect();
    for h in handles {
        assert!(h.wait().is_ok());
    }
    m.stop().unwrap();
    let s = m.metrics();
    // Every run is timed, retries included.
    assert_eq!(s.tasks_timed, (OK + 2 * BROKEN_ONCE) as u64);
    // A sleep never returns early, so every run lasted at least SLEEP. Quantiles report the
    // highest value of their histogram bucket: a strict lower bound.
    assert!(s.p50_execution_time >= SLEEP, "{s:?}");
    // `min` reports the *lowest* value of its bucket: documented precision is 1%, so the
    // reported minimum may sit up to 1% below the shortest run.
    assert!(s.min_execution_time >= SLEEP.mul_f64(0.99), "{s:?}");
    assert!(s.average_execution_time >= SLEEP.mul_f64(0.99), "{s:?}");
    assert!(s.max_execution_time >= s.p999_execution_time, "{s:?}");
    assert!(s.p999_execution_time >= s.p99_execution_time, "{s:?}");
    assert!(s.p99_execution_time >= s.p95_execution_time, "{s:?}");
    assert!(s.p95_execution_time >= s.p50_execution_time, "{s:?}");
    assert!(s.p50_execution_time >= s.min_execution_time, "{s:?}");
    assert!(s.max_execution_time >= s.average_execution_time, "{s:?}");
    assert!(s.average_execution_time >= s.min_execution_time, "{s:?}");
}

#[test]
fn tasks_queued_behind_a_blocked_worker_show_their_wait() {
    const BLOCKED: Duration = Duration::from_millis(20);
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    let waiter = gate.waiter();
    let blocker = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok(0)
    });
    gate.wait_started();
    let queued: Vec<_> = (0..5).map(|_| m.queue_task_async(task(Kind::Ok))).collect();
    // The queued tasks cannot start before the gate opens, at least BLOCKED from now.
    thread::sleep(BLOCKED);
    gate.open();
    assert_eq!(blocker.wait(), Ok(0));
    for h in queued {
        assert_eq!(h.wait(), Ok(1));
    }
    m.stop().unwrap();
    let s = m.metrics();
    assert_eq!(s.tasks_timed, 6);
    assert!(s.max_wait_time >= BLOCKED, "{s:?}");
    // 5 of the 6 waited: the 99th percentile is one of them.
    assert!(s.p99_wait_time >= BLOCKED, "{s:?}");
    assert!(s.max_wait_time >= s.p99_wait_time, "{s:?}");
    assert!(s.p99_wait_time >= s.p50_wait_time, "{s:?}");
}

#[test]
fn rates_over_a_long_window_count_the_workload() {
    const TASKS: u64 = 100;
    let counts = Counts::new();
    let t0 = Instant::now();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .metrics_window(Duration::from_secs(60))
        .build()
        .unwrap();
    let handles: Vec<_> = (0..TASKS)
        .map(|_| m.queue_task_async(task(Kind::Ok)))
        .collect();
    for h in handles {
        assert_eq!(h.wait(), Ok(1));
    }
    m.stop().unwrap();
    let s = m.metrics();
    let elapsed_nanos = t0.elapsed().as_nanos() as f64;
    assert_eq!(s.rate_window, Duration::from_secs(60));
    assert_eq!(s.total_tasks_arrived, TASKS);
    assert!(s.task_arrival_rate > 0.0, "{s:?}");
    assert!(s.task_completion_rate > 0.0, "{s:?}");
    assert_eq!(s.task_failure_rate, 0.0);
    assert_eq!(s.task_retry_rate, 0.0);
    // The window has not filled yet: the rate divides by at most the time since build, so it
    // is at least TASKS over the whole test so far (a bound from below, not a timing goal).
    let floor = TASKS as f64 * 1e9 / elapsed_nanos * (1.0 - 1e-9);
    assert!(
        s.task_arrival_rate >= floor,
        "{} < {floor}",
        s.task_arrival_rate
    );
    assert!(
        s.task_completion_rate >= floor,
        "{} < {floor}",
        s.task_completion_rate
    );
}

#[test]
fn rates_fall_to_zero_once_the_window_has_passed() {
    const WINDOW: Duration = Duration::from_millis(200);
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .max_retries(1)
        .metrics_window(WINDOW)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..60)
        .map(|i| {
            m.queue_task_async(task(match i % 3 {
                0 => Kind::Ok,
                1 => Kind::Plain,
                _ => Kind::BrokenOnce,
            }))
        })
        .collect();
    for h in handles {
        let _ = h.wait();
    }
    m.stop().unwrap();
    thread::sleep(2 * WINDOW);
    let s = m.metrics();
    assert_eq!(s.rate_window, WINDOW);
    assert_eq!(s.task_arrival_rate, 0.0, "{s:?}");
    assert_eq!(s.task_completion_rate, 0.0, "{s:?}");
    assert_eq!(s.task_failure_rate, 0.0, "{s:?}");
    assert_eq!(s.task_retry_rate, 0.0, "{s:?}");
    // The totals do not expire.
    assert_eq!(s.total_tasks_arrived, 60);
    assert_eq!(s.total_tasks_completed, 40);
    assert_eq!(s.total_tasks_failed, 20);
    assert_eq!(s.total_tasks_retried, 20);
}

/// Rates keep counting after an idle gap longer than half the 24-bit tag space of a window
/// bucket (a stale bucket whose tag wrapped around must be restarted, not taken for a newer
/// one). Shown with a 2 µs window (ticks of 200 ns: 2^23 ticks = 1.68 s): events recorded
/// right before a snapshot show up in the rates both before and after an idle gap of 2.5 s.
/// (`run_task` records its arrival and completion on the caller's thread, so the snapshot
/// right after it usually falls in the same 2 µs window.)
#[test]
fn rates_still_count_events_after_an_idle_gap() {
    const WINDOW: Duration = Duration::from_micros(2);
    // Between 2^23 and 2^24 ticks of WINDOW / 10.
    const IDLE: Duration = Duration::from_millis(2_500);
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(1)
        .metrics_window(WINDOW)
        .build()
        .unwrap();
    let hits = || {
        let (mut arrivals, mut completions) = (0, 0);
        for _ in 0..1_000 {
            assert_eq!(m.run_task(task(Kind::Ok)), Ok(1));
            let s = m.metrics();
            arrivals += usize::from(s.task_arrival_rate > 0.0);
            completions += usize::from(s.task_completion_rate > 0.0);
        }
        (arrivals, completions)
    };
    let before = hits();
    assert!(
        before.0 > 0 && before.1 > 0,
        "control: the snapshot right after run_task never fell in its window: {before:?}"
    );
    thread::sleep(IDLE);
    let after = hits();
    m.stop().unwrap();
    assert_eq!(m.metrics().total_tasks_completed, 2_000, "totals are fine");
    assert!(
        after.0 > 0 && after.1 > 0,
        "events after an idle gap of {IDLE:?} are dropped from the rate windows: snapshots \
         with a non-zero (arrival, completion) rate: before the gap {before:?} of 1000, after \
         it {after:?} of 1000"
    );
}

#[test]
fn a_snapshot_while_every_worker_sleeps_includes_the_finished_latencies() {
    const TASKS: u64 = 25;
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    // Quick tasks: the periodic publish (every few ms of work) will not catch the last ones;
    // only the publish before parking does.
    let handles: Vec<_> = (0..TASKS)
        .map(|_| m.queue_task_async(task(Kind::Ok)))
        .collect();
    for h in handles {
        assert_eq!(h.wait(), Ok(1));
    }
    // No more work: the workers park. Snapshots must return, and reach every latency
    // without `stop`.
    let s = metrics_until(&m, |s| s.tasks_timed >= TASKS);
    assert_eq!(s.tasks_timed, TASKS, "{s:?}");
    assert_eq!(s.total_tasks_completed, TASKS, "{s:?}");
    assert!(s.max_execution_time >= s.min_execution_time);
    // And nothing is counted twice by the final publish at exit.
    m.stop().unwrap();
    let after = m.metrics();
    assert_eq!(after.tasks_timed, TASKS);
    assert_eq!(after.total_tasks_completed, TASKS);
}

#[test]
fn metrics_from_another_thread_while_tasks_run_never_blocks() {
    const TASKS: u64 = 2_000;
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .max_retries(1)
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (started_tx, started_rx) = mpsc::channel();
    let (finished_tx, finished_rx) = mpsc::channel();
    let reader = {
        let (m, done) = (m.clone(), done.clone());
        thread::spawn(move || {
            let mut last = TaskMetrics::default();
            let mut snapshots = 0u32;
            // Bounded: stops when told, or after many snapshots.
            while !done.load(Ordering::SeqCst) && snapshots < 200_000 {
                if snapshots == 1 {
                    let _ = started_tx.send(());
                }
                let s = m.metrics();
                assert!(s.total_tasks_arrived >= last.total_tasks_arrived);
                assert!(s.total_tasks_completed >= last.total_tasks_completed);
                assert!(s.total_tasks_failed >= last.total_tasks_failed);
                assert!(s.total_tasks_retried >= last.total_tasks_retried);
                assert!(s.tasks_timed >= last.tasks_timed);
                assert!(s.total_tasks_arrived <= TASKS);
                last = s;
                snapshots += 1;
            }
            let _ = finished_tx.send(snapshots);
        })
    };
    // Submit once the reader is taking snapshots.
    started_rx
        .recv_timeout(TIMEOUT)
        .expect("the first metrics() call never returned");
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            m.queue_task_async(task(match i % 10 {
                0 => Kind::Plain,
                1 => Kind::BrokenOnce,
                _ => Kind::Ok,
            }))
        })
        .collect();
    for h in handles {
        let _ = h.wait();
    }
    done.store(true, Ordering::SeqCst);
    let snapshots = finished_rx
        .recv_timeout(TIMEOUT)
        .expect("a metrics() call blocked while tasks ran");
    reader.join().unwrap();
    assert!(snapshots > 0);
    m.stop().unwrap();
    let s = m.metrics();
    assert_eq!(s.total_tasks_arrived, TASKS);
    assert_eq!(s.total_tasks_completed, TASKS - TASKS / 10);
    assert_eq!(s.total_tasks_failed, TASKS / 10);
    assert_eq!(s.total_tasks_retried, TASKS / 10);
    assert_eq!(s.tasks_timed, TASKS + TASKS / 10);
}

/// `pending_tasks` counts the tasks without an outcome, also while a busy worker holds back
/// the count of the outcomes it delivered (it applies them in batches, see `lifecycle`).
#[test]
fn pending_tasks_is_exact_while_a_busy_worker_holds_outcomes_back() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let (done_tx, done_rx) = mpsc::channel();
    let deliver = |tx: &mpsc::Sender<bool>| {
        let tx = tx.clone();
        move |r: Result<u32, TaskError<DbError>>| tx.send(r.is_ok()).unwrap()
    };
    // A task that holds the worker until its gate opens.
    let held = |gate: &Gate| {
        let waiter = gate.waiter();
        m.queue_task_once_with_callback(
            move |_: &mut Conn, _: &TaskContext| {
                waiter.enter();
                Ok(0)
            },
            deliver(&done_tx),
        );
    };
    // The worker is held in a first task while ten more and a last one queue behind it, so
    // it never searches (nor settles) between them.
    let (first, last) = (Gate::new(), Gate::new());
    held(&first);
    first.wait_started();
    for _ in 0..10 {
        m.queue_task_with_callback(|_: &mut Conn, _: &TaskContext| Ok(1), deliver(&done_tx));
    }
    held(&last);
    assert_eq!(m.stats().pending_tasks, 12);
    first.open();
    // The last task starts only after the eleven before it were delivered and finished.
    last.wait_started();
    for _ in 0..11 {
        assert!(done_rx.recv_timeout(TIMEOUT).unwrap());
    }
    assert_eq!(
        m.stats().pending_tasks,
        1,
        "only the running task is pending"
    );
    last.open();
    assert!(done_rx.recv_timeout(TIMEOUT).unwrap());
    // Idle, the worker has applied everything.
    assert!(eventually(|| m.stats().pending_tasks == 0));
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}
