//! Shared by the tests: a real server, a manager, handlers that record their runs, and
//! readers of the streams.
#![allow(dead_code)] // each test file uses its own part

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::StreamMessage};
use tasker::{TaskContext, TaskManager};
use tasker_nats::server::LocalServer;
use tasker_nats::{Handlers, Topology};

/// A handler's error: `Healthy` fails the task, `Broken` marks the resource broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestError {
    Healthy(String),
    Broken(String),
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestError::Healthy(m) => write!(f, "healthy: {m}"),
            TestError::Broken(m) => write!(f, "broken: {m}"),
        }
    }
}

pub fn healthy(e: &TestError) -> bool {
    matches!(e, TestError::Healthy(_))
}

/// A real `nats-server -js` for one test.
pub fn server() -> LocalServer {
    LocalServer::start().expect("start nats-server (see tasker-nats/README.md to install it)")
}

pub async fn connect(server: &LocalServer) -> async_nats::Client {
    async_nats::connect(server.url()).await.expect("connect")
}

pub fn manager(workers: usize, max_retries: u32) -> TaskManager<(), TestError> {
    TaskManager::builder()
        .on_create(|| Ok::<(), TestError>(()))
        .check_health(healthy)
        .worker_count(workers)
        .max_worker_count(workers)
        .max_retries(max_retries)
        .pin_workers(false)
        .build()
        .expect("build manager")
}

/// Every body run, in order: (handler, payload as text, attempt).
pub type Runs = Arc<Mutex<Vec<(String, String, u32)>>>;

/// Handlers that record each run:
/// - `echo`: returns the payload;
/// - `fail`: a healthy error;
/// - `broken`: an unhealthy error on every attempt;
/// - `flaky`: unhealthy on attempt 1, then returns the payload;
/// - `panic`: panics;
/// - `sleep`: sleeps the payload's milliseconds, then returns it.
pub fn handlers(runs: &Runs) -> Handlers<(), TestError> {
    fn rec(runs: &Runs, name: &str, payload: &[u8], ctx: &TaskContext) {
        let text = String::from_utf8_lossy(payload).into_owned();
        runs.lock()
            .unwrap()
            .push((name.to_owned(), text, ctx.attempt()));
    }
    let (a, b, c, d, e, f) = (
        runs.clone(),
        runs.clone(),
        runs.clone(),
        runs.clone(),
        runs.clone(),
        runs.clone(),
    );
    Handlers::new()
        .register("echo", move |_: &mut (), ctx, p: &[u8]| {
            rec(&a, "echo", p, ctx);
            Ok(p.to_vec())
        })
        .unwrap()
        .register("fail", move |_: &mut (), ctx, p: &[u8]| {
            rec(&b, "fail", p, ctx);
            Err(TestError::Healthy("bad input".into()))
        })
        .unwrap()
        .register("broken", move |_: &mut (), ctx, p: &[u8]| {
            rec(&c, "broken", p, ctx);
            Err(TestError::Broken("connection reset".into()))
        })
        .unwrap()
        .register("flaky", move |_: &mut (), ctx, p: &[u8]| {
            rec(&d, "flaky", p, ctx);
            if ctx.attempt() == 1 {
                Err(TestError::Broken("first attempt".into()))
            } else {
                Ok(p.to_vec())
            }
        })
        .unwrap()
        .register("panic", move |_: &mut (), ctx, p: &[u8]| {
            rec(&e, "panic", p, ctx);
            panic!("handler panicked on purpose")
        })
        .unwrap()
        .register("sleep", move |_: &mut (), ctx, p: &[u8]| {
            rec(&f, "sleep", p, ctx);
            let ms: u64 = std::str::from_utf8(p).unwrap().parse().unwrap();
            std::thread::sleep(Duration::from_millis(ms));
            Ok(p.to_vec())
        })
        .unwrap()
}

pub fn count(runs: &Runs, name: &str) -> usize {
    runs.lock().unwrap().iter().filter(|r| r.0 == name).count()
}

/// Every message of a stream, by sequence.
pub async fn stream_messages(js: &jetstream::Context, name: &str) -> Vec<StreamMessage> {
    let mut stream = js.get_stream(name).await.expect("stream");
    let info = stream.info().await.expect("info").state.clone();
    let mut out = Vec::new();
    if info.messages == 0 {
        return out;
    }
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

pub async fn dead_letters(js: &jetstream::Context, topology: &Topology) -> Vec<StreamMessage> {
    stream_messages(js, &topology.dead_stream_name()).await
}

pub fn header(m: &StreamMessage, name: &str) -> Option<String> {
    m.headers.get(name).map(|v| v.as_str().to_owned())
}

/// Messages still in the work stream, and those the lane's consumer has handed out
/// unacknowledged.
pub async fn work_left(js: &jetstream::Context, topology: &Topology) -> (u64, u64) {
    let mut stream = js.get_stream(topology.stream_name()).await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    let mut unacked = 0;
    for p in [false, true] {
        let mut c: jetstream::consumer::PullConsumer = stream
            .get_consumer(&topology.consumer_name(p))
            .await
            .unwrap();
        unacked += c.info().await.unwrap().num_ack_pending as u64;
    }
    (messages, unacked)
}

/// Polls `cond` until it holds; panics with `what` after `limit` (a bound on a hang, not a
/// timing assertion).
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
