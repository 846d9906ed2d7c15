//! The server restarted mid-run (JetStream file storage): nothing acknowledged is redone,
//! nothing unacknowledged is lost.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use tasker::TaskContext;
use tasker_nats::{Handlers, Job, Node, Producer, Settlement, Topology};

/// Messages the lanes' consumers have still to hand out or have out unacknowledged.
async fn undelivered(js: &jetstream::Context, topology: &Topology) -> u64 {
    let stream = js.get_stream(topology.stream_name()).await.unwrap();
    let mut n = 0;
    for p in [false, true] {
        let mut c: jetstream::consumer::PullConsumer = stream
            .get_consumer(&topology.consumer_name(p))
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        n += info.num_pending + info.num_ack_pending as u64;
    }
    n
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Ran(u64),
    Acked(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_run_redoes_nothing_acked_and_loses_nothing() {
    restart_mid_run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_mid_run_redoes_nothing_acked_and_loses_nothing() {
    restart_mid_run(true).await;
}

/// Stops the server (SIGTERM, or SIGKILL when `sigkill`) once a third of the jobs are acked,
/// and starts it again on the same port and store.
async fn restart_mid_run(sigkill: bool) {
    let total: u64 = 3000;
    let mut server = server();
    let topology = Topology::new("restart").ack_wait(Duration::from_secs(2));
    // Reconnect quickly, for as long as it takes.
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(50))
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    topology.ensure(&js).await.unwrap();
    let producer = Producer::new(client.clone(), topology.clone());
    for id in 0..total {
        producer
            .submit(Job::new("work", id.to_string()))
            .await
            .unwrap();
    }

    let events: Arc<Mutex<Vec<Ev>>> = Arc::default();
    let (ran, acked) = (Arc::clone(&events), Arc::clone(&events));
    let handlers = Handlers::new()
        .register("work", move |_: &mut (), _ctx: &TaskContext, p: &[u8]| {
            let id = std::str::from_utf8(p).unwrap().parse().unwrap();
            ran.lock().unwrap().push(Ev::Ran(id));
            std::thread::sleep(Duration::from_millis(1));
            Ok(Vec::new())
        })
        .unwrap();
    let manager = manager(2, 0);
    let node = Node::builder(client.clone(), manager.clone(), handlers)
        .topology(topology.clone())
        .capacity(32)
        .on_settled(move |s| {
            if s.settlement == Settlement::Acked {
                let id = std::str::from_utf8(&s.payload).unwrap().parse().unwrap();
                acked.lock().unwrap().push(Ev::Acked(id));
            }
        })
        .start()
        .await
        .unwrap();
    let acked_count = |events: &Mutex<Vec<Ev>>| {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Ev::Acked(_)))
            .count()
    };

    wait_for("a third of the work", Duration::from_secs(60), || {
        acked_count(&events) >= total as usize / 3
    })
    .await;
    tokio::task::block_in_place(|| {
        if sigkill {
            server.kill();
        }
        server.restart()
    })
    .unwrap();
    let before = acked_count(&events);
    assert!(before < total as usize, "the run ended before the restart");

    let started = Instant::now();
    loop {
        if acked_count(&events) >= total as usize && undelivered(&js, &topology).await == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "work not finished: acked {} of {total}, node {:?}",
            acked_count(&events),
            node.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // After a SIGTERM the stream is empty. After a SIGKILL the server may have lost its last
    // writes: removals of acked messages (they stay in the stream, but the consumer, which
    // kept its ack floor, never hands them out again), and its last acks (those messages
    // come back; the node that settled them skips them).
    let (left, unacked) = work_left(&js, &topology).await;
    assert_eq!(unacked, 0);
    if !sigkill {
        assert_eq!(left, 0);
    }
    let stats = node.stop().await;
    manager.stop().unwrap();

    let events = events.lock().unwrap().clone();
    let mut first_ack: HashMap<u64, usize> = HashMap::new();
    let mut runs: HashMap<u64, u32> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match *e {
            Ev::Acked(id) => {
                first_ack.entry(id).or_insert(i);
            }
            Ev::Ran(id) => *runs.entry(id).or_default() += 1,
        }
    }
    for (i, e) in events.iter().enumerate() {
        if let Ev::Ran(id) = *e
            && let Some(&at) = first_ack.get(&id)
        {
            assert!(
                i < at,
                "job {id} ran again after its acknowledgement was confirmed"
            );
        }
    }
    for id in 0..total {
        assert!(
            first_ack.contains_key(&id),
            "job {id} never acknowledged (lost)"
        );
    }
    let acked_twice = events.iter().filter(|e| matches!(e, Ev::Acked(_))).count() - total as usize;
    assert_eq!(acked_twice, 0, "an acknowledgement confirmed twice");
    let redone = runs.values().filter(|&&n| n > 1).count();
    eprintln!(
        "restart (sigkill {sigkill}) after {before} of {total} acks: {redone} unacknowledged \
         jobs redone; {left} acked messages left in the stream; {stats:?}"
    );
}
