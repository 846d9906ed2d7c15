//! A one-way gate: shut until opened once, then open for good.
//!
//! Used where one thread must let others go on exactly once: `build` opening the start gate
//! for its workers once it knows whether every `on_create` succeeded, and the thread that
//! joined the workers telling every other caller of `stop`/`kill` that shutdown is complete.
//!
//! # Protocol
//!
//! The flag lives under the mutex. `open` sets it under the lock, then notifies every waiter;
//! `wait` checks it under the lock and waits on the condvar while it is unset. A waiter that
//! checked before `open` took the lock is already waiting when the notify comes (the condvar
//! wait releases the lock atomically), and one that checks after sees the flag: no wake-up is
//! lost. Poisoning is ignored: the flag is a plain `bool`, never left half-written.

use std::time::Instant;

use crate::sync::{Condvar, Mutex};

pub(crate) struct Latch {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Latch {
    pub(crate) fn new() -> Self {
        Latch {
            open: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    /// Opens the latch and releases every waiter, now and later. Opening twice is harmless.
    pub(crate) fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Returns once the latch is open.
    pub(crate) fn wait(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Returns once the latch is open (`true`) or `deadline` passed (`false`); `None` waits
    /// as long as it takes.
    pub(crate) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let Some(deadline) = deadline else {
            self.wait();
            return true;
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            open = self
                .opened
                .wait_timeout(open, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Arc, thread};

    #[test]
    fn waiters_before_and_after_the_open_all_pass() {
        let latch = Arc::new(Latch::new());
        let early: Vec<_> = (0..3)
            .map(|_| {
                let latch = latch.clone();
                thread::spawn(move || latch.wait())
            })
            .collect();
        latch.open();
        latch.open();
        for t in early {
            t.join().unwrap();
        }
        // Open for good: a later wait returns at once.
        latch.wait();
        assert!(latch.wait_until(Some(Instant::now())));
    }

    #[test]
    fn a_timed_wait_on_a_shut_latch_gives_up_at_its_deadline() {
        let latch = Latch::new();
        let deadline = Instant::now() + std::time::Duration::from_millis(5);
        assert!(!latch.wait_until(Some(deadline)));
        assert!(Instant::now() >= deadline);
    }
}
