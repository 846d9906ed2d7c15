//! Priority latency behind a backlog: how long a priority task waits to start while both
//! workers are busy with a deep queue of normal tasks.
//!
//! Guards the priority contract (DESIGN.md §3: a priority task starts before any normal task
//! still queued when it arrives) as a number: a worker looks in the priority injector before
//! every pick, so a priority task waits at most for the running normal task to finish (here
//! 20 µs), never for the backlog. A regression that lets it queue behind local deques or
//! batches, or behind the normal injector, shows up as latency in the milliseconds (the
//! backlog is 20,000 × 20 µs / 2 workers = 200 ms deep).
//!
//! Setup: one manager (builder defaults, 2 pinned workers) for the whole run. A backlog of
//! `BENCH_BACKLOG` (default 20,000) normal tasks, each spinning 20 µs, is queued with
//! `queue_task_with_callback`, and topped up (outside the timed interval) whenever it falls
//! below half, so every measurement happens behind at least half the backlog. Each measured
//! iteration submits one `queue_task_with_priority_async` task whose body reads
//! `Instant::now()` and returns it through the handle; the latency is from just before the
//! submit to that stamp. Criterion (`iter_custom`) reports the mean; every sample also goes
//! into an `hdrhistogram` whose p50/p90/p99/p99.9/max are printed to stdout at the end.
//!
//! Method notes (2 cores, 2 busy workers, 1 caller):
//! - The caller busy-waits on `is_finished` instead of parking in `wait`: with both cores
//!   busy, a parked caller waits for a scheduler time slice (milliseconds) before it can
//!   submit again, which made one µs-scale sample cost milliseconds of wall time. While it
//!   spins, the caller takes its core from one worker, so a priority task is mostly picked up
//!   by the other one: expect a p50 near half a backlog task (10 µs) and a p99 near a whole
//!   one (20 µs) on a quiet machine.
//! - Before each submit the caller pauses a pseudo-random 0–20 µs (untimed), so submissions
//!   are not in step with the backlog tasks' boundaries (they would be otherwise: the worker
//!   that ran the last priority task starts a fresh backlog task just as the caller submits).
//! - Criterion plans its iteration counts from the measured time only; the wall time is a few
//!   times that, hence the short warm-up and measurement times below.
//!
//!
//! A second group, `priority_blocking`, measures what the busy-wait above hides: the same
//! backlog, but the caller blocks as a user's code does, with `queue_task_with_priority`
//! (blocking inside the submit) or `queue_task_with_priority_async(..).wait()`, and the figure
//! is from just before the submit to the answer in the caller's hand. A parked caller on a
//! machine whose cores are all busy with pinned workers needs the kernel to give it a CPU back
//! before it can read its answer; that is the case this group shows. Both calls alternate in
//! rounds (`BENCH_ROUNDS`, default 5; 1 with `--quick`), each round's p50/p99 printed, then
//! the percentiles of all rounds together (and submit -> body start, for comparison).
//!
//! Full run (about 1 min): `cargo bench -p tasker-benches --bench priority`
//! CI (quick):
//!   `BENCH_BACKLOG=5000 cargo bench -p tasker-benches --bench priority -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{env_usize, latency_histogram, measurement_time, print_percentiles, spin_for};
use criterion::Criterion;
use hdrhistogram::Histogram;
use tasker::{TaskContext, TaskManager};

/// How long each backlog task keeps its worker busy.
const BACKLOG_TASK: Duration = Duration::from_micros(20);

/// Keeps `target` normal tasks queued (at least `target / 2` at any time).
struct Backlog {
    target: usize,
    /// Backlog tasks submitted and not yet run.
    remaining: Arc<AtomicUsize>,
}

impl Backlog {
    fn top_up(&self, manager: &TaskManager<(), Infallible>) {
        let now = self.remaining.load(Ordering::Acquire);
        if now >= self.target / 2 {
            return;
        }
        for _ in now..self.target {
            self.remaining.fetch_add(1, Ordering::Relaxed);
            let remaining = self.remaining.clone();
            manager.queue_task_with_callback(
                move |_: &mut (), _: &TaskContext| {
                    spin_for(BACKLOG_TASK);
                    remaining.fetch_sub(1, Ordering::Release);
                    Ok::<(), Infallible>(())
                },
                |_| {},
            );
        }
    }
}

/// A tiny deterministic PRNG for the pauses between submissions.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn priority(c: &mut Criterion) {
    let backlog = Backlog {
        target: env_usize("BENCH_BACKLOG", 20_000),
        remaining: Arc::new(AtomicUsize::new(0)),
    };
    let manager = common::tasker_manager();
    let mut hist: Histogram<u64> = latency_histogram();
    let mut group = c.benchmark_group("priority");
    // Criterion plans from the measured (submit -> start) time, but each iteration also pays
    // the caller's wake-up and, now and then, a top-up: wall time is several times the plan,
    // so the plan is kept short to hold the full run well under a minute.
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement_time(Duration::from_secs(4)));
    let mut min_backlog = usize::MAX;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    group.bench_function("behind_backlog", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                backlog.top_up(&manager);
                // A random pause of 0-20 µs (untimed), so submissions do not fall in step with
                // the backlog tasks' 20 µs boundaries.
                spin_for(Duration::from_nanos(
                    rng.next() % BACKLOG_TASK.as_nanos() as u64,
                ));
                min_backlog = min_backlog.min(backlog.remaining.load(Ordering::Relaxed));
                let submitted = Instant::now();
                let handle =
                    manager.queue_task_with_priority_async(|_: &mut (), _: &TaskContext| {
                        Ok::<Instant, Infallible>(Instant::now())
                    });
                // Busy-wait, never park: see the module docs.
                while !handle.is_finished() {
                    std::hint::spin_loop();
                }
                let started = handle.wait().expect("priority task succeeds");
                let waited = started.saturating_duration_since(submitted);
                common::record(&mut hist, waited);
                total += waited;
            }
            total
        });
    });
    group.finish();
    print_percentiles("priority/behind_backlog (submit -> body start)", &hist);
    println!(
        "priority/behind_backlog: backlog of {} x {} µs tasks, never below {} unfinished at a submit",
        backlog.target,
        BACKLOG_TASK.as_micros(),
        min_backlog
    );
    if min_backlog == 0 {
        println!("priority/behind_backlog: WARNING some samples ran with no backlog left");
    }
    blocking_callers(c, &backlog, &manager, &mut rng);
    // The rest of the backlog is not needed: resolve it unrun.
    manager.kill().expect("kill");
}

/// How a blocking caller asks for its priority task.
#[derive(Clone, Copy)]
enum BlockingCall {
    /// `queue_task_with_priority`: the caller blocks inside the submit.
    Blocking,
    /// `queue_task_with_priority_async(..).wait()`: the caller blocks on the handle.
    AsyncWait,
}

impl BlockingCall {
    const ALL: [BlockingCall; 2] = [BlockingCall::Blocking, BlockingCall::AsyncWait];

    fn name(self) -> &'static str {
        match self {
            BlockingCall::Blocking => "queue_task_with_priority",
            BlockingCall::AsyncWait => "async_wait",
        }
    }

    /// Submits a priority task whose body returns the instant it started, and blocks for it.
    fn call(self, manager: &TaskManager<(), Infallible>) -> Instant {
        let body = |_: &mut (), _: &TaskContext| Ok::<Instant, Infallible>(Instant::now());
        match self {
            BlockingCall::Blocking => manager.queue_task_with_priority(body),
            BlockingCall::AsyncWait => manager.queue_task_with_priority_async(body).wait(),
        }
        .expect("priority task succeeds")
    }
}

/// The priority round trip as a blocking caller sees it, behind the same backlog: from just
/// before the submit to the answer in the caller's hand (the caller is parked meanwhile, so
/// this includes the time it takes to get a CPU back from the busy workers). Both ways of
/// blocking alternate in rounds (`BENCH_ROUNDS`, rotated order); each round prints its own
/// p50/p99, then the merged percentiles of every round follow, with submit -> body start for
/// comparison with `behind_backlog`.
fn blocking_callers(
    c: &mut Criterion,
    backlog: &Backlog,
    manager: &TaskManager<(), Infallible>,
    rng: &mut XorShift,
) {
    let mut group = c.benchmark_group("priority_blocking");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement_time(Duration::from_secs(4)));
    let mut answered: Vec<Histogram<u64>> = BlockingCall::ALL
        .iter()
        .map(|_| latency_histogram())
        .collect();
    let mut started: Vec<Histogram<u64>> = BlockingCall::ALL
        .iter()
        .map(|_| latency_histogram())
        .collect();
    let mut min_backlog = usize::MAX;
    for round in 0..common::rounds() {
        for (k, call) in common::rotated(&[0usize, 1], round)
            .into_iter()
            .map(|k| (k, BlockingCall::ALL[k]))
        {
            let mut this_round: Histogram<u64> = latency_histogram();
            group.bench_function(format!("{}/round{round}", call.name()), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        backlog.top_up(manager);
                        spin_for(Duration::from_nanos(
                            rng.next() % BACKLOG_TASK.as_nanos() as u64,
                        ));
                        min_backlog = min_backlog.min(backlog.remaining.load(Ordering::Relaxed));
                        let submitted = Instant::now();
                        let start = call.call(manager);
                        let answer = Instant::now();
                        let waited = answer - submitted;
                        common::record(&mut this_round, waited);
                        common::record(&mut answered[k], waited);
                        common::record(&mut started[k], start.saturating_duration_since(submitted));
                        total += waited;
                    }
                    total
                });
            });
            print_percentiles(
                &format!(
                    "priority_blocking/{}/round{round} (submit -> answer)",
                    call.name()
                ),
                &this_round,
            );
        }
    }
    group.finish();
    for (k, call) in BlockingCall::ALL.iter().enumerate() {
        let name = call.name();
        print_percentiles(
            &format!("priority_blocking/{name}, all rounds (submit -> answer)"),
            &answered[k],
        );
        print_percentiles(
            &format!("priority_blocking/{name}, all rounds (submit -> body start)"),
            &started[k],
        );
    }
    println!(
        "priority_blocking: backlog of {} x {} µs tasks, never below {} unfinished at a submit",
        backlog.target,
        BACKLOG_TASK.as_micros(),
        min_backlog
    );
    if min_backlog == 0 {
        println!("priority_blocking: WARNING some samples ran with no backlog left");
    }
}

criterion::criterion_group!(benches, priority);
criterion::criterion_main!(benches);
