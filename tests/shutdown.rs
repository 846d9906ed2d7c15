//! Shutdown semantics: `stop` drains, `kill` resolves, both refuse afterwards, second calls
//! are errors, escalation works, dropping the last clone stops, and a task may stop its own
//! manager.
//!
//! Every wait here is bounded (a hang fails the test instead of blocking the run), and no test
//! asserts on how long anything took.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use tasker::{ShutdownError, TaskContext, TaskError, TaskHandle, TaskManager};

/// How long any single wait may take before the test is declared hung.
const HANG: Duration = Duration::from_secs(10);

/// The task error: `Unhealthy` is what `check_health` rejects (the resource is replaced and
/// the task retried).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    Plain,
    Unhealthy,
}

/// A worker's resource.
#[derive(Debug)]
struct Res;

/// `on_create` / `on_destroy` calls.
#[derive(Default)]
struct Counts {
    created: AtomicUsize,
    destroyed: AtomicUsize,
}

impl Counts {
    fn created(&self) -> usize {
        self.created.load(SeqCst)
    }
    fn destroyed(&self) -> usize {
        self.destroyed.load(SeqCst)
    }
    fn assert_balanced(&self) {
        assert_eq!(
            self.created(),
            self.destroyed(),
            "every resource on_create made must be passed to on_destroy exactly once"
        );
    }
}

type Manager = TaskManager<Res, Fail>;
type Outcome<T> = Result<T, TaskError<Fail>>;
/// Outcomes collected from callbacks.
type Log<T> = Arc<Mutex<Vec<T>>>;

fn build(workers: usize, counts: &Arc<Counts>, prefix: &str) -> Manager {
    let (c, d) = (counts.clone(), counts.clone());
    TaskManager::builder()
        .on_create(move || {
            c.created.fetch_add(1, SeqCst);
            Ok::<_, Fail>(Res)
        })
        .on_destroy(move |_r: Res| {
            d.destroyed.fetch_add(1, SeqCst);
            Ok(())
        })
        .check_health(|e: &Fail| *e != Fail::Unhealthy)
        .worker_count(workers)
        .max_worker_count(workers)
        .max_retries(3)
        .pin_workers(false)
        .thread_name_prefix(prefix)
        .build()
        .expect("build")
}

/// Runs `f` on its own thread and returns its value, failing the test if it takes longer
/// than `HANG` (the thread is then left behind; the test has failed anyway).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("within: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(HANG) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hung: {what} did not return within {HANG:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// Calls `f` with a clone of `m` on its own thread, bounded like [`within`]: for calls that
/// block (`stop`, `kill`, blocking submissions), so a library bug cannot hang the run.
fn bounded<T: Send + 'static>(
    m: &Manager,
    what: &str,
    f: impl FnOnce(&Manager) -> T + Send + 'static,
) -> T {
    let m = m.clone();
    within(what, move || f(&m))
}

/// Starts `f` on its own thread; `join` the result with a bound.
struct Bg<T>(mpsc::Receiver<T>, &'static str);

fn spawn_bg<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Bg<T> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    Bg(rx, what)
}

impl<T> Bg<T> {
    fn join(self) -> T {
        match self.0.recv_timeout(HANG) {
            Ok(v) => v,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("hung: {} did not return within {HANG:?}", self.1)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{} panicked", self.1),
        }
    }
}

/// Polls `cond` until it holds, failing the test after `HANG`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn wait<T: std::fmt::Debug>(h: TaskHandle<T, Fail>) -> Outcome<T> {
    match h.wait_timeout(HANG) {
        Ok(outcome) => outcome,
        Err(h) => panic!("handle not resolved within {HANG:?}: {h:?}"),
    }
}

/// Waits until the manager refuses work (`stop` or `kill` has begun on another thread), using
/// `run_task` as a probe: it has no effect on the queues.
fn wait_until_closed(m: &Manager) {
    let deadline = Instant::now() + HANG;
    loop {
        match m.run_task(|_: &mut Res, _: &TaskContext| Ok(())) {
            Err(TaskError::ShuttingDown) => return,
            Ok(()) => {}
            Err(e) => panic!("run_task probe failed: {e:?}"),
        }
        assert!(Instant::now() < deadline, "shutdown never began");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Holds every worker inside a task until opened, so that what is queued next stays queued.
struct Gate {
    open: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
    handles: Vec<TaskHandle<(), Fail>>,
}

impl Gate {
    /// Occupies `workers` workers (priority tasks are taken one at a time, so each worker gets
    /// one) and returns once all of them are inside.
    fn block(m: &Manager, workers: usize) -> Gate {
        let open = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let handles = (0..workers)
            .map(|_| {
                let (open, started) = (open.clone(), started.clone());
                m.queue_task_with_priority_async(move |_: &mut Res, _: &TaskContext| {
                    started.fetch_add(1, SeqCst);
                    let deadline = Instant::now() + HANG;
                    while !open.load(SeqCst) {
                        if Instant::now() > deadline {
                            return Err(Fail::Plain);
                        }
                        thread::sleep(Duration::from_micros(200));
                    }
                    Ok(())
                })
            })
            .collect();
        eventually("every worker inside a gate task", || {
            started.load(SeqCst) == workers
        });
        Gate {
            open,
            started,
            handles,
        }
    }

    fn open(&self) {
        self.open.store(true, SeqCst);
    }

    /// Every gate task ended `Ok` (none hit its own deadline) and ran once.
    fn assert_passed(self) {
        let n = self.handles.len();
        for h in self.handles {
            assert_eq!(wait(h), Ok(()), "a gate task timed out");
        }
        assert_eq!(self.started.load(SeqCst), n);
    }
}

/// A task that loops until its context says the manager is being killed, then returns
/// `Ok(value)`. `Err(Plain)` if it gave up waiting (a bug: kill did not cancel it).
fn until_cancelled(
    started: Arc<AtomicUsize>,
    observed: Arc<AtomicUsize>,
    value: u64,
) -> impl FnMut(&mut Res, &TaskContext) -> Result<u64, Fail> + Send + 'static {
    move |_: &mut Res, ctx: &TaskContext| {
        started.fetch_add(1, SeqCst);
        let deadline = Instant::now() + HANG;
        while !ctx.is_cancelled() {
            if Instant::now() > deadline {
                return Err(Fail::Plain);
            }
            thread::sleep(Duration::from_micros(200));
        }
        observed.fetch_add(1, SeqCst);
        Ok(value)
    }
}

#[test]
fn stop_drains_every_queued_task() {
    const TASKS: u64 = 20_000;
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "drain");
    // Both workers held, so every task below is still queued when `stop` begins.
    let gate = Gate::block(&m, 2);

    let ran = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(Mutex::new(Vec::new()));
    for i in 0..TASKS {
        let (ran, ok, bad) = (ran.clone(), ok.clone(), bad.clone());
        m.queue_task_with_callback(
            move |_: &mut Res, _: &TaskContext| {
                ran.fetch_add(1, SeqCst);
                Ok(i)
            },
            move |r: Outcome<u64>| match r {
                Ok(v) if v == i => {
                    ok.fetch_add(1, SeqCst);
                }
                other => bad.lock().unwrap().push((i, other)),
            },
        );
    }

    let m2 = m.clone();
    let stopper = spawn_bg("stop", move || m2.stop());
    wait_until_closed(&m);
    gate.open();
    assert_eq!(stopper.join(), Ok(()));

    // `stop` returned: everything queued has run and called back, resources are gone.
    assert_eq!(*bad.lock().unwrap(), vec![]);
    assert_eq!(ok.load(SeqCst), TASKS as usize);
    assert_eq!(ran.load(SeqCst), TASKS as usize);
    counts.assert_balanced();
    gate.assert_passed();
}

/// Submits through every mode on a shut-down manager and checks each is refused.
fn assert_every_mode_refused(m: &Manager) {
    let ran = Arc::new(AtomicUsize::new(0));
    let body = || {
        let ran = ran.clone();
        move |_: &mut Res, _: &TaskContext| {
            ran.fetch_add(1, SeqCst);
            Ok::<u32, Fail>(1)
        }
    };
    let refused = |r: Outcome<u32>| assert!(matches!(r, Err(TaskError::ShuttingDown)), "{r:?}");

    // Blocking.
    let b = body();
    refused(bounded(m, "queue_task", move |m| m.queue_task(b)));
    let b = body();
    refused(bounded(m, "queue_task_with_priority", move |m| {
        m.queue_task_with_priority(b)
    }));
    let b = body();
    refused(bounded(m, "queue_task_once", move |m| m.queue_task_once(b)));
    let b = body();
    refused(bounded(m, "queue_task_with_priority_once", move |m| {
        m.queue_task_with_priority_once(b)
    }));

    // Callbacks: called exactly once, on this thread, before the submit call returns.
    let calls: Log<(ThreadId, Outcome<u32>)> = Arc::default();
    let me = thread::current().id();
    let cb = || {
        let calls = calls.clone();
        move |r: Outcome<u32>| calls.lock().unwrap().push((thread::current().id(), r))
    };
    let check_calls = |expected: usize| {
        let calls = calls.lock().unwrap();
        assert_eq!(
            calls.len(),
            expected,
            "the callback was not called synchronously"
        );
        let (tid, r) = &calls[expected - 1];
        assert_eq!(
            *tid, me,
            "a refused callback must run on the caller's thread"
        );
        assert!(matches!(r, Err(TaskError::ShuttingDown)), "{r:?}");
    };
    m.queue_task_with_callback(body(), cb());
    check_calls(1);
    m.queue_task_with_priority_with_callback(body(), cb());
    check_calls(2);
    m.queue_task_once_with_callback(body(), cb());
    check_calls(3);
    m.queue_task_with_priority_once_with_callback(body(), cb());
    check_calls(4);

    // Handles: already resolved when returned.
    let handles = vec![
        m.queue_task_async(body()),
        m.queue_task_with_priority_async(body()),
        m.queue_task_once_async(body()),
        m.queue_task_with_priority_once_async(body()),
    ];
    for (i, h) in handles.into_iter().enumerate() {
        assert!(h.is_finished(), "a refused handle must be resolved at once");
        if i % 2 == 0 {
            refused(wait(h));
        } else {
            refused(pollster::block_on(h));
        }
    }

    // Run now.
    refused(m.run_task(body()));

    // Nothing ran, and no callback was called twice (give a late duplicate a moment).
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        calls.lock().unwrap().len(),
        4,
        "a callback was called more than once"
    );
    assert_eq!(ran.load(SeqCst), 0, "a refused task ran");
}

#[test]
fn every_mode_is_refused_after_stop() {
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "refuse-stop");
    assert_eq!(bounded(&m, "stop", |m| m.stop()), Ok(()));
    assert_every_mode_refused(&m);
    assert_every_mode_refused(&m.clone());
    counts.assert_balanced();
}

#[test]
fn every_mode_is_refused_after_kill() {
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "refuse-kill");
    assert_eq!(bounded(&m, "kill", |m| m.kill()), Ok(()));
    assert_every_mode_refused(&m);
    counts.assert_balanced();
}

#[test]
fn kill_resolves_every_queued_task() {
    const PER_MODE: usize = 100;
    const BLOCKING: usize = 4;
    let counts = Arc::new(Counts::default());
    let m = build(1, &counts, "kill");

    // The only worker is busy with a task that ends only when it sees the kill.
    let started = Arc::new(AtomicUsize::new(0));
    let observed = Arc::new(AtomicUsize::new(0));
    let long = m.queue_task_async(until_cancelled(started.clone(), observed.clone(), 999));
    eventually("the long task started", || started.load(SeqCst) == 1);

    let ran = Arc::new(AtomicUsize::new(0));
    let body = || {
        let ran = ran.clone();
        move |_: &mut Res, _: &TaskContext| {
            ran.fetch_add(1, SeqCst);
            Ok::<u64, Fail>(7)
        }
    };

    // Handles, every mode.
    let mut handles = Vec::new();
    for _ in 0..PER_MODE {
        handles.push(m.queue_task_async(body()));
        handles.push(m.queue_task_with_priority_async(body()));
        handles.push(m.queue_task_once_async(body()));
        handles.push(m.queue_task_with_priority_once_async(body()));
    }

    // Callbacks, every mode; per-callback call counts.
    let calls: Arc<Vec<AtomicUsize>> =
        Arc::new((0..4 * PER_MODE).map(|_| AtomicUsize::new(0)).collect());
    let wrong: Log<(usize, Outcome<u64>)> = Arc::default();
    let cb = |i: usize| {
        let (calls, wrong) = (calls.clone(), wrong.clone());
        move |r: Outcome<u64>| {
            calls[i].fetch_add(1, SeqCst);
            if !matches!(r, Err(TaskError::Killed)) {
                wrong.lock().unwrap().push((i, r));
            }
        }
    };
    for k in 0..PER_MODE {
        m.queue_task_with_callback(body(), cb(4 * k));
        m.queue_task_with_priority_with_callback(body(), cb(4 * k + 1));
        m.queue_task_once_with_callback(body(), cb(4 * k + 2));
        m.queue_task_with_priority_once_with_callback(body(), cb(4 * k + 3));
    }

    // Blocking submitters, parked in their calls.
    let blocking: Vec<_> = (0..BLOCKING)
        .map(|i| {
            let (m, b) = (m.clone(), body());
            spawn_bg("blocking submitter", move || {
                if i % 2 == 0 {
                    m.queue_task(b)
                } else {
                    m.queue_task_with_priority_once(b)
                }
            })
        })
        .collect();
    let queued = 8 * PER_MODE + BLOCKING;
    eventually("every task queued", || {
        let s = m.stats();
        s.queued_tasks + s.priority_tasks == queued
    });

    let m2 = m.clone();
    assert_eq!(within("kill", move || m2.kill()), Ok(()));

    // The running task saw the cancellation and its own outcome is what it returned.
    assert_eq!(
        observed.load(SeqCst),
        1,
        "the running task never saw is_cancelled()"
    );
    assert_eq!(wait(long), Ok(999));
    // Every queued task: Killed, exactly once, never run.
    for h in handles {
        assert!(h.is_finished(), "kill returned with a handle unresolved");
        assert_eq!(wait(h), Err(TaskError::Killed));
    }
    for b in blocking {
        assert_eq!(b.join(), Err(TaskError::Killed));
    }
    assert_eq!(*wrong.lock().unwrap(), vec![]);
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c.load(SeqCst), 1, "callback {i} was called {c:?} times");
    }
    assert_eq!(ran.load(SeqCst), 0, "a queued task ran after kill");
    counts.assert_balanced();
}

#[test]
fn second_stop_is_an_error() {
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "stop2");
    assert_eq!(
        bounded(&m, "queue_task", |m| m
            .queue_task(|_: &mut Res, _: &TaskContext| Ok(1))),
        Ok(1)
    );
    assert_eq!(bounded(&m, "stop", |m| m.stop()), Ok(()));
    assert_eq!(
        bounded(&m, "stop", |m| m.stop()),
        Err(ShutdownError::AlreadyStopping)
    );
    assert_eq!(
        bounded(&m, "stop on a clone", |m| m.clone().stop()),
        Err(ShutdownError::AlreadyStopping)
    );
    counts.assert_balanced();
}

#[test]
fn second_kill_is_an_error() {
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "kill2");
    assert_eq!(
        bounded(&m, "queue_task", |m| m
            .queue_task(|_: &mut Res, _: &TaskContext| Ok(1))),
        Ok(1)
    );
    assert_eq!(bounded(&m, "kill", |m| m.kill()), Ok(()));
    assert_eq!(
        bounded(&m, "kill", |m| m.kill()),
        Err(ShutdownError::AlreadyKilled)
    );
    assert_eq!(
        bounded(&m, "kill on a clone", |m| m.clone().kill()),
        Err(ShutdownError::AlreadyKilled)
    );
    // And a stop after a kill is refused too.
    assert_eq!(
        bounded(&m, "stop", |m| m.stop()),
        Err(ShutdownError::AlreadyStopping)
    );
    counts.assert_balanced();
}

#[test]
fn kill_after_a_finished_stop_is_allowed_once() {
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "stopkill");
    assert_eq!(bounded(&m, "stop", |m| m.stop()), Ok(()));
    assert_eq!(bounded(&m, "kill", |m| m.kill()), Ok(()));
    assert_eq!(
        bounded(&m, "kill", |m| m.kill()),
        Err(ShutdownError::AlreadyKilled)
    );
    counts.assert_balanced();
}

#[test]
fn kill_after_stop_escalates() {
    const QUEUED: usize = 200;
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "escalate");

    // Both workers run tasks that only end when killed: `stop` alone could never finish.
    let started = Arc::new(AtomicUsize::new(0));
    let observed = Arc::new(AtomicUsize::new(0));
    let longs: Vec<_> = (0..2)
        .map(|i| {
            m.queue_task_with_priority_async(until_cancelled(
                started.clone(),
                observed.clone(),
                100 + i,
            ))
        })
        .collect();
    eventually("both long tasks started", || started.load(SeqCst) == 2);

    let ran = Arc::new(AtomicUsize::new(0));
    let body = |i: u64| {
        let ran = ran.clone();
        move |_: &mut Res, _: &TaskContext| {
            ran.fetch_add(1, SeqCst);
            Ok::<u64, Fail>(i)
        }
    };
    let mut handles = Vec::new();
    let outcomes: Log<(u64, Outcome<u64>)> = Arc::default();
    for i in 0..QUEUED as u64 {
        match i % 4 {
            0 => handles.push((i, m.queue_task_async(body(i)))),
            1 => handles.push((i, m.queue_task_with_priority_once_async(body(i)))),
            2 => {
                let o = outcomes.clone();
                m.queue_task_with_callback(body(i), move |r| o.lock().unwrap().push((i, r)));
            }
            _ => {
                let o = outcomes.clone();
                m.queue_task_with_priority_once_with_callback(body(i), move |r| {
                    o.lock().unwrap().push((i, r))
                });
            }
        }
    }

    let m2 = m.clone();
    let stopper = spawn_bg("stop", move || m2.stop());
    wait_until_closed(&m);
    let m3 = m.clone();
    assert_eq!(within("kill", move || m3.kill()), Ok(()));
    assert_eq!(
        stopper.join(),
        Ok(()),
        "stop must return once the kill finished"
    );

    assert_eq!(
        observed.load(SeqCst),
        2,
        "a running task never saw is_cancelled()"
    );
    for (i, h) in longs.into_iter().enumerate() {
        assert_eq!(wait(h), Ok(100 + i as u64));
    }
    // None lost: every queued task ended exactly once, Killed or Ok (with its own value).
    let mut seen = vec![0usize; QUEUED];
    let mut oks = 0;
    let mut check = |i: u64, r: Outcome<u64>| {
        seen[i as usize] += 1;
        match r {
            Ok(v) => {
                assert_eq!(v, i);
                oks += 1;
            }
            Err(TaskError::Killed) => {}
            other => panic!("task {i}: unexpected outcome {other:?}"),
        }
    };
    for (i, h) in handles {
        assert!(h.is_finished(), "kill returned with a handle unresolved");
        check(i, wait(h));
    }
    for (i, r) in std::mem::take(&mut *outcomes.lock().unwrap()) {
        check(i, r);
    }
    assert!(
        seen.iter().all(|&n| n == 1),
        "outcome counts per task: {seen:?}"
    );
    assert_eq!(
        ran.load(SeqCst),
        oks,
        "a task ran but did not end Ok, or vice versa"
    );
    counts.assert_balanced();
}

#[test]
fn dropping_the_last_clone_stops() {
    const PER_THREAD: u64 = 1_000;
    const THREADS: u64 = 3;
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "dropstop");
    let gate = Gate::block(&m, 2);

    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(Mutex::new(Vec::new()));
    // Clones on other threads queue tasks, then go away.
    let submitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (m, ok, bad) = (m.clone(), ok.clone(), bad.clone());
            spawn_bg("submitter", move || {
                for i in t * PER_THREAD..(t + 1) * PER_THREAD {
                    let (ok, bad) = (ok.clone(), bad.clone());
                    m.queue_task_with_callback(
                        move |_: &mut Res, _: &TaskContext| Ok(i),
                        move |r: Outcome<u64>| match r {
                            Ok(v) if v == i => {
                                ok.fetch_add(1, SeqCst);
                            }
                            other => bad.lock().unwrap().push((i, other)),
                        },
                    );
                }
                drop(m);
            })
        })
        .collect();
    for s in submitters {
        s.join();
    }
    let Gate {
        open,
        started,
        handles,
    } = gate;
    // The last clone is dropped on another thread (the drop waits for the drain); the gate
    // opens from here. Whether it opens before or after the drop began does not matter to
    // what is checked.
    let dropper = spawn_bg("drop", move || drop(m));
    thread::sleep(Duration::from_millis(20));
    open.store(true, SeqCst);
    dropper.join();

    assert_eq!(*bad.lock().unwrap(), vec![]);
    assert_eq!(ok.load(SeqCst), (THREADS * PER_THREAD) as usize);
    counts.assert_balanced();
    assert_eq!(started.load(SeqCst), 2);
    for h in handles {
        assert!(h.is_finished());
        assert_eq!(wait(h), Ok(()));
    }
}

/// Counts threads that have ended, through a thread-local whose destructor runs at exit.
struct ExitGuard(Arc<AtomicUsize>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

thread_local! {
    static EXIT_GUARD: RefCell<Option<ExitGuard>> = const { RefCell::new(None) };
}

#[test]
fn stop_from_inside_a_task_does_not_hang() {
    const PREFIX: &str = "selfstop";
    const WORKERS: usize = 2;
    const AFTER: u64 = 500;
    let counts = Arc::new(Counts::default());
    let exited = Arc::new(AtomicUsize::new(0));
    let (c, d, x) = (counts.clone(), counts.clone(), exited.clone());
    let m: Manager = TaskManager::builder()
        .on_create(move || {
            c.created.fetch_add(1, SeqCst);
            // On a worker thread, arm a guard that counts the thread's exit.
            if thread::current()
                .name()
                .is_some_and(|n| n.starts_with(&format!("{PREFIX}-")))
            {
                EXIT_GUARD.with(|g| {
                    g.borrow_mut().get_or_insert_with(|| ExitGuard(x.clone()));
                });
            }
            Ok::<_, Fail>(Res)
        })
        .on_destroy(move |_r: Res| {
            d.destroyed.fetch_add(1, SeqCst);
            Ok(())
        })
        .worker_count(WORKERS)
        .max_worker_count(WORKERS)
        .pin_workers(false)
        .thread_name_prefix(PREFIX)
        .build()
        .expect("build");

    // Tasks queued behind the stopping task are still drained.
    let gate = Gate::block(&m, WORKERS);
    let inner = m.clone();
    let stopping =
        m.queue_task_with_priority_async(move |_: &mut Res, _: &TaskContext| Ok(inner.stop()));
    let after: Vec<_> = (0..AFTER)
        .map(|i| m.queue_task_async(move |_: &mut Res, _: &TaskContext| Ok(i)))
        .collect();
    gate.open();

    assert_eq!(wait(stopping), Ok(Ok(())), "stop from inside a task");
    for (i, h) in after.into_iter().enumerate() {
        assert_eq!(
            wait(h),
            Ok(i as u64),
            "a task queued before the stop was not run"
        );
    }
    gate.assert_passed();
    // The outer stop is refused, but only once the shutdown begun inside has completed: it
    // returns with every worker thread ended and every resource destroyed.
    let m2 = m.clone();
    assert_eq!(
        within("outer stop", move || m2.stop()),
        Err(ShutdownError::AlreadyStopping)
    );
    assert_eq!(exited.load(SeqCst), WORKERS, "every worker thread ended");
    counts.assert_balanced();
    // New work is refused.
    assert!(matches!(
        bounded(&m, "queue_task", |m| m
            .queue_task(|_: &mut Res, _: &TaskContext| Ok(()))),
        Err(TaskError::ShuttingDown)
    ));
    drop(m);
}

/// The shutdown begun from inside a task, then the last clone dropped outside: the drop
/// returns only once every resource is destroyed (and `kill` likewise waits).
#[test]
fn the_last_drop_and_a_second_kill_wait_for_a_shutdown_begun_elsewhere() {
    for end in ["drop", "kill"] {
        let counts = Arc::new(Counts::default());
        let m = build(2, &counts, "elsewhere");
        // The task's clone is taken out and dropped inside the task, so the outer `m` is the
        // last clone.
        let inner = Arc::new(Mutex::new(Some(m.clone())));
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        // The shutdown begins inside a task that then keeps its worker busy for a while, so
        // the resources cannot all be destroyed by the time the outer call is made.
        m.queue_task_with_callback(
            move |_: &mut Res, _: &TaskContext| {
                let Some(mine) = inner.lock().unwrap().take() else {
                    return Ok(false);
                };
                let r = if end == "kill" {
                    mine.kill()
                } else {
                    mine.stop()
                };
                drop(mine);
                s.fetch_add(1, SeqCst);
                thread::sleep(Duration::from_millis(100));
                Ok(r.is_ok())
            },
            |_| {},
        );
        eventually("the task began the shutdown", || started.load(SeqCst) == 1);
        if end == "kill" {
            let m2 = m.clone();
            assert_eq!(
                within("second kill", move || m2.kill()),
                Err(ShutdownError::AlreadyKilled)
            );
            counts.assert_balanced();
            drop(m);
        } else {
            within("last drop", move || drop(m));
            counts.assert_balanced();
        }
    }
}

/// `stop_timeout`: a task that ignores cancellation keeps running past the deadline; queued
/// tasks are answered `Killed`; the call returns `TimedOut { running: 1 }` within the timeout
/// plus the grace, and the running task's outcome and its resource's destruction still come.
#[test]
fn stop_timeout_gives_up_on_a_task_that_ignores_cancellation() {
    let counts = Arc::new(Counts::default());
    let m = build(1, &counts, "stoptimeout");
    let gate = Gate::block(&m, 1);
    let queued: Vec<_> = (0..5u64)
        .map(|i| m.queue_task_async(move |_: &mut Res, _: &TaskContext| Ok(i)))
        .collect();
    let m2 = m.clone();
    let started = Instant::now();
    let stopped = within("stop_timeout", move || {
        m2.stop_timeout(Duration::from_millis(50))
    });
    let took = started.elapsed();
    assert_eq!(stopped, Err(ShutdownError::TimedOut { running: 1 }));
    assert!(
        took >= Duration::from_millis(50),
        "returned before its deadline: {took:?}"
    );
    for h in queued {
        assert_eq!(wait(h), Err(TaskError::Killed));
    }
    // The task still running finishes, and its worker destroys its resource and exits.
    gate.open();
    gate.assert_passed();
    eventually("created == destroyed", || {
        counts.created() == counts.destroyed()
    });
    // A later stop waits for nothing more and says the shutdown was begun already.
    assert_eq!(
        bounded(&m, "stop", |m| m.stop()),
        Err(ShutdownError::AlreadyStopping)
    );
    counts.assert_balanced();
}

/// `stop_timeout` with time to spare is a `stop`: everything queued runs.
#[test]
fn stop_timeout_in_time_is_a_stop() {
    let counts = Arc::new(Counts::default());
    let m = build(2, &counts, "stopintime");
    let queued: Vec<_> = (0..50u64)
        .map(|i| m.queue_task_async(move |_: &mut Res, _: &TaskContext| Ok(i)))
        .collect();
    assert_eq!(
        bounded(&m, "stop_timeout", |m| m.stop_timeout(HANG)),
        Ok(())
    );
    for (i, h) in queued.into_iter().enumerate() {
        assert_eq!(wait(h), Ok(i as u64));
    }
    counts.assert_balanced();
}

/// With one worker the last task's retry is, at the moment it is queued, the only pending
/// task: the worker that just destroyed its resource must make a new one and run it rather
/// than take the manager for drained.
#[test]
fn retries_still_run_during_stop() {
    retries_during_stop(1);
    retries_during_stop(2);
}

fn retries_during_stop(workers: usize) {
    const TASKS: u32 = 200;
    let counts = Arc::new(Counts::default());
    let m = build(workers, &counts, "retrystop");
    let gate = Gate::block(&m, workers);

    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..TASKS).map(|_| AtomicUsize::new(0)).collect());
    // Unhealthy on the first attempt, then fine: returns the attempt it succeeded on.
    let body = |i: u32| {
        let runs = runs.clone();
        move |_: &mut Res, ctx: &TaskContext| {
            runs[i as usize].fetch_add(1, SeqCst);
            if ctx.attempt() == 1 {
                Err(Fail::Unhealthy)
            } else {
                Ok(ctx.attempt())
            }
        }
    };
    // A plain error is not retried, even during stop. (Queued first, so that
    // the last pending task is a retry.)
    let plain = m.queue_task_async(|_: &mut Res, _: &TaskContext| Err::<(), _>(Fail::Plain));
    let mut handles = Vec::new();
    let outcomes: Log<(u32, Outcome<u32>)> = Arc::default();
    for i in 0..TASKS {
        match i % 3 {
            0 => handles.push((i, m.queue_task_async(body(i)))),
            1 => handles.push((i, m.queue_task_with_priority_async(body(i)))),
            _ => {
                let o = outcomes.clone();
                m.queue_task_with_callback(body(i), move |r| o.lock().unwrap().push((i, r)));
            }
        }
    }

    let m2 = m.clone();
    let stopper = spawn_bg("stop", move || m2.stop());
    wait_until_closed(&m);
    // Every first attempt (and so every retry) happens after stop began.
    gate.open();
    assert_eq!(stopper.join(), Ok(()));

    let mut results: Vec<(u32, Outcome<u32>)> = handles
        .into_iter()
        .map(|(i, h)| {
            assert!(h.is_finished(), "stop returned with a handle unresolved");
            (i, wait(h))
        })
        .collect();
    results.extend(std::mem::take(&mut *outcomes.lock().unwrap()));
    results.sort_by_key(|(i, _)| *i);
    assert_eq!(results.len(), TASKS as usize, "a task got no outcome");
    for (i, r) in results {
        assert_eq!(r, Ok(2), "task {i} should succeed on its retry");
        assert_eq!(runs[i as usize].load(SeqCst), 2, "task {i} ran twice");
    }
    assert_eq!(
        wait(plain),
        Err(TaskError::Failed {
            error: Fail::Plain,
            attempts: 1
        })
    );
    counts.assert_balanced();
    gate.assert_passed();
}

/// `run_task` runs its body on the caller's thread while holding an admission ticket, so
/// shutdown cannot finish before the body returns. A body that calls `stop` (or `kill`) must
/// get the same treatment as a queued task that does: begin the shutdown and return without
/// waiting, instead of waiting for a drain it is itself holding back. (This hung before the
/// library's "stop/kill from inside run_task" fix.)
fn shutdown_from_inside_run_task(kill: bool) {
    let counts = Arc::new(Counts::default());
    let m = build(1, &counts, if kill { "runkill" } else { "runstop" });
    let m2 = m.clone();
    let outcome = within("shutdown inside run_task", move || {
        let inner = m2.clone();
        m2.run_task(move |_: &mut Res, _: &TaskContext| {
            Ok(if kill { inner.kill() } else { inner.stop() })
        })
    });
    assert_eq!(outcome, Ok(Ok(())));
    if kill {
        assert_eq!(
            bounded(&m, "kill", |m| m.kill()),
            Err(ShutdownError::AlreadyKilled)
        );
    } else {
        assert_eq!(
            bounded(&m, "stop", |m| m.stop()),
            Err(ShutdownError::AlreadyStopping)
        );
    }
    assert!(matches!(
        bounded(&m, "queue_task", |m| m
            .queue_task(|_: &mut Res, _: &TaskContext| Ok(()))),
        Err(TaskError::ShuttingDown)
    ));
    drop(m);
    // Nobody joined the workers: they end on their own, releasing every resource.
    eventually("created == destroyed", || {
        counts.created() == counts.destroyed()
    });
}

#[test]
fn stop_from_inside_run_task_does_not_hang() {
    shutdown_from_inside_run_task(false);
}

#[test]
fn kill_from_inside_run_task_does_not_hang() {
    shutdown_from_inside_run_task(true);
}
