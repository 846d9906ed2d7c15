//! The `metrics` feature: after a known workload, a scrape of the Prometheus exporter's own
//! HTTP listener over loopback shows tasker's series with the right values.
//! Run with `cargo test -p tasker-prometheus-example`.

use std::io;

use metrics_exporter_prometheus::PrometheusBuilder;
use tasker::{TaskContext, TaskError, TaskManager};
use tasker_prometheus_example::{listen_addr, scrape, value};

#[test]
fn a_scrape_shows_the_counts_of_a_known_workload() {
    let addr = listen_addr("127.0.0.1:0").unwrap();
    PrometheusBuilder::new()
        .set_buckets(&[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0])
        .unwrap()
        .with_http_listener(addr)
        .install()
        .expect("the only recorder in this test binary, on a free loopback port");

    let manager = TaskManager::builder()
        .on_create(|| Ok::<(), io::Error>(()))
        .check_health(|e: &io::Error| e.kind() != io::ErrorKind::BrokenPipe)
        .worker_count(2)
        .max_worker_count(2)
        .pin_workers(false)
        .max_retries(1)
        .thread_name_prefix("scrape")
        .build()
        .unwrap();
    for _ in 0..40 {
        manager
            .queue_task(|_: &mut (), _: &TaskContext| Ok::<_, io::Error>(()))
            .unwrap();
    }
    for _ in 0..3 {
        let e = manager
            .queue_task(|_: &mut (), _: &TaskContext| Err::<(), _>(io::Error::other("plain")))
            .unwrap_err();
        assert!(matches!(e, TaskError::Failed { attempts: 1, .. }));
    }
    // Broken twice with max_retries(1): one retry, then failed; two replacements.
    let e = manager
        .queue_task(|_: &mut (), _: &TaskContext| {
            Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
    assert!(matches!(e, TaskError::Failed { attempts: 2, .. }));
    manager
        .run_task(|_: &mut (), _| Ok::<_, io::Error>(()))
        .unwrap();
    manager.stop().unwrap();

    // A second pool whose resources serve one task each: two retired before the 2nd and 3rd.
    let recycling = TaskManager::builder()
        .on_create(|| Ok::<(), io::Error>(()))
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .pin_workers(false)
        .resource_max_uses(1)
        .thread_name_prefix("recycle")
        .build()
        .unwrap();
    for _ in 0..3 {
        recycling.queue_task(|_, _| Ok(())).unwrap();
    }
    recycling.stop().unwrap();

    let body = scrape(addr).unwrap();
    let v = |name: &str| {
        value(&body, &format!("{name}{{pool=\"scrape\"}}"))
            .unwrap_or_else(|| panic!("{name} missing from the scrape:\n{body}"))
    };
    assert_eq!(v("tasker_tasks_arrived_total"), 45.0);
    assert_eq!(v("tasker_tasks_completed_total"), 41.0);
    assert_eq!(v("tasker_tasks_failed_total"), 4.0);
    assert_eq!(v("tasker_tasks_retried_total"), 1.0);
    assert_eq!(v("tasker_tasks_panicked_total"), 0.0);
    assert_eq!(v("tasker_resources_replaced_total"), 2.0);
    let recycled = |reason: &str| {
        let key =
            format!("tasker_resources_recycled_total{{pool=\"recycle\",reason=\"{reason}\"}}");
        value(&body, &key).unwrap_or_else(|| panic!("{key} missing from the scrape:\n{body}"))
    };
    assert_eq!(recycled("uses"), 2.0);
    assert_eq!(recycled("lifetime"), 0.0);
    // Every run of a queued task is timed: 40 + 3 + 2 runs.
    assert_eq!(v("tasker_task_execution_seconds_count"), 45.0);
    assert_eq!(v("tasker_task_wait_seconds_count"), 45.0);
    // After stop the gauges were refreshed one last time: nothing left.
    for gauge in [
        "tasker_workers_active",
        "tasker_tasks_queued",
        "tasker_tasks_priority_queued",
        "tasker_tasks_pending",
    ] {
        assert_eq!(v(gauge), 0.0, "{gauge}");
    }
}
