//! The README's first command: `cargo run --release --example demo`.
//!
//! A small bank service in one file, on a real SQLite database (the `rusqlite` crate with its
//! bundled SQLite: nothing to install). The database is a file in the temp dir, made and seeded
//! at start (1,000 accounts) and deleted at the end. Each worker owns one connection.
//!
//! Client threads send requests the way handlers would, reads (a balance) and writes (a
//! transfer: a write transaction, submitted at most once) in every delivery mode: callbacks,
//! fan-outs through handles (the reads with a deadline), blocking calls, a few priority
//! requests, and a few `run_task` calls that bypass the queues. Now and then something goes wrong, as it does:
//!
//! - a connection is closed under its task, or the database fails over to read-only under a
//!   write: the error is unhealthy, the worker replaces its connection and the task is retried
//!   (at-most-once transfers are not);
//! - a read leaves its connection read-only behind it: `validate` catches that before the
//!   connection's next task;
//! - a transfer overdraws an account: a plain error (a `CHECK` constraint), never retried;
//! - a bug panics: the worker survives with a fresh connection.
//!
//! Connections are also replaced when they get old (`resource_max_lifetime`) or have served
//! enough tasks (`resource_max_uses`). The live view (drawn with `indicatif` when stderr is a
//! terminal) shows workers, queues, rates over the last second, latency percentiles since the
//! start, and the connections replaced by reason. At the end it prints a table and checks the
//! promises: every task got exactly one answer, every connection opened was closed, and the
//! money in the bank adds up.
//!
//! `DEMO_TASKS=20000 cargo run --release --example demo` runs a smaller workload.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tasker::{TaskContext, TaskError, TaskHandle, TaskManager, TaskMetrics};

/// Tasks submitted when `DEMO_TASKS` is not set.
const DEFAULT_TASKS: u64 = 150_000;
/// Client threads submitting tasks concurrently.
const CLIENTS: u64 = 4;
/// A client waits for its fanned-out reads once it has this many handles.
const FAN_OUT: usize = 16;
/// A fanned-out read must start within this, or it is answered `DeadlineExceeded`.
const READ_DEADLINE: Duration = Duration::from_millis(5);
/// Accounts seeded, each with `OPENING_BALANCE`.
const ACCOUNTS: i64 = 1_000;
const OPENING_BALANCE: i64 = 1_000;
/// Per-attempt odds, in 1/1000, that the connection is closed under a read.
const CLOSED_PER_MILLE: u64 = 1;
/// Per-attempt odds, in 1/1000, that the database fails over to read-only under a write.
const READ_ONLY_PER_MILLE: u64 = 2;
/// Per-read odds, in 1/1000, that a read leaves its connection read-only (for `validate`).
const STALE_PER_MILLE: u64 = 2;
/// Per-transfer odds, in 1/1000, of an overdraft (a plain, healthy error).
const OVERDRAFT_PER_MILLE: u64 = 10;
/// One task in this many hits a bug and panics.
const PANIC_EVERY: u64 = 29_989;
/// Marks the panics this demo causes on purpose (see `quiet_simulated_panics`).
const SIMULATED_BUG: &str = "simulated bug";

// ---------------------------------------------------------------------------------------------
// The resource: one SQLite connection.

static NEXT_CONN_ID: AtomicU32 = AtomicU32::new(1);
static CONNS_OPENED: AtomicU64 = AtomicU64::new(0);
static CONNS_CLOSED: AtomicU64 = AtomicU64::new(0);
static DB_PATH: OnceLock<PathBuf> = OnceLock::new();

struct Db {
    id: u32,
    /// `None` once it was closed under a task.
    conn: Option<Connection>,
}

impl Db {
    fn connect() -> Result<Db, DbError> {
        let path = DB_PATH
            .get()
            .expect("the database is made before the manager");
        let conn = Connection::open(path).map_err(DbError::Sql)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(DbError::Sql)?;
        // WAL (set on the file at creation) with NORMAL sync: a commit does not wait for the
        // disk, a checkpoint does.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(DbError::Sql)?;
        CONNS_OPENED.fetch_add(1, Ordering::Relaxed);
        Ok(Db {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            conn: Some(conn),
        })
    }

    fn close(self) -> Result<(), DbError> {
        CONNS_CLOSED.fetch_add(1, Ordering::Relaxed);
        match self.conn {
            Some(conn) => conn.close().map_err(|(_, e)| DbError::Sql(e)),
            None => Ok(()),
        }
    }

    /// `validate`: answers a trivial query and is writable.
    fn is_usable(&mut self) -> bool {
        let Some(conn) = &self.conn else {
            return false;
        };
        conn.query_row("PRAGMA query_only", [], |row| row.get::<_, bool>(0))
            .is_ok_and(|read_only| !read_only)
    }

    fn conn(&self) -> Result<&Connection, DbError> {
        self.conn
            .as_ref()
            .ok_or(DbError::ConnectionLost { conn: self.id })
    }

    /// What goes wrong on this attempt, decided by (task, attempt) so runs are reproducible.
    fn mishap(&mut self, task: u64, ctx: &TaskContext, per_mille: u64) -> Result<u64, DbError> {
        let roll = mix(task, ctx.attempt());
        if task % PANIC_EVERY == PANIC_EVERY - 1 {
            panic!("{SIMULATED_BUG} in task {task}: NULL in a NOT NULL column");
        }
        if (roll >> 20) % 1000 < per_mille
            && let Some(conn) = self.conn.take()
        {
            // Closed under the task, as a server dropping the link would.
            let _ = conn.close();
        }
        Ok(roll)
    }

    /// A point read: one account's balance.
    fn balance(&mut self, task: u64, ctx: &TaskContext) -> Result<i64, DbError> {
        let roll = self.mishap(task, ctx, CLOSED_PER_MILLE)?;
        let conn = self.conn()?;
        let account = 1 + (roll % ACCOUNTS as u64) as i64;
        let balance = conn
            .prepare_cached("SELECT balance FROM accounts WHERE id = ?1")
            .and_then(|mut s| s.query_row([account], |row| row.get(0)))
            .map_err(|e| DbError::from_sql(e, self.id))?;
        if (roll >> 40) % 1000 < STALE_PER_MILLE {
            // The replica this connection points at just became read-only; nobody noticed.
            let _ = conn.pragma_update(None, "query_only", true);
        }
        Ok(balance)
    }

    /// A small write transaction: moves money between two accounts and logs the transfer.
    fn transfer(&mut self, task: u64, ctx: &TaskContext) -> Result<i64, DbError> {
        let roll = self.mishap(task, ctx, 0)?;
        let id = self.id;
        let conn = self
            .conn
            .as_mut()
            .ok_or(DbError::ConnectionLost { conn: id })?;
        if (roll >> 20) % 1000 < READ_ONLY_PER_MILLE {
            // A failover under the task: the write below fails with SQLITE_READONLY.
            let _ = conn.pragma_update(None, "query_only", true);
        }
        let from = 1 + (roll % ACCOUNTS as u64) as i64;
        let to = 1 + ((roll >> 10) % ACCOUNTS as u64) as i64;
        let amount = if (roll >> 30) % 1000 < OVERDRAFT_PER_MILLE {
            1_000_000 // more than anyone has: the CHECK constraint refuses it
        } else {
            1 + ((roll >> 40) % 50) as i64
        };
        let sql = |e| DbError::from_sql(e, id);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        tx.prepare_cached("UPDATE accounts SET balance = balance - ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![from, amount]))
            .map_err(sql)?;
        tx.prepare_cached("UPDATE accounts SET balance = balance + ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![to, amount]))
            .map_err(sql)?;
        tx.prepare_cached(
            "INSERT INTO transfers (task, from_id, to_id, amount) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![task as i64, from, to, amount]))
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(amount)
    }
}

#[derive(Debug)]
enum DbError {
    /// The connection is gone: the worker must replace it.
    ConnectionLost { conn: u32 },
    /// The connection is read-only (a failover): the worker must replace it.
    ReadOnly { conn: u32 },
    /// Any other SQLite error (a constraint, say): the connection is fine.
    Sql(rusqlite::Error),
}

impl DbError {
    fn from_sql(e: rusqlite::Error, conn: u32) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::ReadOnly) => DbError::ReadOnly { conn },
            _ => DbError::Sql(e),
        }
    }

    /// `check_health`: a lost or read-only connection is broken.
    fn leaves_connection_usable(&self) -> bool {
        matches!(self, DbError::Sql(_))
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::ConnectionLost { conn } => write!(f, "connection #{conn} lost"),
            DbError::ReadOnly { conn } => write!(f, "connection #{conn} is read-only"),
            DbError::Sql(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DbError {}

/// Makes the database file: schema and seeded accounts.
fn make_database(path: &Path) -> rusqlite::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.execute_batch(
        "CREATE TABLE accounts (
             id      INTEGER PRIMARY KEY,
             owner   TEXT NOT NULL,
             balance INTEGER NOT NULL CHECK (balance >= 0)
         );
         CREATE TABLE transfers (
             id      INTEGER PRIMARY KEY,
             task    INTEGER NOT NULL,
             from_id INTEGER NOT NULL REFERENCES accounts(id),
             to_id   INTEGER NOT NULL REFERENCES accounts(id),
             amount  INTEGER NOT NULL
         );",
    )?;
    let tx = conn.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT INTO accounts (id, owner, balance) VALUES (?1, ?2, ?3)")?;
        for id in 1..=ACCOUNTS {
            insert.execute(params![id, format!("owner-{id}"), OPENING_BALANCE])?;
        }
    }
    tx.commit()
}

/// The money in the bank, and the transfers logged.
fn audit(path: &Path) -> rusqlite::Result<(i64, i64)> {
    let conn = Connection::open(path)?;
    let total = conn.query_row("SELECT SUM(balance) FROM accounts", [], |r| r.get(0))?;
    let transfers = conn
        .query_row("SELECT COUNT(*) FROM transfers", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok((total, transfers))
}

/// Removes the database and its WAL files.
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

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
    /// `Ok` on a later attempt, after the connection broke.
    ok_after_retry: AtomicU64,
    /// `Failed` with SQLite's own error (an overdraft): healthy, never retried.
    sql_error: AtomicU64,
    /// `Failed` with a broken connection: at-most-once transfers and `run_task` are never
    /// retried, and a retried task can break again on its last attempt.
    broken: AtomicU64,
    panicked: AtomicU64,
    deadline_exceeded: AtomicU64,
    other: AtomicU64,
}

impl Answers {
    fn record<T>(&self, outcome: &Result<T, TaskError<DbError>>) {
        let counter = match outcome {
            Ok(_) => &self.ok,
            Err(TaskError::Failed {
                error: DbError::Sql(_),
                ..
            }) => &self.sql_error,
            Err(TaskError::Failed { .. }) => &self.broken,
            Err(TaskError::Panicked { .. }) => &self.panicked,
            Err(TaskError::DeadlineExceeded) => &self.deadline_exceeded,
            Err(_) => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// An `Ok` that needed `attempt` runs.
    fn ok_on(&self, attempt: u32) {
        if attempt > 1 {
            self.ok_after_retry.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn total(&self) -> u64 {
        [
            &self.ok,
            &self.sql_error,
            &self.broken,
            &self.panicked,
            &self.deadline_exceeded,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
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

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tasks: u64 = match std::env::var("DEMO_TASKS") {
        Ok(s) => s.parse()?,
        Err(_) => DEFAULT_TASKS,
    };
    let path = std::env::temp_dir().join(format!("tasker-demo-{}.sqlite3", std::process::id()));
    remove_database(&path);
    make_database(&path)?;
    DB_PATH.set(path.clone()).expect("set once");
    let outcome = run(tasks, &path);
    remove_database(&path);
    outcome
}

fn run(tasks: u64, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    quiet_simulated_panics();

    // Builder defaults: one pinned worker per CPU, 3 retries, a run_task pool of one
    // connection per worker, unbounded queues. The lifecycle knobs are set low so that a run
    // of a few seconds shows them at work (a server would keep a connection for minutes).
    // `validate` runs before every task here: on an in-process database it is one PRAGMA,
    // about a microsecond; over a network the default (after 1 s idle) is the usual choice.
    let manager = TaskManager::builder()
        .on_create(Db::connect)
        .on_destroy(Db::close)
        .check_health(DbError::leaves_connection_usable)
        .resource_max_lifetime(Duration::from_secs(1))
        .resource_max_uses(500)
        .validate(Db::is_usable)
        .validate_after_idle(Duration::ZERO)
        .build()?;
    let stats = manager.stats();
    println!(
        "tasker demo: {tasks} requests from {CLIENTS} clients on {} workers, SQLite at {}",
        stats.base_workers,
        path.display()
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
                view.print_pending();
                view.progress.set_position(answers.total());
                view.status
                    .set_message(status_lines(&manager.stats(), &manager.metrics()));
                thread::sleep(Duration::from_millis(50));
            }
            view.print_pending();
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
    let opened = CONNS_OPENED.load(Ordering::Relaxed);
    let closed = CONNS_CLOSED.load(Ordering::Relaxed);
    let (money, transfers) = audit(path)?;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

    println!("\nsubmitted        {tasks}");
    println!(
        "  by delivery    callback {}, handle {}, blocking {}, run_task {}",
        load(&submitted.callback),
        load(&submitted.handle),
        load(&submitted.blocking),
        load(&submitted.run_task),
    );
    println!(
        "  of which       priority {}, at-most-once {}",
        load(&submitted.priority),
        load(&submitted.once),
    );
    println!(
        "answered         {answered}: ok {} ({} of them after a broken connection and a retry)",
        load(&answers.ok),
        load(&answers.ok_after_retry),
    );
    println!(
        "  errors         {} SQLite errors (overdrafts; not retried), {} broken connections \
         (at-most-once, run_task, or out of retries)",
        load(&answers.sql_error),
        load(&answers.broken),
    );
    println!(
        "                 {} panicked, {} not started by their {READ_DEADLINE:?} deadline, {} other",
        load(&answers.panicked),
        load(&answers.deadline_exceeded),
        load(&answers.other),
    );
    print_metrics(&m);
    println!(
        "connections      opened {opened}, closed {closed}; replaced: {} broken, {} too old, \
         {} used up, {} failed validation",
        m.total_resources_replaced,
        m.resources_replaced_lifetime,
        m.resources_replaced_uses,
        m.resources_replaced_validation,
    );
    println!("database         {transfers} transfers committed; money in the bank {money}");
    println!(
        "elapsed          {:.2?}, {:.0} requests/s",
        elapsed,
        answered as f64 / elapsed.as_secs_f64()
    );
    println!("stop()           {stopped:?}");

    // Each client records one answer per request it made; tasker's own totals agree.
    let one_answer_each = answered == tasks
        && m.total_tasks_completed == load(&answers.ok)
        && m.total_tasks_completed + m.total_tasks_failed == m.total_tasks_arrived;
    let all_closed = opened == closed;
    let money_kept = money == ACCOUNTS * OPENING_BALANCE;
    let verdict = |ok: bool| if ok { "yes" } else { "NO" };
    println!(
        "\nevery request answered exactly once: {}",
        verdict(one_answer_each)
    );
    println!(
        "every connection closed:             {}",
        verdict(all_closed)
    );
    println!(
        "no money made or lost:               {}",
        verdict(money_kept)
    );
    stopped?;
    if !(one_answer_each && all_closed && money_kept) {
        return Err("an invariant did not hold".into());
    }
    Ok(())
}

/// One client: submits its share of the tasks (every `CLIENTS`-th task id), reads and writes
/// in every delivery mode.
fn client_loop(
    client: u64,
    tasks: u64,
    manager: &TaskManager<Db, DbError>,
    answers: &Arc<Answers>,
    submitted: &Submitted,
) {
    let mut rng = XorShift::new(client + 1);
    let mut handles: Vec<TaskHandle<(i64, u32), DbError>> = Vec::with_capacity(FAN_OUT);
    for task in (client..tasks).step_by(CLIENTS as usize) {
        // A read may run again after its connection broke; a transfer must not move money
        // twice, so it is submitted at most once (`task_once`, or `run_task`).
        let read =
            move |db: &mut Db, ctx: &TaskContext| Ok((db.balance(task, ctx)?, ctx.attempt()));
        let transfer =
            move |db: &mut Db, ctx: &TaskContext| Ok((db.transfer(task, ctx)?, ctx.attempt()));
        let roll = rng.next() % 1000;
        // One queued task in ten is urgent (`run_task` does not queue, so has no priority).
        let priority = roll >= 10 && rng.next().is_multiple_of(10);
        if priority {
            add(&submitted.priority);
        }
        let to = |counter: &AtomicU64, once: bool| {
            add(counter);
            if once {
                add(&submitted.once);
            }
        };
        match roll {
            // A few requests run right here, on a pooled connection.
            0..=4 => {
                to(&submitted.run_task, false);
                record(answers, manager.run_task(read));
            }
            5..=9 => {
                to(&submitted.run_task, true);
                record(answers, manager.run_task(transfer));
            }
            // Fire-and-forget transfers: the answer arrives in a callback.
            10..=159 => {
                to(&submitted.callback, true);
                let answers = answers.clone();
                manager
                    .task_once(transfer)
                    .with_priority(priority)
                    .callback(move |r| record(&answers, r));
            }
            // Reads answered in a callback.
            160..=259 => {
                to(&submitted.callback, false);
                let answers = answers.clone();
                manager
                    .task(read)
                    .with_priority(priority)
                    .callback(move |r| record(&answers, r));
            }
            // Fan-out reads with a deadline, and some transfers, through handles: collect
            // them, then wait for the whole batch.
            260..=759 => {
                let handle = if roll < 700 {
                    to(&submitted.handle, false);
                    let read = manager.task(read).timeout(READ_DEADLINE);
                    read.with_priority(priority).spawn()
                } else {
                    to(&submitted.handle, true);
                    manager.task_once(transfer).with_priority(priority).spawn()
                };
                handles.push(handle);
                if handles.len() == FAN_OUT {
                    for h in handles.drain(..) {
                        record(answers, h.wait());
                    }
                }
            }
            // Blocking lookups and transfers: this thread waits for the answer.
            760..=899 => {
                to(&submitted.blocking, false);
                let r = if priority {
                    manager.queue_task_with_priority(read)
                } else {
                    manager.queue_task(read)
                };
                record(answers, r);
            }
            _ => {
                to(&submitted.blocking, true);
                record(
                    answers,
                    manager.task_once(transfer).with_priority(priority).wait(),
                );
            }
        }
    }
    for h in handles {
        record(answers, h.wait());
    }
}

fn record(answers: &Answers, r: Result<(i64, u32), TaskError<DbError>>) {
    if let Ok((_, attempt)) = r {
        answers.ok_on(attempt);
    }
    answers.record(&r);
}

// ---------------------------------------------------------------------------------------------
// The live view.

/// Panic lines waiting to be printed above the live view. A panic hook must not draw (it runs
/// inside the panic, where indicatif's output may be held by the panicking thread), so it only
/// queues the line; the sampler thread prints it.
static PANIC_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The demo's own panics are expected: one line each, printed above the live view (tasker
/// catches them and answers `TaskError::Panicked`); any other panic gets the default report.
fn quiet_simulated_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        match info.payload().downcast_ref::<String>() {
            Some(msg) if msg.starts_with(SIMULATED_BUG) => {
                let thread = thread::current();
                let line = format!("  [{}] panicked: {msg}", thread.name().unwrap_or("?"));
                PANIC_LINES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            }
            _ => default(info),
        }
    }));
}

#[derive(Clone)]
struct LiveView {
    multi: MultiProgress,
    progress: ProgressBar,
    status: ProgressBar,
}

impl LiveView {
    /// Prints the queued panic lines above the bars (or plainly, when the bars are hidden).
    fn print_pending(&self) {
        let lines = std::mem::take(&mut *PANIC_LINES.lock().unwrap_or_else(|e| e.into_inner()));
        for line in lines {
            if self.multi.is_hidden() {
                println!("{line}");
            } else {
                let _ = self.multi.println(line);
            }
        }
    }
}

/// A progress bar of requests answered and a status under it. Drawn on stderr when it is a
/// terminal, hidden otherwise (CI logs get the panic lines and the final table only).
fn live_view(tasks: u64) -> LiveView {
    let multi = MultiProgress::new();
    let progress = multi.add(ProgressBar::new(tasks));
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} answered")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let status = multi.add(ProgressBar::new_spinner());
    status.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
    LiveView {
        multi,
        progress,
        status,
    }
}

/// The status under the bar: each line says what it counts and over what time.
fn status_lines(s: &tasker::TaskStats, m: &TaskMetrics) -> String {
    format!(
        "workers      {} active: {} base + {} burst (at most {})\n\
         queues       {} normal, {} priority; {} accepted without an answer yet\n\
         {:<12} arrived {:.0}/s, ok {:.0}/s, errors {:.0}/s, retries {:.0}/s\n\
         since start  run p50 {:.1?} p99 {:.1?}; queue wait p50 {:.1?} p99 {:.1?}\n\
         connections  replaced {} broken, {} too old, {} used up, {} failed validation",
        s.active_workers,
        s.base_workers,
        s.burst_workers,
        s.max_workers,
        s.queued_tasks,
        s.priority_tasks,
        s.pending_tasks,
        format!("last {:.0?}", m.rate_window),
        m.task_arrival_rate,
        m.task_completion_rate,
        m.task_failure_rate,
        m.task_retry_rate,
        m.p50_execution_time,
        m.p99_execution_time,
        m.p50_wait_time,
        m.p99_wait_time,
        m.total_resources_replaced,
        m.resources_replaced_lifetime,
        m.resources_replaced_uses,
        m.resources_replaced_validation,
    )
}

/// The final table of `metrics()`.
fn print_metrics(m: &TaskMetrics) {
    println!("\nmetrics() at the end");
    println!(
        "  {:<22} {:>12} {:>12} {:>12} {:>12}",
        "since start", "p50", "p99", "p99.9", "max"
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
        "  {:<22} ok {}, ended with an error {} (panicked {}), retried {}; {:.2}% ok",
        "totals",
        m.total_tasks_completed,
        m.total_tasks_failed,
        m.total_tasks_panicked,
        m.total_tasks_retried,
        m.success_rate * 100.0
    );
    println!(
        "  {:<22} arrived {:.0}/s, ok {:.0}/s, errors {:.0}/s, retries {:.0}/s",
        format!("rates, last {:.0?}", m.rate_window),
        m.task_arrival_rate,
        m.task_completion_rate,
        m.task_failure_rate,
        m.task_retry_rate
    );
}
