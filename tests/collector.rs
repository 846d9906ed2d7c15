//! A `MetricsCollector` set with `.metrics_collector(..)` sees every task and worker event:
//! one arrival and exactly one terminal event per accepted task, with the right outcome and a
//! consistent lifecycle; one retry event per re-queue; a worker event per replacement and per
//! failed `on_create`; and the built-in metrics do not change because a collector is set.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Conn, Counts, DbError, Gate, Rng, TIMEOUT, builder, eventually};
use tasker::{
    MetricsCollector, TaskContext, TaskError, TaskLifecycle, TaskManager, TaskMetrics, TaskOutcome,
    WorkerEvent,
};

#[derive(Debug, Clone, Copy)]
enum Event {
    Arrival { priority: bool },
    Completion(TaskLifecycle),
    Failure(TaskLifecycle),
    Retry(TaskLifecycle),
    Worker(WorkerEvent),
}

/// Records every event, in order.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn arrivals(&self) -> Vec<bool> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::Arrival { priority } => Some(*priority),
                _ => None,
            })
            .collect()
    }

    fn worker_events(&self) -> Vec<WorkerEvent> {
        self.events()
            .iter()
            .filter_map(|e| match e {
                Event::Worker(w) => Some(*w),
                _ => None,
            })
            .collect()
    }
}

impl MetricsCollector for Recorder {
    fn record_arrival(&self, priority: bool) {
        self.push(Event::Arrival { priority });
    }
    fn record_completion(&self, task: &TaskLifecycle) {
        self.push(Event::Completion(*task));
    }
    fn record_failure(&self, task: &TaskLifecycle) {
        self.push(Event::Failure(*task));
    }
    fn record_retry(&self, task: &TaskLifecycle) {
        self.push(Event::Retry(*task));
    }
    fn record_worker_event(&self, event: WorkerEvent) {
        self.push(Event::Worker(event));
    }
}

/// Which callback an event came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Via {
    Completion,
    Failure,
    Retry,
}

/// A comparable digest of one task event: (callback, outcome, attempt, priority, ran).
type Digest = (Via, String, u32, bool, bool);

fn digest(via: Via, outcome: TaskOutcome, attempt: u32, priority: bool, ran: bool) -> Digest {
    (via, format!("{outcome:?}"), attempt, priority, ran)
}

/// Checks every task event's lifecycle and returns the multiset of their digests.
fn task_digests(events: &[Event]) -> BTreeMap<Digest, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        let (via, t) = match e {
            Event::Completion(t) => (Via::Completion, t),
            Event::Failure(t) => (Via::Failure, t),
            Event::Retry(t) => (Via::Retry, t),
            _ => continue,
        };
        // Timestamps in order.
        assert!(t.queued_at <= t.finished_at, "{t:?}");
        if let Some(started) = t.started_at {
            assert!(t.queued_at <= started && started <= t.finished_at, "{t:?}");
        }
        // The callback matches the outcome.
        let expected_via = match t.outcome {
            TaskOutcome::Completed => Via::Completion,
            TaskOutcome::Retried => Via::Retry,
            _ => Via::Failure,
        };
        assert_eq!(via, expected_via, "{t:?}");
        // Unrun outcomes have no start.
        let unrun = matches!(t.outcome, TaskOutcome::Killed | TaskOutcome::Cancelled);
        assert_eq!(t.started_at.is_none(), unrun, "{t:?}");
        *out.entry(digest(
            via,
            t.outcome,
            t.attempt,
            t.priority,
            t.started_at.is_some(),
        ))
        .or_default() += 1;
    }
    out
}

const MAX_RETRIES: u32 = 2;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ok,
    /// Healthy error.
    Plain,
    /// Unhealthy on attempt 1, ok on attempt 2.
    BrokenOnce,
    /// Unhealthy every time: runs 1 + MAX_RETRIES times.
    AlwaysBroken,
    Panic,
    /// Unhealthy, at-most-once: not retried.
    OnceBroken,
}

const KINDS: [Kind; 6] = [
    Kind::Ok,
    Kind::Plain,
    Kind::BrokenOnce,
    Kind::AlwaysBroken,
    Kind::Panic,
    Kind::OnceBroken,
];

fn body(kind: Kind, ctx: &TaskContext) -> Result<u32, DbError> {
    match kind {
        Kind::Ok => Ok(ctx.attempt()),
        Kind::Plain => Err(DbError::Plain),
        Kind::BrokenOnce if ctx.attempt() == 1 => Err(DbError::Broken),
        Kind::BrokenOnce => Ok(ctx.attempt()),
        Kind::AlwaysBroken | Kind::OnceBroken => Err(DbError::Broken),
        Kind::Panic => panic!("task panicked on purpose"),
    }
}

/// The outcome a submitter must see.
fn check_outcome(kind: Kind, outcome: &Result<u32, TaskError<DbError>>) {
    let ok = match kind {
        Kind::Ok => *outcome == Ok(1),
        Kind::BrokenOnce => *outcome == Ok(2),
        Kind::Plain => {
            *outcome
                == Err(TaskError::Failed {
                    error: DbError::Plain,
                    attempts: 1,
                })
        }
        Kind::AlwaysBroken => {
            *outcome
                == Err(TaskError::Failed {
                    error: DbError::Broken,
                    attempts: MAX_RETRIES + 1,
                })
        }
        Kind::OnceBroken => {
            *outcome
                == Err(TaskError::Failed {
                    error: DbError::Broken,
                    attempts: 1,
                })
        }
        Kind::Panic => matches!(outcome, Err(TaskError::Panicked { .. })),
    };
    assert!(ok, "{kind:?} ended {outcome:?}");
}

/// What the collector must see for one task of `kind`: its task events, and how many
/// resources its runs replaced.
fn expect_events(kind: Kind, priority: bool, expected: &mut BTreeMap<Digest, usize>) -> usize {
    let mut add = |via, outcome, attempt| {
        *expected
            .entry(digest(via, outcome, attempt, priority, true))
            .or_default() += 1;
    };
    match kind {
        Kind::Ok => {
            add(Via::Completion, TaskOutcome::Completed, 1);
            0
        }
        Kind::Plain => {
            add(Via::Failure, TaskOutcome::Failed, 1);
            0
        }
        Kind::BrokenOnce => {
            add(Via::Retry, TaskOutcome::Retried, 1);
            add(Via::Completion, TaskOutcome::Completed, 2);
            1
        }
        Kind::AlwaysBroken => {
            for attempt in 1..=MAX_RETRIES {
                add(Via::Retry, TaskOutcome::Retried, attempt);
            }
            add(Via::Failure, TaskOutcome::Failed, MAX_RETRIES + 1);
            MAX_RETRIES as usize + 1
        }
        Kind::Panic => {
            add(Via::Failure, TaskOutcome::Panicked, 1);
            1
        }
        Kind::OnceBroken => {
            add(Via::Failure, TaskOutcome::Failed, 1);
            1
        }
    }
}

type Outcome = Result<u32, TaskError<DbError>>;

/// Runs a random mix on one manager with a single worker, then cancels tasks queued behind a
/// blocked worker, then kills the manager with tasks queued, then submits refused tasks, and
/// checks the collector saw exactly what happened.
fn random_mix(seed: u64) {
    let mut rng = Rng::new(seed);
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .max_retries(MAX_RETRIES)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();

    let mut expected: BTreeMap<Digest, usize> = BTreeMap::new();
    let mut expected_arrivals: Vec<bool> = Vec::new();
    let mut replaced = 0;

    // Phase 1: a random mix through handles, callbacks and run_task.
    let (cb_tx, cb_rx) = mpsc::channel::<(Kind, Outcome)>();
    let mut handles = Vec::new();
    let mut callbacks = 0;
    for _ in 0..150 {
        let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
        let roll = rng.below(10);
        if roll == 0 {
            // run_task: ok or healthy failure (its pool replacements are not worker events).
            let kind = if rng.below(2) == 0 {
                Kind::Ok
            } else {
                Kind::Plain
            };
            let outcome = m.run_task(|_: &mut Conn, ctx: &TaskContext| body(kind, ctx));
            check_outcome(kind, &outcome);
            expect_events(kind, false, &mut expected);
            expected_arrivals.push(false);
            continue;
        }
        let priority = rng.below(3) == 0;
        let once = matches!(kind, Kind::OnceBroken);
        let f = move |_: &mut Conn, ctx: &TaskContext| body(kind, ctx);
        if roll <= 3 {
            let tx = cb_tx.clone();
            let cb = move |outcome: Outcome| {
                let _ = tx.send((kind, outcome));
            };
            match (priority, once) {
                (false, false) => m.queue_task_with_callback(f, cb),
                (true, false) => m.queue_task_with_priority_with_callback(f, cb),
                (false, true) => m.queue_task_once_with_callback(f, cb),
                (true, true) => m.queue_task_with_priority_once_with_callback(f, cb),
            }
            callbacks += 1;
        } else {
            let h = match (priority, once) {
                (false, false) => m.queue_task_async(f),
                (true, false) => m.queue_task_with_priority_async(f),
                (false, true) => m.queue_task_once_async(f),
                (true, true) => m.queue_task_with_priority_once_async(f),
            };
            handles.push((kind, h));
        }
        replaced += expect_events(kind, priority, &mut expected);
        expected_arrivals.push(priority);
    }
    for (kind, h) in handles {
        check_outcome(kind, &h.wait());
    }
    for _ in 0..callbacks {
        let (kind, outcome) = cb_rx.recv_timeout(TIMEOUT).expect("a callback never came");
        check_outcome(kind, &outcome);
    }

    // Phase 2: tasks queued behind the single worker, blocked at a gate; half are cancelled.
    let gate = Gate::new();
    let waiter = gate.waiter();
    let blocker = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok(0)
    });
    expect_events(Kind::Ok, false, &mut expected);
    expected_arrivals.push(false);
    gate.wait_started();
    let mut queued = Vec::new();
    for i in 0..10 {
        let priority = rng.below(2) == 0;
        let f = |_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt());
        let h = if priority {
            m.queue_task_with_priority_async(f)
        } else {
            m.queue_task_async(f)
        };
        expected_arrivals.push(priority);
        let cancel = i % 2 == 0;
        if cancel {
            assert!(
                h.cancel(),
                "a queued task behind a blocked worker is cancellable"
            );
            *expected
                .entry(digest(
                    Via::Failure,
                    TaskOutcome::Cancelled,
                    0,
                    priority,
                    false,
                ))
                .or_default() += 1;
        } else {
            expect_events(Kind::Ok, priority, &mut expected);
        }
        queued.push((cancel, h));
    }
    gate.open();
    assert_eq!(blocker.wait(), Ok(0));
    for (cancelled, h) in queued {
        if cancelled {
            assert_eq!(h.wait(), Err(TaskError::Cancelled));
        } else {
            assert_eq!(h.wait(), Ok(1));
        }
    }

    // Phase 3: tasks queued behind a blocked worker when `kill` comes are killed unrun.
    let gate = Gate::new();
    let waiter = gate.waiter();
    let blocker = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok(0)
    });
    expect_events(Kind::Ok, false, &mut expected);
    expected_arrivals.push(false);
    gate.wait_started();
    let mut doomed = Vec::new();
    let kill_one = |priority: bool, expected: &mut BTreeMap<Digest, usize>| {
        *expected
            .entry(digest(
                Via::Failure,
                TaskOutcome::Killed,
                0,
                priority,
                false,
            ))
            .or_default() += 1;
    };
    for _ in 0..10 {
        let priority = rng.below(2) == 0;
        let f = |_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt());
        doomed.push(if priority {
            m.queue_task_with_priority_async(f)
        } else {
            m.queue_task_async(f)
        });
        expected_arrivals.push(priority);
        kill_one(priority, &mut expected);
    }
    let killer = {
        let m = m.clone();
        thread::spawn(move || m.kill())
    };
    // Probe until the kill has closed the gate: an accepted probe is one more queued task to
    // be killed; a refused one is answered at once, on this thread, and is not an arrival.
    let refused = eventually(|| {
        let probe = m.queue_task_async(|_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt()));
        if probe.is_finished() {
            assert_eq!(probe.wait(), Err(TaskError::ShuttingDown));
            true
        } else {
            expected_arrivals.push(false);
            kill_one(false, &mut expected);
            doomed.push(probe);
            false
        }
    });
    assert!(refused, "kill never closed the gate");
    gate.open();
    killer.join().unwrap().unwrap();
    // The running task finished its attempt; the queued ones were killed.
    assert_eq!(blocker.wait(), Ok(0));
    for h in doomed {
        assert_eq!(h.wait(), Err(TaskError::Killed));
    }

    // Refused submissions after the shutdown: no events at all.
    let arrivals_before = recorder.arrivals().len();
    let events_before = recorder.events().len();
    assert_eq!(
        m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(())),
        Err(TaskError::ShuttingDown)
    );
    assert_eq!(
        m.run_task(|_: &mut Conn, _: &TaskContext| Ok(())),
        Err(TaskError::ShuttingDown)
    );
    let (tx, rx) = mpsc::channel();
    m.queue_task_with_priority_with_callback(
        |_: &mut Conn, _: &TaskContext| Ok(()),
        move |o| {
            let _ = tx.send(o);
        },
    );
    assert_eq!(rx.recv_timeout(TIMEOUT), Ok(Err(TaskError::ShuttingDown)));
    assert_eq!(
        m.queue_task_once_async(|_: &mut Conn, _: &TaskContext| Ok(()))
            .wait(),
        Err(TaskError::ShuttingDown)
    );
    assert_eq!(recorder.arrivals().len(), arrivals_before);
    assert_eq!(recorder.events().len(), events_before);

    // The whole run, as the collector saw it.
    let events = recorder.events();
    let mut arrivals = recorder.arrivals();
    assert_eq!(
        arrivals.len(),
        expected_arrivals.len(),
        "one arrival per accepted task (seed {seed})"
    );
    arrivals.sort_unstable();
    expected_arrivals.sort_unstable();
    assert_eq!(
        arrivals, expected_arrivals,
        "arrival priority flags (seed {seed})"
    );
    let terminal = events
        .iter()
        .filter(|e| matches!(e, Event::Completion(_) | Event::Failure(_)))
        .count();
    assert_eq!(
        terminal,
        expected_arrivals.len(),
        "exactly one terminal event per accepted task (seed {seed})"
    );
    let seen = task_digests(&events);
    assert_eq!(
        seen, expected,
        "(callback, outcome, attempt, priority, ran) per task event (seed {seed})"
    );
    let workers = recorder.worker_events();
    assert_eq!(
        workers.len(),
        replaced,
        "one worker event per replacement (seed {seed}): {workers:?}"
    );
    for w in &workers {
        assert_eq!(*w, WorkerEvent::ResourceReplaced { worker: 0 });
    }
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn every_task_gets_exactly_one_terminal_event_with_the_right_outcome() {
    for seed in [0x9e37_79b9_7f4a_7c15, 42, 7, 0xdead_beef] {
        random_mix(seed);
    }
}

#[test]
fn replacements_on_several_workers_name_a_valid_worker() {
    const WORKERS: usize = 3;
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    let m = builder(&counts)
        .worker_count(WORKERS)
        .max_worker_count(WORKERS)
        .max_retries(1)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();
    let handles: Vec<_> = (0..60)
        .map(|i| {
            m.queue_task_async(move |_: &mut Conn, ctx: &TaskContext| {
                if i % 2 == 0 && ctx.attempt() == 1 {
                    Err(DbError::Broken)
                } else {
                    Ok(ctx.attempt())
                }
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.wait(), Ok(if i % 2 == 0 { 2 } else { 1 }));
    }
    m.stop().unwrap();
    let workers = recorder.worker_events();
    assert_eq!(workers.len(), 30, "{workers:?}");
    for w in workers {
        match w {
            WorkerEvent::ResourceReplaced { worker } => assert!(worker < WORKERS, "{w:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let retries = recorder
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Retry(_)))
        .count();
    assert_eq!(retries, 30, "one retry event per re-queue");
    assert_eq!(m.metrics().total_resources_replaced, 30);
}

#[test]
fn refused_tasks_after_stop_produce_no_events() {
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    let m = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();
    assert_eq!(m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(1)), Ok(1));
    m.stop().unwrap();
    let before = recorder.events().len();
    assert_eq!(before, 2, "{:?}", recorder.events());
    let ok = |_: &mut Conn, _: &TaskContext| Ok(());
    assert_eq!(m.queue_task(ok), Err(TaskError::ShuttingDown));
    assert_eq!(
        m.queue_task_with_priority_once(ok),
        Err(TaskError::ShuttingDown)
    );
    assert_eq!(m.queue_task_async(ok).wait(), Err(TaskError::ShuttingDown));
    assert_eq!(
        m.queue_task_with_priority_async(ok).wait(),
        Err(TaskError::ShuttingDown)
    );
    assert_eq!(m.run_task(ok), Err(TaskError::ShuttingDown));
    let (tx, rx) = mpsc::channel();
    m.queue_task_once_with_callback(ok, move |o| {
        let _ = tx.send(o);
    });
    assert_eq!(rx.recv_timeout(TIMEOUT), Ok(Err(TaskError::ShuttingDown)));
    assert_eq!(recorder.events().len(), before, "{:?}", recorder.events());
    assert_eq!(m.metrics().total_tasks_arrived, 1);
}

/// A builder whose `on_create` fails `failures` times once `after` resources were made.
fn failing_create_builder(
    counts: &Counts,
    after: usize,
    failures: usize,
) -> tasker::Builder<Conn, DbError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, d) = (counts.clone(), counts.clone());
    TaskManager::builder()
        .on_create(move || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            if call >= after && call < after + failures {
                Err(DbError::Connect)
            } else {
                Ok(c.make())
            }
        })
        .on_destroy(move |conn: Conn| {
            d.destroy(conn);
            Ok(())
        })
        .check_health(common::healthy)
        .pin_workers(false)
}

#[test]
fn a_failing_on_create_while_replacing_is_a_worker_event() {
    const WORKERS: usize = 2;
    const FAILURES: usize = 3;
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    // The first WORKERS resources (no pool) are made; the next FAILURES calls fail.
    let m = failing_create_builder(&counts, WORKERS, FAILURES)
        .worker_count(WORKERS)
        .max_worker_count(WORKERS)
        .resource_pool_size(0)
        .max_retries(1)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();
    let outcome = m.queue_task(|_: &mut Conn, ctx: &TaskContext| {
        if ctx.attempt() == 1 {
            Err(DbError::Broken)
        } else {
            Ok(ctx.attempt())
        }
    });
    // The retry ran (on whichever worker had a resource first).
    assert_eq!(outcome, Ok(2));
    // The first worker keeps trying, with backoff, until on_create works again.
    assert!(eventually(|| counts.created() == WORKERS + 1));
    m.stop().unwrap();
    let workers = recorder.worker_events();
    let replaced: Vec<usize> = workers
        .iter()
        .filter_map(|w| match w {
            WorkerEvent::ResourceReplaced { worker } => Some(*worker),
            _ => None,
        })
        .collect();
    let failed: Vec<usize> = workers
        .iter()
        .filter_map(|w| match w {
            WorkerEvent::ResourceCreationFailed { worker } => Some(*worker),
            _ => None,
        })
        .collect();
    assert_eq!(replaced.len(), 1, "{workers:?}");
    assert!(replaced[0] < WORKERS);
    assert_eq!(
        failed,
        vec![replaced[0]; FAILURES],
        "one event per failed on_create, by the replacing worker: {workers:?}"
    );
    assert_eq!(workers.len(), 1 + FAILURES, "{workers:?}");
    assert_eq!(counts.created(), counts.destroyed());
}

#[test]
fn a_retry_killed_while_its_worker_cannot_make_a_resource() {
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    // One worker; after its first resource, on_create fails (practically) forever.
    let m = failing_create_builder(&counts, 1, usize::MAX / 2)
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(3)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();
    let h = m.queue_task_with_priority_async(|_: &mut Conn, _: &TaskContext| {
        Err::<(), _>(DbError::Broken)
    });
    // Attempt 1 broke the resource; the retry waits for a worker that cannot make one.
    assert!(eventually(|| {
        recorder
            .worker_events()
            .contains(&WorkerEvent::ResourceCreationFailed { worker: 0 })
    }));
    assert!(!h.is_finished());
    m.kill().unwrap();
    assert_eq!(h.wait(), Err(TaskError::Killed));
    let events = recorder.events();
    let retries: Vec<&TaskLifecycle> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retry(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].attempt, 1);
    assert!(retries[0].priority);
    let terminal: Vec<&TaskLifecycle> = events
        .iter()
        .filter_map(|e| match e {
            Event::Failure(t) | Event::Completion(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(terminal.len(), 1, "{events:?}");
    let t = terminal[0];
    assert_eq!(t.outcome, TaskOutcome::Killed);
    assert_eq!(t.attempt, 1, "it ran once before it was killed");
    assert!(t.priority);
    assert!(t.started_at.is_none(), "the killed attempt never started");
    assert!(t.queued_at <= t.finished_at);
    assert!(retries[0].finished_at <= t.finished_at);
    assert_eq!(counts.created(), counts.destroyed());
}

/// A task cancelled through its handle, and still queued when `kill` comes, reaches the
/// collector as `Cancelled`: the outcome its submitter saw (the worker checks cancellation
/// before the kill).
#[test]
fn a_task_cancelled_before_a_kill_is_reported_cancelled() {
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();
    let gate = Gate::new();
    let waiter = gate.waiter();
    let blocker = m.queue_task_async(move |_: &mut Conn, _: &TaskContext| {
        waiter.enter();
        Ok(0)
    });
    gate.wait_started();
    let h = m.queue_task_async(|_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt()));
    assert!(h.cancel());
    let killer = {
        let m = m.clone();
        thread::spawn(move || m.kill())
    };
    // Wait until the kill has begun: a refused probe is not an arrival; an accepted one is
    // killed with the rest.
    let mut probes = Vec::new();
    assert!(eventually(|| {
        let probe = m.queue_task_async(|_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt()));
        let refused = probe.is_finished();
        probes.push(probe);
        refused
    }));
    gate.open();
    killer.join().unwrap().unwrap();
    assert_eq!(blocker.wait(), Ok(0));
    assert_eq!(
        h.wait(),
        Err(TaskError::Cancelled),
        "the submitter saw Cancelled"
    );
    let refused = probes.pop().unwrap();
    assert_eq!(refused.wait(), Err(TaskError::ShuttingDown));
    for p in &probes {
        assert!(p.is_finished());
    }
    let outcomes: Vec<TaskOutcome> = recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Failure(t) => Some(t.outcome),
            _ => None,
        })
        .collect();
    // One Cancelled (the cancelled task), one Killed per accepted probe.
    let mut expected = vec![TaskOutcome::Cancelled];
    expected.extend(probes.iter().map(|_| TaskOutcome::Killed));
    assert_eq!(
        outcomes, expected,
        "the collector must report the outcome the submitter saw"
    );
}

/// A task queued after the previous task ended (here by that task's callback, which then
/// takes 20 ms on the single worker) neither "starts" before it was queued nor before the
/// worker was free: the clock read that ends one task may start the next only when nothing
/// ran in between.
#[test]
fn a_task_queued_after_the_previous_one_finished_does_not_start_before_it_was_queued() {
    let counts = Counts::new();
    let recorder = Arc::new(Recorder::default());
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .metrics_collector(recorder.clone())
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let m2 = m.clone();
    m.queue_task_with_callback(
        |_: &mut Conn, _: &TaskContext| Err::<(), _>(DbError::Plain),
        move |outcome: Result<(), TaskError<DbError>>| {
            assert!(matches!(outcome, Err(TaskError::Failed { .. })));
            // Runs on the single worker: the next task cannot start before this returns.
            let next = m2.queue_task_async(|_: &mut Conn, ctx: &TaskContext| Ok(ctx.attempt()));
            thread::sleep(Duration::from_millis(20));
            let _ = tx.send((next, Instant::now()));
        },
    );
    let (next, callback_returned) = rx.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(next.wait(), Ok(1));
    m.stop().unwrap();
    let completions: Vec<TaskLifecycle> = recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Completion(t) => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(completions.len(), 1);
    let t = completions[0];
    let started = t.started_at.expect("it ran");
    assert!(
        t.queued_at <= started && callback_returned <= started,
        "the task 'started' {:?} before it was queued and {:?} before the worker was free: {t:?}",
        t.queued_at.saturating_duration_since(started),
        callback_returned.saturating_duration_since(started),
    );
}

/// The same deterministic workload, with or without a collector.
fn workload(collector: Option<Arc<Recorder>>) -> TaskMetrics {
    let counts = Counts::new();
    let mut b = builder(&counts)
        .worker_count(2)
        .max_worker_count(2)
        .max_retries(MAX_RETRIES);
    if let Some(c) = collector {
        b = b.metrics_collector(c);
    }
    let m = b.build().unwrap();
    let handles: Vec<_> = (0..120)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let f = move |_: &mut Conn, ctx: &TaskContext| body(kind, ctx);
            let h = match (kind, i % 4 == 0) {
                (Kind::OnceBroken, false) => m.queue_task_once_async(f),
                (Kind::OnceBroken, true) => m.queue_task_with_priority_once_async(f),
                (_, false) => m.queue_task_async(f),
                (_, true) => m.queue_task_with_priority_async(f),
            };
            (kind, h)
        })
        .collect();
    for (kind, h) in handles {
        check_outcome(kind, &h.wait());
    }
    for kind in [Kind::Ok, Kind::Plain, Kind::Panic] {
        check_outcome(
            kind,
            &m.run_task(|_: &mut Conn, ctx: &TaskContext| body(kind, ctx)),
        );
    }
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
    m.metrics()
}

#[test]
fn a_collector_does_not_change_the_built_in_metrics() {
    let recorder = Arc::new(Recorder::default());
    let with = workload(Some(recorder.clone()));
    let without = workload(None);
    let totals = |s: &TaskMetrics| {
        (
            s.total_tasks_arrived,
            s.total_tasks_completed,
            s.total_tasks_failed,
            s.total_tasks_retried,
            s.total_tasks_panicked,
            s.total_resources_replaced,
            s.tasks_timed,
        )
    };
    assert_eq!(totals(&with), totals(&without));
    assert_eq!(with.success_rate, without.success_rate);
    assert_eq!(with.failure_rate, without.failure_rate);
    assert_eq!(with.total_tasks_arrived, 123);
    // And the collector saw the same totals.
    let events = recorder.events();
    let count = |f: fn(&Event) -> bool| events.iter().filter(|e| f(e)).count() as u64;
    assert_eq!(
        count(|e| matches!(e, Event::Arrival { .. })),
        with.total_tasks_arrived
    );
    assert_eq!(
        count(|e| matches!(e, Event::Completion(_))),
        with.total_tasks_completed
    );
    assert_eq!(
        count(|e| matches!(e, Event::Failure(_))),
        with.total_tasks_failed
    );
    assert_eq!(
        count(|e| matches!(e, Event::Retry(_))),
        with.total_tasks_retried
    );
    assert_eq!(
        count(|e| matches!(e, Event::Failure(t) if t.outcome == TaskOutcome::Panicked)),
        with.total_tasks_panicked
    );
}

#[test]
fn a_collector_is_called_on_the_thread_where_the_event_happens() {
    // Arrivals on the submitter's thread, task outcomes on a worker thread.
    #[derive(Default)]
    struct Threads(Mutex<Vec<(&'static str, Option<String>)>>);
    impl MetricsCollector for Threads {
        fn record_arrival(&self, _priority: bool) {
            let name = thread::current().name().map(str::to_owned);
            self.0.lock().unwrap().push(("arrival", name));
        }
        fn record_completion(&self, _task: &TaskLifecycle) {
            let name = thread::current().name().map(str::to_owned);
            self.0.lock().unwrap().push(("completion", name));
        }
    }
    let counts = Counts::new();
    let threads = Arc::new(Threads::default());
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .thread_name_prefix("collector-test")
        .metrics_collector(threads.clone())
        .build()
        .unwrap();
    let submitter = thread::current().name().map(str::to_owned);
    m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(()))
        .unwrap();
    m.stop().unwrap();
    let seen = threads.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            ("arrival", submitter),
            ("completion", Some("collector-test-0".to_owned()))
        ]
    );
}
