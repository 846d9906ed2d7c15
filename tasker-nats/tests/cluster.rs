//! Three nodes as separate processes on one stream, one of them SIGKILLed mid-run.
//!
//! The nodes are this test binary run again (`node_process`, ignored unless asked for) with
//! `TASKER_NATS_NODE_URL` set. Each writes a line per body run to its own file with one
//! `write(2)` per line (no user-space buffer), so its record survives SIGKILL.
//!
//! `TASKER_NATS_CLUSTER_MESSAGES` scales the run (default 20,000).

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::*;
use tasker::TaskContext;
use tasker_nats::{HEADER_REASON, Handlers, Job, Node, Producer, Topology};

const URL_ENV: &str = "TASKER_NATS_NODE_URL";
const LOG_ENV: &str = "TASKER_NATS_NODE_LOG";
const NAME_ENV: &str = "TASKER_NATS_NODE_NAME";

fn topology() -> Topology {
    Topology::new("cluster")
        .ack_wait(Duration::from_secs(2))
        .max_deliver(3)
}

/// What a job does, by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    /// Unhealthy on the first attempt, fine on the local retry.
    Flaky,
    /// A healthy failure.
    Fail,
    /// Unhealthy on every attempt.
    Broken,
    Panic,
    OnceOk,
    OnceFail,
    OncePanic,
}

fn kind(id: u64) -> Kind {
    match id % 20 {
        11 => Kind::Flaky,
        12 => Kind::Fail,
        13 => Kind::Broken,
        14 => Kind::Panic,
        15 | 16 => Kind::OnceOk,
        17 => Kind::OnceFail,
        18 => Kind::OncePanic,
        _ => Kind::Ok,
    }
}

fn once(k: Kind) -> bool {
    matches!(k, Kind::OnceOk | Kind::OnceFail | Kind::OncePanic)
}

fn priority(id: u64) -> bool {
    id % 20 == 19 || id % 40 == 11
}

fn parse_id(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload).unwrap().parse().unwrap()
}

/// A node process: runs until its standard input closes, then stops gracefully.
#[test]
#[ignore = "a node process of `three_nodes_one_killed_nothing_lost`, started by it"]
fn node_process() {
    let (Ok(url), Ok(log)) = (std::env::var(URL_ENV), std::env::var(LOG_ENV)) else {
        return;
    };
    let name = std::env::var(NAME_ENV).unwrap_or_default();
    // Panics are part of the mix; the manager catches them. Keep stderr readable.
    std::panic::set_hook(Box::new(|_| {}));
    let file = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let client = async_nats::connect(url).await.unwrap();
        let manager = manager(2, 1);
        let f = Arc::clone(&file);
        let handlers = Handlers::new()
            .register("mix", move |_: &mut (), ctx: &TaskContext, p: &[u8]| {
                let id = parse_id(p);
                // One write(2) per line: on disk (page cache) before the body goes on.
                (&*f)
                    .write_all(format!("run {id} {}\n", ctx.attempt()).as_bytes())
                    .unwrap();
                match kind(id) {
                    Kind::Ok | Kind::OnceOk => {}
                    Kind::Flaky if ctx.attempt() > 1 => {}
                    Kind::Flaky | Kind::Broken => {
                        return Err(TestError::Broken("connection reset".into()));
                    }
                    Kind::Fail | Kind::OnceFail => {
                        return Err(TestError::Healthy(format!("job {id} refused")));
                    }
                    Kind::Panic | Kind::OncePanic => panic!("job {id} panicked"),
                }
                (&*f).write_all(format!("ok {id}\n").as_bytes()).unwrap();
                Ok(Vec::new())
            })
            .unwrap();
        let node = Node::builder(client, manager.clone(), handlers)
            .topology(topology())
            .check_health(healthy)
            .name(name)
            .capacity(64)
            .batch(32)
            .nak_delay(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        println!("ready");
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
        let stats = node.stop().await;
        println!("stats {stats:?}");
        manager.stop().unwrap();
    });
}

struct NodeProcess {
    child: Child,
    log: PathBuf,
}

fn spawn_node(url: &str, dir: &Path, name: &str) -> NodeProcess {
    let log = dir.join(format!("{name}.log"));
    File::create(&log).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["node_process", "--exact", "--ignored", "--nocapture"])
        .env(URL_ENV, url)
        .env(LOG_ENV, &log)
        .env(NAME_ENV, name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "node {name} exited before it was ready"
        );
        if line.trim() == "ready" {
            break;
        }
    }
    // Keep draining its stdout so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    NodeProcess { child, log }
}

/// Per job id: runs (body entries) and completions (`Ok` returned).
fn read_logs(logs: &[PathBuf]) -> (HashMap<u64, u32>, HashSet<u64>) {
    let mut runs = HashMap::new();
    let mut done = HashSet::new();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let mut parts = line.split(' ');
            match (parts.next(), parts.next().map(|s| s.parse::<u64>())) {
                (Some("run"), Some(Ok(id))) => *runs.entry(id).or_default() += 1,
                (Some("ok"), Some(Ok(id))) => {
                    done.insert(id);
                }
                // A SIGKILL can cut the last line of the killed node's file.
                _ => {}
            }
        }
    }
    (runs, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_nothing_lost() {
    let total: u64 = std::env::var("TASKER_NATS_CLUSTER_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let server = server();
    let client = connect(&server).await;
    let js = jetstream::new(client.clone());
    let topology = topology();
    topology.ensure(&js).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let mut nodes: Vec<NodeProcess> = ["n0", "n1", "n2"]
        .iter()
        .map(|n| spawn_node(&url, dir.path(), n))
        .collect();

    let started = Instant::now();
    let producer = Producer::new(client.clone(), topology.clone());
    let mut pending = Vec::new();
    for id in 0..total {
        let mut job = Job::new("mix", id.to_string()).id(format!("job-{id}"));
        if once(kind(id)) {
            job = job.at_most_once();
        }
        if priority(id) {
            job = job.priority();
        }
        let p = producer.clone();
        pending.push(tokio::spawn(async move { p.submit(job).await }));
        if pending.len() == 500 {
            for p in pending.drain(..) {
                p.await.unwrap().unwrap();
            }
        }
    }
    for p in pending.drain(..) {
        p.await.unwrap().unwrap();
    }

    // SIGKILL one node once about a third of the work is settled.
    let logs: Vec<PathBuf> = nodes.iter().map(|n| n.log.clone()).collect();
    loop {
        let (messages, _) = work_left(&js, &topology).await;
        if messages <= total * 2 / 3 {
            assert!(messages > 0, "the run ended before the kill");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[0].child.kill().unwrap();
    nodes[0].child.wait().unwrap();
    let killed_at = read_logs(&logs[..1]).0.len();

    // The survivors finish everything, the killed node's messages included.
    loop {
        if work_left(&js, &topology).await == (0, 0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "work left: {:?}",
            work_left(&js, &topology).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &mut nodes[1..] {
        drop(n.child.stdin.take());
        assert!(n.child.wait().unwrap().success());
    }
    let elapsed = started.elapsed();

    let (runs, done) = read_logs(&logs);
    let dead = dead_letters(&js, &topology).await;
    let mut dead_ids: HashMap<u64, String> = HashMap::new();
    for d in &dead {
        let id = parse_id(&d.payload);
        let reason = header(d, HEADER_REASON).unwrap();
        assert!(
            dead_ids.insert(id, reason).is_none(),
            "job {id} dead-lettered twice"
        );
    }
    let mut redone = 0;
    for id in 0..total {
        let k = kind(id);
        let ran = runs.get(&id).copied().unwrap_or(0);
        let reason = dead_ids.get(&id).map(String::as_str);
        match k {
            Kind::Ok | Kind::Flaky => {
                assert!(done.contains(&id), "job {id} ({k:?}) never completed");
                assert_eq!(reason, None, "job {id} ({k:?}) dead-lettered");
                let expected = if k == Kind::Flaky { 2 } else { 1 };
                redone += u32::from(ran > expected);
            }
            Kind::Fail => assert_eq!(reason, Some("failed"), "job {id}"),
            Kind::Broken | Kind::Panic => assert_eq!(reason, Some("max-deliver"), "job {id}"),
            Kind::OnceOk | Kind::OnceFail | Kind::OncePanic => {
                assert!(ran <= 1, "at-most-once job {id} ran {ran} times");
                match (k, reason) {
                    (_, None) => {}
                    (Kind::OnceFail, Some("failed")) | (Kind::OncePanic, Some("panicked")) => {
                        assert_eq!(ran, 1)
                    }
                    (k, r) => panic!("at-most-once job {id} ({k:?}) dead-lettered as {r:?}"),
                }
            }
        }
    }
    assert!(killed_at > 0, "the killed node ran nothing");
    eprintln!(
        "{total} jobs, 3 nodes, one killed after its {killed_at} runs: done in {elapsed:?}; \
         {} dead letters; {redone} at-least-once jobs redone after the kill",
        dead.len()
    );
}
