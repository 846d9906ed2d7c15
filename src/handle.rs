//! The manager's handles: clones that share one strong reference, and a borrowed view that
//! the workers lend to the tasks they run.
//!
//! A [`TaskManager`](crate::TaskManager) is a [`Handle`] to its `Shared` state. The handles a
//! user holds are counted in one word (`Counted::handles`), not in the `Arc`'s strong count:
//! the manager stops when the last of them goes, while the worker threads, which keep the
//! state alive for as long as they run, hold strong references of their own that must not
//! keep it from stopping. All the user's handles together own **one** strong reference (the
//! group's), taken when the count goes from 0 to 1 and released when it goes from 1 to 0,
//! after [`Counted::last_handle_dropped`] ran (the manager's stop on the last drop).
//!
//! A worker lends its task a [`Lent`] view: a `Handle` made over the worker's own strong
//! reference, never counted and never dropped, reachable only by shared reference for as
//! long as the worker's reference lives (`TaskContext::manager`). A task that clones it makes
//! a counted handle, like any other clone.
//!
//! # Protocol
//!
//! - `handles` counts live counted handles. A clone adds one (`Relaxed`, as `Arc` does: the
//!   cloner holds a handle or a view, so the state is alive, and nothing is published).
//! - The clone that finds 0 (only possible through a view: a counted handle being cloned is
//!   itself counted) starts a new group: it takes a strong reference through the pointer,
//!   valid because the view's owner holds one.
//! - A drop subtracts one with `Release`; the drop that finds 1 ends the group: an `Acquire`
//!   fence pairs with every other handle's `Release` decrement (what they did happens before
//!   the stop), then `last_handle_dropped` runs, then the group's reference is released.
//! - Each group's reference is taken once (by `Handle::new` for the first group, by the
//!   0-to-1 clone for later ones) and released once (by the 1-to-0 drop that ends it): a
//!   clone racing the last drop either finds 1 or more (its group is the old one, which the
//!   racing drop then does not end: it finds 2) or finds 0 (a new group, with its own
//!   reference). So the strong count never reaches 0 while a handle or a view lives, and
//!   every reference taken is released: `loom_models::handle` checks both (loom reports a
//!   leaked or doubly released `Arc`).
//! - `last_handle_dropped` may run more than once over a manager's life (a task's clone of
//!   its view outliving the user's last handle ends a second group): the stop it performs is
//!   idempotent.

use std::marker::PhantomData;
use std::ops::Deref;

use crate::sync::{Arc, AtomicUsize, Ordering, fence};

/// What a [`Handle`] points to: its count of handles and what to do when the last goes.
pub(crate) trait Counted {
    /// Live counted handles (see the module docs).
    fn handles(&self) -> &AtomicUsize;
    /// Runs on the thread that dropped the last counted handle, before the group's strong
    /// reference is released.
    fn last_handle_dropped(&self);
}

/// A counted handle: one of a group of clones that together own one strong reference.
pub(crate) struct Handle<T: Counted> {
    ptr: *const T,
}

// SAFETY: a `Handle` is a shared reference to a `T` that lives as long as the handle (the
// group's strong reference), like an `Arc<T>`, which is `Send + Sync` for `T: Send + Sync`.
unsafe impl<T: Counted + Send + Sync> Send for Handle<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Counted + Send + Sync> Sync for Handle<T> {}

impl<T: Counted> Handle<T> {
    /// The first handle of a state whose `handles` reads 1; `arc` becomes the group's strong
    /// reference.
    pub(crate) fn new(arc: Arc<T>) -> Self {
        debug_assert_eq!(arc.handles().load(Ordering::Relaxed), 1);
        Handle {
            ptr: Arc::into_raw(arc),
        }
    }

    /// A view over `arc` that tasks can borrow as a handle: not counted, never dropped as
    /// one, valid for as long as the borrow of `arc`.
    pub(crate) fn lend(arc: &Arc<T>) -> Lent<'_, T> {
        Lent {
            view: std::mem::ManuallyDrop::new(Handle {
                ptr: Arc::as_ptr(arc),
            }),
            _arc: PhantomData,
        }
    }
}

impl<T: Counted> Deref for Handle<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: a counted handle's group owns a strong reference until the group's last
        // handle is dropped, and a view's owner holds one for the view's life (`Lent`'s
        // borrow), so `ptr` points to a live `T` while `self` lives.
        unsafe { &*self.ptr }
    }
}

impl<T: Counted> Clone for Handle<T> {
    fn clone(&self) -> Self {
        let before = self.handles().fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            // A view's clone after the last counted handle went: a new group, which needs
            // its own strong reference.
            // SAFETY: `ptr` came from `Arc::into_raw`/`Arc::as_ptr` of this state, and the
            // view's owner holds a strong reference while we run (see `deref`).
            unsafe { Arc::increment_strong_count(self.ptr) };
        } else if before > isize::MAX as usize {
            // As `Arc` does: a count this high means handles are being leaked in a loop.
            std::process::abort();
        }
        Handle { ptr: self.ptr }
    }
}

impl<T: Counted> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.handles().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        self.last_handle_dropped();
        // SAFETY: this drop ended its group (it took `handles` from 1 to 0), whose strong
        // reference was taken exactly once (module docs) and is released here, once; `self`
        // is not used after.
        unsafe { Arc::decrement_strong_count(self.ptr) };
    }
}

/// A worker's view of its manager as a [`Handle`], lent to the tasks it runs.
pub(crate) struct Lent<'a, T: Counted> {
    view: std::mem::ManuallyDrop<Handle<T>>,
    _arc: PhantomData<&'a Arc<T>>,
}

impl<T: Counted> Deref for Lent<'_, T> {
    type Target = Handle<T>;

    #[inline]
    fn deref(&self) -> &Handle<T> {
        &self.view
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    /// A state that counts how often its last handle went, and when it is dropped.
    struct State {
        handles: AtomicUsize,
        last: StdAtomicUsize,
        dropped: Arc<StdAtomicUsize>,
    }

    impl Counted for State {
        fn handles(&self) -> &AtomicUsize {
            &self.handles
        }
        fn last_handle_dropped(&self) {
            self.last.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Drop for State {
        fn drop(&mut self) {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn state() -> (Arc<State>, Arc<StdAtomicUsize>) {
        let dropped = Arc::new(StdAtomicUsize::new(0));
        let s = Arc::new(State {
            handles: AtomicUsize::new(1),
            last: StdAtomicUsize::new(0),
            dropped: dropped.clone(),
        });
        (s, dropped)
    }

    fn last(s: &State) -> usize {
        s.last.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn clones_share_one_strong_reference_and_the_last_drop_runs_once() {
        let (arc, dropped) = state();
        let owner = arc.clone(); // what a worker holds
        let first = Handle::new(arc);
        assert_eq!(Arc::strong_count(&owner), 2);
        let clones: Vec<_> = (0..5).map(|_| first.clone()).collect();
        assert_eq!(
            Arc::strong_count(&owner),
            2,
            "a clone takes no strong reference"
        );
        assert_eq!(owner.handles.load(Ordering::Relaxed), 6);
        drop(first);
        drop(clones);
        assert_eq!(last(&owner), 1);
        assert_eq!(
            Arc::strong_count(&owner),
            1,
            "the group's reference was released"
        );
        drop(owner);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_view_cloned_after_the_last_handle_starts_a_new_group() {
        let (arc, dropped) = state();
        let owner = arc.clone();
        drop(Handle::new(arc));
        assert_eq!(last(&owner), 1);
        assert_eq!(Arc::strong_count(&owner), 1);
        {
            let view = Handle::lend(&owner);
            assert_eq!(
                owner.handles.load(Ordering::Relaxed),
                0,
                "a view is not counted"
            );
            let revived = view.clone();
            assert_eq!(
                Arc::strong_count(&owner),
                2,
                "a new group takes a reference"
            );
            let again = revived.clone();
            drop(revived);
            assert_eq!(last(&owner), 1);
            drop(again);
            assert_eq!(last(&owner), 2, "the new group's last handle went");
            assert_eq!(Arc::strong_count(&owner), 1);
        }
        // Dropping the view released nothing.
        assert_eq!(Arc::strong_count(&owner), 1);
        drop(owner);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn the_group_keeps_the_state_alive_after_its_owner_went() {
        let (arc, dropped) = state();
        let owner = arc.clone();
        let first = Handle::new(arc);
        let counted = Handle::lend(&owner).clone();
        drop(owner);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
        drop(first);
        assert_eq!(last(&counted), 0);
        drop(counted);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn handles_cloned_and_dropped_across_threads_end_exactly_one_group() {
        let (arc, dropped) = state();
        let owner = arc.clone();
        let first = Handle::new(arc);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let h = first.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        drop(h.clone());
                    }
                    drop(h);
                });
            }
        });
        assert_eq!(last(&owner), 0);
        drop(first);
        assert_eq!(last(&owner), 1);
        drop(owner);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
