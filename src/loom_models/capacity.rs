//! The bounded queue (`scheduler::capacity`): a blocking submission waits for room on a futex
//! word that releases and shutdown bump. The races it must survive: room freed while the
//! submitter decides to wait, and shutdown beginning while it waits with no room coming.

use super::{Gate, Tally, explore, manager};
use crate::sync::{Ordering, StdArc, thread};

/// **A blocking submission waiting on a full queue gets the room a worker frees.**
///
/// A one-worker manager with `queue_capacity(1)`, built for real. The main thread submits a
/// callback task, which fills the queue until the worker takes it; a second thread submits
/// with `queue_task` (blocking), so it may find the queue full and wait for room. The worker
/// takes the first task, giving its place back. The waiter must get that place (else it waits
/// forever: loom reports the deadlock); both tasks complete, each run once. Then `stop`.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 30 637 executions, 4.0 s.
///
/// It bites: a waiter that does not try to reserve again after it counted itself (step 3 in
/// `scheduler::capacity`) sleeps through a release that saw no waiter yet.
pub fn a_full_queue_waiter_gets_the_room_a_worker_frees() {
    explore("full queue: a waiter vs the room a worker frees", || {
        let manager = manager(1, 0, Some(1));
        let first = Tally::new();
        first.submit_callback(&manager, 0);
        let second = Tally::new();
        let waiter = {
            let (manager, second) = (manager.clone(), second.clone());
            thread::spawn(move || {
                let outcome = manager.queue_task(second.body(0));
                second.record(&outcome);
            })
        };
        waiter.join().unwrap();
        assert_eq!((second.only(), second.ran()), ("completed", 1));
        manager.stop().unwrap();
        assert_eq!((first.only(), first.ran()), ("completed", 1));
        super::assert_drained(&manager);
    });
}

/// **A blocking submission waiting on a full queue is answered when `stop` begins.**
///
/// A one-worker manager with `queue_capacity(1)`, built for real. Its worker is held inside a
/// first task (which waits on a gate), a second task fills the queue, and a third thread
/// submits with `queue_task`, finding no room, while a fourth calls `stop`. No room can come
/// while the gate is shut, so the waiter must be answered `ShuttingDown` by the shutdown's
/// wake (else it waits forever: loom reports the deadlock, since the main thread opens the
/// gate only after the waiter returned). Then the gate opens, `stop` returns, and the two
/// accepted tasks have completed, each run once.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 13 151 executions, 1.4 s.
///
/// It bites: with the shutdown check removed from the waiter's re-check (step 3 in
/// `scheduler::capacity`), loom finds it asleep after the shutdown's wake.
pub fn a_full_queue_waiter_is_answered_when_stop_begins() {
    explore("full queue: a waiter vs stop", || {
        let manager = manager(1, 0, Some(1));
        let gate = StdArc::new(Gate::default());
        let held = Tally::new();
        {
            let (gate, tally, ran) = (gate.clone(), held.clone(), held.clone());
            manager.queue_task_once_with_callback(
                move |_: &mut (), _: &crate::TaskContext| {
                    ran.ran.fetch_add(1, Ordering::Relaxed);
                    gate.update(|s| s.0 = true);
                    gate.wait_for(|s| s.1);
                    Ok::<u32, super::Unhealthy>(1)
                },
                move |outcome| tally.record(&outcome),
            );
        }
        // The worker took the held task: the queue is empty, and the next task fills it.
        gate.wait_for(|s| s.0);
        let queued = Tally::new();
        queued.submit_callback(&manager, 0);
        let waiting = Tally::new();
        let waiter = {
            let (manager, waiting) = (manager.clone(), waiting.clone());
            thread::spawn(move || {
                let outcome = manager.queue_task(waiting.body(0));
                waiting.record(&outcome);
            })
        };
        let stopper = {
            let manager = manager.clone();
            thread::spawn(move || manager.stop().unwrap())
        };
        waiter.join().unwrap();
        // Refused: the queue stayed full until the shutdown began.
        assert_eq!((waiting.only(), waiting.ran()), ("refused", 0));
        gate.update(|s| s.1 = true);
        stopper.join().unwrap();
        for tally in [&held, &queued] {
            assert_eq!((tally.only(), tally.ran()), ("completed", 1));
        }
        super::assert_drained(&manager);
    });
}
