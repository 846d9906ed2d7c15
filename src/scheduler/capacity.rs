//! The optional bound on queued tasks (`Builder::queue_capacity`).
//!
//! `queued` counts fresh submissions that are in a queue, not yet claimed by a worker nor
//! cancelled through their handle. Exactly one of the two gives the place back: the worker
//! after its claim found `Held`, or the cancel that won (the claim and the cancel race on one
//! compare-and-swap, see `task`).
//! Retries do not count (a retry must never be refused). Callback and handle deliveries that
//! find the bound reached are refused with `QueueFull`; blocking deliveries wait for room.
//!
//! # Waiting for room
//!
//! A waiter: (1) reads `epoch`, (2) `waiters += 1`, (3) tries to reserve again and checks for
//! shutdown, (4) `futex_wait(epoch, e)`, (5) `waiters -= 1`, and loops. A releaser (a worker, a
//! cancel) gives one place back: `queued -= 1`, then, if `waiters > 0`, bumps `epoch` and wakes one.
//! All of these are SeqCst, so either the waiter's re-try at (3) sees the released place, or
//! the releaser's load of `waiters` sees the waiter, whose `futex_wait` then returns because
//! `epoch` moved. Shutdown bumps `epoch` and wakes all: waiters re-check and refuse.
//!
//! # Waiting for room until a deadline
//!
//! The futex has no timed wait, so a submitter with a deadline ([`Capacity::reserve_until`])
//! waits on a condition variable instead: (1) lock `timed`, (2) `timed_waiters += 1`, (3) try
//! to reserve and check for shutdown and the deadline, (4) `wait_timeout` until the deadline
//! (the lock is let go while it waits), (5) `timed_waiters -= 1` under the lock, and loops. A
//! releaser, after its `queued -= 1`, reads `timed_waiters` and, if non-zero, takes and drops
//! the lock, then notifies all. All SeqCst: either the waiter's try at (3) sees the place, or
//! the releaser sees the waiter counted; the waiter held the lock from (2) to (4), so the
//! releaser's lock is taken only once the waiter waits, and its notify reaches it.

use crossbeam_utils::CachePadded;

use std::time::Instant;

use crate::sync::{AtomicU32, AtomicUsize, Condvar, Futex, Mutex, Ordering};

pub(crate) struct Capacity {
    limit: usize,
    queued: CachePadded<AtomicUsize>,
    waiters: AtomicU32,
    epoch: Futex,
    /// Submitters waiting with a deadline (see the module docs).
    timed_waiters: AtomicU32,
    timed: (Mutex<()>, Condvar),
}

/// How a wait for room with a deadline ended.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reserve {
    Reserved,
    Closed,
    DeadlinePassed,
}

impl Capacity {
    pub(crate) fn new(limit: usize) -> Self {
        Capacity {
            limit,
            queued: CachePadded::new(AtomicUsize::new(0)),
            waiters: AtomicU32::new(0),
            epoch: Futex::new(0),
            timed_waiters: AtomicU32::new(0),
            timed: (Mutex::new(()), Condvar::new()),
        }
    }

    /// Takes a place if there is one.
    #[inline]
    pub(crate) fn try_reserve(&self) -> bool {
        self.queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                (q < self.limit).then_some(q + 1)
            })
            .is_ok()
    }

    /// Takes a place, waiting for one; `false` if `closed()` became true first.
    pub(crate) fn reserve_blocking(&self, closed: impl Fn() -> bool) -> bool {
        loop {
            if self.try_reserve() {
                return true;
            }
            if closed() {
                return false;
            }
            let epoch = self.epoch.load(Ordering::SeqCst);
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let outcome = if self.try_reserve() {
                Some(true)
            } else if closed() {
                Some(false)
            } else {
                self.epoch.wait(epoch);
                None
            };
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Takes a place, waiting for one until `deadline` (steps in the module docs).
    pub(crate) fn reserve_until(&self, closed: impl Fn() -> bool, deadline: Instant) -> Reserve {
        if self.try_reserve() {
            return Reserve::Reserved;
        }
        let (lock, cv) = &self.timed;
        // Step 1.
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // Step 2.
            self.timed_waiters.fetch_add(1, Ordering::SeqCst);
            // Step 3.
            let outcome = if self.try_reserve() {
                Some(Reserve::Reserved)
            } else if closed() {
                Some(Reserve::Closed)
            } else {
                let now = Instant::now();
                if now >= deadline {
                    Some(Reserve::DeadlinePassed)
                } else {
                    // Step 4.
                    guard = cv
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    None
                }
            };
            // Step 5.
            self.timed_waiters.fetch_sub(1, Ordering::SeqCst);
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Gives a place back (a worker took the task, or the submission was refused after all).
    #[inline]
    pub(crate) fn release(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.epoch.wake_one();
        }
        if self.timed_waiters.load(Ordering::SeqCst) > 0 {
            self.wake_timed();
        }
    }

    /// Wakes the submitters waiting with a deadline (they re-check).
    #[cold]
    fn wake_timed(&self) {
        drop(self.timed.0.lock());
        self.timed.1.notify_all();
    }

    /// Shutdown: every waiter re-checks.
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.epoch.wake_all();
        self.wake_timed();
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicBool, thread};

    #[test]
    fn bound_is_exact() {
        let cap = Capacity::new(2);
        assert!(cap.try_reserve());
        assert!(cap.try_reserve());
        assert!(!cap.try_reserve());
        cap.release();
        assert!(cap.try_reserve());
        assert_eq!(cap.queued(), 2);
    }

    #[test]
    fn blocked_reserver_gets_a_released_place() {
        for _ in 0..200 {
            let cap = Arc::new(Capacity::new(1));
            assert!(cap.try_reserve());
            let waiter = {
                let cap = cap.clone();
                thread::spawn(move || cap.reserve_blocking(|| false))
            };
            cap.release();
            assert!(waiter.join().unwrap());
        }
    }

    #[test]
    fn a_deadline_reserver_gets_a_released_place_or_gives_up_at_its_deadline() {
        use std::time::Duration;
        for _ in 0..50 {
            let cap = Arc::new(Capacity::new(1));
            assert!(cap.try_reserve());
            let waiter = {
                let cap = cap.clone();
                thread::spawn(move || {
                    cap.reserve_until(|| false, Instant::now() + Duration::from_secs(60))
                })
            };
            cap.release();
            assert_eq!(waiter.join().unwrap(), Reserve::Reserved);
        }
        let cap = Capacity::new(1);
        assert!(cap.try_reserve());
        let deadline = Instant::now() + Duration::from_millis(5);
        assert_eq!(
            cap.reserve_until(|| false, deadline),
            Reserve::DeadlinePassed
        );
        assert!(Instant::now() >= deadline);
        assert_eq!(cap.reserve_until(|| true, deadline), Reserve::Closed);
    }

    #[test]
    fn blocked_reserver_gives_up_on_shutdown() {
        let cap = Arc::new(Capacity::new(1));
        assert!(cap.try_reserve());
        let closed = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (cap, closed) = (cap.clone(), closed.clone());
            thread::spawn(move || cap.reserve_blocking(|| closed.load(Ordering::SeqCst)))
        };
        closed.store(true, Ordering::SeqCst);
        cap.wake_all();
        assert!(!waiter.join().unwrap());
    }
}
