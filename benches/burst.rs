//! Bursting: how fast the controller brings burst slots up under a step of load and parks them
//! again once it ends, and what bursting costs in throughput against a fixed pool of the same
//! maximum size.
//!
//! Guards the burst controller (`src/burst.rs`) and the slot state machine in the workers:
//!
//! - `burst/step_load` (printed to stdout, not a criterion benchmark): a fresh manager with
//!   `worker_count(2)`, `max_worker_count(4)`, `burst_interval(20 ms)`,
//!   `metrics_window(200 ms)` and `burst_keep_alive(0)`, idle, gets a step of load: a batch of
//!   tasks that each sleep 2 ms (a worker waiting on its resource, the load bursting is for).
//!   *Scale-up* is the time from the step until `stats().burst_workers` first reaches the
//!   highest value it takes during the load (the maximum, 2, unless the load ends first).
//!   *Scale-down* is the time from the last task's outcome until `burst_workers` is 0 again
//!   (capped at 5 s; a slot that never parks prints as "never"). With these settings the
//!   rule needs the metrics window to forget the load and then `DOWN_TICKS` decisions per
//!   slot, so scale-down is a few hundred milliseconds by design, and scale-up a tick or two.
//!   A regression that stops slots from coming up (or from parking) shows as a jump here.
//!   Printed: p50, min and max over the repetitions (default 7; env `BENCH_BURST_REPS`; 3 in
//!   quick mode).
//! - `burst/throughput` (criterion): a fixed batch of tasks that each spin 50 µs (default
//!   4,000; env `BENCH_BURST_TASKS`), submitted with callbacks from one thread, then waited
//!   for; `bursting_base2_max4` (the step-load configuration) against `fixed_4`
//!   (`worker_count(4)`, `max_worker_count(4)`: no slots, no controller). Criterion reports
//!   elements/s. On the 2-core test machine four spinning workers cannot beat two cores, so
//!   this measures bursting's own overhead (the controller thread, busy-time accounting,
//!   slots going up and down between batches): the two should stay close.
//!
//! Workers are unpinned in both scenarios (four workers on two cores, on a machine other jobs
//! share).
//!
//! Full run (about 30 s plus the build): `cargo bench -p tasker-benches --bench burst`
//! Quick (CI smoke, well under a minute):
//!   `cargo bench -p tasker-benches --bench burst -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{env_usize, measurement_time, quick_mode, spin_for};
use criterion::{Criterion, SamplingMode, Throughput};
use tasker::{TaskContext, TaskManager};

const BASE: usize = 2;
const MAX: usize = 4;
/// Tasks in one step of load: 2 ms each, so about 0.4 s of work for two workers.
const STEP_TASKS: usize = 400;
const STEP_TASK: Duration = Duration::from_millis(2);
/// Scale-down is given up on after this long.
const DOWN_CAP: Duration = Duration::from_secs(5);
const SPIN: Duration = Duration::from_micros(50);

/// The bursting configuration under test (`max == base` turns bursting off).
fn manager(base: usize, max: usize, prefix: &str) -> TaskManager<(), Infallible> {
    TaskManager::builder()
        .on_create(|| Ok::<(), Infallible>(()))
        .worker_count(base)
        .max_worker_count(max)
        .burst_interval(Duration::from_millis(20))
        .metrics_window(Duration::from_millis(200))
        .burst_keep_alive(Duration::ZERO)
        .pin_workers(false)
        .thread_name_prefix(prefix)
        .build()
        .expect("build tasker manager")
}

/// One step: (scale-up time, peak burst slots, scale-down time or `None` past the cap).
fn step_once() -> (Duration, usize, Option<Duration>) {
    let m = manager(BASE, MAX, "bstep");
    let done = Arc::new(AtomicUsize::new(0));
    let step = Instant::now();
    for _ in 0..STEP_TASKS {
        let done = done.clone();
        m.queue_task_with_callback(
            |_: &mut (), _: &TaskContext| {
                thread::sleep(STEP_TASK);
                Ok(())
            },
            move |r: Result<(), _>| {
                r.expect("a sleeping task succeeds");
                done.fetch_add(1, Ordering::Release);
            },
        );
    }
    let (mut peak, mut peak_at) = (0, step);
    while done.load(Ordering::Acquire) < STEP_TASKS {
        let up = m.stats().burst_workers;
        if up > peak {
            (peak, peak_at) = (up, Instant::now());
        }
        thread::sleep(Duration::from_micros(200));
    }
    let end = Instant::now();
    let down = loop {
        if m.stats().burst_workers == 0 {
            break Some(end.elapsed());
        }
        if end.elapsed() > DOWN_CAP {
            break None;
        }
        thread::sleep(Duration::from_micros(200));
    };
    m.stop().expect("stop");
    (peak_at - step, peak, down)
}

fn p50(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    v.sort();
    format!(
        "p50={:.1?} min={:.1?} max={:.1?}",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

/// The step-load scenario, printed (criterion's own output is untouched).
fn step_load(_: &mut Criterion) {
    let reps = if quick_mode() {
        3
    } else {
        env_usize("BENCH_BURST_REPS", 7)
    };
    let (mut ups, mut peaks, mut downs, mut never) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..reps {
        let (up, peak, down) = step_once();
        ups.push(up);
        peaks.push(peak);
        match down {
            Some(d) => downs.push(d),
            None => never += 1,
        }
    }
    println!(
        "burst/step_load (base {BASE}, max {MAX}, {STEP_TASKS} x {STEP_TASK:?}, {reps} reps): \
         scale-up {} (peak burst slots {peaks:?}); scale-down {}{}",
        p50(ups),
        p50(downs),
        if never > 0 {
            format!(", never within {DOWN_CAP:?} in {never} reps")
        } else {
            String::new()
        }
    );
}

/// Tasks of the current batch that ran (a static: no `Arc` traffic in the measured path).
static DONE: AtomicUsize = AtomicUsize::new(0);

fn throughput(c: &mut Criterion) {
    let n = env_usize("BENCH_BURST_TASKS", 4_000);
    let mut group = c.benchmark_group("burst/throughput");
    group
        .throughput(Throughput::Elements(n as u64))
        .sample_size(10)
        // One iteration is a whole batch: equal-sized samples.
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(measurement_time(Duration::from_secs(5)));
    for (name, base, prefix) in [
        ("bursting_base2_max4", BASE, "bthr"),
        ("fixed_4", MAX, "bfix"),
    ] {
        let m = manager(base, MAX, prefix);
        group.bench_function(name, |b| {
            b.iter(|| {
                DONE.store(0, Ordering::Relaxed);
                for i in 0..n {
                    m.queue_task_with_callback(
                        move |_: &mut (), _: &TaskContext| {
                            black_box(i);
                            spin_for(SPIN);
                            Ok(())
                        },
                        |_: Result<(), _>| {
                            DONE.fetch_add(1, Ordering::Release);
                        },
                    );
                }
                while DONE.load(Ordering::Acquire) < n {
                    thread::yield_now();
                }
            });
        });
        m.stop().expect("stop");
    }
    group.finish();
}

criterion::criterion_group!(benches, step_load, throughput);
criterion::criterion_main!(benches);
