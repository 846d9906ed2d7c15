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
//! # A worker settles its outcomes in batches
//!
//! A worker's shard is written by that worker only, so it may hold back the decrements of the
//! outcomes it delivers: [`Lifecycle::finish_owned`] counts them in the shard's `owed` (a
//! plain word of the same line, written only by the owner) and applies them with one
//! `fetch_sub` once [`OWED_MAX`] are owed, once the manager is closed, and whenever the worker
//! stops taking tasks ([`Lifecycle::settle`]: before it searches, sleeps, parks, makes a
//! resource or exits). While it owes outcomes, a task it submits itself
//! ([`Lifecycle::admit_owned`]) takes one of them over instead of adding to the count: the
//! sum keeps the `+1` of a task that ended, which now stands for the new one. So a worker
//! whose tasks make tasks, or that delivers a stream of outcomes, writes its count about once
//! per [`OWED_MAX`] tasks instead of once or twice per task.
//!
//! Why the arguments above still hold: `owed` is never negative, so the sum never counts
//! fewer tasks than are pending, only more (a held-back decrement stands for an outcome that
//! was delivered): *no false "drained"* is unchanged. A task admitted against an owed outcome
//! reads the flags open before it is accepted, and the `+1` it takes over was made by an
//! accepted admission, which (its own flag read saw the gate open) precedes the close in `S`:
//! the close's sum sees that `+1` (*no task slips past the close*). *The drain is seen*:
//! after the close every outcome is applied at once, and an outcome held back from before the
//! close is applied when its worker stops taking tasks, which it does once nothing is left to
//! take; that `fetch_sub` is followed by the reads above like any other leave.
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

use crate::sync::{AtomicIsize, AtomicUsize, Ordering, StdAtomicIsize, fence};

const CLOSED: usize = 1;
const KILLED: usize = 2;

/// A worker applies its held-back outcomes once this many are owed (see the module doc).
#[cfg(not(loom))]
pub(crate) const OWED_MAX: isize = 32;
/// Small under loom, so the models reach the batch flush as well as the settle.
#[cfg(loom)]
pub(crate) const OWED_MAX: isize = 2;

/// One shard's line: its count, and the outcomes its owner (a worker) holds back.
struct Shard {
    count: AtomicIsize,
    /// Outcomes delivered by the owning worker and not yet subtracted from `count`; never
    /// negative. Written only by that worker (plain loads and stores); read by others only
    /// for [`Lifecycle::pending`], a statistic. Not a protocol word, so std's under loom too.
    owed: StdAtomicIsize,
}

pub(crate) struct Lifecycle {
    /// `CLOSED | KILLED`: written by `close` only; read on every admission.
    flags: CachePadded<AtomicUsize>,
    /// Tasks in minus outcomes out, per shard (see the module doc).
    counts: Box<[CachePadded<Shard>]>,
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
                .map(|_| {
                    CachePadded::new(Shard {
                        count: AtomicIsize::new(0),
                        owed: StdAtomicIsize::new(0),
                    })
                })
                .collect(),
        }
    }

    #[inline]
    fn shard(&self, shard: usize) -> &Shard {
        &self.counts[shard % self.counts.len()]
    }

    #[inline]
    fn count(&self, shard: usize) -> &AtomicIsize {
        &self.shard(shard).count
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

    /// [`admit`](Self::admit) for the worker that owns `shard`, on its own thread: takes over
    /// an owed outcome when it holds one (see the module doc), else admits as usual.
    #[inline]
    pub(crate) fn admit_owned(&self, shard: usize) -> Result<Admitted, Finished> {
        let owed = &self.shard(shard).owed;
        let held = owed.load(Ordering::Relaxed);
        if held == 0 {
            return self.admit(shard);
        }
        if self.flags.load(Ordering::SeqCst) & CLOSED == 0 {
            owed.store(held - 1, Ordering::Relaxed);
            return Ok(Admitted(()));
        }
        // Closed: apply what is owed (the drain must be seen) and refuse.
        Err(self.settle(shard))
    }

    /// [`finish`](Self::finish) for the worker that owns `shard`, on its own thread: holds the
    /// decrement back until [`OWED_MAX`] are owed or the manager is closed.
    #[inline]
    pub(crate) fn finish_owned(&self, admitted: Admitted, shard: usize) -> Finished {
        let Admitted(()) = admitted;
        let owed = &self.shard(shard).owed;
        let held = owed.load(Ordering::Relaxed) + 1;
        owed.store(held, Ordering::Relaxed);
        if held < OWED_MAX && self.flags.load(Ordering::SeqCst) & CLOSED == 0 {
            return Finished::Running;
        }
        self.settle(shard)
    }

    /// Applies the outcomes the worker that owns `shard` holds back (on its own thread), and
    /// reports the drain if that emptied a closed manager. A worker calls it whenever it stops
    /// taking tasks for a while (see the module doc).
    #[inline]
    pub(crate) fn settle(&self, shard: usize) -> Finished {
        let owed = &self.shard(shard).owed;
        let held = owed.load(Ordering::Relaxed);
        if held == 0 {
            return Finished::Running;
        }
        owed.store(0, Ordering::Relaxed);
        self.leave_many(shard, held)
    }

    #[inline]
    fn leave(&self, shard: usize) -> Finished {
        self.leave_many(shard, 1)
    }

    #[inline]
    fn leave_many(&self, shard: usize, n: isize) -> Finished {
        self.count(shard).fetch_sub(n, Ordering::SeqCst);
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
        self.counts
            .iter()
            .map(|c| c.count.load(Ordering::SeqCst))
            .sum()
    }

    /// Accepted tasks without an outcome yet (a statistic: read while tasks come and go, the
    /// shards are not read at one instant). Outcomes a worker holds back are subtracted.
    pub(crate) fn pending(&self) -> usize {
        let sum: isize = self
            .counts
            .iter()
            .map(|c| c.count.load(Ordering::Relaxed) - c.owed.load(Ordering::Relaxed))
            .sum();
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
    fn a_worker_holds_its_outcomes_back_until_a_batch_is_owed() {
        let life = Lifecycle::new(2);
        let owed = OWED_MAX as usize;
        // A submitter (shard 1) counts in owed + 1 tasks; the worker (shard 0) ends them.
        let mut tickets: Vec<_> = (0..=owed).map(|_| life.admit(1).ok().unwrap()).collect();
        for _ in 1..owed {
            let t = tickets.pop().unwrap();
            assert_eq!(life.finish_owned(t, 0), Finished::Running);
        }
        assert_eq!(life.count(0).load(Ordering::Relaxed), 0, "not written yet");
        assert_eq!(life.pending(), 2, "the statistic counts what is held back");
        // A task the worker makes takes a held-back outcome over: still no write.
        tickets.push(life.admit_owned(0).ok().unwrap());
        assert_eq!(life.count(0).load(Ordering::Relaxed), 0);
        assert_eq!(life.pending(), 3);
        // owed - 2 held back now: two more ends make a batch, applied with one write.
        for _ in 0..2 {
            let t = tickets.pop().unwrap();
            assert_eq!(life.finish_owned(t, 0), Finished::Running);
        }
        assert_eq!(life.count(0).load(Ordering::Relaxed), -(OWED_MAX));
        assert_eq!(life.pending(), 1);
        // With nothing held back, a task the worker makes is counted in.
        tickets.push(life.admit_owned(0).ok().unwrap());
        assert_eq!(life.count(0).load(Ordering::Relaxed), 1 - OWED_MAX);
        assert_eq!(life.pending(), 2);
        assert_eq!(
            life.finish_owned(tickets.pop().unwrap(), 0),
            Finished::Running
        );
        // Settling applies what is held back, once.
        assert_eq!(life.settle(0), Finished::Running);
        assert_eq!(life.count(0).load(Ordering::Relaxed), -(OWED_MAX));
        assert_eq!(life.settle(0), Finished::Running);
        assert_eq!(life.count(0).load(Ordering::Relaxed), -(OWED_MAX));
        assert_eq!(life.pending(), 1);
        assert_eq!(tickets.len(), 1);
    }

    #[test]
    fn a_closed_gate_makes_a_worker_settle_at_once_and_refuse() {
        let life = Lifecycle::new(2);
        let (a, b, c) = (
            life.admit(1).ok().unwrap(),
            life.admit(1).ok().unwrap(),
            life.admit(1).ok().unwrap(),
        );
        assert_eq!(life.finish_owned(a, 0), Finished::Running);
        assert_eq!(life.close(false), Finished::Running);
        // Held back from before the close: not drained while the worker owes it.
        assert!(!life.is_drained());
        // A task the worker makes now is refused, and what it owed is applied.
        assert!(matches!(life.admit_owned(0), Err(Finished::Running)));
        assert_eq!(life.count(0).load(Ordering::Relaxed), -1);
        // After the close every outcome is applied at once; the last one finds the drain.
        assert_eq!(life.finish_owned(b, 0), Finished::Running);
        assert_eq!(life.count(0).load(Ordering::Relaxed), -2);
        assert_eq!(life.finish_owned(c, 0), Finished::Drained);
        assert!(life.is_drained());
    }

    #[test]
    fn settling_after_the_close_reports_the_drain() {
        let life = Lifecycle::new(2);
        let a = life.admit(1).ok().unwrap();
        assert_eq!(life.finish_owned(a, 0), Finished::Running);
        assert_eq!(
            life.close(true),
            Finished::Running,
            "an outcome is held back"
        );
        assert_eq!(life.settle(0), Finished::Drained);
        assert!(life.is_drained());
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
