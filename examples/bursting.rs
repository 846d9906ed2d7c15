//! Bursting: extra workers that come up under a backlog and park when idle, watched through
//! `stats()` and a `MetricsCollector`.
//!
//! `cargo run --release --example bursting`
//!
//! Two base workers take waves of CPU-heavy tasks (a few milliseconds of spinning each), with
//! a priority task or two in every wave. Two more worker slots were made at build and wait
//! parked: the burst controller activates them when a wave's backlog builds up and parks them
//! again when the pool is idle. A sampler thread prints `stats()` every 50 ms (active, burst
//! and parked workers, queue depths), and a collector prints each burst event as it happens.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tasker::{MetricsCollector, TaskContext, TaskHandle, TaskManager, WorkerEvent};

/// Tasks per wave: each wave is bigger than the last.
const WAVES: [usize; 3] = [40, 80, 120];
/// One task in this many is submitted with priority.
const PRIORITY_EVERY: usize = 25;
const TASK_COST: Duration = Duration::from_millis(5);
const PAUSE_BETWEEN_WAVES: Duration = Duration::from_millis(700);
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Prints burst events as they happen.
struct BurstLog(Instant);

impl MetricsCollector for BurstLog {
    fn record_worker_event(&self, event: WorkerEvent) {
        let at = self.0.elapsed().as_millis();
        match event {
            WorkerEvent::BurstUp { worker } => println!("  {at:>4}ms  + worker {worker} up"),
            WorkerEvent::BurstDown { worker } => println!("  {at:>4}ms  - worker {worker} parked"),
            _ => {}
        }
    }
}

/// The resource: a scratch buffer each worker reuses.
struct Scratch {
    buf: Vec<u64>,
}

/// Burns `cost` of CPU time, like a compression or a hash of a large input.
fn heavy(scratch: &mut Scratch, cost: Duration, ctx: &TaskContext) -> Result<u64, io::Error> {
    let start = Instant::now();
    let mut acc = 0u64;
    while start.elapsed() < cost {
        if ctx.is_cancelled() {
            return Err(io::Error::other("cancelled by kill"));
        }
        for (i, x) in scratch.buf.iter_mut().enumerate() {
            *x = x.wrapping_mul(6364136223846793005).wrapping_add(i as u64);
            acc ^= *x;
        }
    }
    Ok(acc)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let manager = TaskManager::builder()
        .on_create(|| Ok::<_, io::Error>(Scratch { buf: vec![1; 1024] }))
        .worker_count(2)
        .max_worker_count(4)
        .burst_interval(Duration::from_millis(50))
        .burst_keep_alive(Duration::from_millis(200))
        .metrics_window(Duration::from_millis(500))
        .metrics_collector(BurstLog(start))
        .build()?;
    let s = manager.stats();
    println!(
        "{} base workers, up to {} with bursting; waves of {WAVES:?} tasks of {TASK_COST:?} each",
        s.base_workers, s.max_workers
    );
    println!("\n   time  active  burst  parked  queued  priority  pending");

    let done = Arc::new(AtomicBool::new(false));
    let peak_burst = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (manager, done, peak_burst) = (manager.clone(), done.clone(), peak_burst.clone());
        thread::spawn(move || {
            let mut next = start;
            while !done.load(Ordering::Relaxed) {
                let s = manager.stats();
                peak_burst.fetch_max(s.burst_workers, Ordering::Relaxed);
                println!(
                    "  {:>4}ms  {:>2}/{:<2}  {:>5}  {:>6}  {:>6}  {:>8}  {:>7}",
                    start.elapsed().as_millis(),
                    s.active_workers,
                    s.max_workers,
                    s.burst_workers,
                    s.parked_workers,
                    s.queued_tasks,
                    s.priority_tasks,
                    s.pending_tasks
                );
                next += SAMPLE_EVERY;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };

    let mut handles = Vec::new();
    for (wave, size) in WAVES.into_iter().enumerate() {
        println!("  -- wave {}: {size} tasks --", wave + 1);
        for i in 0..size {
            let urgent = i % PRIORITY_EVERY == PRIORITY_EVERY - 1;
            let handle = manager
                .task(|s, ctx| heavy(s, TASK_COST, ctx))
                .with_priority(urgent)
                .spawn();
            handles.push(handle);
        }
        thread::sleep(PAUSE_BETWEEN_WAVES);
    }

    let submitted = handles.len();
    let ok = handles
        .into_iter()
        .map(TaskHandle::wait)
        .filter(Result::is_ok)
        .count();
    let elapsed = start.elapsed();
    // Idle now: the controller parks the burst slots again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while manager.stats().burst_workers > 0 && Instant::now() < deadline {
        thread::sleep(SAMPLE_EVERY);
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler panicked");

    let m = manager.metrics();
    println!(
        "\n{ok}/{submitted} tasks ok in {elapsed:.2?} (metrics: {} ok, {} failed)",
        m.total_tasks_completed, m.total_tasks_failed
    );
    println!(
        "peak burst workers: {}; burst workers now: {}",
        peak_burst.load(Ordering::Relaxed),
        manager.stats().burst_workers
    );
    let stopped = manager.stop();
    println!("stop() = {stopped:?}");
    stopped?;
    Ok(())
}
