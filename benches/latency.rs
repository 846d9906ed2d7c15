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
//! been seen fast in one run and slow in the next. Each run also prints the host's one-line
//! round trip between the two CPUs, measured just before and just after it
//! (`common::line_round_trip`): the round trip's mode follows it.
//!
//! Last, `latency_by_placement`: the tasker and channel-pool round trips in 100 ms windows,
//! each between two probes of the host's line round trip, grouped by what the probes found
//! (see `latency_by_placement`): on this VM the idle round trip is fast while the
//! hypervisor keeps the two vCPUs near each other, and slow while it keeps them apart.
//!
//! Full run (about 2 min): `cargo bench -p tasker-benches --bench latency`
//! CI (quick): `cargo bench -p tasker-benches --bench latency -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{
    ChannelPool, FAR_NS, NEAR_NS, Placement, WORKERS, latency_histogram, measurement_time,
    print_percentiles, quick_mode,
};
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
    // The host's line round trip before and after each run (see `common::line_round_trip`).
    let mut lines: Vec<Vec<(u64, u64)>> = vec![Vec::new(); NAMES.len()];
    let probe = || common::line_round_trip().unwrap_or(0);
    for run in 0..common::rounds() {
        for k in common::rotated(&[0usize, 1], run) {
            let before = probe();
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
            let after = probe();
            print_percentiles(&format!("latency_runs/{}/run{run}", NAMES[k]), &hist);
            println!("  host line round trip before / after the run: {before} / {after} ns");
            figures[k].push((hist.value_at_quantile(0.50), hist.value_at_quantile(0.99)));
            lines[k].push((before, after));
        }
    }
    println!("latency_runs: p50 / p99 of each run, in ns [host line round trip before / after it]");
    for (k, name) in NAMES.iter().enumerate() {
        let each: Vec<String> = figures[k]
            .iter()
            .zip(&lines[k])
            .map(|((p50, p99), (before, after))| format!("{p50} / {p99} [{before} / {after}]"))
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

/// The idle round trip split by the host's placement of the two CPUs: short windows
/// (`WINDOW`) of back-to-back round trips, each between two probes of the host's line round
/// trip (`common::line_round_trip`), tasker and the channel pool alternating window by
/// window, for `BENCH_PLACEMENT_SECS` (default 12; 2 with `--quick`). A window whose two
/// probes both found a *near* placement (under `NEAR_NS`) or both a *far* one (over `FAR_NS`)
/// counts for that placement; the rest are *mixed*. Prints, per contender and placement, the number
/// of windows and the median, lowest and highest of the windows' p50. Not a criterion
/// benchmark: the grouping is the figure.
fn latency_by_placement(_: &mut Criterion) {
    const WINDOW: Duration = Duration::from_millis(100);
    let secs = common::env_usize("BENCH_PLACEMENT_SECS", if quick_mode() { 2 } else { 12 });
    if common::line_round_trip().is_none() {
        println!("latency_by_placement: fewer than two CPUs, skipped");
        return;
    }
    // One window of round trips: the p50 in ns.
    fn window_p50(mut round_trip: impl FnMut()) -> u64 {
        let mut hist: Histogram<u64> = latency_histogram();
        let start = Instant::now();
        let mut last = start;
        while last - start < WINDOW {
            round_trip();
            let now = Instant::now();
            common::record(&mut hist, now - last);
            last = now;
        }
        hist.value_at_quantile(0.50)
    }
    let manager = common::tasker_manager();
    let pool = ChannelPool::new(WORKERS);
    // [contender][placement]: the windows' p50s.
    let mut p50s = vec![vec![Vec::new(); Placement::GROUPS.len()]; 2];
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < Duration::from_secs(secs as u64) {
        let before = common::line_round_trip();
        let p50 = if turn % 2 == 0 {
            window_p50(|| {
                let v = manager
                    .queue_task(|_: &mut (), _: &TaskContext| Ok::<u64, Infallible>(black_box(1)))
                    .expect("no-op task succeeds");
                black_box(v);
            })
        } else {
            window_p50(|| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                pool.execute(move || {
                    let _ = tx.send(black_box(1u64));
                });
                black_box(rx.recv().expect("worker answers"));
            })
        };
        let after = common::line_round_trip();
        p50s[turn % 2][Placement::around(before, after).row()].push(p50);
        turn += 1;
    }
    manager.stop().expect("stop");
    println!(
        "latency_by_placement: windows of {WINDOW:?}; host line round trip near < {NEAR_NS} \
         ns, far > {FAR_NS} ns (`common::Placement`); p50 of each window, in ns"
    );
    for (k, name) in ["tasker_queue_task", "channel_pool_reply"]
        .iter()
        .enumerate()
    {
        for (group, windows) in Placement::GROUPS.iter().zip(&mut p50s[k]) {
            let placement = group.name();
            windows.sort_unstable();
            match (windows.first(), windows.last()) {
                (Some(lo), Some(hi)) => println!(
                    "  {name:<20} {placement:<5} {:3} windows, p50 median {} (lowest {lo}, highest {hi})",
                    windows.len(),
                    windows[windows.len() / 2],
                ),
                _ => println!("  {name:<20} {placement:<5}   0 windows"),
            }
        }
    }
}

criterion::criterion_group!(benches, latency, latency_runs, latency_by_placement);
criterion::criterion_main!(benches);
