//! tasker against what a user would pick instead for work on a database: the same SQLite file,
//! the same queries, the same machine, one run.
//!
//! Guards the claim that per-worker resources cost nothing against the usual connection pool +
//! thread pool pairings, and catches a regression that would make a real (short) query
//! slower through tasker. Contenders, each with 2 threads and 2 connections (the machine has
//! 2 cores):
//!
//! - `tasker`: `queue_task` on a manager whose 2 workers each own a connection (builder
//!   defaults: workers pinned one per CPU);
//! - `tasker unpinned`: the same with `pin_workers(false)`, as the peers' threads are (on a
//!   machine shared with other load, a pinned worker cannot move to a CPU that is free);
//! - `r2d2+threadpool`: a `threadpool` of 2 threads; each job checks a connection out of an
//!   `r2d2` pool of 2 (`r2d2_sqlite`, which also runs `is_valid` on checkout), answering on a
//!   channel;
//! - `deadpool interact`: `deadpool-sqlite`'s `pool.get().await` then `interact` on a tokio
//!   runtime of 2 workers (the closure runs on tokio's blocking pool); its recycle step runs a
//!   query on every checkout, as it does for its users;
//! - `rayon thread-local`: `pool.install` on a rayon pool of 2 threads, each with a
//!   thread-local connection.
//!
//! Two operations: a point query (`SELECT value FROM kv WHERE id = ?`, a prepared statement
//! cached per connection) and a small write transaction (`BEGIN IMMEDIATE`, one `UPDATE`, one
//! `INSERT`, `COMMIT`), over a table of 10,000 rows in a temp-dir file in WAL mode with
//! `synchronous = NORMAL` on every connection. With 1 and with 8 client threads, each sending
//! one request at a time and blocking for its answer (a request handler's shape). Each
//! (operation, clients) cell runs every contender once per round, in a rotated order, for
//! `BENCH_SQLITE_ROUNDS` rounds (default 5): throughput is the median over the rounds, latency
//! percentiles come from every request of every round (an `hdrhistogram`, client side: from
//! before the submission to the answer in hand).
//!
//! Not criterion: criterion times one closure, while this needs many client threads sharing
//! one contender and rounds that alternate contenders. `harness = false`; it prints a markdown
//! table.
//!
//! Full run (about a minute): `cargo bench -p tasker-benches --bench sqlite`
//! CI (quick): `cargo bench -p tasker-benches --bench sqlite -- --quick`

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rusqlite::{Connection, TransactionBehavior};
use tasker::TaskManager;

/// Threads and connections every contender gets.
const WORKERS: usize = 2;
/// Rows in the table.
const ROWS: i64 = 10_000;
static DB_PATH: OnceLock<PathBuf> = OnceLock::new();

// ----- the database -----

fn open() -> Connection {
    let conn = Connection::open(DB_PATH.get().expect("made first")).expect("open");
    prepare(&conn);
    conn
}

/// What every connection of every contender gets.
fn prepare(conn: &Connection) {
    conn.busy_timeout(Duration::from_secs(10)).expect("busy");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("synchronous");
}

fn make_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let mut conn = Connection::open(path).expect("create");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.execute_batch(
        "CREATE TABLE kv (id INTEGER PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE log (id INTEGER PRIMARY KEY, k INTEGER NOT NULL);",
    )
    .expect("schema");
    let tx = conn.transaction().expect("tx");
    {
        let mut insert = tx
            .prepare("INSERT INTO kv (id, value) VALUES (?1, ?1)")
            .expect("insert");
        for id in 1..=ROWS {
            insert.execute([id]).expect("row");
        }
    }
    tx.commit().expect("seed");
}

fn point(conn: &mut Connection, id: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM kv WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
}

fn write(conn: &mut Connection, id: i64) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached("UPDATE kv SET value = value + 1 WHERE id = ?1")?
        .execute([id])?;
    tx.prepare_cached("INSERT INTO log (k) VALUES (?1)")?
        .execute([id])?;
    tx.commit()?;
    Ok(id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Point,
    Write,
}

impl Op {
    fn run(self, conn: &mut Connection, id: i64) -> rusqlite::Result<i64> {
        match self {
            Op::Point => point(conn, id),
            Op::Write => write(conn, id),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Point => "point query",
            Op::Write => "write transaction",
        }
    }
}

// ----- the contenders -----

/// One contender, cloned into each client thread; `call` blocks until the answer.
trait Contender: Clone + Send + 'static {
    fn call(&self, op: Op, id: i64) -> i64;
}

#[derive(Clone)]
struct Tasker(TaskManager<Connection, rusqlite::Error>);

impl Tasker {
    fn new(pin: bool) -> Self {
        let manager = TaskManager::builder()
            .on_create(|| Ok(open()))
            .pin_workers(pin)
            .worker_count(WORKERS)
            .max_worker_count(WORKERS)
            .resource_pool_size(0)
            .build()
            .expect("tasker");
        Tasker(manager)
    }
}

impl Contender for Tasker {
    fn call(&self, op: Op, id: i64) -> i64 {
        self.0
            .queue_task(move |conn, _| op.run(conn, id))
            .expect("tasker query")
    }
}

#[derive(Clone)]
struct R2d2Threadpool {
    pool: r2d2::Pool<r2d2_sqlite::SqliteConnectionManager>,
    threads: threadpool::ThreadPool,
}

impl R2d2Threadpool {
    fn new() -> Self {
        let manager = r2d2_sqlite::SqliteConnectionManager::file(DB_PATH.get().expect("made"))
            .with_init(|conn| {
                prepare(conn);
                Ok(())
            });
        let pool = r2d2::Pool::builder()
            .max_size(WORKERS as u32)
            .build(manager)
            .expect("r2d2");
        R2d2Threadpool {
            pool,
            threads: threadpool::ThreadPool::new(WORKERS),
        }
    }
}

impl Contender for R2d2Threadpool {
    fn call(&self, op: Op, id: i64) -> i64 {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let pool = self.pool.clone();
        self.threads.execute(move || {
            let mut conn = pool.get().expect("r2d2 checkout");
            let _ = tx.send(op.run(&mut conn, id));
        });
        rx.recv().expect("answer").expect("r2d2 query")
    }
}

#[derive(Clone)]
struct Deadpool {
    pool: deadpool_sqlite::Pool,
    rt: tokio::runtime::Handle,
    _runtime: Arc<tokio::runtime::Runtime>,
}

impl Deadpool {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .max_blocking_threads(WORKERS)
            .enable_all()
            .build()
            .expect("tokio");
        let mut config = deadpool_sqlite::Config::new(DB_PATH.get().expect("made"));
        config.pool = Some(deadpool_sqlite::PoolConfig::new(WORKERS));
        let pool = config
            .create_pool(deadpool_sqlite::Runtime::Tokio1)
            .expect("deadpool");
        // deadpool-sqlite opens its connections itself: prepare both now, held at once so
        // they are two different connections.
        runtime.block_on(async {
            let a = pool.get().await.expect("checkout");
            let b = pool.get().await.expect("checkout");
            for conn in [&a, &b] {
                conn.interact(|c| prepare(c)).await.expect("interact");
            }
        });
        Deadpool {
            pool,
            rt: runtime.handle().clone(),
            _runtime: Arc::new(runtime),
        }
    }
}

impl Contender for Deadpool {
    fn call(&self, op: Op, id: i64) -> i64 {
        let pool = &self.pool;
        self.rt.block_on(async move {
            let conn = pool.get().await.expect("deadpool checkout");
            conn.interact(move |c| op.run(c, id))
                .await
                .expect("interact")
                .expect("deadpool query")
        })
    }
}

thread_local! {
    static RAYON_CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

#[derive(Clone)]
struct RayonLocal(Arc<rayon::ThreadPool>);

impl RayonLocal {
    fn new() -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(WORKERS)
            .build()
            .expect("rayon");
        RayonLocal(Arc::new(pool))
    }
}

impl Contender for RayonLocal {
    fn call(&self, op: Op, id: i64) -> i64 {
        self.0.install(|| {
            RAYON_CONN.with(|c| {
                let mut c = c.borrow_mut();
                let conn = c.get_or_insert_with(open);
                op.run(conn, id).expect("rayon query")
            })
        })
    }
}

// ----- the driver -----

/// One run: `clients` threads send `total` requests between them; returns the wall time.
fn run<C: Contender>(
    c: &C,
    op: Op,
    clients: usize,
    total: usize,
    hist: &mut Histogram<u64>,
) -> Duration {
    let per_client = total / clients;
    let start_line = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|k| {
            let (c, start_line) = (c.clone(), start_line.clone());
            thread::spawn(move || {
                let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 2).expect("hist");
                let mut id = (k as i64 * 7_919) % ROWS;
                start_line.wait();
                for _ in 0..per_client {
                    id = (id * 48_271 + 11) % ROWS;
                    let t = Instant::now();
                    std::hint::black_box(c.call(op, 1 + id));
                    let _ = h.record(t.elapsed().as_nanos() as u64);
                }
                h
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    let mut hists = Vec::with_capacity(clients);
    for t in threads {
        hists.push(t.join().expect("client"));
    }
    let elapsed = start.elapsed();
    for h in hists {
        hist.add(h).expect("same bounds");
    }
    elapsed
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

struct Cell {
    name: &'static str,
    rates: Vec<f64>,
    hist: Histogram<u64>,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick {
        1
    } else {
        env_usize("BENCH_SQLITE_ROUNDS", 5)
    };
    let reads = if quick {
        2_000
    } else {
        env_usize("BENCH_SQLITE_READS", 40_000)
    };
    let writes = if quick {
        400
    } else {
        env_usize("BENCH_SQLITE_WRITES", 8_000)
    };
    let path = std::env::temp_dir().join(format!("tasker-bench-{}.sqlite3", std::process::id()));
    make_database(&path);
    DB_PATH.set(path.clone()).expect("once");

    let tasker = Tasker::new(true);
    let unpinned = Tasker::new(false);
    let r2d2 = R2d2Threadpool::new();
    let deadpool = Deadpool::new();
    let rayon = RayonLocal::new();

    // Warm-up, not recorded: every connection opened, statements cached, threads started.
    let mut scratch = Histogram::new_with_bounds(1, 10_000_000_000, 2).expect("hist");
    for op in [Op::Point, Op::Write] {
        run(&tasker, op, 8, 400, &mut scratch);
        run(&unpinned, op, 8, 400, &mut scratch);
        run(&r2d2, op, 8, 400, &mut scratch);
        run(&deadpool, op, 8, 400, &mut scratch);
        run(&rayon, op, 8, 400, &mut scratch);
    }
    println!(
        "SQLite, {WORKERS} threads and {WORKERS} connections per contender; {rounds} rounds, \
         contenders alternating; {reads} point queries and {writes} write transactions per run"
    );
    println!();
    println!("| operation | clients | contender | requests/s (median) | p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for op in [Op::Point, Op::Write] {
        let total = if op == Op::Point { reads } else { writes };
        for clients in [1, 8] {
            let new_cell = |name| Cell {
                name,
                rates: Vec::new(),
                hist: Histogram::new_with_bounds(1, 10_000_000_000, 2).expect("hist"),
            };
            let mut cells = [
                new_cell("tasker"),
                new_cell("tasker unpinned"),
                new_cell("r2d2+threadpool"),
                new_cell("deadpool interact"),
                new_cell("rayon thread-local"),
            ];
            for round in 0..rounds {
                for k in 0..cells.len() {
                    let i = (k + round) % cells.len();
                    let cell = &mut cells[i];
                    let elapsed = match i {
                        0 => run(&tasker, op, clients, total, &mut cell.hist),
                        1 => run(&unpinned, op, clients, total, &mut cell.hist),
                        2 => run(&r2d2, op, clients, total, &mut cell.hist),
                        3 => run(&deadpool, op, clients, total, &mut cell.hist),
                        _ => run(&rayon, op, clients, total, &mut cell.hist),
                    };
                    let done = (total / clients * clients) as f64;
                    cell.rates.push(done / elapsed.as_secs_f64());
                }
            }
            for cell in &mut cells {
                cell.rates.sort_by(f64::total_cmp);
                let median = cell.rates[cell.rates.len() / 2];
                let us = |q| cell.hist.value_at_quantile(q) as f64 / 1_000.0;
                println!(
                    "| {} | {clients} | {} | {:.0} | {:.1} µs | {:.1} µs |",
                    op.name(),
                    cell.name,
                    median,
                    us(0.50),
                    us(0.99)
                );
            }
        }
    }
    tasker.0.stop().expect("stop");
    unpinned.0.stop().expect("stop");
    drop((r2d2, rayon));
    // deadpool's pool must be dropped inside its runtime, and before it.
    let Deadpool {
        pool, rt, _runtime, ..
    } = deadpool;
    {
        let _inside = rt.enter();
        drop(pool);
    }
    drop(_runtime);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
