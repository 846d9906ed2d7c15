//! The README's first command: `cargo run --release --example demo`.
//!
//! A small service in one file. Each worker owns a simulated database connection. Client
//! threads send queries the way request handlers would: fire-and-forget writes with a callback,
//! fan-outs of reads they wait for through handles, blocking lookups, a few priority requests,
//! and a few `run_task` calls that bypass the queues. Now and then a connection breaks (the
//! worker replaces it and the query is retried), a query fails plainly (no retry), and a bug
//! panics (the worker survives with a fresh connection).
//!
//! While it runs, a live view (drawn with `indicatif` when the output is a terminal) shows the
//! tasks answered, workers, queue depths, rates and latency percentiles from `stats()` and
//! `metrics()`. At the end it prints a table and checks the two promises: every task got
//! exactly one answer, and every connection opened was closed.
//!
//! `DEMO_TASKS=500 cargo run --release --example demo` runs a smaller workload.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tasker::{TaskContext, TaskError, TaskHandle, TaskManager, TaskMetrics};

/// Tasks submitted when `DEMO_TASKS` is not set.
const DEFAULT_TASKS: u64 = 20_000;
/// Client threads submitting tasks concurrently.
const CLIENTS: u64 = 4;
/// A client waits for its fanned-out reads once it has this many handles.
const FAN_OUT: usize = 16;
/// Per-attempt odds, in 1/1000, that the connection breaks during a query (unhealthy).
const BROKEN_PER_MILLE: u64 = 15;
/// Per-attempt odds, in 1/1000, of a plain query error (healthy: no retry).
const FAILED_PER_MILLE: u64 = 10;
/// One task in this many hits a bug and panics.
const PANIC_EVERY: u64 = 4_999;
/// Marks the panics this demo causes on purpose (see `quiet_simulated_panics`).
const SIMULATED_BUG: &str = "simulated bug";

// ---------------------------------------------------------------------------------------------
// The resource: a simulated database connection.

static NEXT_CONN_ID: AtomicU32 = AtomicU32::new(1);
static CONNS_OPENED: AtomicU64 = AtomicU64::new(0);
static CONNS_CLOSED: AtomicU64 = AtomicU64::new(0);
/// Queries run by connections that have been closed.
static QUERIES_RUN: AtomicU64 = AtomicU64::new(0);

struct Db {
    id: u32,
    queries: u64,
}

impl Db {
    fn connect() -> Result<Db, DbError> {
        CONNS_OPENED.fetch_add(1, Ordering::Relaxed);
        Ok(Db {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            queries: 0,
        })
    }

    fn close(self) -> Result<(), DbError> {
        CONNS_CLOSED.fetch_add(1, Ordering::Relaxed);
        QUERIES_RUN.fetch_add(self.queries, Ordering::Relaxed);
        Ok(())
    }

    /// Runs one query: takes 20–200 µs (plus the OS's sleep granularity), and sometimes
    /// fails. The outcome depends only on the task and the attempt, so runs are reproducible.
    fn query(&mut self, task: u64, ctx: &TaskContext) -> Result<Reply, DbError> {
        self.queries += 1;
        let roll = mix(task, ctx.attempt());
        thread::sleep(Duration::from_micros(20 + roll % 181));
        let per_mille = (roll >> 16) % 1000;
        if per_mille < BROKEN_PER_MILLE {
            return Err(DbError::ConnectionLost { conn: self.id });
        }
        if per_mille < BROKEN_PER_MILLE + FAILED_PER_MILLE {
            return Err(DbError::Query(format!(
                "task {task}: unique constraint violated"
            )));
        }
        if task % PANIC_EVERY == PANIC_EVERY - 1 {
            panic!("{SIMULATED_BUG} in task {task}: NULL in a NOT NULL column");
        }
        Ok(Reply {
            rows: (roll >> 32) % 100,
            attempt: ctx.attempt(),
        })
    }
}

/// What a query returns.
struct Reply {
    rows: u64,
    /// Which run produced it (1 = the first).
    attempt: u32,
}

#[derive(Debug)]
enum DbError {
    /// The connection is gone: the worker must replace it.
    ConnectionLost { conn: u32 },
    /// The query itself failed; the connection is fine.
    Query(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::ConnectionLost { conn } => write!(f, "connection #{conn} lost"),
            DbError::Query(msg) => write!(f, "query failed: {msg}"),
        }
    }
}

impl std::error::Error for DbError {}

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-randomness.

/// xorshift64*: a tiny, deterministic generator.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// One pseudo-random number per (task, attempt).
fn mix(task: u64, attempt: u32) -> u64 {
    XorShift::new(task.wrapping_mul(31).wrapping_add(u64::from(attempt))).next()
}

// ---------------------------------------------------------------------------------------------
// Answers, as the clients see them.

#[derive(Default)]
struct Answers {
    ok: AtomicU64,
    /// Rows returned by the `Ok` answers.
    rows: AtomicU64,
    /// `Ok`, on a retry after the connection broke.
    ok_after_retry: AtomicU64,
    /// `Failed` with a plain query error (healthy: never retried).
    query_failed: AtomicU64,
    /// `Failed` with a lost connection on the first run: at-most-once writes and `run_task`,
    /// which are never retried.
    lost_not_retried: AtomicU64,
    /// `Failed` after the task was retried (it failed again on a later attempt).
    failed_on_retry: AtomicU64,
    panicked: AtomicU64,
    other: AtomicU64,
}

impl Answers {
    fn record(&self, outcome: &Result<Reply, TaskError<DbError>>) {
        if let Ok(reply) = outcome {
            self.rows.fetch_add(reply.rows, Ordering::Relaxed);
        }
        let counter = match outcome {
            Ok(reply) if reply.attempt > 1 => {
                self.ok_after_retry.fetch_add(1, Ordering::Relaxed);
                &self.ok
            }
            Ok(_) => &self.ok,
            Err(TaskError::Failed { attempts: 2.., .. }) => &self.failed_on_retry,
            Err(TaskError::Failed {
                error: DbError::ConnectionLost { .. },
                ..
            }) => &self.lost_not_retried,
            Err(TaskError::Failed { .. }) => &self.query_failed,
            Err(TaskError::Panicked { .. }) => &self.panicked,
            Err(_) => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self) -> u64 {
        self.query_failed.load(Ordering::Relaxed)
            + self.lost_not_retried.load(Ordering::Relaxed)
            + self.failed_on_retry.load(Ordering::Relaxed)
    }

    fn total(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.failed()
            + self.panicked.load(Ordering::Relaxed)
            + self.other.load(Ordering::Relaxed)
    }
}

/// How many tasks of each kind the clients submitted.
#[derive(Default)]
struct Submitted {
    callback: AtomicU64,
    handle: AtomicU64,
    blocking: AtomicU64,
    once: AtomicU64,
    priority: AtomicU64,
    run_task: AtomicU64,
}

impl Submitted {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tasks: u64 = match std::env::var("DEMO_TASKS") {
        Ok(s) => s.parse()?,
        Err(_) => DEFAULT_TASKS,
    };
    quiet_simulated_panics();

    // Builder defaults: one pinned worker per CPU, 3 retries, a run_task pool of one connection
    // per worker, unbounded queues.
    let manager = TaskManager::builder()
        .on_create(Db::connect)
        .on_destroy(Db::close)
        .check_health(|e: &DbError| !matches!(e, DbError::ConnectionLost { .. }))
        .build()?;
    let stats = manager.stats();
    println!(
        "tasker demo: {tasks} queries from {CLIENTS} clients on {} workers (connections opened so far: {})",
        stats.base_workers,
        CONNS_OPENED.load(Ordering::Relaxed)
    );

    let answers = Arc::new(Answers::default());
    let submitted = Arc::new(Submitted::default());
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();

    // The live view: samples `stats()` and `metrics()` while the clients run.
    let view = live_view(tasks);
    let sampler = {
        let (manager, done, answers, view) =
            (manager.clone(), done.clone(), answers.clone(), view.clone());
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let (s, m) = (manager.stats(), manager.metrics());
                view.progress.set_position(answers.total());
                view.status.set_message(format!(
                    "workers {}/{} (burst {})  queued {} + {} priority  pending {}\n\
                     rates/s  in {:.0}  ok {:.0}  failed {:.0}  retried {:.0}\n\
                     run      p50 {:.1?}  p99 {:.1?}   wait p50 {:.1?}  p99 {:.1?}",
                    s.active_workers,
                    s.base_workers,
                    s.burst_workers,
                    s.queued_tasks,
                    s.priority_tasks,
                    s.pending_tasks,
                    m.task_arrival_rate,
                    m.task_completion_rate,
                    m.task_failure_rate,
                    m.task_retry_rate,
                    m.p50_execution_time,
                    m.p99_execution_time,
                    m.p50_wait_time,
                    m.p99_wait_time,
                ));
                thread::sleep(Duration::from_millis(50));
            }
            view.progress.finish();
            view.status.finish_and_clear();
        })
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let manager = manager.clone();
            let (answers, submitted) = (answers.clone(), submitted.clone());
            thread::Builder::new()
                .name(format!("client-{client}"))
                .spawn(move || client_loop(client, tasks, &manager, &answers, &submitted))
                .expect("spawn a client thread")
        })
        .collect();
    for c in clients {
        c.join().expect("a client thread panicked");
    }

    // Everything is submitted; `stop` runs what is still queued (retries included), then
    // closes every connection.
    let stopped = manager.stop();
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler panicked");

    let m = manager.metrics();
    let answered = answers.total();
    let total_submitted = tasks;
    let opened = CONNS_OPENED.load(Ordering::Relaxed);
    let closed = CONNS_CLOSED.load(Ordering::Relaxed);

    println!("\nsubmitted        {total_submitted}");
    println!(
        "  by delivery    callback {}, handle {}, blocking {}, run_task {}",
        submitted.callback.load(Ordering::Relaxed),
        submitted.handle.load(Ordering::Relaxed),
        submitted.blocking.load(Ordering::Relaxed),
        submitted.run_task.load(Ordering::Relaxed),
    );
    println!(
        "  of which       priority {}, at-most-once {}",
        submitted.priority.load(Ordering::Relaxed),
        submitted.once.load(Ordering::Relaxed),
    );
    println!(
        "answered         {answered}: ok {}, failed {}, panicked {}, other {}",
        answers.ok.load(Ordering::Relaxed),
        answers.failed(),
        answers.panicked.load(Ordering::Relaxed),
        answers.other.load(Ordering::Relaxed),
    );
    println!(
        "  ok             {} on the first run, {} after a broken connection and a retry; {} rows",
        answers.ok.load(Ordering::Relaxed) - answers.ok_after_retry.load(Ordering::Relaxed),
        answers.ok_after_retry.load(Ordering::Relaxed),
        answers.rows.load(Ordering::Relaxed),
    );
    println!(
        "  failed         {} query errors (healthy: not retried)",
        answers.query_failed.load(Ordering::Relaxed)
    );
    println!(
        "                 {} broken connections in at-most-once writes or run_task (not retried)",
        answers.lost_not_retried.load(Ordering::Relaxed)
    );
    println!(
        "                 {} failed again on a retry",
        answers.failed_on_retry.load(Ordering::Relaxed)
    );
    print_metrics(&m);
    println!(
        "metrics()        ok {}, failed {} (panicked {}), retried {}, success rate {:.2}%",
        m.total_tasks_completed,
        m.total_tasks_failed,
        m.total_tasks_panicked,
        m.total_tasks_retried,
        m.success_rate * 100.0
    );
    println!(
        "connections      opened {opened}, closed {closed}, replaced {}; {} queries run",
        m.total_resources_replaced,
        QUERIES_RUN.load(Ordering::Relaxed)
    );
    println!(
        "elapsed          {:.2?}, {:.0} tasks/s",
        elapsed,
        answered as f64 / elapsed.as_secs_f64()
    );
    println!("stop()           {stopped:?}");

    let one_answer_each = answered == total_submitted
        && m.total_tasks_completed + m.total_tasks_failed == total_submitted;
    let all_closed = opened == closed;
    println!(
        "\nevery task answered exactly once: {}",
        if one_answer_each { "yes" } else { "NO" }
    );
    println!(
        "every connection closed:          {}",
        if all_closed { "yes" } else { "NO" }
    );
    stopped?;
    if !(one_answer_each && all_closed) {
        return Err("an invariant did not hold".into());
    }
    Ok(())
}

/// One client: submits its share of the tasks (every `CLIENTS`-th task id), in every mode.
fn client_loop(
    client: u64,
    tasks: u64,
    manager: &TaskManager<Db, DbError>,
    answers: &Arc<Answers>,
    submitted: &Submitted,
) {
    let mut rng = XorShift::new(client + 1);
    let mut handles: Vec<TaskHandle<Reply, DbError>> = Vec::with_capacity(FAN_OUT);
    for task in (client..tasks).step_by(CLIENTS as usize) {
        let read = move |db: &mut Db, ctx: &TaskContext| db.query(task, ctx);
        let roll = rng.next() % 1000;
        // One queued task in ten is urgent (`run_task` does not queue, so has no priority).
        let priority = roll >= 5 && rng.next().is_multiple_of(10);
        if priority {
            Submitted::add(&submitted.priority);
        }
        match roll {
            // A few requests run right here, on a pooled connection.
            0..=4 => {
                Submitted::add(&submitted.run_task);
                answers.record(
                    &manager.run_task(|db: &mut Db, ctx: &TaskContext| db.query(task, ctx)),
                );
            }
            // Fire-and-forget writes: at most once, the answer arrives in a callback.
            5..=149 => {
                Submitted::add(&submitted.callback);
                Submitted::add(&submitted.once);
                let answers = answers.clone();
                let cb = move |r: Result<Reply, _>| answers.record(&r);
                let write = move |db: &mut Db, ctx: &TaskContext| db.query(task, ctx);
                if priority {
                    manager.queue_task_with_priority_once_with_callback(write, cb);
                } else {
                    manager.queue_task_once_with_callback(write, cb);
                }
            }
            // Retryable reads with a callback.
            150..=549 => {
                Submitted::add(&submitted.callback);
                let answers = answers.clone();
                let cb = move |r: Result<Reply, _>| answers.record(&r);
                if priority {
                    manager.queue_task_with_priority_with_callback(read, cb);
                } else {
                    manager.queue_task_with_callback(read, cb);
                }
            }
            // Fan-out reads: collect handles, then wait for the whole batch.
            550..=899 => {
                Submitted::add(&submitted.handle);
                handles.push(if priority {
                    manager.queue_task_with_priority_async(read)
                } else {
                    manager.queue_task_async(read)
                });
                if handles.len() == FAN_OUT {
                    for h in handles.drain(..) {
                        answers.record(&h.wait());
                    }
                }
            }
            // Blocking lookups: this thread waits for the answer.
            _ => {
                Submitted::add(&submitted.blocking);
                answers.record(&if priority {
                    manager.queue_task_with_priority(read)
                } else {
                    manager.queue_task(read)
                });
            }
        }
    }
    for h in handles {
        answers.record(&h.wait());
    }
}

/// The demo's own panics are expected: print one line for those (tasker catches them and
/// answers `TaskError::Panicked`); any other panic gets the default report.
fn quiet_simulated_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        match info.payload().downcast_ref::<String>() {
            Some(msg) if msg.starts_with(SIMULATED_BUG) => {
                let thread = thread::current();
                let line = format!("  [{}] panicked: {msg}", thread.name().unwrap_or("?"));
                match LIVE.get() {
                    // Above the live view, which would otherwise draw over it.
                    Some(multi) if !multi.is_hidden() => {
                        let _ = multi.println(line);
                    }
                    _ => println!("{line}"),
                }
            }
            _ => default(info),
        }
    }));
}

/// The live view's bars; `LIVE` lets the panic hook print above them.
#[derive(Clone)]
struct LiveView {
    progress: ProgressBar,
    status: ProgressBar,
}

static LIVE: OnceLock<MultiProgress> = OnceLock::new();

/// A progress bar of tasks answered and a three-line status under it. Drawn on stderr when it
/// is a terminal, hidden otherwise (CI logs get the final table only).
fn live_view(tasks: u64) -> LiveView {
    let multi = LIVE.get_or_init(MultiProgress::new);
    let progress = multi.add(ProgressBar::new(tasks));
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} answered ({per_sec})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let status = multi.add(ProgressBar::new_spinner());
    status.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
    LiveView { progress, status }
}

/// The final table of `metrics()`.
fn print_metrics(m: &TaskMetrics) {
    println!(
        "\nmetrics() at the end (rates over the last {:?}):",
        m.rate_window
    );
    println!(
        "  {:<22} {:>12} {:>12} {:>12} {:>12}",
        "", "p50", "p99", "p99.9", "max"
    );
    println!(
        "  {:<22} {:>12.1?} {:>12.1?} {:>12.1?} {:>12.1?}",
        "execution time",
        m.p50_execution_time,
        m.p99_execution_time,
        m.p999_execution_time,
        m.max_execution_time
    );
    println!(
        "  {:<22} {:>12.1?} {:>12.1?} {:>12.1?} {:>12.1?}",
        "queue wait", m.p50_wait_time, m.p99_wait_time, m.p999_wait_time, m.max_wait_time
    );
    println!(
        "  {:<22} arrivals {:.0}/s, completions {:.0}/s, failures {:.0}/s, retries {:.0}/s",
        "rates",
        m.task_arrival_rate,
        m.task_completion_rate,
        m.task_failure_rate,
        m.task_retry_rate
    );
}
