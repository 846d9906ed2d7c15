//! Submitting from inside a task: blocking deliveries are refused with `WouldDeadlock`,
//! handle and callback deliveries work.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use common::{Conn, Counts, DbError, TIMEOUT, builder, fixed};
use tasker::{TaskContext, TaskError};

type Outcome<T> = Result<T, TaskError<DbError>>;

#[test]
fn a_blocking_queue_task_from_inside_a_task_returns_would_deadlock() {
    let counts = Counts::new();
    // One worker: a nested blocking wait would deadlock for real.
    let m = fixed(&counts, 1);
    let inner_ran = Arc::new(AtomicBool::new(false));
    let (mm, ran) = (m.clone(), inner_ran.clone());
    let outer = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        let body = || {
            let ran = ran.clone();
            move |_: &mut Conn, _: &TaskContext| {
                ran.store(true, Ordering::SeqCst);
                Ok(1u32)
            }
        };
        let results: Vec<Outcome<u32>> = vec![
            mm.queue_task(body()),
            mm.queue_task_with_priority(body()),
            mm.queue_task_once(body()),
            mm.queue_task_with_priority_once(body()),
        ];
        Ok(results)
    });
    let results = outer
        .wait_timeout(TIMEOUT)
        .expect("the nested blocking submission blocked")
        .unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert_eq!(r, Err(TaskError::WouldDeadlock));
    }
    m.stop().unwrap();
    assert!(
        !inner_ran.load(Ordering::SeqCst),
        "a refused task never runs"
    );
    assert_eq!(m.metrics().total_tasks_completed, 1, "only the outer task");
}

#[test]
fn queue_task_async_from_inside_a_task_works() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let mm = m.clone();
    // The outer task returns the inner handle without waiting on it.
    let inner = m
        .queue_task(move |_: &mut Conn, _: &TaskContext| {
            Ok(mm.queue_task_async(|_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt() + 40)))
        })
        .unwrap();
    assert_eq!(
        inner.wait_timeout(TIMEOUT).expect("inner task hung"),
        Ok(41)
    );
    m.stop().unwrap();
}

#[test]
fn a_callback_submission_from_inside_a_task_works() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let (tx, rx) = mpsc::channel();
    let mm = m.clone();
    m.queue_task_once(move |_: &mut Conn, _: &TaskContext| {
        mm.queue_task_with_priority_with_callback(
            |c: &mut Conn, _: &TaskContext| Ok(c.id),
            move |r: Outcome<usize>| tx.send(r).unwrap(),
        );
        Ok(())
    })
    .unwrap();
    assert!(
        rx.recv_timeout(TIMEOUT)
            .expect("inner task never ran")
            .is_ok()
    );
    m.stop().unwrap();
}

#[test]
fn a_blocking_submission_to_another_manager_from_inside_a_task_is_allowed() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let other = fixed(&counts, 1);
    let o = other.clone();
    let r = m
        .queue_task_async(move |_: &mut Conn, _: &TaskContext| {
            Ok(o.queue_task(|_: &mut Conn, _: &TaskContext| Ok("from the other manager")))
        })
        .wait_timeout(TIMEOUT)
        .expect("hung")
        .unwrap();
    assert_eq!(r, Ok("from the other manager"));
    m.stop().unwrap();
    other.stop().unwrap();
}

#[test]
fn run_task_from_inside_a_task_works() {
    let counts = Counts::new();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(1)
        .build()
        .unwrap();
    let mm = m.clone();
    let (outer_id, inner_id) = m
        .queue_task_async(move |c: &mut Conn, _: &TaskContext| {
            let inner = mm
                .run_task(|p: &mut Conn, _: &TaskContext| Ok(p.id))
                .unwrap();
            Ok((c.id, inner))
        })
        .wait_timeout(TIMEOUT)
        .expect("hung")
        .unwrap();
    assert_ne!(
        outer_id, inner_id,
        "run_task used a pooled resource, not the worker's"
    );
    m.stop().unwrap();
}

/// Work made inside a task stays on its worker: it runs before normal work that was queued
/// from outside earlier (the worker looks at its own deque before the shared queue).
#[test]
fn a_task_made_inside_a_task_runs_before_earlier_outside_work() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Hold the one worker so the parent and the outside task queue up behind it.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            started_tx.send(()).unwrap();
            gate_rx.recv_timeout(TIMEOUT).unwrap();
            Ok(())
        },
        |_| {},
    );
    started_rx.recv_timeout(TIMEOUT).unwrap();
    let (mm, o) = (m.clone(), order.clone());
    let (child_done_tx, child_done_rx) = mpsc::channel();
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            o.lock().unwrap().push("parent");
            let (o2, tx) = (o.clone(), child_done_tx.clone());
            mm.queue_task_with_callback(
                move |_: &mut Conn, _: &TaskContext| {
                    o2.lock().unwrap().push("child");
                    Ok(())
                },
                move |r: Outcome<()>| tx.send(r.is_ok()).unwrap(),
            );
            Ok(())
        },
        |_| {},
    );
    let o = order.clone();
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            o.lock().unwrap().push("outside");
            Ok(())
        },
        |_| {},
    );
    gate_tx.send(()).unwrap();
    assert!(
        child_done_rx.recv_timeout(TIMEOUT).unwrap(),
        "the child ran"
    );
    m.stop().unwrap();
    assert_eq!(*order.lock().unwrap(), ["parent", "child", "outside"]);
}

/// A worker blocked inside a task does not strand the work it made: an idle peer steals it.
#[test]
fn an_idle_peer_steals_work_made_inside_a_busy_task() {
    const CHILDREN: usize = 100;
    let counts = Counts::new();
    let m = fixed(&counts, 2);
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (mm, d) = (m.clone(), done.clone());
    let parent = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        let me = std::thread::current().id();
        let stolen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..CHILDREN {
            let (d, s) = (d.clone(), stolen.clone());
            mm.queue_task_with_callback(
                move |_: &mut Conn, _: &TaskContext| {
                    if std::thread::current().id() != me {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
                |_| {},
            );
        }
        // This worker stays busy until every child ran: only the peer can run them.
        let deadline = std::time::Instant::now() + TIMEOUT;
        while d.load(Ordering::SeqCst) < CHILDREN && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        Ok(stolen.load(Ordering::SeqCst))
    });
    let stolen = parent.wait().unwrap();
    assert_eq!(done.load(Ordering::SeqCst), CHILDREN);
    assert_eq!(stolen, CHILDREN, "every child ran on the idle peer");
    m.stop().unwrap();
}

/// Links after which a test's task chain stops on its own (far more than the fairness
/// interval).
const CHAIN_LIMIT: u64 = 100_000;

/// Queues one link of a task chain on `m`: each link counts itself in `links` and queues the
/// next, until `stop` is set or `CHAIN_LIMIT` links ran; the last one sends on `done`.
fn link(
    m: tasker::TaskManager<Conn, DbError>,
    links: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
    done: mpsc::Sender<()>,
) {
    let next = m.clone();
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            let n = links.fetch_add(1, Ordering::SeqCst) + 1;
            if n < CHAIN_LIMIT && !stop.load(Ordering::SeqCst) {
                link(next.clone(), links.clone(), stop.clone(), done.clone());
            } else {
                done.send(()).unwrap();
            }
            Ok(())
        },
        |_| {},
    );
}

/// Work that keeps making work cannot starve work queued from outside: a task chain on the only
/// worker, each link submitting the next, still lets an outside task in after a bounded number
/// of links (the worker looks at the shared queue first every so often), not only once the
/// chain ends.
#[test]
fn a_task_chain_on_one_worker_does_not_starve_outside_work() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let links = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let outside_ran = Arc::new(AtomicBool::new(false));

    // Hold the worker until both the chain's first link and the outside task are queued.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            started_tx.send(()).unwrap();
            gate_rx.recv_timeout(TIMEOUT).unwrap();
            Ok(())
        },
        |_| {},
    );
    started_rx.recv_timeout(TIMEOUT).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    link(m.clone(), links.clone(), outside_ran.clone(), done_tx);
    // The chain's first link is queued before this, so the worker takes it first; from then
    // on the chain's links go to the worker's own deque.
    let (outside_links_tx, outside_links_rx) = mpsc::channel();
    let (l, ran) = (links.clone(), outside_ran.clone());
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            outside_links_tx.send(l.load(Ordering::SeqCst)).unwrap();
            ran.store(true, Ordering::SeqCst);
            Ok(())
        },
        |_| {},
    );
    gate_tx.send(()).unwrap();
    done_rx.recv_timeout(TIMEOUT).expect("the chain ended");
    let at = outside_links_rx
        .recv_timeout(TIMEOUT)
        .expect("the outside task ran");
    m.stop().unwrap();
    assert!(
        at < 1_000,
        "the outside task waited for {at} links of the chain (the chain stops at {CHAIN_LIMIT})"
    );
}

/// Work made inside tasks runs newest first on its worker (the local deque is LIFO), yet a
/// task chain that keeps making work cannot starve older work made on the same worker: the
/// worker takes its own oldest task every so often, so a task made before the chain started
/// runs after a bounded number of links, not only once the chain ends.
#[test]
fn a_task_chain_does_not_starve_older_work_made_on_its_worker() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let links = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let older_ran = Arc::new(AtomicBool::new(false));

    // One task makes the older task first, then the chain's first link: both on the worker's
    // own deque, the link on top.
    let (done_tx, done_rx) = mpsc::channel();
    let (older_links_tx, older_links_rx) = mpsc::channel();
    let (mm, l, ran) = (m.clone(), links.clone(), older_ran.clone());
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            let (l2, ran2, tx) = (l.clone(), ran.clone(), older_links_tx.clone());
            mm.queue_task_with_callback(
                move |_: &mut Conn, _: &TaskContext| {
                    tx.send(l2.load(Ordering::SeqCst)).unwrap();
                    ran2.store(true, Ordering::SeqCst);
                    Ok(())
                },
                |_| {},
            );
            link(mm.clone(), l.clone(), ran.clone(), done_tx.clone());
            Ok(())
        },
        |_| {},
    );
    done_rx.recv_timeout(TIMEOUT).expect("the chain ended");
    let at = older_links_rx
        .recv_timeout(TIMEOUT)
        .expect("the older task ran");
    m.stop().unwrap();
    assert!(
        at < 1_000,
        "the older task waited for {at} links of the chain (the chain stops at {CHAIN_LIMIT})"
    );
}

/// Work made inside a task runs newest first on its worker: a parent that makes three
/// children (on a manager with one worker) sees them run in the reverse of the order it made
/// them.
#[test]
fn work_made_inside_a_task_runs_newest_first() {
    let counts = Counts::new();
    let m = fixed(&counts, 1);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let (mm, o) = (m.clone(), order.clone());
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            for child in 0..3 {
                let (o2, tx) = (o.clone(), done_tx.clone());
                mm.queue_task_with_callback(
                    move |_: &mut Conn, _: &TaskContext| {
                        o2.lock().unwrap().push(child);
                        Ok(())
                    },
                    move |_| tx.send(()).unwrap(),
                );
            }
            Ok(())
        },
        |_| {},
    );
    for _ in 0..3 {
        done_rx.recv_timeout(TIMEOUT).expect("a child ran");
    }
    m.stop().unwrap();
    assert_eq!(*order.lock().unwrap(), [2, 1, 0]);
}

/// Tasks made on a worker are counted where its own tally keeps them, and a snapshot adds
/// them to the outside submissions: every task arrived once, and the arrival rate sees them.
#[test]
fn tasks_made_inside_tasks_are_counted_as_arrived() {
    const CHILDREN: u64 = 10;
    let counts = Counts::new();
    let m = fixed(&counts, 2);
    let (done_tx, done_rx) = mpsc::channel();
    let mm = m.clone();
    m.queue_task_with_callback(
        move |_: &mut Conn, _: &TaskContext| {
            for _ in 0..CHILDREN {
                let tx = done_tx.clone();
                mm.queue_task_with_callback(
                    |_: &mut Conn, _: &TaskContext| Ok(()),
                    move |r: Outcome<()>| tx.send(r.is_ok()).unwrap(),
                );
            }
            Ok(())
        },
        |_| {},
    );
    for _ in 0..CHILDREN {
        assert!(done_rx.recv_timeout(TIMEOUT).unwrap(), "a child completed");
    }
    let snapshot = m.metrics();
    assert_eq!(snapshot.total_tasks_arrived, CHILDREN + 1);
    assert!(snapshot.task_arrival_rate > 0.0);
    m.stop().unwrap();
}

/// A tree of tasks: each submits two children through the manager its context lends it (no
/// manager captured), down to `depth` 0; each reports its outcome on `tx`.
fn lent_node(ctx: &TaskContext, depth: u32, tx: mpsc::Sender<Outcome<()>>) -> Result<(), DbError> {
    if depth > 0 {
        let m: &tasker::TaskManager<Conn, DbError> = ctx.manager().expect("the manager's R and E");
        for _ in 0..2 {
            let (tx, report) = (tx.clone(), tx.clone());
            m.queue_task_with_callback(
                move |_: &mut Conn, ctx: &TaskContext| lent_node(ctx, depth - 1, tx.clone()),
                move |r: Outcome<()>| report.send(r).unwrap(),
            );
        }
    }
    Ok(())
}

#[test]
fn a_task_submits_through_the_manager_its_context_lends() {
    let counts = Counts::new();
    let m = fixed(&counts, 2);
    let (tx, rx) = mpsc::channel();
    let root_tx = tx.clone();
    m.queue_task(move |_: &mut Conn, ctx: &TaskContext| lent_node(ctx, 6, root_tx.clone()))
        .unwrap();
    // 2^7 - 2 children below the root, each answered Ok.
    for _ in 0..126 {
        let r = rx.recv_timeout(TIMEOUT).expect("a child never answered");
        assert_eq!(r, Ok(()));
    }
    drop(tx);
    // The lent manager is the task's own: the same `R` and `E` or nothing.
    let wrong = m
        .queue_task(|_: &mut Conn, ctx: &TaskContext| {
            Ok((
                ctx.manager::<Conn, DbError>().is_some(),
                ctx.manager::<u8, DbError>().is_none(),
                ctx.manager::<Conn, std::io::Error>().is_none(),
            ))
        })
        .unwrap();
    assert_eq!(wrong, (true, true, true));
    // `run_task` lends the manager it runs on too.
    let lent = m
        .run_task(|_: &mut Conn, ctx: &TaskContext| {
            Ok(ctx
                .manager::<Conn, DbError>()
                .map(|lent| lent.stats().base_workers))
        })
        .unwrap();
    assert_eq!(lent, Some(2));
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn the_lent_manager_does_not_keep_the_manager_running() {
    let counts = Counts::new();
    let m = fixed(&counts, 2);
    let gate = common::Gate::new();
    let waiter = gate.waiter();
    let (tx, rx) = mpsc::channel();
    m.queue_task_with_callback(
        move |_: &mut Conn, ctx: &TaskContext| {
            waiter.enter();
            // The user's last handle is gone by now (the test dropped it, and its drop waits
            // for this task): a submission through the lent manager is refused, and a clone
            // of it starts a handle of its own, which the manager's stop does not wait for.
            let lent: &tasker::TaskManager<Conn, DbError> = ctx.manager().unwrap();
            let (rtx, rrx) = mpsc::channel();
            lent.queue_task_with_callback(
                |_: &mut Conn, _: &TaskContext| Ok(()),
                move |r: Outcome<()>| rtx.send(r).unwrap(),
            );
            let refused = rrx.recv_timeout(TIMEOUT).unwrap();
            let revived = lent.clone();
            let again = revived.queue_task_async(|_: &mut Conn, _: &TaskContext| Ok(()));
            drop(revived);
            Ok((refused, again.wait_timeout(TIMEOUT).ok()))
        },
        move |r| tx.send(r).unwrap(),
    );
    gate.wait_started();
    let dropper = std::thread::spawn(move || drop(m));
    // The drop is waiting for the running task (the stop it began is graceful); let the
    // task go once the drop has begun the stop.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !dropper.is_finished(),
        "the last drop waits for the running task"
    );
    gate.open();
    dropper.join().unwrap();
    let (refused, again) = rx.recv_timeout(TIMEOUT).unwrap().unwrap();
    assert_eq!(refused, Err(TaskError::ShuttingDown));
    assert!(matches!(again, Some(Err(TaskError::ShuttingDown))));
    // The drop returned only once the manager shut down: every resource is destroyed.
    assert_eq!(counts.created(), counts.destroyed());
}
