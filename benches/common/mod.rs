//! Helpers shared by the criterion suites in `benches/`: sizes read from the environment, the
//! `--quick` switch, the tasker manager and peer pools every suite builds the same way, the
//! plain channel pool used as a baseline, and latency histograms.
//!
//! Each suite uses only some of these, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use tasker::TaskManager;

/// Worker threads every contender gets (the machine has 2 cores).
pub const WORKERS: usize = 2;

/// The host's one-line round trip, in nanoseconds: two threads pinned to the first two CPUs
/// (where tasker's two workers are pinned) bounce one atomic word back and forth, and each
/// bounce is two transfers of its cache line between the CPUs. On this 2-vCPU VM it is not a
/// constant: it is ~20-40 ns in some seconds and ~120-250 ns in others (the hypervisor places
/// the two vCPUs on nearby or distant hardware threads, and moves them), and every hand-off
/// between a caller and a worker pays it several times. The latency suites print it next to
/// their figures so a run can be read against it. `None` with fewer than two CPUs.
pub fn line_round_trip() -> Option<u64> {
    const BOUNCES: u64 = 100_000;
    let word = AtomicU64::new(0);
    let word = &word;
    let elapsed = pinned_pair(
        move || {
            for i in 0..BOUNCES {
                while word.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                word.store(2 * i + 2, Ordering::Release);
            }
        },
        move || {
            for i in 0..BOUNCES {
                word.store(2 * i + 1, Ordering::Release);
                while word.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
            }
        },
    )?;
    Some((elapsed.as_nanos() / u128::from(BOUNCES)) as u64)
}

/// Runs `responder` on a thread pinned to the second CPU and `caller` on one pinned to the
/// first (where tasker pins its two workers), both at once; how long `caller` took. `None`
/// with fewer than two CPUs.
pub fn pinned_pair(
    responder: impl FnOnce() + Send,
    caller: impl FnOnce() + Send,
) -> Option<Duration> {
    let cores = core_affinity::get_core_ids()?;
    let (&first, &second) = (cores.first()?, cores.get(1)?);
    Some(thread::scope(|s| {
        s.spawn(move || {
            core_affinity::set_for_current(second);
            responder();
        });
        let timed = s.spawn(move || {
            core_affinity::set_for_current(first);
            let start = Instant::now();
            caller();
            start.elapsed()
        });
        timed.join().expect("the caller does not panic")
    }))
}

/// `name` parsed as a positive integer, or `default` when unset. Panics on a bad value, so a
/// typo in CI does not silently run the full-size suite.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => match v.trim().replace('_', "").parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name}={v:?}: expected a positive integer"),
        },
        Err(_) => default,
    }
}

/// True when criterion was given `--quick` (the CI smoke run).
pub fn quick_mode() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// How long criterion may measure one benchmark: short in `--quick` mode, where this is also
/// the cap on the doubling loop, so a suite of a dozen benchmarks stays well under a minute.
pub fn measurement_time(full: Duration) -> Duration {
    if quick_mode() {
        Duration::from_millis(800)
    } else {
        full
    }
}

/// The manager under test: `WORKERS` workers with the builder's defaults, so workers are pinned
/// one per CPU (round-robin), as a user gets them. The resource is `()`: these suites measure
/// the task path, not a resource.
/// A tasker manager with `WORKERS` workers and no burst slots (the peers get exactly
/// `WORKERS` threads too).
pub fn tasker_manager() -> TaskManager<(), Infallible> {
    tasker_builder().build().expect("build tasker manager")
}

/// The builder behind [`tasker_manager`], for benches that add a knob.
pub fn tasker_builder() -> tasker::Builder<(), Infallible> {
    TaskManager::builder()
        .on_create(|| Ok::<(), Infallible>(()))
        .worker_count(WORKERS)
        .max_worker_count(WORKERS)
}

/// A rayon pool with `WORKERS` threads.
pub fn rayon_pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(WORKERS)
        .thread_name(|i| format!("rayon-{i}"))
        .build()
        .expect("build rayon pool")
}

/// A tokio runtime whose blocking pool has `WORKERS` threads. It is a current-thread runtime:
/// `spawn_blocking` work runs only on the blocking pool, so no idle async worker competes for
/// the two cores.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(WORKERS)
        .build()
        .expect("build tokio runtime")
}

/// A boxed job for [`ChannelPool`].
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// The baseline: the simplest pool one would write by hand. `n` threads loop on `recv` from one
/// unbounded crossbeam channel and run each boxed closure. No pinning, no priorities, no
/// resources, no outcome tracking.
pub struct ChannelPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl ChannelPool {
    pub fn new(n: usize) -> Self {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::unbounded();
        let threads = (0..n)
            .map(|i| {
                let rx = rx.clone();
                thread::Builder::new()
                    .name(format!("chanpool-{i}"))
                    .spawn(move || {
                        while let Ok(job) = rx.recv() {
                            job();
                        }
                    })
                    .expect("spawn channel pool worker")
            })
            .collect();
        ChannelPool {
            tx: Some(tx),
            threads,
        }
    }

    #[inline]
    pub fn execute(&self, f: impl FnOnce() + Send + 'static) {
        self.tx
            .as_ref()
            .expect("pool is running")
            .send(Box::new(f))
            .expect("channel pool workers are alive");
    }
}

impl Drop for ChannelPool {
    fn drop(&mut self) {
        // Closing the channel ends every worker's `recv` loop once the queue is empty.
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Records `d` in nanoseconds (clamped to the histogram's range).
#[inline]
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Prints one line of percentiles for `name` to stdout (criterion's own output is untouched).
pub fn print_percentiles(name: &str, h: &Histogram<u64>) {
    if h.is_empty() {
        println!("{name}: no samples");
        return;
    }
    println!(
        "{name}: n={} p50={} p90={} p99={} p99.9={} max={}",
        h.len(),
        fmt_ns(h.value_at_quantile(0.50)),
        fmt_ns(h.value_at_quantile(0.90)),
        fmt_ns(h.value_at_quantile(0.99)),
        fmt_ns(h.value_at_quantile(0.999)),
        fmt_ns(h.max()),
    );
}

/// Busy-waits for `d` (a task that occupies its worker without sleeping).
#[inline]
pub fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Rounds for the suites that alternate their contenders (`BENCH_ROUNDS`; default 5, 1 in
/// `--quick` mode). Each round measures every contender once, in an order rotated by one per
/// round, so a slow stretch of a shared machine does not land on one contender only.
pub fn rounds() -> usize {
    env_usize("BENCH_ROUNDS", if quick_mode() { 1 } else { 5 })
}

/// `items` rotated left by `round` (the order the contenders run in, in that round).
pub fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

/// A probe of the host's line round trip ([`line_round_trip`]) under this many nanoseconds
/// found the two CPUs near each other.
pub const NEAR_NS: u64 = 60;
/// A probe over this many nanoseconds found them apart.
pub const FAR_NS: u64 = 90;

/// Where the host kept the two CPUs during a measurement, from two probes of the line round
/// trip taken just before and just after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Both probes under [`NEAR_NS`].
    Near,
    /// Both probes over [`FAR_NS`].
    Far,
    /// Anything else: the host moved them, or a probe fell in between.
    Mixed,
    /// No probe (fewer than two CPUs).
    Unknown,
}

impl Placement {
    /// The groups a figure is reported in, in this order ([`Self::row`]).
    pub const GROUPS: [Placement; 3] = [Placement::Near, Placement::Far, Placement::Mixed];

    /// What the probes `before` and `after` a measurement found.
    pub fn around(before: Option<u64>, after: Option<u64>) -> Self {
        match (before, after) {
            (Some(b), Some(a)) if b.max(a) < NEAR_NS => Placement::Near,
            (Some(b), Some(a)) if b.min(a) > FAR_NS => Placement::Far,
            (Some(_), Some(_)) => Placement::Mixed,
            _ => Placement::Unknown,
        }
    }

    /// Its index in [`Self::GROUPS`] (`Unknown` counts as mixed).
    pub fn row(self) -> usize {
        match self {
            Placement::Near => 0,
            Placement::Far => 1,
            Placement::Mixed | Placement::Unknown => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Placement::Near => "near",
            Placement::Far => "far",
            Placement::Mixed => "mixed",
            Placement::Unknown => "?",
        }
    }
}

/// Per-contender figures, one per round, printed as a summary once every round ran.
#[derive(Default)]
pub struct RoundFigures {
    /// (contender, figure of each round), in the order contenders were first seen.
    rows: Vec<(String, Vec<f64>)>,
    /// The host placement each round of that contender ran in, when known.
    placements: Vec<(String, Vec<Placement>)>,
}

impl RoundFigures {
    /// Adds `figure` to `name`'s rounds.
    pub fn push(&mut self, name: &str, figure: f64) {
        match self.rows.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(figure),
            None => self.rows.push((name.to_owned(), vec![figure])),
        }
    }

    /// Notes the host placement `name`'s latest round ran in.
    pub fn push_placement(&mut self, name: &str, placement: Placement) {
        match self.placements.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(placement),
            None => self.placements.push((name.to_owned(), vec![placement])),
        }
    }

    /// The median over `name`'s rounds (NaN when it has none).
    pub fn median_of(&self, name: &str) -> f64 {
        self.rows
            .iter()
            .find(|(n, _)| n == name)
            .map_or(f64::NAN, |(_, v)| median(v))
    }

    /// Prints one line per contender: every round's figure and their median, in `unit`.
    pub fn print(&self, title: &str, unit: &str) {
        let tagged = !self.placements.is_empty();
        println!(
            "{title}: median over rounds ({unit}), then each round in run order{}",
            if tagged {
                " (host placement around it; see `line_round_trip`)"
            } else {
                ""
            }
        );
        for (name, v) in &self.rows {
            let tags = self
                .placements
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.as_slice())
                .unwrap_or_default();
            let each: Vec<String> = v
                .iter()
                .enumerate()
                .map(|(i, x)| match tags.get(i) {
                    Some(t) => format!("{x:.2} {}", t.name()),
                    None => format!("{x:.2}"),
                })
                .collect();
            println!("  {name:<24} {:>8.2}   [{}]", median(v), each.join(", "));
        }
    }
}

/// A group for suites whose one iteration is a whole batch of `n` tasks: criterion reports
/// tasks per second; 10 equal-sized samples (flat sampling), a 1 s warm-up.
pub fn batch_group<'a>(
    c: &'a mut criterion::Criterion,
    name: String,
    n: usize,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(criterion::Throughput::Elements(n as u64))
        .sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement_time(Duration::from_secs(4)));
    group
}

/// Benchmarks `batch` as `id` in `group`: each call runs (and waits for) one batch of `n`
/// tasks; its rate, in million tasks per second, also goes into `rates`.
pub fn bench_batches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    n: usize,
    rates: &mut Vec<f64>,
    mut batch: impl FnMut(),
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                batch();
                let d = t.elapsed();
                rates.push(n as f64 / d.as_secs_f64() / 1e6);
                total += d;
            }
            total
        });
    });
}

/// Runs `bench(contender, id)` for every contender once per round ([`rounds`], in the order
/// [`rotated`] gives), with `id` = `<name>/round<k>`. `bench` measures that contender and
/// returns its per-batch figures, whose median becomes its figure for that round in
/// `summary`, tagged with the host placement probed just before and after it
/// ([`Placement::around`]).
pub fn alternate<C: Copy>(
    contenders: &[C],
    name: impl Fn(C) -> &'static str,
    summary: &mut RoundFigures,
    mut bench: impl FnMut(C, &str) -> Vec<f64>,
) {
    for round in 0..rounds() {
        for contender in rotated(contenders, round) {
            let before = line_round_trip();
            let figures = bench(contender, &format!("{}/round{round}", name(contender)));
            let after = line_round_trip();
            summary.push(name(contender), median(&figures));
            summary.push_placement(name(contender), Placement::around(before, after));
        }
    }
}
