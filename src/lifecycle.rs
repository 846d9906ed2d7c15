//! The submission gate and the shutdown sequence.
//!
//! # The word
//!
//! ```text
//!  word (usize): [ pending: accepted tasks without an outcome yet | KILLED | CLOSED ]
//! ```
//!
//! - A submitter *enters* with `fetch_add(ONE)`. If the previous value had `CLOSED`, it leaves
//!   again (`fetch_sub(ONE)`) and refuses the task with `ShuttingDown`; otherwise the task is
//!   accepted and counted in `pending` until its outcome is delivered ([`Lifecycle::finish`]).
//!   `run_task` enters the same way, so a running `run_task` also holds shutdown back.
//! - `stop` sets `CLOSED`; `kill` sets `CLOSED | KILLED`. Setting them is a single `fetch_or`:
//!   after it, no new task is accepted, because every later `fetch_add` returns a value with
//!   `CLOSED`.
//! - The manager is *drained* when `word == CLOSED (| KILLED)` with `pending == 0`. Workers exit
//!   only then, so every task accepted before `CLOSED` gets its outcome: it was counted before
//!   it was pushed, and the count drops only when its outcome is delivered.
//!
//! # Shutdown, in order
//!
//! 1. `stop`/`kill` set the bits (above); `kill` also sets the flag every `TaskContext` reads.
//! 2. They wake every sleeping worker and every submitter waiting for queue room.
//! 3. Workers keep taking tasks: after `stop` they run them (retries included); after `kill`
//!    they resolve each with `Killed` unrun. A running task finishes its current attempt.
//! 4. Whoever brings the word to "drained" (a worker delivering the last outcome, or a refused
//!    submitter leaving) wakes every worker, so sleepers see the exit condition.
//! 5. Each worker destroys its resource and exits; the last one out empties the `run_task`
//!    pool. `stop`/`kill` join the threads and empty the pool again (a no-op unless `build`
//!    failed before any worker ran).
//!
//! # Submit during shutdown
//!
//! A submitter whose `fetch_add` came before the `fetch_or` is accepted: its count is in
//! `pending`, so workers cannot exit before its task is pushed and resolved; the push is
//! followed by a wake, which reaches workers still waiting for `pending` to drop. A submitter
//! whose `fetch_add` came after is refused. A refused submitter's brief `+1/-1` can make
//! workers that looked at that moment go to sleep; its `-1` then drains the word and step 4
//! wakes them.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicUsize, Ordering};

const CLOSED: usize = 1;
const KILLED: usize = 2;
const ONE: usize = 4;

pub(crate) struct Lifecycle {
    word: CachePadded<AtomicUsize>,
}

/// Proof that a submission was accepted: it must end in [`Lifecycle::finish`].
#[must_use = "an accepted task must be finished"]
pub(crate) struct Admitted(());

/// What [`Lifecycle::finish`] left behind.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Still open, or other tasks still pending.
    Running,
    /// This was the last outcome after close: every worker must be woken to exit.
    Drained,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Lifecycle {
            word: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Enters the gate: `Ok` when accepted, `Err(drained)` when closed (`drained` as in
    /// [`Finished`]: the caller wakes workers when it is `Drained`).
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admitted, Finished> {
        let prev = self.word.fetch_add(ONE, Ordering::SeqCst);
        if prev & CLOSED == 0 {
            Ok(Admitted(()))
        } else {
            Err(self.leave())
        }
    }

    /// An accepted task got its outcome.
    #[inline]
    pub(crate) fn finish(&self, admitted: Admitted) -> Finished {
        let Admitted(()) = admitted;
        self.leave()
    }

    #[inline]
    fn leave(&self) -> Finished {
        let prev = self.word.fetch_sub(ONE, Ordering::SeqCst);
        if prev & CLOSED != 0 && prev < 2 * ONE {
            Finished::Drained
        } else {
            Finished::Running
        }
    }

    /// Sets `CLOSED` (and `KILLED`). Returns `Drained` if nothing was pending.
    pub(crate) fn close(&self, kill: bool) -> Finished {
        let bits = if kill { CLOSED | KILLED } else { CLOSED };
        let prev = self.word.fetch_or(bits, Ordering::SeqCst);
        if prev < ONE {
            Finished::Drained
        } else {
            Finished::Running
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word.load(Ordering::SeqCst) & CLOSED != 0
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.word.load(Ordering::SeqCst) & KILLED != 0
    }

    /// Closed with nothing pending: workers may exit.
    pub(crate) fn is_drained(&self) -> bool {
        let w = self.word.load(Ordering::SeqCst);
        w & CLOSED != 0 && w < ONE
    }

    /// Accepted tasks without an outcome yet.
    pub(crate) fn pending(&self) -> usize {
        self.word.load(Ordering::Relaxed) / ONE
    }

    #[cfg(test)]
    fn word(&self) -> usize {
        self.word.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_tasks_hold_the_drain_back() {
        let life = Lifecycle::new();
        let a = life.admit().ok().unwrap();
        let b = life.admit().ok().unwrap();
        assert_eq!(life.close(false), Finished::Running);
        assert!(life.is_closed() && !life.is_killed());
        assert!(matches!(life.admit(), Err(Finished::Running)));
        assert_eq!(life.finish(a), Finished::Running);
        assert!(!life.is_drained());
        assert_eq!(life.finish(b), Finished::Drained);
        assert!(life.is_drained());
        assert_eq!(life.word(), CLOSED);
    }

    #[test]
    fn refused_submitter_drains_an_empty_closed_gate() {
        let life = Lifecycle::new();
        assert_eq!(life.close(true), Finished::Drained);
        assert!(life.is_killed());
        assert!(matches!(life.admit(), Err(Finished::Drained)));
        assert!(life.is_drained());
    }
}
