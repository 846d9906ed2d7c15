//! The lifecycle count (`lifecycle`: its flags and sharded counts) and shutdown: admission tickets, `stop` draining, `kill`
//! resolving what is queued. The race it must survive: submissions and running tasks racing
//! `stop`/`kill`, with the workers deciding when the manager is drained.

use super::{Gate, Tally, explore, manager};
use crate::sync::StdArc;
use crate::sync::thread;

/// **Stop racing a submission: the task is neither stranded nor run twice.**
///
/// A one-worker manager, built for real. Submitters (one or two threads) submit a callback
/// task each through `queue_task_with_callback` while the main thread calls `stop`. Each task
/// is either refused (`ShuttingDown`, never run) or accepted, and then run exactly once before
/// the worker exits: the worker must not exit with it queued (it would be stranded: it would
/// get no outcome) nor sleep through it (loom reports the deadlock). Second scenario: a task
/// was accepted before, and the submission races both. Third: two submitters race `stop`, so
/// one can be refused while the other is accepted and not yet pushed: the refused one's brief
/// `+1/-1` on its lifecycle shard must not let the worker exit with the accepted task on its
/// way.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): one submitter 13 872 executions, with a task
/// queued before 23 184, two submitters 362 301; 49 s in all.
///
/// The submitters count themselves in on another shard than the worker counts its tasks out
/// on, so the model checks the sum across shards.
///
/// It bites: with `Lifecycle::leave` looking for the drain before its decrement (the last task
/// out does not see the manager drained, so nobody wakes the sleeping worker), loom finds
/// `stop` joining a worker asleep; with `Lifecycle::admit` reading the flags before it counts
/// itself in, a task accepted after the close's sum found nothing pending is stranded.
pub fn stop_racing_a_submission_neither_strands_nor_runs_twice() {
    for (queued_before, submitters) in [(false, 1), (true, 1), (false, 2)] {
        explore(
            &format!("stop vs {submitters} submitter(s) (task queued before: {queued_before})"),
            move || {
                let manager = manager(1, 0, None);
                let early = Tally::new();
                if queued_before {
                    early.submit_callback(&manager, 0);
                }
                let racing: Vec<_> = (0..submitters)
                    .map(|_| {
                        let tally = Tally::new();
                        let (manager, mine) = (manager.clone(), tally.clone());
                        let submitter = thread::spawn(move || mine.submit_callback(&manager, 0));
                        (tally, submitter)
                    })
                    .collect();
                manager.stop().unwrap();
                for (tally, submitter) in racing {
                    submitter.join().unwrap();
                    match (tally.only(), tally.ran()) {
                        ("completed", 1) | ("refused", 0) => {}
                        (other, ran) => panic!("stop gave a task {other} after {ran} run(s)"),
                    }
                }
                if queued_before {
                    assert_eq!((early.only(), early.ran()), ("completed", 1));
                }
                super::assert_drained(&manager);
            },
        );
    }
}

/// **Kill racing queued and running tasks resolves each exactly once.**
///
/// A one-worker manager, built for real. A callback task is submitted first; a second task is
/// submitted (through `queue_task_async`) on another thread while the main thread calls
/// `kill`, and its handle is waited on after. The worker may be running the first when `kill`
/// lands, or have either queued. Each task gets exactly one outcome: `Ok` when its body ran
/// (a running task finishes its attempt), `Killed` when it was resolved unrun,
/// `ShuttingDown` for a refused submission; and `kill` returns (the worker exited).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 58 286 executions, 6.9 s.
///
/// It bites: the same early drain check in `Lifecycle::leave` fails it too.
pub fn kill_racing_queued_and_running_tasks_resolves_each_once() {
    explore("kill vs queued and running tasks", || {
        let manager = manager(1, 0, None);
        let first = Tally::new();
        first.submit_callback(&manager, 0);
        let second = Tally::new();
        let submitter = {
            let (manager, second) = (manager.clone(), second.clone());
            thread::spawn(move || {
                let outcome = manager.queue_task_async(second.body(0)).wait();
                second.record(&outcome);
            })
        };
        manager.kill().unwrap();
        submitter.join().unwrap();
        for (name, tally) in [("first", &first), ("second", &second)] {
            match (tally.only(), tally.ran()) {
                ("completed", 1) | ("killed", 0) => {}
                ("refused", 0) if name == "second" => {}
                (other, ran) => panic!("{name} task: {other} after {ran} run(s)"),
            }
        }
        super::assert_drained(&manager);
    });
}

/// **After `kill`, a caller resolving the queue races the worker: each task once.**
///
/// What `stop_timeout` does at its deadline when every worker is busy: it kills, then takes
/// what is still queued and resolves it on its own thread (`Shared::kill_queued`). A
/// one-worker manager, built for real; its worker is held inside a first task (on a gate), a
/// second task is queued behind it. Another thread calls `kill` (which waits for the
/// workers); the main thread runs `kill_queued`, then opens the gate, so the worker, once free,
/// looks at the queue too. The queued task must get exactly one outcome, `Killed`, and never
/// run, whoever took it; the held task completes; `kill` returns.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 5 589 executions, 0.6 s.
///
/// It bites: a `kill_queued` that does not give the task's admission ticket back leaves `kill`
/// waiting for a drain that never comes.
pub fn kill_queued_racing_the_worker_resolves_each_once() {
    explore("kill_queued vs the worker", || {
        let manager = manager(1, 0, None);
        let gate = StdArc::new(Gate::default());
        let held = Tally::new();
        {
            let (gate, tally, ran) = (gate.clone(), held.clone(), held.clone());
            manager.queue_task_once_with_callback(
                move |_: &mut (), _: &crate::TaskContext| {
                    ran.ran.fetch_add(1, crate::sync::Ordering::Relaxed);
                    gate.update(|s| s.0 = true);
                    gate.wait_for(|s| s.1);
                    Ok::<u32, super::Unhealthy>(1)
                },
                move |outcome| tally.record(&outcome),
            );
        }
        gate.wait_for(|s| s.0);
        let queued = Tally::new();
        queued.submit_callback(&manager, 0);
        let killer = {
            let manager = manager.clone();
            thread::spawn(move || manager.kill().unwrap())
        };
        manager.shared().kill_queued();
        gate.update(|s| s.1 = true);
        killer.join().unwrap();
        assert_eq!((held.only(), held.ran()), ("completed", 1));
        assert_eq!((queued.only(), queued.ran()), ("killed", 0));
        super::assert_drained(&manager);
    });
}

/// **Stop racing tasks made inside tasks on a worker that holds its outcomes back.**
///
/// A one-worker manager, built for real. The main thread submits a parent whose body submits
/// a child, whose body submits a grandchild (each through `queue_task_with_callback` on a
/// clone of the manager), and calls `stop` meanwhile. The worker delivers the parent's
/// outcome and holds its decrement back (`Lifecycle::finish_owned`); the grandchild is then
/// admitted against that held-back outcome instead of being counted in
/// (`Lifecycle::admit_owned`), unless the close came first. Each task made is either refused
/// (`ShuttingDown`, never run: then it makes no task) or run exactly once; the worker neither
/// exits before every accepted task ran (it would be stranded) nor sleeps with an outcome held
/// back (`stop` would wait for a drain nobody reports: loom reports the deadlock); and the
/// count is 0 at the end.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 916 executions, 0.07 s.
///
/// It bites: an `admit_owned` that takes an owed outcome over without using it up lets the
/// manager look drained with a task still queued (`.ci/loom-mutations.py`); and
/// `stop_racing_a_submission_neither_strands_nor_runs_twice` fails when a worker searches
/// without settling first (the drain is never reported).
pub fn stop_racing_tasks_made_on_a_worker_that_holds_outcomes_back() {
    explore(
        "stop vs tasks made inside tasks (outcomes held back)",
        || {
            let manager = manager(1, 0, None);
            let tallies = [Tally::new(), Tally::new(), Tally::new()];
            submit_chain(&manager, &tallies, 0);
            manager.stop().unwrap();
            assert_eq!(
                tallies[0].only(),
                "completed",
                "the parent was accepted first"
            );
            for depth in 1..tallies.len() {
                let tally = &tallies[depth];
                if tallies[depth - 1].ran() == 0 {
                    // Its parent was refused: never made.
                    assert_eq!((tally.ran(), Tally::get(&tally.refused)), (0, 0));
                    continue;
                }
                match (tally.only(), tally.ran()) {
                    ("completed", 1) | ("refused", 0) => {}
                    (other, ran) => panic!("task at depth {depth}: {other} after {ran} run(s)"),
                }
            }
            super::assert_drained(&manager);
        },
    );
}

/// Submits the task at `depth` of the chain; its body submits the next one.
fn submit_chain(manager: &super::Manager, tallies: &[StdArc<Tally>; 3], depth: usize) {
    let tally = tallies[depth].clone();
    let mut body = tally.body(0);
    let (inner, all) = (manager.clone(), tallies.clone());
    manager.queue_task_with_callback(
        move |r: &mut (), ctx: &crate::TaskContext| {
            if depth + 1 < all.len() {
                submit_chain(&inner, &all, depth + 1);
            }
            body(r, ctx)
        },
        move |outcome| tally.record(&outcome),
    );
}
