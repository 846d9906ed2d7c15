//! Cost of metrics, both ways:
//!
//! - `snapshot/metrics`, `snapshot/stats`: one `manager.metrics()` / `manager.stats()` call on
//!   a manager that has already completed many tasks (default 1,000,000; env `BENCH_TASKS`).
//!   Guards "cheap snapshots, callable anytime" (DESIGN.md §2): `metrics()` merges one pair of
//!   fixed-size histograms per worker and sums counters and windows. A regression that makes a
//!   snapshot walk data that grows with the number of tasks run shows up here, since the tasks
//!   are completed before the measurement starts.
//! - `recording/default`, `recording/noop_collector`: fire-and-forget throughput (callbacks,
//!   1 submitter) of a manager with the built-in metrics only, and of one that also sends
//!   every event to a `NoopCollector`. Guards the cost of the collector hook on the task path
//!   (goal: under 5 %).
//!
//! Full run: `cargo bench -p tasker-benches --bench metrics`
//! CI (quick):
//!   `BENCH_TASKS=100000 cargo bench -p tasker-benches --bench metrics -- --quick --noplot`

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

/// Fire-and-forget throughput with and without a (no-op) collector.
fn recording(c: &mut Criterion) {
    use criterion::Throughput;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let n = env_usize("BENCH_TASKS", 1_000_000) / 4;
    let mut group = c.benchmark_group("recording");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.measurement_time(measurement_time(Duration::from_secs(10)));
    for (name, collector) in [("default", false), ("noop_collector", true)] {
        let mut builder = common::tasker_builder();
        if collector {
            builder = builder.metrics_collector(tasker::NoopCollector);
        }
        let manager = builder.build().expect("build");
        group.bench_function(name, |b| {
            b.iter(|| {
                DONE.store(0, Ordering::Relaxed);
                for i in 0..n {
                    manager.queue_task_with_callback(
                        move |_: &mut (), _: &TaskContext| Ok::<usize, Infallible>(black_box(i)),
                        |_| {
                            DONE.fetch_add(1, Ordering::Relaxed);
                        },
                    );
                }
                while DONE.load(Ordering::Acquire) < n {
                    thread::yield_now();
                }
            })
        });
        manager.stop().expect("stop");
    }
    group.finish();
}

criterion::criterion_group!(benches, metrics, recording);
criterion::criterion_main!(benches);
