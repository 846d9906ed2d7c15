//! The submission builder (`task`, `task_once`) and per-task deadlines: every delivery, a
//! deadline already past (answered at once, never run), a deadline that passes while the task
//! is queued (answered `DeadlineExceeded` when a worker takes it, never run), a blocking wait
//! for queue room that ends at the deadline, and a started task that runs to its end.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, Counts, DbError, Gate, TIMEOUT, builder};
use tasker::{TaskContext, TaskError, TaskManager};

type Manager = TaskManager<Conn, DbError>;

fn one_worker(counts: &Counts) -> Manager {
    builder(counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .build()
        .unwrap()
}

/// Blocks the only worker on `gate` until the test opens it.
fn block_worker(manager: &Manager, gate: &Gate) {
    let waiter = gate.waiter();
    manager.queue_task_once_with_callback(
        move |_, _| {
            waiter.enter();
            Ok(())
        },
        |_| {},
    );
    gate.wait_started();
}

/// Sleeps until `deadline` has surely passed.
fn sleep_past(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(20));
}

#[test]
fn every_delivery_of_the_builder_returns_the_value() {
    let counts = Counts::new();
    let manager = one_worker(&counts);
    assert_eq!(manager.task(|conn, _| Ok(conn.id + 1)).wait(), Ok(1));
    assert_eq!(
        manager
            .task(|conn, _| Ok(conn.id + 2))
            .priority()
            .spawn()
            .wait(),
        Ok(2)
    );
    let (tx, rx) = mpsc::channel();
    manager
        .task(|conn, _| Ok(conn.id + 3))
        .callback(move |r| tx.send(r).unwrap());
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), Ok(3));
    let owned = String::from("once");
    assert_eq!(
        manager
            .task_once(move |_, _| Ok(owned))
            .timeout(Duration::from_secs(60))
            .wait(),
        Ok("once".to_owned())
    );
    manager.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_deadline_already_past_is_answered_at_once_in_every_delivery_and_never_runs() {
    let counts = Counts::new();
    let manager = one_worker(&counts);
    let runs = Arc::new(AtomicUsize::new(0));
    let past = Instant::now();
    let body = |runs: &Arc<AtomicUsize>| {
        let runs = runs.clone();
        move |_: &mut Conn, _: &TaskContext| {
            runs.fetch_add(1, SeqCst);
            Ok::<_, DbError>(())
        }
    };
    assert_eq!(
        manager.task(body(&runs)).deadline(past).wait(),
        Err(TaskError::DeadlineExceeded)
    );
    let handle = manager.task_once(body(&runs)).deadline(past).spawn();
    assert!(handle.is_finished(), "answered at submission");
    assert_eq!(handle.wait(), Err(TaskError::DeadlineExceeded));
    let caller = thread::current().id();
    let (tx, rx) = mpsc::channel();
    manager
        .task(body(&runs))
        .priority()
        .deadline(past)
        .callback(move |r| tx.send((r, thread::current().id())).unwrap());
    // Called on this thread, before `callback` returned.
    assert_eq!(
        rx.try_recv().unwrap(),
        (Err(TaskError::DeadlineExceeded), caller)
    );
    manager.stop().unwrap();
    assert_eq!(runs.load(SeqCst), 0);
    // Answered at submission: never accepted, so not counted.
    assert_eq!(manager.metrics().total_tasks_arrived, 0);
}

#[test]
fn a_queued_task_not_started_by_its_deadline_never_runs_in_every_delivery() {
    let counts = Counts::new();
    let manager = one_worker(&counts);
    let gate = Gate::new();
    block_worker(&manager, &gate);
    let runs = Arc::new(AtomicUsize::new(0));
    // Far enough ahead that every submission below is queued before it.
    let deadline = Instant::now() + Duration::from_millis(500);
    let body = || {
        let runs = runs.clone();
        move |_: &mut Conn, _: &TaskContext| {
            runs.fetch_add(1, SeqCst);
            Ok::<_, DbError>(())
        }
    };
    let handle = manager.task(body()).deadline(deadline).spawn();
    let (tx, rx) = mpsc::channel();
    manager
        .task_once(body())
        .priority()
        .deadline(deadline)
        .callback(move |r| tx.send(r).unwrap());
    let blocking = {
        let (m, f) = (manager.clone(), body());
        thread::spawn(move || m.task(f).deadline(deadline).wait())
    };
    // A task without a deadline, queued behind them, still runs.
    let plain = manager.task(body()).spawn();
    // Queued, not refused: the deadline is still ahead.
    assert!(!handle.is_finished());
    sleep_past(deadline);
    gate.open();
    assert_eq!(handle.wait(), Err(TaskError::DeadlineExceeded));
    assert_eq!(
        rx.recv_timeout(TIMEOUT).unwrap(),
        Err(TaskError::DeadlineExceeded)
    );
    assert_eq!(blocking.join().unwrap(), Err(TaskError::DeadlineExceeded));
    assert_eq!(plain.wait(), Ok(()));
    manager.stop().unwrap();
    assert_eq!(runs.load(SeqCst), 1, "only the task without a deadline ran");
    let m = manager.metrics();
    // Accepted and ended with an error: counted as failed.
    assert_eq!(m.total_tasks_failed, 3);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_blocking_wait_for_queue_room_ends_at_the_deadline() {
    let counts = Counts::new();
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .queue_capacity(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    block_worker(&manager, &gate);
    // Fills the one place.
    let queued = manager.queue_task_async(|conn, _| Ok(conn.id));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let deadline = Instant::now() + Duration::from_millis(30);
    let outcome = manager
        .task(move |_, _| {
            r.fetch_add(1, SeqCst);
            Ok(())
        })
        .deadline(deadline)
        .wait();
    assert_eq!(outcome, Err(TaskError::DeadlineExceeded));
    assert!(Instant::now() >= deadline);
    gate.open();
    assert_eq!(queued.wait(), Ok(0));
    manager.stop().unwrap();
    assert_eq!(ran.load(SeqCst), 0);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_blocking_wait_for_room_with_a_deadline_gets_a_place_when_one_frees() {
    let counts = Counts::new();
    let manager = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .queue_capacity(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    block_worker(&manager, &gate);
    let queued = manager.queue_task_async(|conn, _| Ok(conn.id));
    let waiter = {
        let m = manager.clone();
        thread::spawn(move || {
            m.task(|conn, _| Ok(conn.id + 10))
                .timeout(Duration::from_secs(60))
                .wait()
        })
    };
    gate.open();
    assert_eq!(queued.wait(), Ok(0));
    assert_eq!(waiter.join().unwrap(), Ok(10));
    manager.stop().unwrap();
}

#[test]
fn a_started_task_runs_to_its_end_and_sees_its_deadline() {
    let counts = Counts::new();
    let manager = one_worker(&counts);
    // Ahead enough for the idle worker to start the task before it.
    let deadline = Instant::now() + Duration::from_millis(200);
    let seen = manager
        .task(move |_, ctx| {
            let seen = ctx.deadline();
            // Still running well after the deadline: nobody stops it.
            sleep_past(deadline);
            Ok(seen)
        })
        .deadline(deadline)
        .wait();
    assert_eq!(seen, Ok(Some(deadline)));
    assert_eq!(manager.task(|_, ctx| Ok(ctx.deadline())).wait(), Ok(None));
    manager.stop().unwrap();
}

#[test]
fn a_retry_after_the_deadline_still_runs() {
    let counts = Counts::new();
    let manager = one_worker(&counts);
    // Ahead enough for the idle worker to start the task before it.
    let deadline = Instant::now() + Duration::from_millis(200);
    let outcome = manager
        .task(move |_, ctx| {
            if ctx.attempt() == 1 {
                sleep_past(deadline);
                return Err(DbError::Broken);
            }
            Ok(ctx.attempt())
        })
        .deadline(deadline)
        .wait();
    assert_eq!(outcome, Ok(2));
    manager.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn the_queue_task_methods_are_the_builder_without_a_deadline() {
    let counts = Counts::new();
    let manager = one_worker(&counts);
    assert_eq!(manager.queue_task(|_, ctx| Ok(ctx.deadline())), Ok(None));
    assert_eq!(
        manager
            .queue_task_with_priority_once_async(|_, ctx| Ok(ctx.deadline()))
            .wait(),
        Ok(None)
    );
    manager.stop().unwrap();
}
