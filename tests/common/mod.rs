//! Shared helpers for the integration tests: a resource (`Conn`), an error type (`DbError`),
//! creation/destruction counters and a builder wired to them.

#![allow(dead_code)]

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tasker::{Builder, TaskManager};

/// Generous bound on any wait in these tests: reaching it means a hang, not slowness.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// A resource. `id` is the creation index (0 for the first `on_create` call that succeeded),
/// so two resources never share an id within one manager.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Conn {
    pub(crate) id: usize,
}

/// A task or hook error. `Broken` is unhealthy under [`builder`]'s `check_health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DbError {
    /// A healthy error: the resource is fine.
    Plain,
    /// The connection is broken: the resource must be replaced.
    Broken,
    /// `on_create` failed.
    Connect,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Plain => f.write_str("plain error"),
            DbError::Broken => f.write_str("connection broken"),
            DbError::Connect => f.write_str("could not connect"),
        }
    }
}

impl Error for DbError {}

/// How many resources `on_create` made and `on_destroy` received.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    pub(crate) created: Arc<AtomicUsize>,
    pub(crate) destroyed: Arc<AtomicUsize>,
}

impl Counts {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }

    pub(crate) fn destroyed(&self) -> usize {
        self.destroyed.load(Ordering::SeqCst)
    }

    /// A fresh `Conn`, counted.
    pub(crate) fn make(&self) -> Conn {
        Conn {
            id: self.created.fetch_add(1, Ordering::SeqCst),
        }
    }

    pub(crate) fn destroy(&self, _conn: Conn) {
        self.destroyed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Whether an error leaves the connection usable: `Broken` is unhealthy.
pub(crate) fn healthy(e: &DbError) -> bool {
    *e != DbError::Broken
}

/// A builder with `on_create`/`on_destroy` counted in `counts`, `check_health` = "Broken is
/// unhealthy", and unpinned workers (the test machine has 2 cores).
pub(crate) fn builder(counts: &Counts) -> Builder<Conn, DbError> {
    let (c, d) = (counts.clone(), counts.clone());
    TaskManager::builder()
        .on_create(move || Ok::<_, DbError>(c.make()))
        .on_destroy(move |conn: Conn| {
            d.destroy(conn);
            Ok(())
        })
        .check_health(healthy)
        .pin_workers(false)
}

/// A manager of [`builder`] with exactly `workers` workers (no burst slots).
pub(crate) fn fixed(counts: &Counts, workers: usize) -> TaskManager<Conn, DbError> {
    builder(counts)
        .worker_count(workers)
        .max_worker_count(workers)
        .build()
        .expect("build")
}

/// Polls `cond` until it holds or [`TIMEOUT`] passes; returns whether it held.
pub(crate) fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A gate a task can block on until the test opens it, with a start signal so the test knows
/// the task is running. Both sides time out after [`TIMEOUT`] instead of hanging.
pub(crate) struct Gate {
    started_tx: std::sync::mpsc::Sender<()>,
    started_rx: std::sync::mpsc::Receiver<()>,
    open_tx: std::sync::mpsc::Sender<()>,
    open_rx: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
}

/// The task side of a [`Gate`]: `Send + 'static`, moved into a task.
#[derive(Clone)]
pub(crate) struct GateWaiter {
    started_tx: std::sync::mpsc::Sender<()>,
    open_rx: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
}

impl GateWaiter {
    /// Signals "started", then blocks until the gate opens (or [`TIMEOUT`]).
    pub(crate) fn enter(&self) {
        let _ = self.started_tx.send(());
        let rx = self.open_rx.lock().unwrap_or_else(|e| e.into_inner());
        let _ = rx.recv_timeout(TIMEOUT);
    }
}

impl Gate {
    pub(crate) fn new() -> Self {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        Gate {
            started_tx,
            started_rx,
            open_tx,
            open_rx: Arc::new(std::sync::Mutex::new(open_rx)),
        }
    }

    pub(crate) fn waiter(&self) -> GateWaiter {
        GateWaiter {
            started_tx: self.started_tx.clone(),
            open_rx: self.open_rx.clone(),
        }
    }

    /// Waits until a task entered the gate; panics after [`TIMEOUT`].
    pub(crate) fn wait_started(&self) {
        self.started_rx
            .recv_timeout(TIMEOUT)
            .expect("the blocking task never started");
    }

    /// Lets one waiting task through.
    pub(crate) fn open(&self) {
        let _ = self.open_tx.send(());
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// A tiny deterministic generator (xorshift64*) for seeded random test inputs.
pub(crate) struct Rng(u64);

impl Rng {
    /// Any seed works (0 included): it is mixed, and a few outputs are skipped.
    pub(crate) fn new(seed: u64) -> Self {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `pct` percent.
    pub(crate) fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}
