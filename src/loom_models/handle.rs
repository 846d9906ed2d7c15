//! The manager's handles (`handle`): the user's last handle dropped while a task clones the
//! manager its worker lent it. Run on the shipped [`Handle`] over a state of its own (the
//! manager's stop is what `last_handle_dropped` does there; what this model checks is the
//! count and the strong references beneath it).

use super::explore;
use crate::handle::{Counted, Handle};
use crate::sync::{Arc, AtomicUsize, Ordering, StdArc, StdAtomicUsize, UnsafeCell, thread};

/// A state that counts its last-handle events and its own drop (std tallies: not
/// interleaved), and holds a cell the user writes through its handle and every last-handle
/// event reads (loom checks that the write happens before each read).
struct State {
    handles: AtomicUsize,
    stops: StdArc<StdAtomicUsize>,
    dropped: StdArc<StdAtomicUsize>,
    /// The user's last use of the manager, written while it holds its handle; read by every
    /// `last_handle_dropped`, which must see it.
    used: UnsafeCell<u32>,
}

// SAFETY: (the model) `used` is the only field that is not `Sync`, and its accesses
// are what loom checks for races.
unsafe impl Sync for State {}

impl Counted for State {
    fn handles(&self) -> &AtomicUsize {
        &self.handles
    }

    fn last_handle_dropped(&self) {
        // SAFETY: (the model) the user's write happened before, if the count's orderings
        // are right (what loom checks).
        let used = self.used.with(|u| unsafe { *u });
        assert_eq!(used, 1, "the stop saw the user's last use");
        self.stops.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// **The user's last handle dropped while a task clones its lent manager: every group's
/// reference is taken once and released once, the state outlives every handle.**
///
/// A user thread uses the manager (a plain write) and drops its last counted handle while a
/// worker thread, holding its own strong reference, clones the view it lends its task and
/// drops the clone, then drops its reference. Either the clone joins the user's group (it
/// finds 1: the user's drop is then not the last, the clone's is) or it finds 0 and starts a
/// group of its own, which takes and releases its own reference. Checked: the last-handle
/// event runs once or twice, and every time after the user's use (loom's `UnsafeCell`: the
/// decrement's `Release` and the `Acquire` fence order them, through the count's release
/// sequence when the event runs on the worker); the state is dropped exactly once, after
/// both threads are done with it; no strong reference leaks (loom checks every `Arc`).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 46 executions, 3 ms.
///
/// It bites: without the 0-to-1 clone taking a reference, the new group's last drop releases
/// one that was never taken, and the model fails; with the drop's decrement `Relaxed` and no
/// `Acquire` fence, loom reports the stop's write racing the other thread's read.
pub fn last_handle_dropped_while_a_task_clones_its_lent_manager() {
    explore("handle: last drop vs a lent clone", || {
        let stops = StdArc::new(StdAtomicUsize::new(0));
        let dropped = StdArc::new(StdAtomicUsize::new(0));
        let state = Arc::new(State {
            handles: AtomicUsize::new(1),
            stops: stops.clone(),
            dropped: dropped.clone(),
            used: UnsafeCell::new(0),
        });
        let worker_ref = state.clone();
        let user = Handle::new(state);
        let user = thread::spawn(move || {
            // SAFETY: (the model) the one write, while this handle keeps the group alive.
            user.used.with_mut(|u| unsafe { *u += 1 });
            drop(user);
        });
        let worker = thread::spawn(move || {
            {
                let view = Handle::lend(&worker_ref);
                let clone = view.clone();
                drop(clone);
            }
            drop(worker_ref);
        });
        user.join().unwrap();
        worker.join().unwrap();
        let stops = stops.load(Ordering::Relaxed);
        assert!(
            (1..=2).contains(&stops),
            "the last handle went {stops} times"
        );
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            1,
            "the state is dropped once"
        );
    });
}
