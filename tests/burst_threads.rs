//! Bursting never makes a thread after `build`: the process's OS thread count is the same
//! right after `build`, while burst slots come up, while they park again, when they come up a
//! second time, and right before `stop`.
//!
//! This file holds a single test, so no other test's threads come and go in the process while
//! it counts.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{Conn, Counts, DbError, TIMEOUT, builder, eventually};
use tasker::{TaskContext, TaskError, TaskManager, TaskStats};

const BASE: usize = 1;
const MAX: usize = 4;
const TASKS: usize = 300;

/// `Threads:` in `/proc/self/status`.
fn os_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .expect("a Threads: line")
        .trim()
        .parse()
        .expect("a thread count")
}

/// Queues `TASKS` tasks of 2 ms each (callbacks: no thread waits on them) and returns the
/// count of those that ended `Ok`.
fn submit_load(m: &TaskManager<Conn, DbError>) -> Arc<AtomicUsize> {
    let ok = Arc::new(AtomicUsize::new(0));
    for _ in 0..TASKS {
        let ok = ok.clone();
        m.queue_task_with_callback(
            |_: &mut Conn, _: &TaskContext| {
                thread::sleep(Duration::from_millis(2));
                Ok(())
            },
            move |r: Result<(), TaskError<DbError>>| {
                r.unwrap();
                ok.fetch_add(1, Ordering::SeqCst);
            },
        );
    }
    ok
}

fn wait_stats(m: &TaskManager<Conn, DbError>, what: &str, cond: impl Fn(&TaskStats) -> bool) {
    let mut last = m.stats();
    let held = eventually(|| {
        last = m.stats();
        cond(&last)
    });
    assert!(
        held,
        "never saw {what} within {TIMEOUT:?}; last stats: {last:?}"
    );
}

#[test]
fn the_os_thread_count_is_fixed_at_build_while_slots_go_up_and_down() {
    let before = os_threads();
    let counts = Counts::new();
    let m = builder(&counts)
        .pin_workers(false)
        .worker_count(BASE)
        .max_worker_count(MAX)
        .burst_interval(Duration::from_millis(20))
        .metrics_window(Duration::from_millis(200))
        .burst_keep_alive(Duration::ZERO)
        .thread_name_prefix("bCount")
        .build()
        .unwrap();
    let at_build = os_threads();
    // Every slot's thread (parked ones included) and the controller's, all made by `build`.
    assert_eq!(at_build, before + MAX + 1, "threads made by build");

    let mut seen = vec![("right after build", at_build)];
    let mut check = |when: &'static str| seen.push((when, os_threads()));

    for round in 0..2 {
        let ok = submit_load(&m);
        wait_stats(&m, "a burst slot up", |s| s.burst_workers > 0);
        check(if round == 0 {
            "first slot up"
        } else {
            "first slot up again"
        });
        wait_stats(&m, "every burst slot up", |s| s.burst_workers == MAX - BASE);
        check("all slots up");
        assert!(
            eventually(|| ok.load(Ordering::SeqCst) == TASKS),
            "tasks hung"
        );
        check("load drained");
        wait_stats(&m, "a burst slot parked", |s| s.burst_workers < MAX - BASE);
        check("a slot parked");
        wait_stats(&m, "every burst slot parked", |s| s.burst_workers == 0);
        check("every slot parked");
    }
    check("right before stop");

    for &(when, n) in &seen {
        assert_eq!(n, at_build, "thread count {when}: {seen:?}");
    }
    m.stop().unwrap();
    // A joined thread may still be counted for a moment while the kernel reaps it.
    assert!(
        eventually(|| os_threads() == before),
        "threads left after stop: {} (before build: {before})",
        os_threads()
    );
    assert_eq!(counts.created(), counts.destroyed());
}
