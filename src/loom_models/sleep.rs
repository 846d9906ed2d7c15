//! The sleep/wake protocol (`scheduler::sleep`): a worker that finds no task sleeps on a
//! futex; a submitter wakes one sleeper, skipping the syscall when a wake is already on its
//! way. The race it must survive: a submission landing while a worker decides to sleep.

use super::{Gate, Tally, explore, manager};
use crate::scheduler::sleep::{Sleep, Slept};
use crate::sync::{AtomicUsize, Ordering, StdArc, thread};

/// A stand-in for a lock-free queue: a count of tasks, pushed with a `Release` add and found
/// by an `Acquire` load before a CAS takes one. It is the weakest queue the sleep protocol
/// must work with: nothing but the protocol's own fences orders a push against a sleeper's
/// re-check, and the load may return a stale count. (The `sync::deque` stand-in shows a look
/// at a queue as the queue is at that point of the interleaving, which would hide this.)
struct Counted(AtomicUsize);

impl Counted {
    fn push(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    fn take(&self) -> Option<()> {
        let mut n = self.0.load(Ordering::Acquire);
        while n > 0 {
            match self
                .0
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(()),
                Err(actual) => n = actual,
            }
        }
        None
    }

    fn has_work(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// A minimal client of `Sleep` over a `Counted` queue, making the calls `next_task` makes in
/// the order it makes them (look, sleep with a re-check, `work_found` after a wake-up that
/// found work): returns `true` once it took a task, `false` when `done` says there is
/// nothing left to take. It is not a copy of the worker loop: the model below checks
/// `Sleep`'s contract for any such caller, and [`submit_racing_a_sleeping_worker_is_run`]
/// checks the real worker.
fn find_or_sleep(sleep: &Sleep, queue: &Counted, done: &dyn Fn() -> bool) -> bool {
    if queue.take().is_some() {
        return true;
    }
    let mut woken = false;
    loop {
        if queue.take().is_some() {
            if woken {
                sleep.work_found(queue.has_work());
            }
            return true;
        }
        if done() {
            return false;
        }
        let slept = sleep.sleep(|| match queue.take() {
            Some(()) => Some(Ok(())),
            None if done() => Some(Err(())),
            None => None,
        });
        match slept {
            Slept::Found(()) => {
                sleep.work_found(queue.has_work());
                return true;
            }
            Slept::Exit => return false,
            Slept::Woken => woken = true,
        }
    }
}

/// **Sleep/wake: a submission racing a worker that falls asleep loses no wake-up.**
///
/// A unit model of `Sleep`: worker threads run `find_or_sleep` over a queue stand-in that
/// gives no ordering of its own (`Counted`), while submitters push and `notify_one`. A lost
/// wake-up leaves a worker blocked on the futex with a task queued: loom reports the
/// deadlock. Scenarios: one worker and one submitter; one worker and two submitters (the
/// worker must get both, through the `WAKE_PENDING` skip and the `work_found` chain); two
/// workers and one submitter of two tasks, the first of which runs until the second is taken
/// (a parent waiting for its child: the second submission may find a wake-up in flight and
/// skip its own, and the woken worker must pass it on, or the second task waits behind a
/// sleeper for good). The worker that takes the last task wakes everyone (as the drained
/// lifecycle does), so the others exit. Ends with no sleeper counted.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): the three scenarios 59, 6 148 and 117 585
/// executions; 6.2 s in all.
///
/// It bites: without the fence at the top of `notify_one`, loom finds the lost wake-up (the
/// worker asleep with the task queued, the main thread joining it) in its first executions;
/// without the pass-on (`work_found`), the two-worker scenario leaves the second task queued
/// behind a sleeper.
pub fn submit_racing_a_worker_falling_asleep_loses_no_wakeup() {
    for (workers, submitters, tasks) in [(1, 1, 1), (1, 2, 2), (2, 1, 2)] {
        explore(
            &format!("sleep: {workers} worker(s), {submitters} submitter(s), {tasks} task(s)"),
            move || {
                let sleep = StdArc::new(Sleep::new());
                let queue = StdArc::new(Counted(AtomicUsize::new(0)));
                let taken = StdArc::new(AtomicUsize::new(0));
                // With two workers, a task taken before the last one runs until the last one
                // is taken (a parent waiting for its child): only the other worker can take
                // it.
                let all_taken = StdArc::new(Gate::default());
                let parallel = workers > 1;
                let workers: Vec<_> = (0..workers)
                    .map(|_| {
                        let (sleep, queue, taken) = (sleep.clone(), queue.clone(), taken.clone());
                        let all_taken = all_taken.clone();
                        thread::spawn(move || {
                            let done = || taken.load(Ordering::SeqCst) == tasks;
                            while find_or_sleep(&sleep, &queue, &done) {
                                if taken.fetch_add(1, Ordering::SeqCst) + 1 == tasks {
                                    all_taken.update(|s| s.0 = true);
                                    sleep.wake_all();
                                } else if parallel {
                                    all_taken.wait_for(|s| s.0);
                                }
                            }
                        })
                    })
                    .collect();
                let per_submitter = tasks / submitters;
                let others: Vec<_> = (1..submitters)
                    .map(|_| {
                        let (sleep, queue) = (sleep.clone(), queue.clone());
                        thread::spawn(move || {
                            for _ in 0..per_submitter {
                                queue.push();
                                sleep.notify_one();
                            }
                        })
                    })
                    .collect();
                for _ in 0..per_submitter {
                    queue.push();
                    sleep.notify_one();
                }
                for t in others.into_iter().chain(workers) {
                    t.join().unwrap();
                }
                assert!(!queue.has_work(), "the workers took every task");
                assert_eq!(taken.load(Ordering::SeqCst), tasks);
                assert_eq!(sleep.sleepers(), 0);
            },
        );
    }
}

/// **A submission racing the real worker as it falls asleep is run.**
///
/// A one-worker manager, built for real; its worker thread runs the shipped loop (search,
/// spin, sleep) while submitters each submit a task: the main thread a blocking
/// `queue_task` (its push wakes nobody; the wait pays the wake-up it owes, see
/// `completion`'s step 1a), and in the second scenario one more thread through
/// `queue_task_async`, waiting on its handle. A lost wake-up leaves a caller waiting
/// forever: loom reports the deadlock. Then `stop`.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): one submitter 6 026 executions, two
/// submitters 101 479; 14 s in all.
///
/// It bites: without the fence at the top of `notify_one` this model fails too (in its first
/// second); so it does when a blocking submission's wait never pays the wake-up it owes.
pub fn submit_racing_a_sleeping_worker_is_run() {
    for submitters in [1, 2] {
        explore(
            &format!("sleep, real worker: {submitters} submitter(s)"),
            move || {
                let manager = manager(1, 0, None);
                let tallies: Vec<_> = (0..submitters).map(|_| Tally::new()).collect();
                let others: Vec<_> = tallies[1..]
                    .iter()
                    .map(|tally| {
                        let (manager, tally) = (manager.clone(), tally.clone());
                        thread::spawn(move || {
                            let outcome = manager.queue_task_async(tally.body(0)).wait();
                            tally.record(&outcome);
                        })
                    })
                    .collect();
                let outcome = manager.queue_task(tallies[0].body(0));
                tallies[0].record(&outcome);
                for t in others {
                    t.join().unwrap();
                }
                manager.stop().unwrap();
                for tally in &tallies {
                    assert_eq!((tally.only(), tally.ran()), ("completed", 1));
                }
                super::assert_drained(&manager);
            },
        );
    }
}

/// **A task made inside a task lands on its worker's deque, and an idle peer runs it.**
///
/// A two-worker manager, built for real. The main thread submits a parent task whose body
/// submits a child (through `queue_task_with_callback` on a clone of the manager) and then
/// waits, on a gate, until the child has run: so only the other worker, perhaps asleep, can
/// run the child, by stealing it from the parent worker's local deque (`Shared::push` puts it
/// there and wakes a sleeper). A lost wake-up leaves the parent waiting forever: loom reports
/// the deadlock. Then `stop`.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 1 600 863 executions, 218 s.
///
/// It bites: a push to the local deque that skips the `notify_one` after it leaves the peer
/// asleep with the child in a deque only it could steal from.
pub fn a_task_made_inside_a_task_is_stolen_by_an_idle_peer() {
    explore("a task made inside a task, stolen by a peer", || {
        let manager = manager(2, 0, None);
        let (parent, child) = (Tally::new(), Tally::new());
        let gate = StdArc::new(Gate::default());
        let (inner, c, g) = (manager.clone(), child.clone(), gate.clone());
        let outcome = manager
            .queue_task_once_async(move |_: &mut (), _: &crate::TaskContext| {
                let (c2, g2) = (c.clone(), g.clone());
                let mut body = c.body(0);
                inner.queue_task_with_callback(
                    move |r: &mut (), ctx: &crate::TaskContext| {
                        let ran = body(r, ctx);
                        g2.update(|s| s.0 = true);
                        ran
                    },
                    move |outcome| c2.record(&outcome),
                );
                g.wait_for(|s| s.0);
                Ok::<u32, super::Unhealthy>(1)
            })
            .wait();
        parent.record(&outcome);
        manager.stop().unwrap();
        assert_eq!(parent.only(), "completed");
        assert_eq!((child.only(), child.ran()), ("completed", 1));
        super::assert_drained(&manager);
    });
}
