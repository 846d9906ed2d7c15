//! Burst slots (`slot`, `burst`): pre-allocated worker slots parked and unparked by the
//! controller. The races they must survive: a slot asked to park while a task arrives, and a
//! parked (or parking) slot racing shutdown. The models act as the controller, through its
//! own actions.

use super::{Tally, explore_capped, manager};
use crate::burst::ask_to_park;
use crate::slot::{ACTIVE, Activation, ParkRequest};
use crate::sync::thread;

/// **A burst slot parking while a task arrives: the task is not stranded.**
///
/// A manager with one base worker and one burst slot, built for real. The main thread, as the
/// controller, activates the slot (its thread may not have seen that yet) then asks it to
/// park (`burst::ask_to_park`, which wakes the sleepers as the controller's `Down` decision
/// does), then submits a task through `queue_task_async` and waits on its handle. The slot
/// may see the request at any point of its loop (before it left its parked wait, searching,
/// asleep) while the task is being pushed. The task must run, exactly once, with no shutdown
/// to rescue it: if the slot parked with the task in its hands, or both workers slept through
/// it, the handle waits forever and loom reports the deadlock; a slot that spins instead of
/// parking exhausts loom's branch budget. Then `stop`, and every thread exits.
///
/// The first version of this model found a bug: asked to park before it saw its activation,
/// the slot found `PARK_REQUESTED` in `wait_activation`, which waited for the word to leave
/// `PARKED`, so the wait returned at once and the slot spun until shutdown.
/// `wait_activation` now moves `PARK_REQUESTED` to `PARKED` before it waits (unit test
/// `a_slot_activated_then_asked_to_park_before_it_ran_*` in `slot.rs`).
///
/// Run at preemption bound 2 unless `LOOM_FULL` is set: 57 775 executions, 7.4 s. At bound 3
/// (release, `LOOM_FULL=1 LOOM_MAX_PREEMPTIONS=3`, a loaded machine): 2 394 348 executions,
/// 506 s, the largest model; run that after changing the slot, the worker loop or shutdown.
///
/// It bites: with `wait_activation` treating `PARK_REQUESTED` as `PARKED` (waiting for the
/// word to leave `PARKED`), loom finds the spinning slot.
pub fn burst_slot_parking_while_a_task_arrives() {
    explore_capped(
        "burst slot asked to park while a task arrives",
        Some(2),
        || {
            let manager = manager(1, 1, None);
            let shared = manager.shared();
            assert_eq!(shared.workers[1].state.activate(), Activation::Activated);
            assert_eq!(ask_to_park(shared, 1), ParkRequest::Requested);
            let tally = Tally::new();
            let outcome = manager.queue_task_async(tally.body(0)).wait();
            tally.record(&outcome);
            assert_eq!((tally.only(), tally.ran()), ("completed", 1));
            manager.stop().unwrap();
            // Parked, closed, or still asked to park (it saw the drain first): never active.
            assert_ne!(manager.shared().workers[1].state.load(), ACTIVE);
            super::assert_drained(&manager);
        },
    );
}

/// How the burst slot stands when shutdown races it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Parked since build (waiting, or about to wait).
    Parked,
    /// Activated, then asked to park: its `PARK_REQUESTED -> PARKED` races shutdown's
    /// `PARKED -> CLOSED`.
    Parking,
    /// Parked, and the controller (another thread) activates it while shutdown runs.
    Activated,
}

/// **A parked burst slot does not miss shutdown.**
///
/// The proof in `slot.rs`: a parked slot checks the lifecycle's `CLOSED` bit before it waits
/// on its state word, and shutdown sets `CLOSED` before it moves `PARKED` slots to `CLOSED`
/// and wakes them. A manager with one base worker and one burst slot, built for real; the
/// main thread calls `stop` while the slot stands as [`Start`] says. `stop` joins every
/// worker thread: a slot that misses shutdown keeps it waiting, and loom reports the
/// deadlock.
///
/// Run at preemption bound 2 unless `LOOM_FULL` is set: parked 11 984 executions, parking
/// 24 034, activated 54 292; 11 s in all. At bound 3 (`LOOM_FULL=1`, a loaded machine): parked
/// 126 623, parking 541 982, activated 1 150 676; 206 s in all.
///
/// It bites: with the slot's check of `CLOSED` in `wait_activation` removed, loom finds the
/// slot asleep on its word while `stop` joins it.
pub fn parked_burst_slot_does_not_miss_shutdown() {
    for start in [Start::Parked, Start::Parking, Start::Activated] {
        explore_capped(
            &format!("parked slot vs shutdown ({start:?})"),
            Some(2),
            move || {
                let manager = manager(1, 1, None);
                let controller = match start {
                    Start::Parked => None,
                    Start::Parking => {
                        let shared = manager.shared();
                        assert_eq!(shared.workers[1].state.activate(), Activation::Activated);
                        assert_eq!(ask_to_park(shared, 1), ParkRequest::Requested);
                        None
                    }
                    Start::Activated => {
                        let manager = manager.clone();
                        Some(thread::spawn(move || {
                            let _ = manager.shared().workers[1].state.activate();
                        }))
                    }
                };
                manager.stop().unwrap();
                if let Some(c) = controller {
                    c.join().unwrap();
                }
                super::assert_drained(&manager);
            },
        );
    }
}
