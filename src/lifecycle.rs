//! The submission gate and the shutdown sequence.
//!
//! # The state
//!
//! ```text
//!  flags (one line, written only by stop/kill):  [ KILLED | CLOSED ]
//!  counts (one line per shard):                   accepted tasks in - outcomes out, as seen
//!                                                 by the threads of that shard
//! ```
//!
//! `pending` (accepted tasks without an outcome yet) is the sum of the shard counts. It is
//! sharded so that no cache line is written by every thread for every task: a thread only
//! writes the count of its own shard ([`Lifecycle::admit`] and [`Lifecycle::finish`] take the
//! shard; `Shared::shard` gives each worker a shard of its own and spreads other threads over
//! a few more), and reads the flags line, which is written twice in the manager's life.
//! A task is usually counted in on its submitter's shard and out on its worker's, so one shard
//! may go below zero; only the sum means anything.
//!
//! - A submitter *enters* with `fetch_add(1)` on its shard, then reads the flags. If `CLOSED`
//!   is set it leaves again (`fetch_sub(1)`) and refuses the task with `ShuttingDown`;
//!   otherwise the task is accepted and counted until its outcome is delivered
//!   ([`Lifecycle::finish`]). `run_task` enters the same way, so a running `run_task` also
//!   holds shutdown back.
//! - `stop` sets `CLOSED`; `kill` sets `CLOSED | KILLED`, with one `fetch_or` on the flags.
//! - The manager is *drained* when `CLOSED` is set and the sum is 0. Workers exit only then,
//!   so every task accepted before `CLOSED` gets its outcome: it was counted before it was
//!   pushed, and the count drops only when its outcome is delivered.
//!
//! # Why the sum cannot lie (every access below is `SeqCst`: one total order `S`)
//!
//! - *No task slips past the close.* A submitter writes its shard, then reads the flags; `close`
//!   writes the flags, then reads the shards (the store-buffering pattern). In `S`, either the
//!   submitter's flag read comes first (then its increment precedes the close's shard reads,
//!   which see it: the task holds the drain back), or the close's write does (then the
//!   submitter sees `CLOSED` and is refused).
//! - *No false "drained".* Once a thread has read `CLOSED`, every accepted task's increment
//!   precedes its shard reads in `S`, so it sees all of them; the decrements it sees are of
//!   tasks that really ended, or of refused submitters whose increment on the same shard it
//!   then also sees (a shard's count is read once, as a prefix of its own history). The sum it
//!   reads is therefore at least the number still pending: 0 means drained.
//! - *The drain is seen.* Every leave (an outcome, or a refused submitter) decrements, then
//!   reads the flags, then (when `CLOSED`) sums. The last decrement in `S` is followed by that
//!   thread's reads, which see every other change: it finds 0 and reports
//!   [`Finished::Drained`]. If its flag read came before the close, the close's own sum comes
//!   after every decrement and finds 0 instead. Two threads may both report it; waking every
//!   worker twice is harmless.
//!
//! # Shutdown, in order
//!
//! 1. `stop`/`kill` set the bits (above); `kill` also sets the flag every `TaskContext` reads.
//! 2. They wake every sleeping worker and every submitter waiting for queue room.
//! 3. Workers keep taking tasks: after `stop` they run them (retries included); after `kill`
//!    they resolve each with `Killed` unrun. A running task finishes its current attempt.
//! 4. Whoever finds the manager drained (a worker delivering the last outcome, a refused
//!    submitter leaving, or the close itself) wakes every worker, so sleepers see the exit
//!    condition.
//! 5. Each worker destroys its resource and exits; the last one out empties the `run_task`
//!    pool. `stop`/`kill` join the threads and empty the pool again (a no-op unless `build`
//!    failed before any worker ran).
//!
//! # Submit during shutdown
//!
//! A submitter whose flag read came before the `fetch_or` is accepted: its count is in the
//! sum, so workers cannot exit before its task is pushed and resolved; the push is followed
//! by a wake, which reaches workers still waiting for the sum to drop. A submitter whose read
//! came after is refused. A refused submitter's brief `+1/-1` can make workers that looked at
//! that moment go to sleep; its `-1` is then followed by its own sum, which finds the manager
//! drained, and step 4 wakes them.

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicIsize, AtomicUsize, Ordering, fence};

const CLOSED: usize = 1;
const KILLED: usize = 2;

pub(crate) struct Lifecycle {
    /// `CLOSED | KILLED`: written by `close` only; read on every admission.
    flags: CachePadded<AtomicUsize>,
    /// Tasks in minus outcomes out, per shard (see the module doc).
    counts: Box<[CachePadded<AtomicIsize>]>,
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
    /// The manager is closed and nothing is pending: every worker must be woken to exit.
    Drained,
}

impl Lifecycle {
    /// A gate with `shards` counts (at least one); callers pass shard indexes below it.
    pub(crate) fn new(shards: usize) -> Self {
        Lifecycle {
            flags: CachePadded::new(AtomicUsize::new(0)),
            counts: (0..shards.max(1))
                .map(|_| CachePadded::new(AtomicIsize::new(0)))
                .collect(),
        }
    }

    #[inline]
    fn count(&self, shard: usize) -> &AtomicIsize {
        &self.counts[shard % self.counts.len()]
    }

    /// Enters the gate on `shard`: `Ok` when accepted, `Err(drained)` when closed (`drained`
    /// as in [`Finished`]: the caller wakes workers when it is `Drained`).
    #[inline]
    pub(crate) fn admit(&self, shard: usize) -> Result<Admitted, Finished> {
        self.count(shard).fetch_add(1, Ordering::SeqCst);
        if self.flags.load(Ordering::SeqCst) & CLOSED == 0 {
            Ok(Admitted(()))
        } else {
            Err(self.leave(shard))
        }
    }

    /// An accepted task got its outcome; `shard` is the finishing thread's.
    #[inline]
    pub(crate) fn finish(&self, admitted: Admitted, shard: usize) -> Finished {
        let Admitted(()) = admitted;
        self.leave(shard)
    }

    #[inline]
    fn leave(&self, shard: usize) -> Finished {
        self.count(shard).fetch_sub(1, Ordering::SeqCst);
        if self.is_drained() {
            Finished::Drained
        } else {
            Finished::Running
        }
    }

    /// Sets `CLOSED` (and `KILLED`). Returns `Drained` if nothing was pending.
    pub(crate) fn close(&self, kill: bool) -> Finished {
        let bits = if kill { CLOSED | KILLED } else { CLOSED };
        self.flags.fetch_or(bits, Ordering::SeqCst);
        if self.sum() == 0 {
            Finished::Drained
        } else {
            Finished::Running
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & CLOSED != 0
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.flags.load(Ordering::SeqCst) & KILLED != 0
    }

    /// Closed with nothing pending: workers may exit. The shards are summed only once closed.
    #[inline]
    pub(crate) fn is_drained(&self) -> bool {
        self.is_closed() && self.sum() == 0
    }

    /// The shard counts' sum (see the module doc for when it can be trusted).
    ///
    /// The fence first: a thread that read `CLOSED` without writing anything (a worker asking
    /// whether it may exit) must still see every increment made by a submitter that read the
    /// flags open. That submitter's flag read is before the close's `fetch_or` in the `SeqCst`
    /// order (it read an older value), the `fetch_or` happens before this fence (this thread
    /// read `CLOSED` from it), so the flag read, and the increment before it, precede this
    /// fence in that order; loads after a `SeqCst` fence see every `SeqCst` write that
    /// precedes it. Plain `SeqCst` loads would give the same in the language's model, but a
    /// model checker that treats them as acquire loads does not (loom found a task stranded
    /// without the fence), and this runs only once the manager is closed.
    fn sum(&self) -> isize {
        fence(Ordering::SeqCst);
        self.counts.iter().map(|c| c.load(Ordering::SeqCst)).sum()
    }

    /// Accepted tasks without an outcome yet (a statistic: read while tasks come and go, the
    /// shards are not read at one instant).
    pub(crate) fn pending(&self) -> usize {
        let sum: isize = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        sum.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_tasks_hold_the_drain_back() {
        let life = Lifecycle::new(3);
        // Counted in on shards 0 and 1, out on shard 2 (a submitter's and a worker's).
        let a = life.admit(0).ok().unwrap();
        let b = life.admit(1).ok().unwrap();
        assert_eq!(life.pending(), 2);
        assert_eq!(life.close(false), Finished::Running);
        assert!(life.is_closed() && !life.is_killed());
        assert!(matches!(life.admit(0), Err(Finished::Running)));
        assert_eq!(life.finish(a, 2), Finished::Running);
        assert!(!life.is_drained());
        assert_eq!(life.pending(), 1);
        assert_eq!(life.finish(b, 2), Finished::Drained);
        assert!(life.is_drained());
        assert_eq!(life.pending(), 0);
    }

    #[test]
    fn refused_submitter_drains_an_empty_closed_gate() {
        let life = Lifecycle::new(2);
        assert_eq!(life.close(true), Finished::Drained);
        assert!(life.is_killed());
        assert!(matches!(life.admit(1), Err(Finished::Drained)));
        assert!(life.is_drained());
    }
}
