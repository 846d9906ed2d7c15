//! Cost of the snapshots: one `manager.metrics()` and one `manager.stats()` call on a manager
//! that has already completed many tasks (default 1,000,000; env `BENCH_TASKS`).
//!
//! Guards the contract that both are "cheap snapshots, callable anytime" (DESIGN.md §2):
//! today a handful of relaxed loads over per-worker counters, queue lengths and the pool. A
//! regression that makes a snapshot lock, allocate, or walk data that grows with the number of
//! tasks run (e.g. merging unbounded histograms) shows up here, since the tasks are completed
//! before the measurement starts.
//!
//! Full run: `cargo bench --bench metrics`
//! CI (quick): `BENCH_TASKS=100000 cargo bench --bench metrics -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::thread;
use std::time::Duration;

use common::{env_usize, measurement_time};
use criterion::Criterion;
use tasker::TaskContext;

fn metrics(c: &mut Criterion) {
    let n = env_usize("BENCH_TASKS", 1_000_000);
    let manager = common::tasker_manager();
    for _ in 0..n {
        manager.queue_task_with_callback(
            |_: &mut (), _: &TaskContext| Ok::<(), Infallible>(()),
            |_| {},
        );
    }
    // A worker counts a task after its callback ran: wait on the counters themselves.
    while manager.metrics().total_tasks_completed < n as u64 {
        thread::yield_now();
    }
    let completed = manager.metrics().total_tasks_completed;
    assert_eq!(completed, n as u64, "every task is counted once");

    let mut group = c.benchmark_group("snapshot");
    group.measurement_time(measurement_time(Duration::from_secs(5)));
    group.bench_function("metrics", |b| b.iter(|| black_box(manager.metrics())));
    group.bench_function("stats", |b| b.iter(|| black_box(manager.stats())));
    group.finish();
    println!("snapshot: measured after {completed} completed tasks");
    manager.stop().expect("stop");
}

criterion::criterion_group!(benches, metrics);
criterion::criterion_main!(benches);
