//! Retries (`worker`, step 5 of a task's path): an unhealthy task is re-queued on the priority
//! injector keeping its admission ticket. The race it must survive: the re-queue racing
//! `stop`/`kill`, with another worker perhaps asleep.

use super::{Tally, explore, manager};

/// **An unhealthy task's re-queue racing stop: the retry still runs before the workers
/// exit.**
///
/// A task fails unhealthy on its first attempt and succeeds on its second. A two-worker
/// manager, built for real (the retry goes to the priority queue and may be taken by the
/// other, perhaps sleeping, worker), runs it while the main thread calls `stop`. The task
/// keeps its admission ticket across the re-queue, so the workers cannot see the manager
/// drained before the retry ran: it completes exactly once, after exactly two runs. Second
/// scenario: `kill` instead of `stop`: exactly one outcome, `Ok` after two runs, `Failed`
/// after one (killed before the re-queue), or `Killed` (killed before a run, or before the
/// retry ran).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): stop 362 015 executions, kill 1 089 025;
/// 159 s in all.
///
/// It bites: a worker that gives the ticket back when it re-queues (and takes a fresh one)
/// lets `stop` drain first; the retry is then refused and the task ends `Killed`.
pub fn unhealthy_requeue_racing_stop() {
    for kill in [false, true] {
        explore(
            &format!(
                "unhealthy re-queue vs {}",
                if kill { "kill" } else { "stop" }
            ),
            move || {
                let manager = manager(2, 0, None);
                let tally = Tally::new();
                tally.submit_callback(&manager, 1);
                if kill {
                    manager.kill().unwrap();
                } else {
                    manager.stop().unwrap();
                }
                match (tally.only(), tally.ran()) {
                    ("completed", 2) => {}
                    ("failed", 1) | ("killed", 0) | ("killed", 1) if kill => {}
                    (other, ran) => panic!("the retried task: {other} after {ran} run(s)"),
                }
                super::assert_drained(&manager);
            },
        );
    }
}
