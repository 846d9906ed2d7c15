//! Publishes tasker's metrics to Prometheus through the `metrics` facade (cargo feature
//! `metrics`) and serves them at `http://127.0.0.1:9898/metrics`.
//!
//! ```sh
//! cargo run --release --features metrics --example prometheus
//! # keep serving for a minute, to point a Prometheus or curl at it:
//! SERVE_SECS=60 cargo run --release --features metrics --example prometheus
//! ```
//!
//! Install the exporter *before* `build()`: tasker registers its series with the recorder that
//! is installed when the manager is built.

#[allow(dead_code)] // `value` serves the test
mod server;

use std::io;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tasker::{TaskContext, TaskManager};

/// Latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 8] = [1e-6, 1e-5, 1e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        // Buckets make the latencies real Prometheus histograms (`_bucket{le=...}`).
        .set_buckets(&LATENCY_BUCKETS)?
        .install_recorder()?;
    let addr = std::env::var("METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9898".into());
    let addr = server::serve(&addr, handle)?;
    println!("serving http://{addr}/metrics");

    let manager = TaskManager::builder()
        .on_create(|| Ok::<u64, io::Error>(0))
        .check_health(|e: &io::Error| e.kind() != io::ErrorKind::BrokenPipe)
        .worker_count(2)
        .thread_name_prefix("orders")
        .build()?;

    // A known workload: 200 ok, 10 plain failures, 5 broken once then retried.
    for i in 0..200u64 {
        manager.queue_task_with_callback(
            move |n: &mut u64, _: &TaskContext| {
                *n += i;
                std::thread::sleep(Duration::from_micros(50));
                Ok(*n)
            },
            |_| {},
        );
    }
    for _ in 0..10 {
        let _ = manager.queue_task(|_: &mut u64, _: &TaskContext| {
            Err::<(), _>(io::Error::other("no such order"))
        });
    }
    for _ in 0..5 {
        manager.queue_task(|_: &mut u64, ctx: &TaskContext| {
            if ctx.attempt() == 1 {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            } else {
                Ok(())
            }
        })?;
    }
    manager.stop()?;
    let m = manager.metrics();
    println!(
        "metrics(): {} ok, {} failed, {} retried; execution p50 {:?} p99 {:?}; wait p99 {:?}",
        m.total_tasks_completed,
        m.total_tasks_failed,
        m.total_tasks_retried,
        m.p50_execution_time,
        m.p99_execution_time,
        m.p99_wait_time
    );

    let body = server::scrape(addr)?;
    println!("scraped {} bytes; tasker series:", body.len());
    for line in body.lines().filter(|l| l.starts_with("tasker_")) {
        println!("  {line}");
    }
    let secs: u64 = std::env::var("SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if secs > 0 {
        println!("serving for {secs} s");
        std::thread::sleep(Duration::from_secs(secs));
    }
    Ok(())
}
