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

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU32, AtomicUsize, Futex, Ordering};

pub(crate) struct Capacity {
    limit: usize,
    queued: CachePadded<AtomicUsize>,
    waiters: AtomicU32,
    epoch: Futex,
}

impl Capacity {
    pub(crate) fn new(limit: usize) -> Self {
        Capacity {
            limit,
            queued: CachePadded::new(AtomicUsize::new(0)),
            waiters: AtomicU32::new(0),
            epoch: Futex::new(0),
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

    /// Gives a place back (a worker took the task, or the submission was refused after all).
    #[inline]
    pub(crate) fn release(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.epoch.wake_one();
        }
    }

    /// Shutdown: every waiter re-checks.
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.epoch.wake_all();
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
