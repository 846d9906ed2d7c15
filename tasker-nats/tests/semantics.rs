//! Delivery semantics of one node against a real `nats-server -js` on 127.0.0.1.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::*;
use tasker_nats::{
    Error, HEADER_ERROR, HEADER_REASON, Job, Node, Producer, Reason, RemoteError, Topology,
};

const LONG: Duration = Duration::from_secs(30);

struct Setup {
    _server: tasker_nats::server::LocalServer,
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
    producer: Producer,
    runs: Runs,
}

async fn setup(topology: Topology) -> Setup {
    let server = server();
    let client = connect(&server).await;
    let js = jetstream::new(client.clone());
    topology.ensure(&js).await.unwrap();
    let producer = Producer::new(client.clone(), topology.clone());
    Setup {
        _server: server,
        client,
        js,
        topology,
        producer,
        runs: Runs::default(),
    }
}

async fn node(
    s: &Setup,
    manager: &tasker::TaskManager<(), TestError>,
    configure: impl FnOnce(
        tasker_nats::NodeBuilder<(), TestError>,
    ) -> tasker_nats::NodeBuilder<(), TestError>,
) -> Node<(), TestError> {
    let b = Node::builder(s.client.clone(), manager.clone(), handlers(&s.runs))
        .topology(s.topology.clone())
        .check_health(healthy)
        .nak_delay(Duration::from_millis(50));
    configure(b).start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_job_replies_then_is_acked() {
    let s = setup(Topology::new("t1")).await;
    let m = manager(2, 1);
    let n = node(&s, &m, |b| b).await;
    let reply = s
        .producer
        .request(Job::new("echo", "hi"), LONG)
        .await
        .unwrap();
    assert_eq!(reply.unwrap().as_ref(), b"hi");
    wait_for("the ack", LONG, || n.stats().acked == 1).await;
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    let stats = n.stop().await;
    assert_eq!((stats.fetched, stats.replies, stats.naked), (1, 1, 0));
    assert!(dead_letters(&s.js, &s.topology).await.is_empty());
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_failure_is_dead_lettered_with_its_error_and_never_retried() {
    let s = setup(Topology::new("t2")).await;
    let m = manager(2, 3);
    let n = node(&s, &m, |b| b).await;
    let reply = s
        .producer
        .request(Job::new("fail", "x"), LONG)
        .await
        .unwrap();
    let err = reply.unwrap_err();
    assert_eq!(err.reason, Reason::Failed);
    assert_eq!(err.message, "healthy: bad input");
    wait_for("the term", LONG, || n.stats().terminated == 1).await;
    assert_eq!(count(&s.runs, "fail"), 1);
    let dead = dead_letters(&s.js, &s.topology).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].subject.as_str(), "t2.dead.fail");
    assert_eq!(header(&dead[0], HEADER_REASON).as_deref(), Some("failed"));
    assert_eq!(
        header(&dead[0], HEADER_ERROR).as_deref(),
        Some("healthy: bad input")
    );
    assert_eq!(dead[0].payload.as_ref(), b"x");
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    n.stop().await;
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_is_retried_locally_then_given_back_until_max_deliver() {
    let s = setup(Topology::new("t3").max_deliver(3)).await;
    // max_retries 1: two runs per delivery, three deliveries.
    let m = manager(2, 1);
    let n = node(&s, &m, |b| b).await;
    let reply = s
        .producer
        .request(Job::new("broken", "b"), LONG)
        .await
        .unwrap();
    let err = reply.unwrap_err();
    assert_eq!(err.reason, Reason::MaxDeliver);
    assert!(err.message.contains("delivery 3 of 3"), "{}", err.message);
    assert!(
        err.message.contains("broken: connection reset"),
        "{}",
        err.message
    );
    assert_eq!(count(&s.runs, "broken"), 6);
    let stats = n.stop().await;
    assert_eq!(
        (stats.naked, stats.redelivered, stats.terminated),
        (2, 2, 1)
    );
    let dead = dead_letters(&s.js, &s.topology).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], HEADER_REASON).as_deref(),
        Some("max-deliver")
    );
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_unhealthy_error_recovers_on_the_local_retry() {
    let s = setup(Topology::new("t4")).await;
    let m = manager(2, 1);
    let n = node(&s, &m, |b| b).await;
    let reply = s
        .producer
        .request(Job::new("flaky", "f"), LONG)
        .await
        .unwrap();
    assert_eq!(reply.unwrap().as_ref(), b"f");
    let runs: Vec<u32> = s.runs.lock().unwrap().iter().map(|r| r.2).collect();
    assert_eq!(runs, [1, 2]);
    wait_for("the ack", LONG, || n.stats().acked == 1).await;
    let stats = n.stop().await;
    assert_eq!((stats.naked, stats.redelivered), (0, 0));
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_given_back_then_dead_lettered_at_max_deliver() {
    let s = setup(Topology::new("t5").max_deliver(2)).await;
    let m = manager(2, 3);
    let n = node(&s, &m, |b| b).await;
    let err = s
        .producer
        .request(Job::new("panic", "p"), LONG)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason, Reason::MaxDeliver);
    assert!(
        err.message.contains("panicked on purpose"),
        "{}",
        err.message
    );
    // A panic is not retried locally: one run per delivery.
    assert_eq!(count(&s.runs, "panic"), 2);
    n.stop().await;
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_is_acked_before_it_runs_and_never_runs_again() {
    let ack_wait = Duration::from_millis(300);
    let s = setup(Topology::new("t6").ack_wait(ack_wait)).await;
    let m = manager(2, 3);
    let n = node(&s, &m, |b| b).await;
    let err = s
        .producer
        .request(Job::new("panic", "once").at_most_once(), LONG)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason, Reason::Panicked);
    // Acked before it ran: nothing left for the server to redeliver.
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    tokio::time::sleep(ack_wait * 4).await;
    assert_eq!(count(&s.runs, "panic"), 1);
    // An unhealthy error: no local retry either.
    let err = s
        .producer
        .request(Job::new("broken", "once").at_most_once(), LONG)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason, Reason::Failed);
    assert_eq!(count(&s.runs, "broken"), 1);
    let stats = n.stop().await;
    assert_eq!((stats.acked, stats.redelivered, stats.naked), (2, 0, 0));
    let reasons: Vec<_> = dead_letters(&s.js, &s.topology)
        .await
        .iter()
        .map(|d| header(d, HEADER_REASON).unwrap())
        .collect();
    assert_eq!(reasons, ["panicked", "failed"]);
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_task_keeps_its_message_with_in_progress_acks() {
    let s = setup(Topology::new("t7").ack_wait(Duration::from_millis(400))).await;
    let m = manager(1, 0);
    let n = node(&s, &m, |b| b.in_progress_every(Duration::from_millis(100))).await;
    let reply = s
        .producer
        .request(Job::new("sleep", "1500"), LONG)
        .await
        .unwrap();
    assert_eq!(reply.unwrap().as_ref(), b"1500");
    wait_for("the ack", LONG, || n.stats().acked == 1).await;
    let stats = n.stop().await;
    assert_eq!(count(&s.runs, "sleep"), 1);
    assert_eq!(stats.redelivered, 0);
    assert!(stats.in_progress >= 3, "{stats:?}");
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_handler_is_dead_lettered() {
    let s = setup(Topology::new("t8")).await;
    let m = manager(1, 0);
    let n = node(&s, &m, |b| b).await;
    let err = s
        .producer
        .request(Job::new("nope", "?"), LONG)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason, Reason::UnknownHandler);
    n.stop().await;
    let dead = dead_letters(&s.js, &s.topology).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].subject.as_str(), "t8.dead.nope");
    assert!(matches!(
        s.producer.submit(Job::new("bad.name", "")).await,
        Err(Error::InvalidName(_))
    ));
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_is_queued_once() {
    let s = setup(Topology::new("t9")).await;
    let first = s
        .producer
        .submit(Job::new("echo", "1").id("order-1"))
        .await
        .unwrap();
    let again = s.producer.submit(Job::new("echo", "2").id("order-1")).await;
    assert!(
        matches!(again, Err(Error::Duplicate { sequence }) if sequence == first.sequence),
        "{again:?}"
    );
    let m = manager(1, 0);
    let n = node(&s, &m, |b| b).await;
    wait_for("the ack", LONG, || n.stats().acked == 1).await;
    n.stop().await;
    let runs = s.runs.lock().unwrap().clone();
    assert_eq!(runs, [("echo".to_owned(), "1".to_owned(), 1)]);
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_lane_overtakes_queued_normal_work() {
    let s = setup(Topology::new("t10")).await;
    for i in 0..12 {
        s.producer
            .submit(Job::new("sleep", format!("{}", 100 + i % 2)))
            .await
            .unwrap();
    }
    s.producer
        .submit(Job::new("echo", "urgent").priority())
        .await
        .unwrap();
    let m = manager(1, 0);
    // Room for every normal job at once: all of them are queued in the manager before the
    // priority job arrives or just after it.
    let n = node(&s, &m, |b| b.capacity(12).batch(12)).await;
    wait_for("all jobs", LONG, || n.stats().acked == 13).await;
    n.stop().await;
    let order: Vec<String> = s.runs.lock().unwrap().iter().map(|r| r.1.clone()).collect();
    let at = order.iter().position(|p| p == "urgent").unwrap();
    assert!(at < 6, "priority job ran {at}th of {order:?}");
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_never_holds_more_than_its_room_and_two_nodes_share_the_work() {
    let s = setup(Topology::new("t11")).await;
    let total = 120;
    for _ in 0..total {
        s.producer.submit(Job::new("sleep", "5")).await.unwrap();
    }
    let (m1, m2) = (manager(1, 0), manager(1, 0));
    let a = node(&s, &m1, |b| b.capacity(2).batch(8).name("a")).await;
    let b = node(&s, &m2, |b| b.capacity(5).batch(8).name("b")).await;
    wait_for("all jobs", LONG, || {
        a.stats().acked + b.stats().acked == total
    })
    .await;
    let (sa, sb) = (a.stop().await, b.stop().await);
    assert!(sa.held_peak <= 2 && sb.held_peak <= 5, "{sa:?} {sb:?}");
    assert!(sa.acked > 0 && sb.acked > 0, "{sa:?} {sb:?}");
    assert_eq!(count(&s.runs, "sleep"), total as usize);
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    m1.stop().unwrap();
    m2.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_finishes_and_acks_what_it_holds() {
    let s = setup(Topology::new("t12")).await;
    for _ in 0..20 {
        s.producer.submit(Job::new("sleep", "50")).await.unwrap();
    }
    let m = manager(1, 0);
    let n = node(&s, &m, |b| b.capacity(4).batch(4)).await;
    wait_for("a held batch", LONG, || n.held() == 4).await;
    let stats = n.stop().await;
    assert!(stats.fetched >= 4, "{stats:?}");
    assert_eq!(stats.acked, stats.fetched, "{stats:?}");
    assert_eq!(stats.naked, 0);
    assert_eq!(count(&s.runs, "sleep") as u64, stats.fetched);
    let (left, unacked) = work_left(&s.js, &s.topology).await;
    assert_eq!((left, unacked), (20 - stats.acked, 0));
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_gives_back_unstarted_work_at_once() {
    // A long ack_wait: only a nak can bring the work back within the test.
    let s = setup(Topology::new("t13").ack_wait(Duration::from_secs(60))).await;
    for _ in 0..6 {
        s.producer.submit(Job::new("sleep", "1000")).await.unwrap();
    }
    let m1 = manager(1, 0);
    let a = node(&s, &m1, |b| b.capacity(6).name("a")).await;
    wait_for("a full node", LONG, || {
        a.held() == 6 && count(&s.runs, "sleep") == 1
    })
    .await;
    let sa = a.kill().await;
    // The running task finished and was acked; the queued ones were never run, only given
    // back (a copy given back can come straight back to the request still open here, and is
    // given back again).
    assert_eq!(sa.acked + sa.naked, sa.fetched, "{sa:?}");
    assert!(sa.naked >= 4 && sa.acked >= 1, "{sa:?}");
    assert_eq!(count(&s.runs, "sleep") as u64, sa.acked);
    let m2 = manager(2, 0);
    let b = node(&s, &m2, |b| b.name("b")).await;
    wait_for(
        "the given-back jobs on another node",
        Duration::from_secs(20),
        || sa.acked + b.stats().acked == 6,
    )
    .await;
    let sb = b.stop().await;
    assert_eq!(sb.redelivered, 6 - sa.acked);
    assert_eq!(count(&s.runs, "sleep"), 6);
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    m1.stop().unwrap();
    m2.stop().unwrap();
}

#[test]
fn remote_error_displays_reason_and_message() {
    let e = RemoteError {
        reason: Reason::Failed,
        message: "x".into(),
    };
    assert_eq!(e.to_string(), "failed: x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_delivery_lost_with_its_node_is_dead_lettered_from_the_advisory() {
    use futures::StreamExt;
    let ack_wait = Duration::from_millis(300);
    let s = setup(Topology::new("t14").max_deliver(2).ack_wait(ack_wait)).await;
    let producer = s.producer.clone();
    let request =
        tokio::spawn(async move { producer.request(Job::new("echo", "lost"), LONG).await });
    // A "node" that takes both deliveries and dies holding them: never settles.
    let consumer: jetstream::consumer::PullConsumer =
        s.js.get_stream(s.topology.stream_name())
            .await
            .unwrap()
            .get_consumer(&s.topology.consumer_name(false))
            .await
            .unwrap();
    for delivery in 1..=2 {
        let msg = loop {
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            if let Some(m) = batch.next().await {
                break m.unwrap();
            }
        };
        assert_eq!(msg.info().unwrap().delivered, delivery);
    }
    // A live node hears the server's advisory when the last delivery times out.
    let m = manager(1, 0);
    let n = node(&s, &m, |b| b).await;
    let err = request.await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.reason, Reason::MaxDeliver);
    wait_for("the dead letter", LONG, || n.stats().dead_lettered == 1).await;
    let stats = n.stop().await;
    assert_eq!(stats.fetched, 0, "{stats:?}");
    assert_eq!(count(&s.runs, "echo"), 0);
    let dead = dead_letters(&s.js, &s.topology).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], HEADER_REASON).as_deref(),
        Some("max-deliver")
    );
    assert_eq!(dead[0].payload.as_ref(), b"lost");
    assert_eq!(work_left(&s.js, &s.topology).await, (0, 0));
    m.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_node_settings_are_refused_with_a_typed_error() {
    let s = setup(Topology::new("t15")).await;
    let m = manager(1, 0);
    type B = tasker_nats::NodeBuilder<(), TestError>;
    let bad: [fn(B) -> B; 4] = [
        |b| b.capacity(0),
        |b| b.batch(0),
        |b| b.priority_capacity(usize::MAX),
        |b| b.fetch_wait(Duration::ZERO),
    ];
    for configure in bad {
        let b = Node::builder(s.client.clone(), m.clone(), handlers(&s.runs))
            .topology(s.topology.clone());
        assert!(matches!(
            configure(b).start().await,
            Err(Error::InvalidConfig(_))
        ));
    }
    let bad_topology = Node::builder(s.client.clone(), m.clone(), handlers(&s.runs))
        .topology(Topology::new("t15").max_deliver(0))
        .start()
        .await;
    assert!(matches!(bad_topology, Err(Error::InvalidConfig(_))));
    m.stop().unwrap();
}
