//! `queue_capacity`: non-blocking submissions beyond it are refused with `QueueFull`, blocking
//! ones wait for room, retries are never refused, and shutdown wakes waiting submitters.

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use common::{Conn, Counts, DbError, Gate, TIMEOUT, builder, eventually};
use tasker::{TaskContext, TaskError, TaskHandle, TaskManager};

type Outcome<T> = Result<T, TaskError<DbError>>;
/// Outcomes seen by callbacks, with the thread each was delivered on.
type Seen = Arc<Mutex<Vec<(thread::ThreadId, Outcome<u32>)>>>;

/// A single-worker manager with `queue_capacity(cap)`, its worker blocked on the gate, and
/// the blocker's handle.
fn blocked(
    counts: &Counts,
    cap: usize,
) -> (TaskManager<Conn, DbError>, Gate, TaskHandle<(), DbError>) {
    let m = builder(counts)
        .worker_count(1)
        .max_worker_count(1)
        .queue_capacity(cap)
        .build()
        .unwrap();
    let gate = Gate::new();
    let waiter = gate.waiter();
    let blocker = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok(())
    });
    gate.wait_started();
    (m, gate, blocker)
}

fn value(k: u32) -> impl FnMut(&mut Conn, &TaskContext) -> Result<u32, DbError> + Send + 'static {
    move |_: &mut Conn, _: &TaskContext| Ok(k)
}

#[test]
fn async_and_callback_submissions_beyond_capacity_get_queue_full() {
    let counts = Counts::new();
    let (m, gate, blocker) = blocked(&counts, 2);
    // The running blocker does not hold a place: two more fit.
    let a = m.queue_task_async(value(1));
    let b = m.queue_task_with_priority_async(value(2));
    assert_eq!(m.stats().queued_tasks + m.stats().priority_tasks, 2);

    // Every handle mode is refused at once.
    let refused = [
        m.queue_task_async(value(3)),
        m.queue_task_with_priority_async(value(4)),
        m.queue_task_once_async(|_: &mut Conn, _: &TaskContext| Ok(5)),
        m.queue_task_with_priority_once_async(|_: &mut Conn, _: &TaskContext| Ok(6)),
    ];
    for h in refused {
        assert!(h.is_finished(), "a refused task has its outcome at once");
        assert_eq!(h.wait(), Err(TaskError::QueueFull));
    }

    // Every callback mode is refused, with the callback called on this thread before the
    // submission returns.
    let me = thread::current().id();
    let seen: Seen = Arc::default();
    let cb = || {
        let seen = seen.clone();
        move |r: Outcome<u32>| seen.lock().unwrap().push((thread::current().id(), r))
    };
    m.queue_task_with_callback(value(7), cb());
    assert_eq!(seen.lock().unwrap().len(), 1, "called before returning");
    m.queue_task_with_priority_with_callback(value(8), cb());
    m.queue_task_once_with_callback(|_: &mut Conn, _: &TaskContext| Ok(9), cb());
    m.queue_task_with_priority_once_with_callback(|_: &mut Conn, _: &TaskContext| Ok(10), cb());
    assert_eq!(
        *seen.lock().unwrap(),
        (0..4)
            .map(|_| (me, Err(TaskError::QueueFull)))
            .collect::<Vec<_>>()
    );

    // The accepted ones still run, and room comes back.
    gate.open();
    blocker.wait_timeout(TIMEOUT).expect("hung").unwrap();
    assert_eq!(a.wait_timeout(TIMEOUT).expect("hung"), Ok(1));
    assert_eq!(b.wait_timeout(TIMEOUT).expect("hung"), Ok(2));
    assert_eq!(m.queue_task_async(value(11)).wait(), Ok(11));
    m.stop().unwrap();
}

#[test]
fn a_blocking_submission_on_a_full_queue_waits_for_room_then_succeeds() {
    let counts = Counts::new();
    let (m, gate, blocker) = blocked(&counts, 2);
    let a = m.queue_task_async(value(1));
    let b = m.queue_task_async(value(2));

    let (tx, rx) = mpsc::channel();
    let submitters: Vec<_> = [false, true]
        .into_iter()
        .map(|priority_once| {
            let m = m.clone();
            let tx = tx.clone();
            thread::spawn(move || {
                let r = if priority_once {
                    m.queue_task_with_priority_once(|_: &mut Conn, _: &TaskContext| Ok(20))
                } else {
                    m.queue_task(value(10))
                };
                tx.send(()).unwrap();
                r
            })
        })
        .collect();
    // They wait rather than overfill the queue (nor are they refused).
    thread::sleep(Duration::from_millis(50));
    assert!(
        rx.try_recv().is_err(),
        "a blocking submission returned on a full queue"
    );
    assert_eq!(m.stats().queued_tasks + m.stats().priority_tasks, 2);

    gate.open();
    blocker.wait_timeout(TIMEOUT).expect("hung").unwrap();
    let mut got: Vec<u32> = submitters
        .into_iter()
        .map(|s| s.join().unwrap().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![10, 20]);
    assert_eq!(a.wait(), Ok(1));
    assert_eq!(b.wait(), Ok(2));
    m.stop().unwrap();
}

#[test]
fn retries_are_never_refused() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .queue_capacity(1)
        .max_retries(1)
        .build()
        .unwrap();
    let first_run = Gate::new();
    let waiter = first_run.waiter();
    let h = m.queue_task_async(move |_: &mut Conn, ctx: &TaskContext| {
        if ctx.attempt() == 1 {
            waiter.enter();
            return Err(DbError::Broken);
        }
        Ok(ctx.attempt())
    });
    first_run.wait_started();
    // Fill the queue while the first attempt runs.
    let filler = m.queue_task_async(value(7));
    assert_eq!(
        m.queue_task_async(value(8)).wait(),
        Err(TaskError::QueueFull),
        "the queue is full"
    );
    // The retry must still be accepted.
    first_run.open();
    assert_eq!(h.wait_timeout(TIMEOUT).expect("hung"), Ok(2));
    assert_eq!(filler.wait_timeout(TIMEOUT).expect("hung"), Ok(7));
    m.stop().unwrap();
    assert_eq!(m.metrics().total_tasks_retried, 1);
}

#[test]
fn a_submitter_waiting_for_room_gets_shutting_down_after_stop() {
    let counts = Counts::new();
    let (m, gate, blocker) = blocked(&counts, 1);
    let queued = m.queue_task_async(value(1));

    let submitter = {
        let m = m.clone();
        thread::spawn(move || m.queue_task(value(2)))
    };
    // Let it reach the wait (not required for the outcome, which is the same either way).
    thread::sleep(Duration::from_millis(20));
    let stopper = {
        let m = m.clone();
        thread::spawn(move || m.stop())
    };
    // The worker is still blocked, so no room can appear: only shutdown can answer it.
    assert!(
        eventually(|| submitter.is_finished()),
        "stop did not wake the waiting submitter"
    );
    assert_eq!(submitter.join().unwrap(), Err(TaskError::ShuttingDown));

    gate.open();
    stopper.join().unwrap().unwrap();
    blocker.wait().unwrap();
    assert_eq!(queued.wait(), Ok(1), "stop runs what was already queued");
    assert_eq!(counts.created(), counts.destroyed());
}
