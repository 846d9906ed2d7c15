//! Bursting: slots above `worker_count`, made at build and parked, are activated by the
//! controller under load and parked again when idle, without losing a task or a resource,
//! without spawning a thread after build, and without breaking priority order.
//!
//! Every test here builds `worker_count(1)` (or 2) with `max_worker_count(4)` (or equal to the
//! base), a short `burst_interval` and `metrics_window` so the controller reacts within tens of
//! milliseconds, unpinned workers, and a thread name prefix of its own (short: Linux keeps 15
//! bytes of a thread name, and `{prefix}-burst` must fit). Deadlines ([`TIMEOUT`]) only turn a
//! hang into a failure; no test bounds how long anything takes.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, Counts, DbError, TIMEOUT, builder, eventually, healthy};
use tasker::{
    Builder, MetricsCollector, TaskContext, TaskError, TaskManager, TaskStats, WorkerEvent,
};

const BASE: usize = 1;
const MAX: usize = 4;
/// The `run_task` pool, made at build along with the base workers' resources.
const POOL: usize = 1;
/// `on_create` calls made by `build` (the pool first, then the base workers); later calls are
/// burst slots activating (no test here breaks a resource, so none is a replacement).
const BUILD_CREATES: usize = POOL + BASE;
const INTERVAL: Duration = Duration::from_millis(20);
const WINDOW: Duration = Duration::from_millis(200);
/// One task's run time: long enough that a single worker falls behind a batch of them.
const TASK: Duration = Duration::from_millis(2);

/// Records the worker events (burst up/down, failed creations).
#[derive(Default)]
struct Events(Mutex<Vec<WorkerEvent>>);

impl Events {
    fn all(&self) -> Vec<WorkerEvent> {
        self.0.lock().unwrap().clone()
    }

    fn burst_ups(&self) -> Vec<usize> {
        self.all()
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::BurstUp { worker } => Some(*worker),
                _ => None,
            })
            .collect()
    }

    fn burst_downs(&self) -> Vec<usize> {
        self.all()
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::BurstDown { worker } => Some(*worker),
                _ => None,
            })
            .collect()
    }

    fn creation_failures(&self) -> Vec<usize> {
        self.all()
            .iter()
            .filter_map(|e| match e {
                WorkerEvent::ResourceCreationFailed { worker } => Some(*worker),
                _ => None,
            })
            .collect()
    }
}

impl MetricsCollector for Events {
    fn record_worker_event(&self, event: WorkerEvent) {
        self.0.lock().unwrap().push(event);
    }
}

/// The common burst configuration on top of `base` (whose hooks are already set).
fn configure(
    base: Builder<Conn, DbError>,
    prefix: &str,
    events: &Arc<Events>,
) -> Builder<Conn, DbError> {
    base.pin_workers(false)
        .worker_count(BASE)
        .max_worker_count(MAX)
        .resource_pool_size(POOL)
        .burst_interval(INTERVAL)
        .metrics_window(WINDOW)
        .thread_name_prefix(prefix)
        .metrics_collector(events.clone())
}

/// The common burst configuration with counted, always-succeeding hooks.
fn burst_builder(counts: &Counts, prefix: &str, events: &Arc<Events>) -> Builder<Conn, DbError> {
    configure(builder(counts), prefix, events)
}

/// The common burst configuration whose `on_create` succeeds (counted) for the calls `build`
/// makes and runs `activation()` for every later call, i.e. for burst slots activating.
fn activation_builder(
    counts: &Counts,
    prefix: &str,
    events: &Arc<Events>,
    activation: impl Fn() -> Result<(), DbError> + Send + Sync + 'static,
) -> Builder<Conn, DbError> {
    let calls = AtomicUsize::new(0);
    let (c, d) = (counts.clone(), counts.clone());
    let hooks = TaskManager::builder()
        .on_create(move || {
            if calls.fetch_add(1, Ordering::SeqCst) >= BUILD_CREATES {
                activation()?;
            }
            Ok(c.make())
        })
        .on_destroy(move |conn: Conn| {
            d.destroy(conn);
            Ok(())
        })
        .check_health(healthy);
    configure(hooks, prefix, events)
}

/// The outcomes of a batch of tasks, one counter per task, so a task answered twice (or
/// never) shows.
struct Outcomes {
    answers: Vec<AtomicUsize>,
    ok: AtomicUsize,
    killed: AtomicUsize,
    other: Mutex<Vec<String>>,
    /// The thread names the tasks that ended `Ok` ran on.
    threads: Mutex<BTreeSet<String>>,
}

impl Outcomes {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Outcomes {
            answers: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            ok: AtomicUsize::new(0),
            killed: AtomicUsize::new(0),
            other: Mutex::new(Vec::new()),
            threads: Mutex::new(BTreeSet::new()),
        })
    }

    fn answered(&self) -> usize {
        self.answers
            .iter()
            .filter(|a| a.load(Ordering::SeqCst) > 0)
            .count()
    }

    fn wait_all(&self) {
        assert!(
            eventually(|| self.answered() == self.answers.len()),
            "only {} of {} tasks got an outcome",
            self.answered(),
            self.answers.len()
        );
    }

    /// Every task got exactly one outcome.
    fn assert_each_once(&self) {
        self.wait_all();
        for (i, a) in self.answers.iter().enumerate() {
            assert_eq!(
                a.load(Ordering::SeqCst),
                1,
                "task {i} answered more than once"
            );
        }
        let other = self.other.lock().unwrap();
        assert!(other.is_empty(), "unexpected outcomes: {other:?}");
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn killed(&self) -> usize {
        self.killed.load(Ordering::SeqCst)
    }
}

/// Queues `n` tasks that each take [`TASK`] (a sleep: a worker is busy for that long whatever
/// the cores are doing) and report to the returned outcomes.
fn submit_load(m: &TaskManager<Conn, DbError>, n: usize) -> Arc<Outcomes> {
    let outcomes = Outcomes::new(n);
    for i in 0..n {
        let out = outcomes.clone();
        m.queue_task_with_callback(
            |_: &mut Conn, _: &TaskContext| {
                thread::sleep(TASK);
                Ok(thread::current().name().unwrap_or("?").to_owned())
            },
            move |r: Result<String, TaskError<DbError>>| {
                out.answers[i].fetch_add(1, Ordering::SeqCst);
                match r {
                    Ok(name) => {
                        out.ok.fetch_add(1, Ordering::SeqCst);
                        out.threads.lock().unwrap().insert(name);
                    }
                    Err(TaskError::Killed) => {
                        out.killed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => out.other.lock().unwrap().push(format!("task {i}: {e:?}")),
                }
            },
        );
    }
    outcomes
}

/// Polls `stats()` until `cond` holds, or fails with the last snapshot after [`TIMEOUT`].
fn wait_stats(m: &TaskManager<Conn, DbError>, what: &str, cond: impl Fn(&TaskStats) -> bool) {
    let mut last = m.stats();
    let held = eventually(|| {
        last = m.stats();
        cond(&last)
    });
    assert!(held, "never saw {what}; last stats: {last:?}");
}

/// Polls until the collector saw what `cond` asks for, or fails after [`TIMEOUT`].
fn wait_events(events: &Events, what: &str, cond: impl Fn(&Events) -> bool) {
    assert!(
        eventually(|| cond(events)),
        "the collector never saw {what}; events: {:?}",
        events.all()
    );
}

/// The names of this process's threads (`/proc/self/task/*/comm`; Linux truncates them to
/// 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim_end().to_owned())
        .collect()
}

fn has_thread(name: &str) -> bool {
    thread_names().iter().any(|n| n == name)
}

/// Stops `m` on another thread, raising `stopping` just before, and fails if that does not
/// return within [`TIMEOUT`] (a hang).
fn shut_down(m: &TaskManager<Conn, DbError>, kill: bool, stopping: &Arc<AtomicBool>) {
    let m = m.clone();
    let stopping = stopping.clone();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        stopping.store(true, Ordering::SeqCst);
        let r = if kill { m.kill() } else { m.stop() };
        let _ = tx.send(r);
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|_| panic!("{} hung", if kill { "kill" } else { "stop" }))
        .expect("first shutdown call succeeds");
}

#[test]
fn step_load_activates_burst_slots_within_a_few_intervals() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let m = burst_builder(&counts, "bStep", &events).build().unwrap();
    let idle = m.stats();
    assert_eq!((idle.burst_workers, idle.parked_workers), (0, MAX - BASE));

    let step = Instant::now();
    let load = submit_load(&m, 300);
    wait_stats(&m, "a burst slot up", |s| s.burst_workers > 0);
    eprintln!(
        "first burst slot up {:?} after the step ({INTERVAL:?} interval)",
        step.elapsed()
    );

    load.assert_each_once();
    assert_eq!(load.ok(), 300);
    // The slot reports `BurstUp` once it holds its resource, a moment after the controller
    // counted it up.
    wait_events(&events, "BurstUp", |e| !e.burst_ups().is_empty());
    assert!(events.burst_ups().iter().all(|&w| (BASE..MAX).contains(&w)));
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn idle_returns_to_base() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let m = burst_builder(&counts, "bIdle", &events)
        .burst_keep_alive(Duration::ZERO)
        .build()
        .unwrap();
    let load = submit_load(&m, 300);
    wait_stats(&m, "a burst slot up", |s| s.burst_workers > 0);
    load.assert_each_once();
    assert_eq!(load.ok(), 300);

    // Idle now: the controller parks the burst slots one per `DOWN_TICKS` decisions.
    wait_stats(&m, "every burst slot parked again", |s| {
        s.burst_workers == 0 && s.parked_workers == MAX - BASE
    });
    wait_events(&events, "BurstDown", |e| !e.burst_downs().is_empty());
    // A parked slot let go of its resource: only the base worker's and the pool's are left.
    assert_eq!(counts.created() - counts.destroyed(), BASE + POOL);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn keep_burst_resources_keeps_them_while_parked() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let m = burst_builder(&counts, "bKeep", &events)
        .burst_keep_alive(Duration::ZERO)
        .keep_burst_resources(true)
        .build()
        .unwrap();
    let load = submit_load(&m, 400);
    wait_stats(&m, "a burst slot up", |s| s.burst_workers > 0);
    load.assert_each_once();
    assert_eq!(load.ok(), 400);

    // Idle: at least one slot parks.
    wait_events(&events, "BurstDown", |e| !e.burst_downs().is_empty());
    let parked_slot = events.burst_downs()[0];
    assert_eq!(
        counts.destroyed(),
        0,
        "no resource is destroyed while its slot is parked (and no task broke one)"
    );
    // One resource per slot that ever came up, made on its first activation only.
    let slots_up = |e: &Events| e.burst_ups().into_iter().collect::<BTreeSet<_>>();
    assert!(slots_up(&events).contains(&parked_slot));
    assert_eq!(counts.created(), BUILD_CREATES + slots_up(&events).len());

    // Up again: a slot that kept its resource does not make another one.
    let again = submit_load(&m, 400);
    again.assert_each_once();
    assert_eq!(again.ok(), 400);
    assert_eq!(counts.destroyed(), 0);
    // (A slot activated at the last moment counts its resource just before its `BurstUp`.)
    assert!(
        eventually(|| counts.created() == BUILD_CREATES + slots_up(&events).len()),
        "created {} resources for {:?} slots up",
        counts.created(),
        slots_up(&events)
    );

    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

/// `stop` or `kill` lands while a burst slot is in its activation's `on_create`: that call
/// waits until the shutdown is about to begin, then takes 50 ms more. With `stop` the slot
/// then joins the drain; with `kill` the base worker resolves the queue at once, so the
/// manager is drained while the slot is still creating.
fn shutdown_during_activation(prefix: &str, kill: bool) {
    const TASKS: usize = 200;
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let creating = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let (c, st) = (creating.clone(), stopping.clone());
    let m = activation_builder(&counts, prefix, &events, move || {
        c.fetch_add(1, Ordering::SeqCst);
        let _ = eventually(|| st.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(50));
        c.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
    .build()
    .unwrap();
    assert_eq!(counts.created(), BUILD_CREATES);

    let load = submit_load(&m, TASKS);
    assert!(
        eventually(|| creating.load(Ordering::SeqCst) > 0),
        "no burst slot began activating; stats: {:?}",
        m.stats()
    );
    shut_down(&m, kill, &stopping);

    load.assert_each_once();
    if kill {
        assert_eq!(load.ok() + load.killed(), TASKS);
    } else {
        assert_eq!(load.ok(), TASKS);
    }
    assert_eq!(creating.load(Ordering::SeqCst), 0);
    assert!(counts.created() > BUILD_CREATES, "no activation completed");
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn shutdown_during_activation_loses_nothing_on_stop() {
    shutdown_during_activation("bStop", false);
}

#[test]
fn shutdown_during_activation_loses_nothing_on_kill() {
    shutdown_during_activation("bKill", true);
}

#[test]
fn a_failing_on_create_on_activation_parks_the_slot_and_loses_nothing() {
    const TASKS: usize = 150;
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let m = activation_builder(&counts, "bFail", &events, || Err(DbError::Connect))
        .build()
        .unwrap();

    // The base worker sets its `active` flag only after `build` returns (see
    // `active_workers_counts_the_base_workers_as_soon_as_build_returns`): wait for it.
    wait_stats(&m, "the base worker active", |s| s.active_workers == BASE);
    let load = submit_load(&m, TASKS);
    // While the load runs, the controller keeps trying to bring slots up (each attempt is a
    // moment in `on_create`, too short to catch in `stats`); none ever holds a resource, so
    // none is ever counted active.
    while load.answered() < TASKS {
        let s = m.stats();
        assert_eq!(
            s.active_workers, BASE,
            "a failed slot counted active: {s:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    load.assert_each_once();
    assert_eq!(load.ok(), TASKS);
    assert_eq!(
        *load.threads.lock().unwrap(),
        BTreeSet::from(["bFail-0".to_owned()]),
        "every task ran on the base worker"
    );
    wait_events(&events, "ResourceCreationFailed", |e| {
        !e.creation_failures().is_empty()
    });
    assert!(
        events
            .creation_failures()
            .iter()
            .all(|&w| (BASE..MAX).contains(&w))
    );
    assert!(
        events.burst_ups().is_empty(),
        "a failed slot reported BurstUp"
    );
    eprintln!(
        "{} failed activations while {TASKS} tasks ran",
        events.creation_failures().len()
    );

    // Idle: every slot is parked again.
    wait_stats(&m, "every burst slot parked", |s| {
        s.burst_workers == 0 && s.parked_workers == MAX - BASE
    });
    assert_eq!(m.stats().active_workers, BASE);
    m.stop().unwrap();
    assert_eq!(counts.created(), BUILD_CREATES);
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn priority_tasks_still_start_first_while_bursting() {
    const NORMAL: usize = 1000;
    const PRIORITY: usize = 10;
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    // A long keep-alive: slots stay up for the whole test.
    let m = burst_builder(&counts, "bPrio", &events)
        .burst_keep_alive(Duration::from_secs(30))
        .build()
        .unwrap();

    let starts: Arc<Mutex<Vec<(bool, usize, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let task = |priority: bool, id: usize| {
        let starts = starts.clone();
        move |_: &mut Conn, _: &TaskContext| {
            let at = Instant::now();
            starts.lock().unwrap().push((priority, id, at));
            thread::sleep(TASK);
            Ok(())
        }
    };
    let done = Arc::new(AtomicUsize::new(0));
    let callback = || {
        let done = done.clone();
        move |r: Result<(), TaskError<DbError>>| {
            r.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
        }
    };

    for id in 0..NORMAL {
        m.queue_task_with_callback(task(false, id), callback());
    }
    wait_stats(&m, "a burst slot up", |s| s.burst_workers > 0);

    let mut submitted = Vec::new();
    for id in 0..PRIORITY {
        let s = m.stats();
        assert!(
            s.burst_workers > 0 && s.queued_tasks > 0,
            "the test needs slots up and a backlog: {s:?}"
        );
        m.queue_task_with_priority_with_callback(task(true, id), callback());
        // Taken after the push: whatever starts later was still queued at the push.
        submitted.push(Instant::now());
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        eventually(|| done.load(Ordering::SeqCst) == NORMAL + PRIORITY),
        "tasks hung"
    );

    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), NORMAL + PRIORITY, "every task ran once");
    let max_workers = m.stats().max_workers;
    for (id, &submitted_at) in submitted.iter().enumerate() {
        let started_at = starts
            .iter()
            .find(|&&(p, i, _)| p && i == id)
            .map(|&(_, _, at)| at)
            .unwrap();
        // Normal tasks still queued at the push (they started after it) that started before
        // this priority task. Each worker looks at the priority injector before every pick,
        // so only a pick already past that look when the priority task was pushed can start a
        // normal task first: at most one such pick per worker, and at most `max_workers`
        // workers are up. (A worker's next pick, once that normal task ends 2 ms later, looks
        // at the priority injector first again.) The start instants are read inside the
        // bodies, a moment after each pick, which the bound also covers: a normal task picked
        // just before the push may record its start just after it.
        let overtaken = starts
            .iter()
            .filter(|&&(p, _, at)| !p && at > submitted_at && at < started_at)
            .count();
        assert!(
            overtaken <= max_workers,
            "priority task {id}: {overtaken} normal tasks queued before it started first \
             (started {:?} after its submission)",
            started_at - submitted_at
        );
    }
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn with_max_equal_to_base_bursting_is_off() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let m = burst_builder(&counts, "bOff", &events)
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .unwrap();
    // The workers' names are readable (they are set before `build` returns)...
    assert!(
        has_thread("bOff-0") && has_thread("bOff-1"),
        "{:?}",
        thread_names()
    );
    // ...and there is no controller.
    assert!(!has_thread("bOff-burst"));

    let load = submit_load(&m, 300);
    while load.answered() < 300 {
        let s = m.stats();
        assert_eq!((s.burst_workers, s.parked_workers), (0, 0), "{s:?}");
        assert_eq!(s.max_workers, 2);
        assert!(!has_thread("bOff-burst"));
        thread::sleep(Duration::from_millis(2));
    }
    load.assert_each_once();
    assert_eq!(load.ok(), 300);
    assert!(events.all().is_empty(), "{:?}", events.all());
    assert!(!has_thread("bOff-burst"));
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn burst_slot_threads_exist_from_build() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    let m = burst_builder(&counts, "bThr", &events).build().unwrap();
    // Each worker names its thread before it reports to `build`: all are there at once.
    let names = thread_names();
    for i in 0..MAX {
        let name = format!("bThr-{i}");
        assert!(names.contains(&name), "no thread {name}: {names:?}");
    }
    // The controller is spawned last and `build` does not wait for it to start; it names its
    // own thread as it starts, so its name may show a moment later.
    assert!(
        eventually(|| has_thread("bThr-burst")),
        "no controller thread: {:?}",
        thread_names()
    );
    // The slots exist but are parked, without a resource.
    wait_stats(&m, "the base worker active", |s| s.active_workers == BASE);
    let s = m.stats();
    assert_eq!(
        (
            s.base_workers,
            s.burst_workers,
            s.parked_workers,
            s.max_workers
        ),
        (BASE, 0, MAX - BASE, MAX)
    );
    assert_eq!(s.active_workers, BASE);
    assert_eq!(counts.created(), BUILD_CREATES);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_failed_build_joins_its_burst_slots_and_controller() {
    let counts = Counts::new();
    let events = Arc::new(Events::default());
    // The pool's resource is made; the base worker's `on_create` fails: `build` must close
    // the parked slots, stop the controller, join every thread it made and destroy the pool.
    let calls = AtomicUsize::new(0);
    let c = counts.clone();
    let r = burst_builder(&counts, "bBad", &events)
        .on_create(move || {
            if calls.fetch_add(1, Ordering::SeqCst) < POOL {
                Ok(c.make())
            } else {
                Err(DbError::Connect)
            }
        })
        .build();
    assert!(
        matches!(
            r,
            Err(tasker::BuildError::ResourceCreation(DbError::Connect))
        ),
        "{r:?}"
    );
    assert_eq!((counts.created(), counts.destroyed()), (POOL, POOL));
    // Joined threads may stay listed for a moment while the kernel reaps them.
    assert!(
        eventually(|| !thread_names().iter().any(|n| n.starts_with("bBad-"))),
        "threads left behind: {:?}",
        thread_names()
    );
    assert!(events.all().is_empty(), "{:?}", events.all());
}

/// `TaskStats::active_workers` is "workers that hold a resource and take tasks", and `build`
/// returns only once every base worker made its resource, so right after `build` the base
/// workers must all be counted (a worker sets its `active` flag before it reports to `build`,
/// not after the start gate opens). This is also what tells a failed burst slot from an
/// active one, hence here.
#[test]
fn active_workers_counts_the_base_workers_as_soon_as_build_returns() {
    let mut lagging = Vec::new();
    for round in 0..20 {
        let counts = Counts::new();
        let m = builder(&counts)
            .worker_count(2)
            .max_worker_count(4)
            .thread_name_prefix("bAct")
            .build()
            .unwrap();
        let active = m.stats().active_workers;
        if active != 2 {
            lagging.push((round, active));
        }
        m.stop().unwrap();
        assert_eq!(counts.created(), counts.destroyed());
    }
    assert!(
        lagging.is_empty(),
        "right after build, (round, active_workers) with 2 base workers: {lagging:?}"
    );
}
