//! A `Logger` set with `.logger(..)` receives tasker's lifecycle lines at the right level:
//! errors for panicking callbacks, info for replaced resources and shutdown, warnings for
//! failed `on_destroy`/`on_create`, and nothing at all for tasks that succeed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use common::{Conn, Counts, DbError, TIMEOUT, builder, eventually};
use tasker::{Logger, TaskContext, TaskError, TaskManager};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Captures every line with its level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

impl Capture {
    fn push(&self, level: Level, message: &str) {
        self.0.lock().unwrap().push((level, message.to_owned()));
    }

    fn lines(&self) -> Vec<(Level, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Lines at `level`, lowercased.
    fn at(&self, level: Level) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, m)| m.to_lowercase())
            .collect()
    }

    /// Lines above debug.
    fn above_debug(&self) -> Vec<(Level, String)> {
        self.lines()
            .into_iter()
            .filter(|(l, _)| *l > Level::Debug)
            .collect()
    }
}

impl Logger for Capture {
    fn debug(&self, message: &str) {
        self.push(Level::Debug, message);
    }
    fn info(&self, message: &str) {
        self.push(Level::Info, message);
    }
    fn warn(&self, message: &str) {
        self.push(Level::Warn, message);
    }
    fn error(&self, message: &str) {
        self.push(Level::Error, message);
    }
}

/// A manager of `workers` fixed workers (no burst slots) logging into a fresh `Capture`.
fn logged(counts: &Counts, workers: usize) -> (TaskManager<Conn, DbError>, Capture) {
    let log = Capture::default();
    let m = builder(counts)
        .worker_count(workers)
        .max_worker_count(workers)
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
        eventually(|| !log.at(Level::Error).is_empty()),
        "{:?}",
        log.lines()
    );
    let errors = log.at(Level::Error);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("callback exploded on a worker"),
        "the line carries the panic message: {errors:?}"
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
    let errors = log.at(Level::Error);
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
    let infos = log.at(Level::Info);
    assert_eq!(infos.len(), 1, "{:?}", log.lines());
    let line = &infos[0];
    assert!(line.contains("resource"), "{line}");
    assert!(
        line.contains("replac") || line.contains("new one") || line.contains("destroy"),
        "says the resource is replaced: {line}"
    );
    assert!(line.contains("unhealthy"), "says why: {line}");
    assert!(log.at(Level::Error).is_empty(), "{:?}", log.lines());
    m.stop().unwrap();
}

#[test]
fn a_panicking_task_is_an_info_line_about_the_replaced_resource() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 1);
    let outcome = m.queue_task(|_: &mut Conn, _: &TaskContext| -> Result<(), DbError> {
        panic!("task panicked on purpose")
    });
    assert!(matches!(outcome, Err(TaskError::Panicked { .. })));
    let infos = log.at(Level::Info);
    assert_eq!(infos.len(), 1, "{:?}", log.lines());
    assert!(infos[0].contains("resource"), "{infos:?}");
    assert!(infos[0].contains("panic"), "{infos:?}");
    m.stop().unwrap();
}

#[test]
fn stop_is_an_info_line_about_shutdown() {
    let counts = Counts::new();
    let (m, log) = logged(&counts, 2);
    assert!(log.above_debug().is_empty(), "{:?}", log.lines());
    m.stop().unwrap();
    let infos = log.at(Level::Info);
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
    let infos = log.at(Level::Info);
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
    let warns = log.at(Level::Warn);
    assert_eq!(
        warns.len(),
        3,
        "one warning per failed on_destroy: {:?}",
        log.lines()
    );
    for w in &warns {
        assert!(w.contains("on_destroy"), "{w}");
    }
    assert!(log.at(Level::Error).is_empty(), "{:?}", log.lines());
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
    let warns = log.at(Level::Warn);
    assert_eq!(
        warns.len(),
        2,
        "one warning per failed on_create: {:?}",
        log.lines()
    );
    for w in &warns {
        assert!(w.contains("on_create"), "{w}");
    }
    assert_eq!(counts.created(), counts.destroyed());
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
    assert_eq!(lines[0].0, Level::Info);
    assert!(is_shutdown_line(&lines[0].1.to_lowercase()), "{lines:?}");
}
