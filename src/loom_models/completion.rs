//! The completion slot (`completion`, `task`): how one outcome reaches its submitter through
//! a handle (wait, poll, cancel, drop) while a worker completes, kills or finds the task
//! cancelled, and how the task cell is freed by whichever side lets go last.

use super::{Tally, Unhealthy, explore, manager};
use crate::completion::{self, Claim};
use crate::error::TaskError;
use crate::sync::{Arc, AtomicBool, Ordering, StdArc, StdAtomicUsize, UnsafeCell, thread};
use crate::task::{self, Many, TaskContext};

/// A task's value that checks its own lifetime: the producer writes it, and whoever drops it
/// (the consumer, or the last owner of the task cell) touches it again. Loom fails the model
/// if that drop is not ordered after the write, which is what a use-after-free of the cell
/// would look like. Drops are counted, so a leak or a double drop shows too.
struct Witness {
    value: UnsafeCell<u32>,
    drops: StdArc<StdAtomicUsize>,
}

impl Witness {
    fn new(value: u32, drops: &StdArc<StdAtomicUsize>) -> Self {
        let witness = Witness {
            value: UnsafeCell::new(0),
            drops: drops.clone(),
        };
        // SAFETY: not shared yet.
        witness.value.with_mut(|v| unsafe { *v = value });
        witness
    }

    fn read(&self) -> u32 {
        // SAFETY: loom checks this read against the producer's write.
        self.value.with(|v| unsafe { *v })
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        // SAFETY: `&mut self`; loom checks the access against the producer's write.
        self.value.with_mut(|v| unsafe { *v = 0 });
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the producer side of the completion model does with the task.
#[derive(Debug, Clone, Copy)]
enum Producer {
    /// A worker claims and runs it (`handle`, steps 2, 4, 5).
    Run,
    /// A worker claims it after `kill` and resolves it unrun (step 3).
    Kill,
}

/// What the consumer side does with the handle.
#[derive(Debug, Clone, Copy)]
enum Consumer {
    /// `TaskHandle::wait` (registers the thread's waker, parks).
    Wait,
    /// `.await` on a minimal executor (`loom::future::block_on`: polls, then waits for the
    /// waker).
    Poll,
    /// `cancel`, then `wait`.
    CancelThenWait,
    /// Drops the handle unread.
    Drop,
}

/// **Completion slot: complete vs. wait vs. cancel vs. drop.**
///
/// A unit model of one task cell: a thread plays the worker's side, calling the cell's
/// methods in the order `WorkerLoop::handle` does (claim, begin the attempt, run; or, after a
/// `kill`, resolve it unrun), then lets go of its `JobRef`, while the submitter waits on the
/// handle, polls it as a future, cancels it then waits, or drops it. Checked: the consumer
/// gets exactly one outcome and the right one; `cancel` returns `true` iff the body never ran
/// (for a task that would run); the value's write is ordered before every later access to it,
/// including the drop of the cell by whichever side lets go last (a use-after-free would
/// break that order: the cell's owners' count, `cells::Shared`, is loom's, and loom's
/// `UnsafeCell` checks the accesses); every value made is dropped exactly once.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 8 scenarios (2 producers x 4 consumers);
/// run: wait 220 executions, poll 622, cancel then wait 62, drop 4; kill: 263, 786, 72, 4;
/// 2 033 in all, 0.1 s.
///
/// Also checked: the count of woken waits that have not run yet (`completion`'s module docs,
/// steps 3-5: the workers' cue to yield their CPUs) is back where it was once both sides are
/// done, whichever of the fill and the wait took the `parked` flag back first, so it can
/// never leak; and a future or a dropped handle never makes a fill count a woken wait.
///
/// It bites: with `fill` storing `READY` `Relaxed` instead of `Release`, loom reports the
/// consumer's read of the value racing the producer's write. With a woken wait that returns
/// its outcome without taking its `parked` flag back, the count is left one too high. With
/// `Shared`'s drop counting down `Relaxed` and without its `Acquire` fence, loom reports the
/// last owner's drop of the value racing the producer's write (run vs. drop).
pub fn completion_slot_complete_vs_wait_vs_cancel_vs_drop() {
    for producer in [Producer::Run, Producer::Kill] {
        for consumer in [
            Consumer::Wait,
            Consumer::Poll,
            Consumer::CancelThenWait,
            Consumer::Drop,
        ] {
            explore(
                &format!("completion: {producer:?} vs {consumer:?}"),
                move || completion_case(producer, consumer),
            );
        }
    }
}

fn completion_case(producer: Producer, consumer: Consumer) {
    const VALUE: u32 = 7;
    let ran = StdArc::new(StdAtomicUsize::new(0));
    let drops = StdArc::new(StdAtomicUsize::new(0));
    let (job, handle) = {
        let (ran, drops) = (ran.clone(), drops.clone());
        task::with_handle::<(), Unhealthy, Witness, _>(
            Many(move |_: &mut (), _: &TaskContext| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(Witness::new(VALUE, &drops))
            }),
            false,
            0,
            None,
            0,
        )
    };
    // The woken-waiter counts (`completion`, steps 3-5) before this execution.
    let (woken_before, runnable_before) = completion::waiter_counts();
    let worker = thread::spawn(move || match job.claim() {
        // `resolve_unrun` for a cancelled task: the cell is let go, the slot keeps `Cancelled`.
        Claim::Cancelled => assert!(job.release().is_empty()),
        Claim::Held => match producer {
            Producer::Run => {
                assert_eq!(job.begin_attempt(), 1);
                let mut ctx = TaskContext::new(Arc::new(AtomicBool::new(false)));
                ctx.set_attempt(1);
                let delivered = job.run(&mut (), &ctx);
                assert!(matches!(delivered, Ok(ref c) if c.is_empty()));
                assert!(job.release().is_empty());
            }
            Producer::Kill => assert!(job.fail(TaskError::Killed).is_empty()),
        },
    });
    let (cancelled, outcome) = match consumer {
        Consumer::Wait => (false, Some(handle.wait())),
        Consumer::Poll => (false, Some(loom::future::block_on(handle))),
        Consumer::CancelThenWait => {
            let cancelled = handle.cancel();
            (cancelled, Some(handle.wait()))
        }
        Consumer::Drop => {
            drop(handle);
            (false, None)
        }
    };
    worker.join().unwrap();
    let (woken, runnable) = completion::waiter_counts();
    assert_eq!(
        runnable, runnable_before,
        "a wait the fill counted as woken uncounts itself once it runs, and no other \
         ({producer:?} vs {consumer:?}, woken {woken_before} -> {woken})"
    );
    if matches!(consumer, Consumer::Poll | Consumer::Drop) {
        assert_eq!(
            woken, woken_before,
            "only a blocking wait parks on the slot"
        );
    }
    let ran = ran.load(Ordering::Relaxed);
    assert!(ran <= 1);
    if cancelled {
        assert_eq!(ran, 0, "a cancelled task never runs");
    } else if let Producer::Run = producer
        && let Consumer::CancelThenWait = consumer
    {
        assert_eq!(
            ran, 1,
            "a cancel that failed found the task claimed, and it ran"
        );
    }
    match (outcome, producer) {
        (None, _) => {}
        (Some(Err(TaskError::Cancelled)), _) => assert!(cancelled),
        (Some(Ok(witness)), Producer::Run) => {
            assert!(!cancelled);
            assert_eq!(witness.read(), VALUE);
        }
        (Some(Err(TaskError::Killed)), Producer::Kill) => assert!(!cancelled),
        (Some(other), _) => panic!(
            "unexpected outcome {:?} for {producer:?}",
            other.map(|w| w.read())
        ),
    }
    assert_eq!(
        drops.load(Ordering::Relaxed),
        ran,
        "every value dropped exactly once"
    );
}

/// **A cancel racing the real worker's claim answers exactly once.**
///
/// A one-worker manager, built for real; the main thread submits a task through
/// `queue_task_async`, cancels it at once, and waits. The worker may claim it before or after
/// the cancel. Exactly one outcome: `Cancelled` when `cancel` returned `true` (and the body
/// never ran), `Ok` after exactly one run otherwise. Then `stop`, and nothing is pending (a
/// cancelled task still gives its admission ticket back, or `stop` would wait forever).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 2 803 executions, 0.2 s.
pub fn cancel_racing_the_worker_claim_answers_once() {
    explore("cancel vs the real worker's claim", || {
        let manager = manager(1, 0, None);
        let tally = Tally::new();
        let handle = manager.queue_task_async(tally.body(0));
        let cancelled = handle.cancel();
        let outcome = handle.wait();
        tally.record(&outcome);
        manager.stop().unwrap();
        match (tally.only(), tally.ran()) {
            ("cancelled", 0) => assert!(cancelled),
            ("completed", 1) => assert!(!cancelled),
            (other, ran) => panic!("{other} after {ran} run(s), cancel returned {cancelled}"),
        }
        super::assert_drained(&manager);
    });
}
