//! Serving tasker's metrics to Prometheus while a workload keeps them moving.
//!
//! tasker's cargo feature `metrics` publishes counters, latency histograms and gauges through
//! the `metrics` facade; `metrics-exporter-prometheus` serves them with its own HTTP listener.
//! The workload comes in waves: the queues fill and drain, burst workers go up and down, a few
//! tasks fail, a few break their resource and are retried. It serves until you press Ctrl-C:
//!
//! ```sh
//! cargo run --release -p tasker-prometheus-example
//! curl -s http://127.0.0.1:9898/metrics | grep '^tasker_'
//! ```
//!
//! `METRICS_ADDR` sets the address (default `127.0.0.1:9898`; port 0 picks a free one).
//! `SERVE_SECS=n` runs the workload for `n` seconds instead, then stops the manager, scrapes
//! the endpoint once over loopback and prints tasker's series (CI runs it that way).
//!
//! Install the exporter *before* `build()`: tasker registers its series with the recorder that
//! is installed when the manager is built.

use std::io;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use tasker::TaskManager;
use tasker_prometheus_example::{listen_addr, scrape, value};

/// Latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 8] = [1e-6, 1e-5, 1e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0];
/// One wave every this long.
const TICK: Duration = Duration::from_millis(100);
/// Ticks in one rise and fall of the load.
const CYCLE: u64 = 60;
/// Tasks submitted in the busiest tick: about twice what two workers clear in one.
const PEAK: u64 = 400;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = listen_addr(&std::env::var("METRICS_ADDR").unwrap_or("127.0.0.1:9898".into()))?;
    let serve_for = match std::env::var("SERVE_SECS") {
        Ok(s) => Some(Duration::from_secs(
            s.parse().map_err(|e| format!("SERVE_SECS={s:?}: {e}"))?,
        )),
        Err(_) => None,
    };
    PrometheusBuilder::new()
        // Buckets make the latencies real Prometheus histograms (`_bucket{le=...}`).
        .set_buckets(&LATENCY_BUCKETS)?
        .with_http_listener(addr)
        .install()?;
    match serve_for {
        None => println!("serving http://{addr}/metrics until interrupted (Ctrl-C)"),
        Some(d) => println!("serving http://{addr}/metrics for {d:?}"),
    }

    let manager = TaskManager::builder()
        .on_create(|| Ok::<u64, io::Error>(0))
        .check_health(|e: &io::Error| e.kind() != io::ErrorKind::BrokenPipe)
        .worker_count(2)
        .max_worker_count(4)
        .thread_name_prefix("orders")
        .build()?;

    let start = Instant::now();
    let mut submitted = 0u64;
    for tick in 0u64.. {
        if serve_for.is_some_and(|d| start.elapsed() >= d) {
            break;
        }
        // The load rises and falls: 0 up to PEAK tasks a tick and back, over CYCLE ticks.
        let phase = tick % CYCLE;
        let wave = PEAK * phase.min(CYCLE - phase) * 2 / CYCLE;
        for _ in 0..wave {
            submitted += 1;
            submit(&manager, submitted);
        }
        if tick.is_multiple_of(10) {
            let s = manager.stats();
            let m = manager.metrics();
            println!(
                "{:>5.1} s  workers {}/{} (active/max)  queued {:>4}  completed {:>7}  \
                 failed {:>4}  retried {:>4}",
                start.elapsed().as_secs_f64(),
                s.active_workers,
                s.max_workers,
                s.queued_tasks + s.priority_tasks,
                m.total_tasks_completed,
                m.total_tasks_failed,
                m.total_tasks_retried,
            );
        }
        std::thread::sleep(TICK);
    }

    // Bounded mode only: drain, then read the endpoint the way Prometheus would.
    manager.stop()?;
    let body = scrape(addr)?;
    println!("scraped {} bytes; tasker series:", body.len());
    for line in body.lines().filter(|l| l.starts_with("tasker_")) {
        println!("  {line}");
    }
    let completed = value(&body, "tasker_tasks_completed_total{pool=\"orders\"}");
    match completed {
        Some(n) if n > 0.0 => Ok(()),
        _ => Err(format!("the scrape shows no completed task:\n{body}").into()),
    }
}

/// Task number `n` of the workload: mostly 0.2 to 1 ms of work; one in 40 fails with a plain
/// error; one in 100 breaks its resource on the first attempt (replaced, then retried); one in
/// 20 is a priority task.
fn submit(manager: &TaskManager<u64, io::Error>, n: u64) {
    let work = Duration::from_micros(200 + n % 5 * 200);
    let task = move |orders: &mut u64, ctx: &tasker::TaskContext| {
        std::thread::sleep(work);
        if n.is_multiple_of(40) {
            return Err(io::Error::other("no such order"));
        }
        if n % 100 == 1 && ctx.attempt() == 1 {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        *orders += 1;
        Ok(*orders)
    };
    // The outcome shows up in the metrics; nobody waits for it here.
    if n.is_multiple_of(20) {
        manager.queue_task_with_priority_with_callback(task, |_| {});
    } else {
        manager.queue_task_with_callback(task, |_| {});
    }
}
