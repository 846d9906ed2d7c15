//! A `Logger` set with `.logger(..)` receives tasker's lifecycle events at the right level,
//! structured (kind, worker, attempt, outcome, reason, error, panic, retry delay), with the
//! user's error as `error_formatter` wrote it: errors for panicking callbacks, info for
//! replaced resources and shutdown, warnings for failed `on_destroy`/`on_create`, debug for
//! tasks that failed or were retried, and nothing at all for tasks that succeed. A logger
//! written against the string methods only receives the same events as one-line texts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::{Conn, Counts, DbError, TIMEOUT, builder, eventually};
use std::time::Duration;

use tasker::{LogEvent, LogKind, LogLevel, Logger, TaskContext, TaskError, TaskManager};

/// One event as captured: its level, its one-line form, and its fields.
#[derive(Debug, Clone)]
struct Entry {
    level: LogLevel,
    kind: LogKind,
    line: String,
    worker: Option<usize>,
    attempt: Option<u32>,
    outcome: Option<&'static str>,
    reason: Option<&'static str>,
    site: Option<&'static str>,
    error: Option<String>,
    panic: Option<String>,
    retry_in: Option<Duration>,
}

/// Captures every event, structured.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Entry>>>);

impl Capture {
    fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<(LogLevel, String)> {
        self.entries()
            .into_iter()
            .map(|e| (e.level, e.line))
            .collect()
    }

    /// Lines at `level`, lowercased.
    fn at(&self, level: LogLevel) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.to_lowercase())
            .collect()
    }

    /// Lines above debug.
    fn above_debug(&self) -> Vec<(LogLevel, String)> {
        self.lines()
            .into_iter()
            .filter(|(l, _)| *l > LogLevel::Debug)
            .collect()
    }

    /// Events of `kind`.
    fn of(&self, kind: LogKind) -> Vec<Entry> {
        self.entries()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }
}

impl Logger for Capture {
    fn log(&self, event: &LogEvent<'_>) {
        self.0.lock().unwrap().push(Entry {
            level: event.level,
            kind: event.kind,
            line: event.to_string(),
            worker: event.worker,
            attempt: event.attempt,
            outcome: event.outcome,
            reason: event.reason,
            site: event.site,
            error: event.error.map(str::to_owned),
            panic: event.panic.map(str::to_owned),
            retry_in: event.retry_in,
        });
    }
}

/// A logger written against the string methods only, as loggers were before `log`.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(LogLevel, String)>>>);

impl Logger for Lines {
    fn debug(&self, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((LogLevel::Debug, message.to_owned()));
    }
    fn info(&self, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((LogLevel::Info, message.to_owned()));
    }
    fn warn(&self, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((LogLevel::Warn, message.to_owned()));
    }
    fn error(&self, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push((LogLevel::Error, message.to_owned()));
    }
}

fn show(e: &DbError) -> String {
    e.to_string()
}

/// A manager of `workers` fixed workers (no burst slots) logging into a fresh `Capture`.
fn logged(counts: &Counts, workers: usize) -> (TaskManager<Conn, DbError>, Capture) {
    let log = Capture::default();
    let m = builder(counts)
        .worker_count(workers)
        .max_worker_count(workers)
        .error_formatter(show)
        .logger(log.clone())
        .build()
        .unwrap();
    (m, log)
}

fn is_shutdown_line(line: &str) -> bool {
    line.contains("shutdown") || line.contains("shutting down")
}

#[test]
fn a_panicking_callback_is_an_error_line() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 1);
    let (tx, rx) = mpsc::channel();
    m.queue_task_with_callback(
        |_: &mut Conn, _: &TaskContext| Ok(7),
        move |outcome: Result<i32, TaskError<DbError>>| {
            let _ = tx.send(outcome.ok());
            panic!("callback exploded on a worker");
        },
    );
    assert_eq!(rx.recv_timeout(TIMEOUT), Ok(Some(7)));
    // The line is written right after the callback returned (unwound).
    assert!(
        eventually(|| !log.at(LogLevel::Error).is_empty()),
        "{:?}",
        log.lines()
    );
    let errors = log.at(LogLevel::Error);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("callback exploded on a worker"),
        "the line carries the panic message: {errors:?}"
    );
    let panics = log.of(LogKind::UserPanic);
    assert_eq!(panics.len(), 1, "{panics:?}");
    assert_eq!(panics[0].site, Some("callback"));
    assert_eq!(
        panics[0].panic.as_deref(),
        Some("callback exploded on a worker")
    );
    // The worker carried on.
    assert_eq!(m.queue_task(|_: &mut Conn, _: &TaskContext| Ok(1)), Ok(1));
    m.stop().unwrap();

    // A refused task's callback runs on the caller's thread: its panic is logged too.
    m.queue_task_with_callback(
        |_: &mut Conn, _: &TaskContext| Ok(()),
        |outcome: Result<(), TaskError<DbError>>| {
            assert_eq!(outcome, Err(TaskError::ShuttingDown));
            panic!("callback exploded on the caller");
        },
    );
    let errors = log.at(LogLevel::Error);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[1].contains("callback exploded on the caller"),
        "{errors:?}"
    );
}

#[test]
fn an_unhealthy_error_is_an_info_line_about_the_replaced_resource() {
    let counts = Counts::new();
    let log = Capture::default();
    let m = builder(&counts)
        .worker_count(1)
        .max_worker_count(1)
        .max_retries(0)
        .error_formatter(show)
        .logger(log.clone())
        .build()
        .unwrap();
    assert_eq!(
        m.queue_task(|_: &mut Conn, _: &TaskContext| Err::<(), _>(DbError::Broken)),
        Err(TaskError::Failed {
            error: DbError::Broken,
            attempts: 1
        })
    );
    // Logged before the outcome was delivered.
    let infos = log.at(LogLevel::Info);
    assert_eq!(infos.len(), 1, "{:?}", log.lines());
    let line = &infos[0];
    assert!(line.contains("resource"), "{line}");
    assert!(
        line.contains("replac") || line.contains("new one") || line.contains("destroy"),
        "says the resource is replaced: {line}"
    );
    assert!(line.contains("unhealthy"), "says why: {line}");
    assert!(
        line.contains("connection broken"),
        "shows the error: {line}"
    );
    assert!(log.at(LogLevel::Error).is_empty(), "{:?}", log.lines());
    let replaced = log.of(LogKind::ResourceReplaced);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].worker, Some(0));
    assert_eq!(replaced[0].reason, Some("unhealthy_error"));
    assert_eq!(replaced[0].error.as_deref(), Some("connection broken"));
    assert_eq!(replaced[0].panic, None);
    // The task's own end, at debug: failed on its first (and only) attempt. Logged just
    // after its outcome was delivered: read once the worker is joined.
    m.stop().unwrap();
    let ended = log.of(LogKind::TaskEnded);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].level, LogLevel::Debug);
    assert_eq!(ended[0].outcome, Some("failed"));
    assert_eq!(ended[0].attempt, Some(1));
}

#[test]
fn a_panicking_task_is_an_info_line_about_the_replaced_resource() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 1);
    let outcome = m.queue_task(|_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
        panic!("task panicked on purpose")
    });
    assert!(matches!(outcome, Err(TaskError::Panicked { .. })));
    let infos = log.at(LogLevel::Info);
    assert_eq!(infos.len(), 1, "{:?}", log.lines());
    assert!(infos[0].contains("resource"), "{infos:?}");
    assert!(infos[0].contains("panic"), "{infos:?}");
    let replaced = log.of(LogKind::ResourceReplaced);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].reason, Some("task_panicked"));
    assert_eq!(
        replaced[0].panic.as_deref(),
        Some("task panicked on purpose")
    );
    assert_eq!(replaced[0].error, None);
    m.stop().unwrap(); // the task's end is logged just after its outcome was delivered
    let ended = log.of(LogKind::TaskEnded);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].outcome, Some("panicked"));
}

#[test]
fn stop_is_an_info_line_about_shutdown() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 2);
    assert!(log.above_debug().is_empty(), "{:?}", log.lines());
    m.stop().unwrap();
    let infos = log.at(LogLevel::Info);
    assert_eq!(infos.len(), 1, "{:?}", log.lines());
    assert!(is_shutdown_line(&infos[0]), "{infos:?}");
    assert!(infos[0].contains("stop"), "{infos:?}");
    assert_eq!(log.above_debug().len(), 1, "{:?}", log.lines());
}

#[test]
fn kill_is_an_info_line_about_shutdown() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 1);
    m.kill().unwrap();
    let infos = log.at(LogLevel::Info);
    assert_eq!(infos.len(), 1, "{:?}", log.lines());
    assert!(is_shutdown_line(&infos[0]), "{infos:?}");
    assert!(infos[0].contains("kill"), "{infos:?}");
}

#[test]
fn a_failing_on_destroy_is_a_warn_line() {
    let counts = Counts::new();
    let log = Capture::default();
    let destroys = Arc::new(AtomicUsize::new(0));
    let (c, d) = (counts.clone(), destroys.clone());
    let m = TaskManager::builder()
        .on_create(move || Ok::<_, DbError>(c.make()))
        .on_destroy(move |_conn: Conn| {
            d.fetch_add(1, Ordering::SeqCst);
            Err(DbError::Plain)
        })
        .pin_workers(false)
        .worker_count(2)
        .max_worker_count(2)
        .resource_pool_size(1)
        .error_formatter(show)
        .logger(log.clone())
        .build()
        .unwrap();
    assert_eq!(
        m.queue_task(|c: &mut Conn, _: &TaskContext| Ok(c.id))
            .map(|_| ()),
        Ok(())
    );
    m.stop().unwrap();
    // 2 workers + 1 pooled resource, each destroyed once, each destroy failing.
    assert_eq!(destroys.load(Ordering::SeqCst), 3);
    let warns = log.at(LogLevel::Warn);
    assert_eq!(
        warns.len(),
        3,
        "one warning per failed on_destroy: {:?}",
        log.lines()
    );
    for w in &warns {
        assert!(w.contains("on_destroy"), "{w}");
        assert!(w.contains("error=\"plain error\""), "{w}");
    }
    for e in log.of(LogKind::DestroyFailed) {
        assert_eq!(e.level, LogLevel::Warn);
        assert_eq!(e.error.as_deref(), Some("plain error"));
    }
    assert!(log.at(LogLevel::Error).is_empty(), "{:?}", log.lines());
}

#[test]
fn a_failing_on_create_while_replacing_is_a_warn_line() {
    let counts = Counts::new();
    let log = Capture::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, d, n) = (counts.clone(), counts.clone(), calls.clone());
    // The worker's first resource is made; the next 2 calls fail; then it works again.
    let m = TaskManager::builder()
        .on_create(move || {
            if (1..3).contains(&n.fetch_add(1, Ordering::SeqCst)) {
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
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(1)
        .error_formatter(show)
        .logger(log.clone())
        .build()
        .unwrap();
    let outcome = m.queue_task(|_: &mut Conn, ctx: &TaskContext| {
        if ctx.attempt() == 1 {
            Err(DbError::Broken)
        } else {
            Ok(ctx.attempt())
        }
    });
    assert_eq!(outcome, Ok(2));
    m.stop().unwrap();
    let warns = log.at(LogLevel::Warn);
    assert_eq!(
        warns.len(),
        2,
        "one warning per failed on_create: {:?}",
        log.lines()
    );
    for w in &warns {
        assert!(w.contains("on_create"), "{w}");
        assert!(w.contains("could not connect"), "shows the error: {w}");
    }
    let failed = log.of(LogKind::CreateFailed);
    assert_eq!(failed.len(), 2, "{failed:?}");
    for e in &failed {
        assert_eq!(e.worker, Some(0));
        assert_eq!(e.error.as_deref(), Some("could not connect"));
        assert!(e.retry_in.is_some(), "says when it retries: {e:?}");
    }
    // What broke the first resource, and the retry it caused.
    let replaced = log.of(LogKind::ResourceReplaced);
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].error.as_deref(), Some("connection broken"));
    let retried = log.of(LogKind::TaskRetried);
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert_eq!(retried[0].attempt, Some(1));
    assert_eq!(retried[0].level, LogLevel::Debug);
    assert_eq!(counts.created(), counts.destroyed());
}

/// A manager whose second `on_create` call fails (the others succeed),
/// with `error_formatter` set or not, logging into `logger`.
fn flaky(counts: &Counts, formatted: bool, logger: impl Logger) -> TaskManager<Conn, DbError> {
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, d) = (counts.clone(), counts.clone());
    let b = TaskManager::builder()
        .on_create(move || {
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
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
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(0)
        .max_retries(1)
        .logger(logger);
    let b = if formatted {
        b.error_formatter(show)
    } else {
        b
    };
    b.build().unwrap()
}

/// Breaks the single worker's resource once; its replacement fails once, then works.
fn break_once(m: &TaskManager<Conn, DbError>) {
    let outcome = m.queue_task(|_, ctx| {
        if ctx.attempt() == 1 {
            Err(DbError::Broken)
        } else {
            Ok(())
        }
    });
    assert_eq!(outcome, Ok(()));
    m.stop().unwrap();
}

#[test]
fn without_an_error_formatter_the_error_is_left_out() {
    let counts = Counts::new();
    let log = Capture::default();
    let m = flaky(&counts, false, log.clone());
    break_once(&m);
    let failed = log.of(LogKind::CreateFailed);
    assert_eq!(failed.len(), 1, "{:?}", log.lines());
    assert_eq!(failed[0].error, None);
    assert!(!failed[0].line.contains("could not connect"), "{failed:?}");
    assert_eq!(log.of(LogKind::ResourceReplaced)[0].error, None);
}

#[test]
fn a_logger_with_only_string_methods_gets_the_same_events_as_lines() {
    let counts = Counts::new();
    let lines = Lines::default();
    let m = flaky(&counts, true, lines.clone());
    break_once(&m);
    let lines = lines.0.lock().unwrap().clone();
    let warns: Vec<_> = lines
        .iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .map(|(_, m)| m.as_str())
        .collect();
    assert_eq!(warns.len(), 1, "{lines:?}");
    let w = warns[0];
    assert!(w.starts_with("worker 0: on_create failed"), "{w}");
    assert!(w.contains("kind=create_failed"), "{w}");
    assert!(w.contains("error=\"could not connect\""), "{w}");
    assert!(w.contains("retry_in="), "{w}");
    assert!(
        lines
            .iter()
            .any(|(l, m)| *l == LogLevel::Debug && m.contains("kind=task_retried")),
        "{lines:?}"
    );
}

#[test]
fn successful_tasks_write_no_line_above_debug() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 2);
    let ok = |c: &mut Conn, _: &TaskContext| Ok::<_, DbError>(c.id);
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    for i in 0..200 {
        match i % 5 {
            0 => {
                m.queue_task(ok).unwrap();
            }
            1 => handles.push(m.queue_task_with_priority_async(ok)),
            2 => handles.push(m.queue_task_once_async(ok)),
            3 => {
                let tx = tx.clone();
                m.queue_task_with_callback(ok, move |o| {
                    let _ = tx.send(o);
                });
            }
            _ => {
                m.run_task(ok).unwrap();
            }
        }
    }
    for h in handles {
        h.wait().unwrap();
    }
    for _ in 0..40 {
        rx.recv_timeout(TIMEOUT).unwrap().unwrap();
    }
    // Whatever a worker might write after delivering is written before it exits: stop, then
    // the only line above debug must be the shutdown one.
    m.stop().unwrap();
    let lines = log.above_debug();
    assert_eq!(lines.len(), 1, "no per-task lines: {lines:?}");
    assert_eq!(lines[0].0, LogLevel::Info);
    assert!(is_shutdown_line(&lines[0].1.to_lowercase()), "{lines:?}");
}

#[test]
fn a_failing_refill_of_the_run_task_pool_is_a_warn_line_with_the_error() {
    let counts = Counts::new();
    let log = Capture::default();
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, d, r) = (counts.clone(), counts.clone(), refuse.clone());
    let m = TaskManager::builder()
        .on_create(move || {
            if r.load(Ordering::SeqCst) {
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
        .worker_count(1)
        .max_worker_count(1)
        .resource_pool_size(1)
        .error_formatter(show)
        .logger(log.clone())
        .build()
        .unwrap();
    refuse.store(true, Ordering::SeqCst);
    // The pooled resource comes back broken; its replacement cannot be made.
    let outcome = m.run_task(|_, _| Err::<(), _>(DbError::Broken));
    assert!(matches!(
        outcome,
        Err(TaskError::Failed { attempts: 1, .. })
    ));
    let replaced = log.of(LogKind::ResourceReplaced);
    assert_eq!(replaced.len(), 1, "{:?}", log.lines());
    assert_eq!(replaced[0].worker, None, "the pool's, not a worker's");
    assert_eq!(replaced[0].error.as_deref(), Some("connection broken"));
    let refill = log.of(LogKind::PoolRefillFailed);
    assert_eq!(refill.len(), 1, "{:?}", log.lines());
    assert_eq!(refill[0].level, LogLevel::Warn);
    assert_eq!(refill[0].error.as_deref(), Some("could not connect"));
    assert!(refill[0].line.contains("could not connect"), "{refill:?}");
    assert_eq!(m.stats().available_resources, 0);
    m.stop().unwrap();
    assert_eq!(counts.created(), counts.destroyed());
}
