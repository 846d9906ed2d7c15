//! The idle/sleep protocol: how workers fall asleep and how submitters wake them.
//!
//! # States
//!
//! A worker is *busy* (running a task), *searching* (looking in the queues, spinning with
//! backoff) or *sleeping* (counted in `state`, blocked on the `epoch` futex). Two words:
//!
//! ```text
//!  state (u32):  [ sleepers: 31 bits | WAKE_PENDING: 1 bit ]
//!  epoch (u32):  futex word; bumped before every wake
//! ```
//!
//! `WAKE_PENDING` means "a wake-up is in flight and no sleeper has consumed it yet". While it is
//! set, submitters skip the wake syscall: one woken worker is enough to look at the queues, and
//! a worker that finds a task while more are queued wakes the next one (a chain, see
//! [`Sleep::work_found`]). This keeps the syscall off the submit path almost always.
//!
//! # Steps
//!
//! Falling asleep (worker, [`Sleep::sleep`]):
//! 1. `e = epoch.load(SeqCst)`
//! 2. `state += SLEEPER` (SeqCst), then a SeqCst fence
//! 3. re-check every queue and the shutdown condition; if anything is there, leave (step 5)
//!    and go back to work
//! 4. `futex_wait(epoch, e)`: blocks only while `epoch == e`
//! 5. leave: one CAS does `state -= SLEEPER` and clears `WAKE_PENDING`; then the worker
//!    searches the queues again before it may sleep again.
//!
//! Posting work (submitter, [`Sleep::notify_one`]):
//! 1. push the task into an injector
//! 2. SeqCst fence
//! 3. `s = state.load()`; if `sleepers(s) == 0` or `WAKE_PENDING` is set: done
//! 4. CAS `s -> s | WAKE_PENDING` (on failure reload and go to 3), then `epoch += 1` and
//!    `futex_wake_one(epoch)`.
//!
//! # Why a wake-up cannot be lost
//!
//! The loss would be: a worker checks the queues (empty), the submitter pushes and sees no
//! sleeper, the worker sleeps with a task queued. Step 2 of each side is a SeqCst operation
//! followed or preceded by a SeqCst fence, so the two fences are ordered: either the worker's
//! fence comes first, and then the submitter's load at step 3 sees the sleeper; or the
//! submitter's comes first, and then the worker's re-check at step 3 sees the pushed task.
//!
//! When the submitter sees a sleeper it wakes one unless `WAKE_PENDING` is set. If it is set,
//! some earlier submitter bumped (or is about to bump) `epoch` and woke a sleeper; every
//! sleeper counted in `state` clears the bit when it leaves (step 5) and then re-checks the
//! queues, so the task pushed here is seen by that worker. A sleeper that had not yet reached
//! step 4 when `epoch` was bumped does not block at all (`epoch != e`).
//!
//! A blocking submission makes steps 2-4 later than its push (`completion`, step 1a): ~0.5 µs
//! later if its task is still queued then, at the latest before its caller parks, and not at
//! all once a worker took the task. The argument above holds for each task on its own: its
//! notify comes after its push (so the pairing is unchanged, only later), and a task already
//! taken needs no wake-up. No other task depends on that notify: a submitter that skips its
//! own wake because `WAKE_PENDING` is set relies on the wake that set it, which happened,
//! and a worker's pass-on (`work_found`) is made by the worker, not by a submitter.
//!
//! Shutdown uses [`Sleep::wake_all`], which bumps `epoch` unconditionally: a worker that read
//! the old `epoch` at step 1 cannot block after it.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicU32, Futex, Ordering, fence};

const WAKE_PENDING: u32 = 1;
const SLEEPER: u32 = 2;

/// The sleep/wake state shared by every worker of one manager.
pub(crate) struct Sleep {
    state: CachePadded<AtomicU32>,
    epoch: CachePadded<Futex>,
}

/// What [`Sleep::sleep`] ended with.
#[must_use]
pub(crate) enum Slept<J> {
    /// The re-check at step 3 found this.
    Found(J),
    /// The re-check found the shutdown condition.
    Exit,
    /// The worker slept and was woken (or woke spuriously): search again.
    Woken,
}

impl Sleep {
    pub(crate) fn new() -> Self {
        Sleep {
            state: CachePadded::new(AtomicU32::new(0)),
            epoch: CachePadded::new(Futex::new(0)),
        }
    }

    /// Falls asleep unless `recheck` finds work or an exit. `recheck` returns `Some(Ok(job))`
    /// for a task, `Some(Err(()))` to exit, `None` when there is nothing.
    pub(crate) fn sleep<J>(&self, recheck: impl FnOnce() -> Option<Result<J, ()>>) -> Slept<J> {
        // Step 1.
        let epoch = self.epoch.load(Ordering::SeqCst);
        // Step 2.
        self.state.fetch_add(SLEEPER, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // Step 3.
        match recheck() {
            Some(Ok(job)) => {
                self.leave();
                return Slept::Found(job);
            }
            Some(Err(())) => {
                self.leave();
                return Slept::Exit;
            }
            None => {}
        }
        // Step 4.
        self.epoch.wait(epoch);
        // Step 5.
        self.leave();
        Slept::Woken
    }

    /// Step 5: stop being counted as a sleeper and consume any pending wake, in one RMW.
    fn leave(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let next = (s - SLEEPER) & !WAKE_PENDING;
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => s = actual,
            }
        }
    }

    /// Called by a submitter after pushing a task (and by a worker after re-queueing one).
    #[inline]
    pub(crate) fn notify_one(&self) {
        // Step 2.
        fence(Ordering::SeqCst);
        // Step 3.
        let s = self.state.load(Ordering::SeqCst);
        if s < SLEEPER || s & WAKE_PENDING != 0 {
            return;
        }
        self.wake_one_slow(s);
    }

    #[cold]
    fn wake_one_slow(&self, mut s: u32) {
        loop {
            // Step 4.
            match self.state.compare_exchange_weak(
                s,
                s | WAKE_PENDING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                    self.epoch.wake_one();
                    return;
                }
                Err(actual) => {
                    s = actual;
                    if s < SLEEPER || s & WAKE_PENDING != 0 {
                        return;
                    }
                }
            }
        }
    }

    /// A worker that just found a task tells the protocol; if more work is visible it passes
    /// the wake on, so a burst of submissions that each skipped the syscall still gets every
    /// sleeping worker up, one after the other.
    #[inline]
    pub(crate) fn work_found(&self, more_work: bool) {
        if more_work {
            self.notify_one();
        }
    }

    /// Wakes every sleeper (shutdown, or a state change every worker must see).
    pub(crate) fn wake_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.epoch.wake_all();
    }

    /// How many workers are counted as sleeping (for tests and models).
    #[cfg(any(test, loom))]
    pub(crate) fn sleepers(&self) -> u32 {
        self.state.load(Ordering::Relaxed) / SLEEPER
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Arc, AtomicBool, thread};

    /// A submitter racing a worker that is about to sleep: the worker always ends up seeing
    /// the flag (the stand-in for a queued task), never sleeping through it.
    #[test]
    fn submit_racing_sleep_is_never_lost() {
        for _ in 0..2_000 {
            let sleep = Arc::new(Sleep::new());
            let work = Arc::new(AtomicBool::new(false));
            let worker = {
                let (sleep, work) = (sleep.clone(), work.clone());
                thread::spawn(move || {
                    loop {
                        if work.load(Ordering::SeqCst) {
                            return;
                        }
                        let found = sleep.sleep(|| work.load(Ordering::SeqCst).then_some(Ok(())));
                        if let Slept::Found(()) = found {
                            return;
                        }
                    }
                })
            };
            work.store(true, Ordering::SeqCst);
            sleep.notify_one();
            worker.join().unwrap();
            assert_eq!(sleep.sleepers(), 0);
        }
    }
}
