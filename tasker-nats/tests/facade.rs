//! The bridge's counters reach the `metrics` facade, labelled with the node's name, and agree
//! with `Node::stats`. (Its own binary: the recorder is process-wide.)

mod common;

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream;
use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tasker_nats::{Job, Node, Producer, Topology};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_counters_reach_the_metrics_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let server = server();
    let client = connect(&server).await;
    let topology = Topology::new("facade");
    topology
        .ensure(&jetstream::new(client.clone()))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), topology.clone());
    producer.submit(Job::new("echo", "a")).await.unwrap();
    producer.submit(Job::new("fail", "b")).await.unwrap();
    let runs = Runs::default();
    let manager = manager(1, 0);
    let node = Node::builder(client, manager.clone(), handlers(&runs))
        .topology(topology)
        .check_health(healthy)
        .name("facade-node")
        .start()
        .await
        .unwrap();
    wait_for("both jobs", Duration::from_secs(30), || {
        let s = node.stats();
        s.acked == 1 && s.terminated == 1
    })
    .await;
    let stats = node.stop().await;
    manager.stop().unwrap();

    let counters: HashMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let node = key.labels().find(|l| l.key() == "node")?.value().to_owned();
            assert_eq!(node, "facade-node");
            match value {
                DebugValue::Counter(n) => Some((key.name().to_owned(), n)),
                _ => None,
            }
        })
        .collect();
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    assert_eq!(get("tasker_nats_fetched_total"), stats.fetched);
    assert_eq!(get("tasker_nats_fetched_total"), 2);
    assert_eq!(get("tasker_nats_acked_total"), 1);
    assert_eq!(get("tasker_nats_terminated_total"), 1);
    assert_eq!(get("tasker_nats_dead_lettered_total"), 1);
    assert_eq!(get("tasker_nats_naked_total"), 0);
    assert_eq!(get("tasker_nats_redelivered_total"), 0);
}
