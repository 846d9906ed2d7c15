//! Three tasker nodes and a producer on one machine, over one NATS JetStream stream.
//!
//! ```text
//! cargo run --release -p tasker-nats --example cluster            # the demo
//! cargo run --release -p tasker-nats --example cluster -- bench   # throughput: local vs 1 vs 3 nodes
//! ```
//!
//! It starts a local `nats-server -js` (set `NATS_URL` to use a running one instead), then
//! runs each node as a separate process (this same binary, `cluster node`). Demo: submits
//! `CLUSTER_JOBS` jobs (default 10,000; some fail, a few ask for a reply), waits until the
//! stream is drained, and prints what each node did and what was dead-lettered. Bench: times
//! `BENCH_JOBS` jobs (default 20,000) end to end (submit, run, ack) `BENCH_RUNS` times
//! (default 5) each for a local `TaskManager`, one node and three nodes, and prints medians.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tasker::{TaskContext, TaskManager};
use tasker_nats::server::LocalServer;
use tasker_nats::{Handlers, Job, Node, Producer, Topology};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The handlers' error: `Busy` is unhealthy (the resource is replaced, the task retried).
#[derive(Debug)]
enum WorkError {
    Invalid(String),
    Busy,
}

impl std::fmt::Display for WorkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkError::Invalid(m) => write!(f, "invalid job: {m}"),
            WorkError::Busy => f.write_str("resource busy"),
        }
    }
}

impl std::error::Error for WorkError {}

/// A worker's resource: here just a count of the jobs it ran.
struct Resource {
    jobs: u64,
}

fn topology() -> Topology {
    Topology::new("cluster_demo")
        .memory_storage(std::env::var_os("CLUSTER_FILE_STORAGE").is_none())
        .ack_wait(Duration::from_secs(5))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("node") => node_main(&args[1], &args[2]),
        Some("bench") => with_server(bench),
        _ => with_server(demo),
    }
}

fn with_server(f: fn(&str) -> Result<(), BoxError>) -> Result<(), BoxError> {
    match std::env::var("NATS_URL") {
        Ok(url) => f(&url),
        Err(_) => {
            let server = LocalServer::start()?;
            println!("nats-server started at {}", server.url());
            f(&server.url())
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn handlers() -> Result<Handlers<Resource, WorkError>, tasker_nats::Error> {
    Handlers::new()
        .register(
            "checksum",
            |r: &mut Resource, _ctx: &TaskContext, p: &[u8]| {
                r.jobs += 1;
                let sum = p.iter().fold(0u32, |a, &b| a.rotate_left(5) ^ u32::from(b));
                Ok(sum.to_be_bytes().to_vec())
            },
        )?
        .register("parse", |r: &mut Resource, ctx: &TaskContext, p: &[u8]| {
            r.jobs += 1;
            if ctx.attempt() == 1 && p.ends_with(b"7") {
                return Err(WorkError::Busy); // retried on a fresh resource
            }
            let text = std::str::from_utf8(p).map_err(|e| WorkError::Invalid(e.to_string()))?;
            let n: i64 = text
                .parse()
                .map_err(|_| WorkError::Invalid(format!("{text:?} is not a number")))?;
            Ok((n * 2).to_string().into_bytes())
        })
}

/// A node process: serves until its standard input closes, then stops gracefully and prints
/// its figures.
fn node_main(url: &str, name: &str) -> Result<(), BoxError> {
    runtime().block_on(async {
        let client = async_nats::connect(url).await?;
        let manager = TaskManager::builder()
            .on_create(|| Ok::<_, WorkError>(Resource { jobs: 0 }))
            .check_health(|e: &WorkError| !matches!(e, WorkError::Busy))
            .worker_count(2)
            .build()?;
        let node = Node::builder(client, manager.clone(), handlers()?)
            .topology(topology())
            .check_health(|e: &WorkError| !matches!(e, WorkError::Busy))
            .name(name)
            .capacity(256)
            .batch(128)
            .start()
            .await?;
        println!("ready");
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await?;
        let stats = node.stop().await;
        manager.stop()?;
        println!(
            "{name}: fetched {} acked {} nak'ed {} dead-lettered {} redelivered {} replies {}",
            stats.fetched,
            stats.acked,
            stats.naked,
            stats.dead_lettered,
            stats.redelivered,
            stats.replies
        );
        Ok(())
    })
}

struct NodeProcess {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

fn spawn_nodes(url: &str, n: usize) -> Result<Vec<NodeProcess>, BoxError> {
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut child = Command::new(&exe)
            .args(["node", url, &format!("node-{i}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        while line.trim() != "ready" {
            line.clear();
            if out.read_line(&mut line)? == 0 {
                return Err("a node exited before it was ready".into());
            }
        }
        nodes.push(NodeProcess { child, out });
    }
    Ok(nodes)
}

fn stop_nodes(nodes: Vec<NodeProcess>, print: bool) -> Result<(), BoxError> {
    for mut n in nodes {
        drop(n.child.stdin.take());
        let mut rest = String::new();
        n.out.read_to_string(&mut rest)?;
        n.child.wait()?;
        if print {
            print!("  {rest}");
        }
    }
    Ok(())
}

/// Waits until the stream is empty and nothing is out unacknowledged.
async fn drained(js: &jetstream::Context, topology: &Topology) -> Result<(), BoxError> {
    let mut stream = js.get_stream(topology.stream_name()).await?;
    loop {
        let mut left = stream.info().await?.state.messages;
        for p in [false, true] {
            let mut c: jetstream::consumer::PullConsumer =
                stream.get_consumer(&topology.consumer_name(p)).await?;
            left += c.info().await?.num_ack_pending as u64;
        }
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Submits `jobs` with up to 1,000 publishes in flight.
async fn submit_all(producer: &Producer, jobs: impl Iterator<Item = Job>) -> Result<(), BoxError> {
    let mut pending = tokio::task::JoinSet::new();
    for job in jobs {
        let p = producer.clone();
        pending.spawn(async move { p.submit(job).await });
        if pending.len() >= 1000
            && let Some(r) = pending.join_next().await
        {
            r??;
        }
    }
    while let Some(r) = pending.join_next().await {
        r??;
    }
    Ok(())
}

fn demo(url: &str) -> Result<(), BoxError> {
    let jobs = env_or("CLUSTER_JOBS", 10_000);
    let nodes = spawn_nodes(url, 3)?;
    println!("3 nodes ready; submitting {jobs} jobs");
    runtime().block_on(async {
        let client = async_nats::connect(url).await?;
        let js = jetstream::new(client.clone());
        let topology = topology();
        topology.ensure(&js).await?;
        let producer = Producer::new(client, topology.clone());
        let start = Instant::now();
        // Every 100th job is malformed (a healthy failure: dead-lettered); every 10th is
        // priority; ids make resubmission harmless.
        let all = (0..jobs).map(|i| {
            let payload = if i % 100 == 99 {
                "x".to_owned()
            } else {
                i.to_string()
            };
            let job = Job::new(if i % 2 == 0 { "checksum" } else { "parse" }, payload)
                .id(format!("demo-{i}"));
            if i % 10 == 0 { job.priority() } else { job }
        });
        submit_all(&producer, all).await?;
        // A remote call: submit and await the reply.
        let reply = producer
            .request(Job::new("parse", "21"), Duration::from_secs(10))
            .await?;
        println!(
            "request parse(21) -> {:?}",
            reply.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
        let reply = producer
            .request(Job::new("parse", "twenty"), Duration::from_secs(10))
            .await?;
        println!("request parse(\"twenty\") -> {reply:?}");
        drained(&js, &topology).await?;
        let elapsed = start.elapsed();
        let dead = js
            .get_stream(topology.dead_stream_name())
            .await?
            .info()
            .await?
            .state
            .messages;
        println!(
            "{} jobs done in {elapsed:.2?} ({:.0} jobs/s); {dead} in the dead-letter stream",
            jobs + 2,
            (jobs + 2) as f64 / elapsed.as_secs_f64()
        );
        Ok::<_, BoxError>(())
    })?;
    stop_nodes(nodes, true)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(url: &str) -> Result<(), BoxError> {
    let jobs = env_or("BENCH_JOBS", 20_000);
    let runs = env_or("BENCH_RUNS", 5) as usize;
    println!("{jobs} jobs end to end, median of {runs} runs (2 workers per manager)");

    // Local: the same handler body through a TaskManager's queue, no broker.
    let mut local = Vec::new();
    for _ in 0..runs {
        let manager = TaskManager::builder()
            .on_create(|| Ok::<_, WorkError>(Resource { jobs: 0 }))
            .worker_count(2)
            .build()?;
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        for i in 0..jobs {
            let payload = i.to_string().into_bytes();
            let done = Arc::clone(&done);
            manager.queue_task_with_callback(
                move |r: &mut Resource, _ctx: &TaskContext| {
                    r.jobs += 1;
                    Ok::<_, WorkError>(
                        payload
                            .iter()
                            .fold(0u32, |a, &b| a.rotate_left(5) ^ u32::from(b)),
                    )
                },
                move |_| {
                    done.fetch_add(1, Ordering::Release);
                },
            );
        }
        while done.load(Ordering::Acquire) < jobs {
            std::thread::yield_now();
        }
        local.push(start.elapsed().as_secs_f64());
        manager.stop()?;
    }
    let local = median(local);
    let report = |label: &str, secs: f64| {
        println!(
            "  {label:<10} {:>10.0} jobs/s  {:>8.2} µs/job  ({:.1}x the local cost)",
            jobs as f64 / secs,
            secs * 1e6 / jobs as f64,
            secs / local
        );
    };
    report("local", local);

    for n in [1, 3] {
        let mut times = Vec::new();
        for _ in 0..runs {
            let nodes = spawn_nodes(url, n)?;
            let secs = runtime().block_on(async {
                let client = async_nats::connect(url).await?;
                let js = jetstream::new(client.clone());
                let topology = topology();
                topology.ensure(&js).await?;
                let producer = Producer::new(client, topology.clone());
                let start = Instant::now();
                submit_all(
                    &producer,
                    (0..jobs).map(|i| Job::new("checksum", i.to_string())),
                )
                .await?;
                drained(&js, &topology).await?;
                Ok::<_, BoxError>(start.elapsed().as_secs_f64())
            })?;
            stop_nodes(nodes, false)?;
            times.push(secs);
        }
        report(&format!("{n} node(s)"), median(times));
    }
    Ok(())
}
