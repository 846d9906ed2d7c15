//! Randomized stress: submitter threads use every submission mode with random task behaviours
//! while `stop`, `kill`, or `stop` escalated to `kill` races them from another thread.
//!
//! Per round (fixed seed, tiny xorshift PRNG), it checks:
//! - exactly one outcome per submission (every blocking call returns, every callback fires
//!   once, every handle resolves), and that outcome is one the behaviour allows;
//! - refused submissions get `ShuttingDown` (or `QueueFull` in bounded rounds), delivered
//!   synchronously, and every submission made after shutdown returned is refused;
//! - accepted callbacks run on a worker thread, refused ones on the submitter's;
//! - no at-most-once body runs twice, no body runs more than `max_retries + 1` times, and
//!   `ctx.attempt()` counts the runs;
//! - once `stop`/`kill` returned: every handle is resolved and `on_create` count ==
//!   `on_destroy` count;
//! - with the lifecycle knobs on (random `resource_max_uses`, a short
//!   `resource_max_lifetime`, a `validate` that rejects every third check): all of the above;
//! - a task submitted through the builder with a short deadline ends `DeadlineExceeded` only
//!   unrun, or ends as it would without a deadline.
//!
//! User code panics throughout: a logger and a collector that panic now and then, and task
//! closures whose captured value panics in `Drop` (re-runnable tasks only: an at-most-once
//! closure's captures drop inside its one call, where a panic is the task's own). None of it
//! may change an outcome, lose a task or leak a resource.
//!
//! Violations seen on worker threads (where a panic would just be caught by the manager) are
//! collected and asserted at the end of the round.

mod common;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::Rng;
use tasker::{
    Logger, MetricsCollector, TaskContext, TaskError, TaskHandle, TaskLifecycle, TaskManager,
    WorkerEvent,
};

const SUBMITTERS: usize = 4;
const PER_SUBMITTER: usize = 1_500;
/// Submissions each submitter makes after it saw shutdown return (all must be refused).
const LATE: usize = 6;
const IDS_PER_SUBMITTER: usize = PER_SUBMITTER + LATE;
const IDS: usize = SUBMITTERS * IDS_PER_SUBMITTER;
const MAX_RETRIES: u32 = 2;
/// Bound on any single wait; a hang fails the round instead of blocking the run.
const HANG: Duration = Duration::from_secs(10);
const WORKER_PREFIX: &str = "stressw";
const PANIC_PREFIX: &str = "stress-panic";

// ----- what a submission is -----

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    Plain(usize),
    /// Rejected by `check_health`: the resource is replaced and the task retried.
    Unhealthy(usize),
}

struct Res;

type Manager = TaskManager<Res, Fail>;
type Outcome = Result<usize, TaskError<Fail>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    Plain,
    /// Unhealthy on the first `k` runs, then `Ok`.
    Unhealthy(u32),
    Panic,
    /// Spins this many times (stopping early if cancelled), then `Ok`.
    Spin(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Blocking,
    Callback,
    Handle,
    Run,
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    behaviour: Behaviour,
    delivery: Delivery,
    priority: bool,
    once: bool,
    /// Submitted after this submitter saw `stop`/`kill` return: must be refused.
    after_done: bool,
    /// Submitted through the builder with a deadline 1 ms ahead.
    deadline: bool,
}

impl Spec {
    /// `burst`: almost no waiting deliveries, so queues grow deep before shutdown hits.
    fn random(rng: &mut Rng, after_done: bool, burst: bool) -> Spec {
        let behaviour = match rng.below(100) {
            0..35 => Behaviour::Ok,
            35..50 => Behaviour::Plain,
            50..70 => Behaviour::Unhealthy(1 + rng.below(MAX_RETRIES as u64 + 1) as u32),
            70..78 => Behaviour::Panic,
            _ => Behaviour::Spin(rng.below(20_000) as u32),
        };
        let delivery = match (burst, rng.below(100)) {
            (false, 0..25) | (true, 0..3) => Delivery::Blocking,
            (false, 25..60) | (true, 3..55) => Delivery::Callback,
            (false, 60..90) | (true, 55..97) => Delivery::Handle,
            _ => Delivery::Run,
        };
        Spec {
            behaviour,
            delivery,
            priority: rng.chance(30),
            once: rng.chance(40),
            after_done,
            deadline: delivery != Delivery::Run && rng.chance(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stop,
    Kill,
    /// `stop` on one thread, `kill` from another shortly after.
    StopThenKill,
}

// ----- shared per-round state -----

struct State {
    seed: u64,
    kind: Kind,
    bounded: bool,
    burst: bool,
    outcomes: Vec<AtomicU32>,
    runs: Vec<AtomicU32>,
    submitted: Vec<AtomicBool>,
    violations: Mutex<Vec<String>>,
    shutdown_started: AtomicBool,
    shutdown_done: AtomicBool,
    submissions: AtomicUsize,
    created: AtomicUsize,
    destroyed: AtomicUsize,
    /// Accepted tasks that ended `Ok`, and refused submissions.
    oks: AtomicUsize,
    refused: AtomicUsize,
    killed: AtomicUsize,
}

impl State {
    fn violation(&self, msg: String) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(msg);
    }

    /// Records one delivered outcome and checks it against what the behaviour allows.
    /// `sync`: observed before the submit call returned (callbacks: on the submitter's thread
    /// inside the call; handles: finished at once); blocking and run deliveries pass `true`.
    fn record(&self, id: usize, spec: Spec, r: &Outcome, sync: bool, cancelled: bool) {
        let n = self.outcomes[id].fetch_add(1, SeqCst) + 1;
        if n != 1 {
            self.violation(format!("id {id} {spec:?}: outcome #{n}: {r:?}"));
        }
        match r {
            Ok(_) => self.oks.fetch_add(1, SeqCst),
            Err(TaskError::ShuttingDown | TaskError::QueueFull) => {
                self.refused.fetch_add(1, SeqCst)
            }
            Err(TaskError::Killed) => self.killed.fetch_add(1, SeqCst),
            _ => 0,
        };
        if let Err(why) = self.allowed(id, spec, r, sync, cancelled) {
            self.violation(format!("id {id} {spec:?} sync={sync}: {r:?}: {why}"));
        }
    }

    fn allowed(
        &self,
        id: usize,
        spec: Spec,
        r: &Outcome,
        sync: bool,
        cancelled: bool,
    ) -> Result<(), String> {
        let runs = self.runs[id].load(SeqCst);
        let killing = self.kind != Kind::Stop;
        let retriable = !spec.once && spec.delivery != Delivery::Run;
        let max_runs = MAX_RETRIES + 1;
        let b = spec.behaviour;
        let fail = |why: &str| Err(format!("{why} (runs={runs})"));
        if let Err(TaskError::DeadlineExceeded) = r {
            return if !spec.deadline {
                fail("DeadlineExceeded without a deadline")
            } else if runs != 0 {
                fail("a task past its deadline ran")
            } else {
                Ok(())
            };
        }
        match r {
            Err(TaskError::ShuttingDown) => {
                if !sync {
                    return fail("ShuttingDown delivered asynchronously (was accepted?)");
                }
                if runs != 0 {
                    return fail("a refused task ran");
                }
                if !self.shutdown_started.load(SeqCst) {
                    return fail("ShuttingDown before shutdown began");
                }
                return Ok(());
            }
            Err(TaskError::QueueFull) => {
                if !self.bounded || spec.after_done {
                    return fail("QueueFull without a bound or after shutdown");
                }
                if !sync || runs != 0 {
                    return fail("QueueFull must be synchronous and unrun");
                }
                if !matches!(spec.delivery, Delivery::Callback | Delivery::Handle) {
                    return fail("QueueFull for a blocking delivery");
                }
                return Ok(());
            }
            _ => {}
        }
        if spec.after_done {
            return fail("submitted after shutdown returned, but not refused");
        }
        if cancelled {
            return match r {
                Err(TaskError::Cancelled) if runs == 0 => Ok(()),
                _ => fail("cancel() returned true"),
            };
        }
        match r {
            Err(TaskError::Cancelled) => fail("Cancelled, but cancel() was not successful"),
            Err(TaskError::Killed) => {
                if !killing {
                    fail("Killed without kill")
                } else if spec.delivery == Delivery::Run {
                    fail("run_task cannot be Killed")
                } else if runs == 0
                    // Or killed while queued for a retry.
                    || retriable
                        && matches!(b, Behaviour::Unhealthy(k) if runs <= k)
                        && runs < max_runs
                {
                    Ok(())
                } else {
                    fail("Killed after it ran, not as a queued retry")
                }
            }
            Ok(v) => {
                if *v != id {
                    return fail(&format!("value {v} belongs to another task"));
                }
                let ok = match b {
                    Behaviour::Ok | Behaviour::Spin(_) => runs == 1,
                    Behaviour::Unhealthy(k) => retriable && k < max_runs && runs == k + 1,
                    _ => false,
                };
                if ok { Ok(()) } else { fail("Ok not allowed") }
            }
            Err(TaskError::Failed {
                error: Fail::Plain(e),
                attempts,
            }) => {
                if *e == id && b == Behaviour::Plain && *attempts == 1 && runs == 1 {
                    Ok(())
                } else {
                    fail("unexpected plain failure")
                }
            }
            Err(TaskError::Failed {
                error: Fail::Unhealthy(e),
                attempts,
            }) => {
                let Behaviour::Unhealthy(k) = b else {
                    return fail("unhealthy failure from another behaviour");
                };
                if *e != id || *attempts != runs {
                    return fail("wrong id or attempts != runs");
                }
                let ok = if !retriable {
                    runs == 1
                } else if runs == max_runs {
                    k >= max_runs
                } else {
                    // A retry is not queued once kill began: the last failure is final.
                    killing && runs <= k
                };
                if ok {
                    Ok(())
                } else {
                    fail("unhealthy failure with the wrong attempt count")
                }
            }
            Err(TaskError::Panicked { message }) => {
                if b == Behaviour::Panic && runs == 1 && *message == format!("{PANIC_PREFIX} {id}")
                {
                    Ok(())
                } else {
                    fail("unexpected panic")
                }
            }
            _ => fail("unexpected outcome"),
        }
    }
}

thread_local! {
    /// The id being submitted by this thread right now (callbacks use it to tell a
    /// synchronous, refused delivery from a worker's).
    static IN_SUBMIT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// A task closure's capture that panics in `Drop` when armed.
struct LoudDrop(bool);

impl Drop for LoudDrop {
    fn drop(&mut self) {
        if self.0 && !thread::panicking() {
            panic!("{PANIC_PREFIX} a closure's drop");
        }
    }
}

/// A logger that panics on every seventh line.
#[derive(Default)]
struct PanickyLogger(AtomicUsize);

impl PanickyLogger {
    fn line(&self) {
        if self.0.fetch_add(1, SeqCst) % 7 == 6 {
            panic!("{PANIC_PREFIX} logger");
        }
    }
}

impl Logger for PanickyLogger {
    fn debug(&self, _: &str) {
        self.line();
    }
    fn info(&self, _: &str) {
        self.line();
    }
    fn warn(&self, _: &str) {
        self.line();
    }
    fn error(&self, _: &str) {
        self.line();
    }
}

/// A collector that panics on every fifth call.
#[derive(Default)]
struct PanickyCollector(AtomicUsize);

impl PanickyCollector {
    fn call(&self) {
        if self.0.fetch_add(1, SeqCst) % 5 == 4 {
            panic!("{PANIC_PREFIX} collector");
        }
    }
}

impl MetricsCollector for PanickyCollector {
    fn record_arrival(&self, _: bool) {
        self.call();
    }
    fn record_completion(&self, _: &TaskLifecycle) {
        self.call();
    }
    fn record_failure(&self, _: &TaskLifecycle) {
        self.call();
    }
    fn record_retry(&self, _: &TaskLifecycle) {
        self.call();
    }
    fn record_worker_event(&self, _: WorkerEvent) {
        self.call();
    }
}

/// The task body for submission `id`.
fn body(
    st: Arc<State>,
    id: usize,
    spec: Spec,
) -> impl FnMut(&mut Res, &TaskContext) -> Result<usize, Fail> + Send + 'static {
    let loud = LoudDrop(!spec.once && spec.delivery != Delivery::Run && id % 10 == 3);
    move |_: &mut Res, ctx: &TaskContext| {
        let _capture = &loud;
        let run = st.runs[id].fetch_add(1, SeqCst) + 1;
        if ctx.attempt() != run {
            st.violation(format!("id {id}: attempt {} on run {run}", ctx.attempt()));
        }
        if run > MAX_RETRIES + 1 {
            st.violation(format!("id {id}: run {run} > max_retries + 1"));
        }
        if spec.once && run > 1 {
            st.violation(format!("id {id}: at-most-once body ran {run} times"));
        }
        match spec.behaviour {
            Behaviour::Ok => Ok(id),
            Behaviour::Plain => Err(Fail::Plain(id)),
            Behaviour::Unhealthy(k) => {
                if run <= k {
                    Err(Fail::Unhealthy(id))
                } else {
                    Ok(id)
                }
            }
            Behaviour::Panic => panic!("{PANIC_PREFIX} {id}"),
            Behaviour::Spin(n) => {
                for _ in 0..n {
                    if ctx.is_cancelled() {
                        break;
                    }
                    std::hint::spin_loop();
                }
                Ok(id)
            }
        }
    }
}

/// A handle kept for after shutdown.
struct Deferred {
    id: usize,
    spec: Spec,
    handle: TaskHandle<usize, Fail>,
    sync: bool,
    cancelled: bool,
}

fn submit(m: &Manager, st: &Arc<State>, rng: &mut Rng, id: usize, spec: Spec) -> Option<Deferred> {
    st.submitted[id].store(true, SeqCst);
    let f = body(st.clone(), id, spec);
    let (p, o) = (spec.priority, spec.once);
    if spec.deadline {
        return submit_with_deadline(m, st, id, spec, f);
    }
    match spec.delivery {
        Delivery::Blocking => {
            let r = match (p, o) {
                (false, false) => m.queue_task(f),
                (true, false) => m.queue_task_with_priority(f),
                (false, true) => m.queue_task_once(f),
                (true, true) => m.queue_task_with_priority_once(f),
            };
            st.record(id, spec, &r, true, false);
            None
        }
        Delivery::Run => {
            let r = m.run_task(f);
            st.record(id, spec, &r, true, false);
            None
        }
        Delivery::Callback => {
            let st2 = st.clone();
            let cb = move |r: Outcome| {
                let sync = IN_SUBMIT.with(|c| c.get()) == Some(id);
                if !sync {
                    let t = thread::current();
                    let name = t.name().unwrap_or("");
                    if !name.starts_with(&format!("{WORKER_PREFIX}-")) {
                        st2.violation(format!("id {id}: callback on thread {name:?}"));
                    }
                }
                st2.record(id, spec, &r, sync, false);
            };
            IN_SUBMIT.with(|c| c.set(Some(id)));
            match (p, o) {
                (false, false) => m.queue_task_with_callback(f, cb),
                (true, false) => m.queue_task_with_priority_with_callback(f, cb),
                (false, true) => m.queue_task_once_with_callback(f, cb),
                (true, true) => m.queue_task_with_priority_once_with_callback(f, cb),
            }
            IN_SUBMIT.with(|c| c.set(None));
            None
        }
        Delivery::Handle => {
            let handle = match (p, o) {
                (false, false) => m.queue_task_async(f),
                (true, false) => m.queue_task_with_priority_async(f),
                (false, true) => m.queue_task_once_async(f),
                (true, true) => m.queue_task_with_priority_once_async(f),
            };
            let sync = handle.is_finished();
            let cancelled = rng.chance(10) && handle.cancel();
            let wait_now = rng.chance(if st.burst { 5 } else { 40 });
            if cancelled || !wait_now {
                return Some(Deferred {
                    id,
                    spec,
                    handle,
                    sync,
                    cancelled,
                });
            }
            match handle.wait_timeout(HANG) {
                Ok(r) => st.record(id, spec, &r, sync, false),
                Err(_) => st.violation(format!("id {id}: handle not resolved within {HANG:?}")),
            }
            None
        }
    }
}

/// The builder path, with a deadline 1 ms ahead (the body is `FnMut`, so `task_once` also
/// takes it; `spec.once` picks which).
fn submit_with_deadline<F>(
    m: &Manager,
    st: &Arc<State>,
    id: usize,
    spec: Spec,
    f: F,
) -> Option<Deferred>
where
    F: FnMut(&mut Res, &TaskContext) -> Result<usize, Fail> + Send + 'static,
{
    let timeout = Duration::from_millis(1);
    let p = spec.priority;
    match spec.delivery {
        Delivery::Callback => {
            let st2 = st.clone();
            let cb = move |r: Outcome| {
                let sync = IN_SUBMIT.with(|c| c.get()) == Some(id);
                st2.record(id, spec, &r, sync, false);
            };
            IN_SUBMIT.with(|c| c.set(Some(id)));
            if spec.once {
                m.task_once(f)
                    .with_priority(p)
                    .timeout(timeout)
                    .callback(cb);
            } else {
                m.task(f).with_priority(p).timeout(timeout).callback(cb);
            }
            IN_SUBMIT.with(|c| c.set(None));
            None
        }
        Delivery::Handle => {
            let handle = if spec.once {
                m.task_once(f).with_priority(p).timeout(timeout).spawn()
            } else {
                m.task(f).with_priority(p).timeout(timeout).spawn()
            };
            let sync = handle.is_finished();
            Some(Deferred {
                id,
                spec,
                handle,
                sync,
                cancelled: false,
            })
        }
        _ => {
            let r = if spec.once {
                m.task_once(f).with_priority(p).timeout(timeout).wait()
            } else {
                m.task(f).with_priority(p).timeout(timeout).wait()
            };
            st.record(id, spec, &r, true, false);
            None
        }
    }
}

fn submitter(m: Manager, st: Arc<State>, index: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let base = index * IDS_PER_SUBMITTER;
    let mut deferred = Vec::new();
    let mut late = 0;
    let mut i = 0;
    while late < LATE {
        if i >= PER_SUBMITTER && !st.shutdown_done.load(SeqCst) {
            // Quota done before shutdown: wait for it, then submit the late ones.
            let deadline = Instant::now() + HANG * 2;
            while !st.shutdown_done.load(SeqCst) {
                if Instant::now() > deadline {
                    st.violation(format!("submitter {index}: shutdown never returned"));
                    return;
                }
                thread::sleep(Duration::from_millis(1));
            }
        }
        let after_done = st.shutdown_done.load(SeqCst);
        let spec = Spec::random(&mut rng, after_done, st.burst);
        deferred.extend(submit(&m, &st, &mut rng, base + i, spec));
        st.submissions.fetch_add(1, SeqCst);
        if after_done {
            late += 1;
        }
        i += 1;
    }
    // Shutdown returned before the late submissions: every accepted task has its outcome.
    for (k, d) in deferred.into_iter().enumerate() {
        if !d.handle.is_finished() {
            st.violation(format!(
                "id {}: handle unresolved after shutdown returned",
                d.id
            ));
        }
        let r = if k % 2 == 0 && d.handle.is_finished() {
            pollster::block_on(d.handle)
        } else {
            match d.handle.wait_timeout(HANG) {
                Ok(r) => r,
                Err(_) => {
                    st.violation(format!("id {}: handle never resolved", d.id));
                    continue;
                }
            }
        };
        st.record(d.id, d.spec, &r, d.sync, d.cancelled);
    }
    drop(m);
}

fn shutdown(m: Manager, st: Arc<State>, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x5151);
    let threshold = rng.below((SUBMITTERS * PER_SUBMITTER * 3 / 4) as u64) as usize;
    let deadline = Instant::now() + HANG * 2;
    while st.submissions.load(SeqCst) < threshold && Instant::now() < deadline {
        thread::yield_now();
    }
    if rng.chance(50) {
        thread::sleep(Duration::from_micros(rng.below(2_000)));
    }
    st.shutdown_started.store(true, SeqCst);
    match st.kind {
        Kind::Stop => {
            if let Err(e) = m.stop() {
                st.violation(format!("stop: {e:?}"));
            }
        }
        Kind::Kill => {
            if let Err(e) = m.kill() {
                st.violation(format!("kill: {e:?}"));
            }
        }
        Kind::StopThenKill => {
            let (tx, rx) = mpsc::channel();
            let m2 = m.clone();
            thread::spawn(move || {
                let _ = tx.send(m2.stop());
            });
            thread::sleep(Duration::from_micros(rng.below(500)));
            if let Err(e) = m.kill() {
                st.violation(format!("kill after stop: {e:?}"));
            }
            match rx.recv_timeout(HANG) {
                // The stop may lose the race to the kill: then it is refused at once.
                Ok(Ok(()) | Err(tasker::ShutdownError::AlreadyStopping)) => {}
                Ok(Err(e)) => st.violation(format!("stop racing kill: {e:?}")),
                Err(_) => st.violation("stop never returned after kill".to_owned()),
            }
        }
    }
    let (c, d) = (st.created.load(SeqCst), st.destroyed.load(SeqCst));
    if c != d {
        st.violation(format!(
            "after shutdown returned: created {c} != destroyed {d}"
        ));
    }
    st.shutdown_done.store(true, SeqCst);
}

/// Silences the expected panics of `Behaviour::Panic` bodies; everything else is reported.
fn quiet_expected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with(PANIC_PREFIX) {
                default(info);
            }
        }));
    });
}

fn round(seed: u64, kind: Kind) {
    let mut rng = Rng::new(seed);
    let bounded = rng.chance(40);
    let burst = rng.chance(50);
    let workers = 1 + rng.below(3) as usize;
    let st = Arc::new(State {
        seed,
        kind,
        bounded,
        burst,
        outcomes: (0..IDS).map(|_| AtomicU32::new(0)).collect(),
        runs: (0..IDS).map(|_| AtomicU32::new(0)).collect(),
        submitted: (0..IDS).map(|_| AtomicBool::new(false)).collect(),
        violations: Mutex::new(Vec::new()),
        shutdown_started: AtomicBool::new(false),
        shutdown_done: AtomicBool::new(false),
        submissions: AtomicUsize::new(0),
        created: AtomicUsize::new(0),
        destroyed: AtomicUsize::new(0),
        oks: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        killed: AtomicUsize::new(0),
    });
    let (c, d) = (st.clone(), st.clone());
    let mut builder = TaskManager::builder()
        .on_create(move || {
            c.created.fetch_add(1, SeqCst);
            Ok::<_, Fail>(Res)
        })
        .on_destroy(move |_r: Res| {
            d.destroyed.fetch_add(1, SeqCst);
            Ok(())
        })
        .check_health(|e: &Fail| !matches!(e, Fail::Unhealthy(_)))
        .worker_count(workers)
        // Up to two burst slots, with a controller quick enough to move them during a round.
        .max_worker_count(workers + rng.below(3) as usize)
        .burst_interval(Duration::from_millis(1))
        .burst_keep_alive(Duration::ZERO)
        .metrics_window(Duration::from_millis(20))
        .max_retries(MAX_RETRIES)
        .resource_pool_size(rng.below(3) as usize)
        .pin_workers(false)
        .thread_name_prefix(WORKER_PREFIX)
        .logger(PanickyLogger::default())
        .metrics_collector(PanickyCollector::default());
    if bounded {
        builder = builder.queue_capacity(4 + rng.below(60) as usize);
    }
    if rng.chance(50) {
        builder = builder.resource_max_uses(1 + rng.below(8));
    }
    if rng.chance(30) {
        builder = builder.resource_max_lifetime(Duration::from_micros(100 + rng.below(2_000)));
    }
    if rng.chance(30) {
        let checks = AtomicUsize::new(0);
        builder = builder
            .validate(move |_: &mut Res| checks.fetch_add(1, SeqCst) % 3 != 2)
            .validate_after_idle(Duration::from_micros(rng.below(200)));
    }
    let m = builder.build().expect("build");

    let (tx, rx) = mpsc::channel::<String>();
    let mut names = Vec::new();
    for s in 0..SUBMITTERS {
        let (m, st, tx) = (m.clone(), st.clone(), tx.clone());
        let name = format!("stress-sub-{s}");
        names.push(name.clone());
        let sub_seed = seed.wrapping_mul(31).wrapping_add(s as u64 + 1);
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                submitter(m, st, s, sub_seed);
                let _ = tx.send(name);
            })
            .expect("spawn");
    }
    {
        let (m, st, tx) = (m.clone(), st.clone(), tx.clone());
        names.push("stress-shutdown".to_owned());
        thread::Builder::new()
            .name("stress-shutdown".to_owned())
            .spawn(move || {
                shutdown(m, st, seed);
                let _ = tx.send("stress-shutdown".to_owned());
            })
            .expect("spawn");
    }
    drop(tx);
    let deadline = Instant::now() + HANG * 3;
    while !names.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(name) => names.retain(|n| *n != name),
            Err(_) => panic!(
                "seed {seed} {kind:?}: hung; still running: {names:?}; violations so far: {:?}",
                st.violations.lock().unwrap()
            ),
        }
    }

    let mut v = std::mem::take(&mut *st.violations.lock().unwrap());
    for id in 0..IDS {
        let (sub, n) = (st.submitted[id].load(SeqCst), st.outcomes[id].load(SeqCst));
        if sub && n != 1 || !sub && n != 0 {
            v.push(format!("id {id}: submitted={sub}, outcomes={n}"));
        }
    }
    let (created, destroyed) = (st.created.load(SeqCst), st.destroyed.load(SeqCst));
    if created != destroyed {
        v.push(format!("created {created} != destroyed {destroyed}"));
    }
    let completed = m.metrics().total_tasks_completed;
    if completed != st.oks.load(SeqCst) as u64 {
        v.push(format!(
            "metrics: {completed} completed, {} Ok outcomes",
            st.oks.load(SeqCst)
        ));
    }
    let submissions = st.submissions.load(SeqCst);
    let refused = st.refused.load(SeqCst);
    println!(
        "seed {seed} {kind:?} workers={workers} bounded={bounded} burst={burst}: {submissions} submissions, \
         {} ok, {refused} refused, {} killed, {created} resources",
        st.oks.load(SeqCst),
        st.killed.load(SeqCst),
    );
    assert!(
        refused >= SUBMITTERS * LATE,
        "seed {seed}: late submissions were not all refused"
    );
    assert!(
        v.is_empty(),
        "seed {} {kind:?}: {} violation(s), first ones:\n{}",
        st.seed,
        v.len(),
        v.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    drop(m);
}

/// Seeds per test; each round is a fresh manager.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=12;

#[test]
fn stop_racing_submitters_keeps_every_promise() {
    quiet_expected_panics();
    for seed in SEEDS {
        round(seed, Kind::Stop);
    }
}

#[test]
fn kill_racing_submitters_keeps_every_promise() {
    quiet_expected_panics();
    for seed in SEEDS {
        round(100 + seed, Kind::Kill);
    }
}

#[test]
fn stop_escalated_to_kill_racing_submitters_keeps_every_promise() {
    quiet_expected_panics();
    for seed in SEEDS {
        round(200 + seed, Kind::StopThenKill);
    }
}
