//! Priority tasks start before normal tasks that are still queued when they arrive.

mod common;

use std::sync::{Arc, Mutex};

use common::{Conn, Counts, DbError, Gate, TIMEOUT, builder};
use tasker::{TaskContext, TaskError, TaskManager};

const NORMAL: usize = 20;
const PRIORITY: usize = 10;

/// Blocks the single worker, then runs `queue` (which queues tasks recording their id into
/// the returned order, from inside their bodies), releases the worker and returns the order.
fn run_blocked(
    queue: impl FnOnce(&TaskManager<Conn, DbError>, &Arc<Mutex<Vec<usize>>>),
) -> Vec<usize> {
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
        Ok(())
    });
    gate.wait_started();

    let order = Arc::new(Mutex::new(Vec::new()));
    queue(&m, &order);
    assert_eq!(
        m.stats().queued_tasks + m.stats().priority_tasks,
        NORMAL + PRIORITY
    );

    gate.open();
    blocker
        .wait_timeout(TIMEOUT)
        .expect("blocker hung")
        .unwrap();
    m.stop().unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), NORMAL + PRIORITY, "every task ran once");
    order
}

fn recorder(
    order: &Arc<Mutex<Vec<usize>>>,
    id: usize,
) -> impl FnMut(&mut Conn, &TaskContext) -> Result<(), DbError> + Send + 'static {
    let order = order.clone();
    move |_: &mut Conn, _: &TaskContext| {
        order.lock().unwrap().push(id);
        Ok(())
    }
}

fn assert_priority_first(order: &[usize]) {
    let (prio, normal) = order.split_at(PRIORITY);
    assert!(
        prio.iter().all(|&id| id >= NORMAL) && normal.iter().all(|&id| id < NORMAL),
        "priority ids (>= {NORMAL}) must all run before normal ids: {order:?}"
    );
}

#[test]
fn priority_tasks_start_before_normal_tasks_queued_earlier() {
    let order = run_blocked(|m, order| {
        let done = |r: Result<(), TaskError<DbError>>| r.unwrap();
        for id in 0..NORMAL {
            m.queue_task_with_callback(recorder(order, id), done);
        }
        for id in NORMAL..NORMAL + PRIORITY {
            m.queue_task_with_priority_with_callback(recorder(order, id), done);
        }
    });
    assert_priority_first(&order);
    // Each queue is FIFO on its own.
    let (prio, normal) = order.split_at(PRIORITY);
    assert!(prio.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(normal.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}

#[test]
fn priority_once_and_handle_tasks_start_before_normal_tasks_queued_earlier() {
    let order = run_blocked(|m, order| {
        let mut handles = Vec::new();
        for id in 0..NORMAL {
            // Alternate the normal modes: plain and at-most-once.
            if id % 2 == 0 {
                handles.push(m.queue_task_async(recorder(order, id)));
            } else {
                let mut f = recorder(order, id);
                handles.push(
                    m.queue_task_once_async(move |c: &mut Conn, ctx: &TaskContext| f(c, ctx)),
                );
            }
        }
        for id in NORMAL..NORMAL + PRIORITY {
            if id % 2 == 0 {
                handles.push(m.queue_task_with_priority_async(recorder(order, id)));
            } else {
                let mut f = recorder(order, id);
                m.queue_task_with_priority_once_with_callback(
                    move |c: &mut Conn, ctx: &TaskContext| f(c, ctx),
                    |r| r.unwrap(),
                );
            }
        }
        // Dropping handles does not cancel their tasks.
        drop(handles);
    });
    assert_priority_first(&order);
}
