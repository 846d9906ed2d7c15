//! Blocking round-trip latency: one caller submits a no-op task and blocks until its answer,
//! again and again.
//!
//! Guards against regressions of the hand-off between a caller and a worker (DESIGN.md §5):
//! both sides must spin briefly before they sleep, or every round trip pays a futex sleep and
//! wake (4–47 µs) instead of a busy-wait hand-off (~0.1 µs); and `run_task` must stay a
//! pool take/put on the caller's thread with no queue in between. Contenders, 2 worker threads
//! each:
//!
//! - `tasker_queue_task`: `queue_task`, blocking;
//! - `tasker_run_task`: `run_task`, on the caller's thread with a pooled resource;
//! - `rayon_install`: `pool.install(|| ...)` from a thread outside the pool;
//! - `threadpool_reply`: `threadpool::ThreadPool::execute` answering on a
//!   `crossbeam_channel::bounded(1)` made per call;
//! - `tokio_spawn_blocking`: `rt.block_on(rt.spawn_blocking(..))` (blocking pool of 2);
//! - `channel_pool_reply`: the hand-written channel pool of `benches/common`, answering on a
//!   `bounded(1)` made per call.
//!
//! Each contender is its own criterion group (`latency/<contender>`) measured with
//! `iter_custom`, which gives criterion the mean. Every round trip is also recorded in an
//! `hdrhistogram` (nanoseconds; warm-up round trips included) and the group ends by printing
//! p50/p90/p99/p99.9/max to stdout. The clock is read once per round trip (consecutive stamps), so
//! the histogram intervals add up to exactly the time criterion sees; the ~3 ns `record` falls
//! inside them.
//!
//! tasker runs with the builder's defaults (workers pinned one per CPU); the peers are not
//! pinned.
//!
//! Then `latency_runs/*`: the tasker and channel-pool round trips again, in runs that each
//! build fresh pools, with each run's p50/p99 printed (see `latency_runs`): the round trip has
//! been seen fast in one run and slow in the next.
//!
//! Full run (about 2 min): `cargo bench -p tasker-benches --bench latency`
//! CI (quick): `cargo bench -p tasker-benches --bench latency -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{ChannelPool, WORKERS, latency_histogram, measurement_time, print_percentiles};
use criterion::Criterion;
use hdrhistogram::Histogram;
use tasker::TaskContext;

/// Benchmarks `round_trip` as the group `latency/<name>`, then prints its percentiles.
fn contender(c: &mut Criterion, name: &str, mut round_trip: impl FnMut()) {
    let mut hist: Histogram<u64> = latency_histogram();
    let mut group = c.benchmark_group(format!("latency/{name}"));
    group.measurement_time(measurement_time(Duration::from_secs(5)));
    timed_round_trips(&mut group, "round_trip", &mut hist, &mut round_trip);
    group.finish();
    print_percentiles(&format!("latency/{name}"), &hist);
}

fn latency(c: &mut Criterion) {
    {
        let manager = common::tasker_manager();
        contender(c, "tasker_queue_task", || {
            let v = manager
                .queue_task(|_: &mut (), _: &TaskContext| Ok::<u64, Infallible>(black_box(1)))
                .expect("no-op task succeeds");
            black_box(v);
        });
        contender(c, "tasker_run_task", || {
            let v = manager
                .run_task(|_: &mut (), _: &TaskContext| Ok::<u64, Infallible>(black_box(1)))
                .expect("no-op task succeeds");
            black_box(v);
        });
        manager.stop().expect("stop");
    }
    {
        let pool = common::rayon_pool();
        contender(c, "rayon_install", || {
            black_box(pool.install(|| black_box(1u64)));
        });
    }
    {
        let pool = threadpool::ThreadPool::new(WORKERS);
        contender(c, "threadpool_reply", || {
            let (tx, rx) = crossbeam_channel::bounded(1);
            pool.execute(move || {
                let _ = tx.send(black_box(1u64));
            });
            black_box(rx.recv().expect("worker answers"));
        });
        pool.join();
    }
    {
        let rt = common::tokio_runtime();
        contender(c, "tokio_spawn_blocking", || {
            let v = rt
                .block_on(rt.spawn_blocking(|| black_box(1u64)))
                .expect("blocking task succeeds");
            black_box(v);
        });
    }
    {
        let pool = ChannelPool::new(WORKERS);
        contender(c, "channel_pool_reply", || {
            let (tx, rx) = crossbeam_channel::bounded(1);
            pool.execute(move || {
                let _ = tx.send(black_box(1u64));
            });
            black_box(rx.recv().expect("worker answers"));
        });
    }
}

/// The idle blocking round trip again, in runs (`BENCH_ROUNDS`, default 5; 1 with `--quick`):
/// each run builds a fresh manager (fresh workers, fresh pinning and sleep state) and a fresh
/// channel pool, measures both (in an order rotated by one per run) and prints each run's
/// p50/p99, so a round trip that is fast in some runs and slow in others shows as such
/// instead of being averaged away. Groups `latency_runs/<contender>`, one benchmark per run.
fn latency_runs(c: &mut Criterion) {
    const NAMES: [&str; 2] = ["tasker_queue_task", "channel_pool_reply"];
    let mut figures: Vec<Vec<(u64, u64)>> = vec![Vec::new(); NAMES.len()];
    for run in 0..common::rounds() {
        for k in common::rotated(&[0usize, 1], run) {
            let mut hist: Histogram<u64> = latency_histogram();
            let mut group = c.benchmark_group(format!("latency_runs/{}", NAMES[k]));
            group.measurement_time(measurement_time(Duration::from_secs(2)));
            match k {
                0 => {
                    let manager = common::tasker_manager();
                    timed_round_trips(&mut group, &format!("run{run}"), &mut hist, || {
                        let v = manager
                            .queue_task(|_: &mut (), _: &TaskContext| {
                                Ok::<u64, Infallible>(black_box(1))
                            })
                            .expect("no-op task succeeds");
                        black_box(v);
                    });
                    manager.stop().expect("stop");
                }
                _ => {
                    let pool = ChannelPool::new(WORKERS);
                    timed_round_trips(&mut group, &format!("run{run}"), &mut hist, || {
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        pool.execute(move || {
                            let _ = tx.send(black_box(1u64));
                        });
                        black_box(rx.recv().expect("worker answers"));
                    });
                }
            }
            group.finish();
            print_percentiles(&format!("latency_runs/{}/run{run}", NAMES[k]), &hist);
            figures[k].push((hist.value_at_quantile(0.50), hist.value_at_quantile(0.99)));
        }
    }
    println!("latency_runs: p50 / p99 of each run, in ns");
    for (k, name) in NAMES.iter().enumerate() {
        let each: Vec<String> = figures[k]
            .iter()
            .map(|(p50, p99)| format!("{p50} / {p99}"))
            .collect();
        println!("  {name:<20} {}", each.join(", "));
    }
}

/// The benchmark `id` of `round_trip`, every round trip also recorded in `hist`.
fn timed_round_trips(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    hist: &mut Histogram<u64>,
    mut round_trip: impl FnMut(),
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut last = start;
            for _ in 0..iters {
                round_trip();
                let now = Instant::now();
                common::record(hist, now - last);
                last = now;
            }
            last - start
        });
    });
}

criterion::criterion_group!(benches, latency, latency_runs);
criterion::criterion_main!(benches);
