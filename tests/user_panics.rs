//! User code that panics in odd places: it never aborts the process, hangs the manager, leaks
//! a thread or a resource, or changes an outcome already decided.
//!
//! Each test runs its scenario in a child process (this test binary, filtered to that one
//! test): where tasker once aborted, the abort then fails only that test, with the child's
//! output, instead of taking the whole test binary down.

mod common;

use std::panic::panic_any;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Gate, TIMEOUT};
use tasker::{
    Builder, Logger, MetricsCollector, TaskContext, TaskError, TaskLifecycle, TaskManager,
};

/// Set in the child: run the scenario itself.
const CHILD: &str = "TASKER_USER_PANICS_CHILD";

/// A child that has not finished by then hangs.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `scenario` in a child process; the test passes only if the child exits successfully
/// (its own assertions passed, and nothing aborted) within [`CHILD_TIMEOUT`].
fn in_child(name: &str, scenario: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the scenario in a child process");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            break Some(status);
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("the child's output");
    let output = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match status {
        Some(status) => assert!(
            status.success(),
            "scenario {name} failed in its child process ({status}):\n{output}"
        ),
        None => panic!("scenario {name} hung (killed after {CHILD_TIMEOUT:?}):\n{output}"),
    }
}

/// One test per scenario, each in its own child process.
macro_rules! scenarios {
    ($($(#[$doc:meta])* fn $name:ident() $body:block)*) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() {
                in_child(stringify!($name), || $body);
            }
        )*
    };
}

/// Panics when dropped (unless already unwinding), once armed.
struct PanicOnDrop {
    armed: bool,
    drops: Arc<AtomicUsize>,
}

impl PanicOnDrop {
    fn new(drops: &Arc<AtomicUsize>) -> Self {
        PanicOnDrop {
            armed: true,
            drops: drops.clone(),
        }
    }
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.armed && !thread::panicking() {
            panic!("a user Drop panicked on purpose");
        }
    }
}

/// An error whose `Drop` panics when `armed`; `broken` errors are unhealthy.
#[derive(Debug)]
struct LoudError {
    armed: bool,
    broken: bool,
}

impl Drop for LoudError {
    fn drop(&mut self) {
        if self.armed && !thread::panicking() {
            panic!("an error's Drop panicked on purpose");
        }
    }
}

/// A resource that counts its drops, and panics in `Drop` when `loud`.
struct Res {
    loud: bool,
    drops: Arc<AtomicUsize>,
}

impl Drop for Res {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if self.loud && !thread::panicking() {
            panic!("a resource's Drop panicked on purpose");
        }
    }
}

/// Resources made and dropped, for `creates == destroys`.
#[derive(Clone, Default)]
struct Made {
    created: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Made {
    fn make(&self, loud: bool) -> Res {
        self.created.fetch_add(1, Ordering::SeqCst);
        Res {
            loud,
            drops: self.dropped.clone(),
        }
    }

    fn balanced(&self) -> bool {
        self.created.load(Ordering::SeqCst) == self.dropped.load(Ordering::SeqCst)
    }
}

/// A one-worker manager over `Res` (loud resources when `loud`), default `on_destroy`
/// (a drop), `broken` errors unhealthy.
fn manager(made: &Made, loud: bool) -> TaskManager<Res, LoudError> {
    one_worker(made, loud)
        .resource_pool_size(1)
        .build()
        .expect("build")
}

/// A builder for one worker over `Res` (loud resources when `loud`), `broken` errors
/// unhealthy; each scenario adds what it is about.
fn one_worker(made: &Made, loud: bool) -> Builder<Res, LoudError> {
    let made = made.clone();
    TaskManager::builder()
        .on_create(move || Ok(made.make(loud)))
        .check_health(|e: &LoudError| !e.broken)
        .worker_count(1)
        .max_worker_count(1)
}

/// A task that fails unhealthy on its first run (with an error whose `Drop` panics when
/// `armed`) and returns its attempt number on the next.
fn unhealthy_once(armed: bool) -> impl FnMut(&mut Res, &TaskContext) -> Result<u32, LoudError> {
    move |_, ctx| {
        if ctx.attempt() == 1 {
            Err(LoudError {
                armed,
                broken: true,
            })
        } else {
            Ok(ctx.attempt())
        }
    }
}

/// Holds the one worker inside a task until the returned gate opens.
fn hold_worker(m: &TaskManager<Res, LoudError>) -> Gate {
    let gate = Gate::new();
    let waiter = gate.waiter();
    m.queue_task_once_with_callback(
        move |_: &mut Res, _| {
            waiter.enter();
            Ok::<(), LoudError>(())
        },
        |_| {},
    );
    gate.wait_started();
    gate
}

/// A logger that panics on every line.
struct PanickingLogger;

impl Logger for PanickingLogger {
    fn debug(&self, _: &str) {
        panic!("logger panicked on purpose");
    }
    fn info(&self, _: &str) {
        panic!("logger panicked on purpose");
    }
    fn warn(&self, _: &str) {
        panic!("logger panicked on purpose");
    }
    fn error(&self, _: &str) {
        panic!("logger panicked on purpose");
    }
}

/// A collector whose `record_completion` panics the first time only.
struct PanicsOnce(AtomicBool);

impl MetricsCollector for PanicsOnce {
    fn record_completion(&self, _: &TaskLifecycle) {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("collector panicked on purpose");
        }
    }
}

scenarios! {
    /// A queued task's closure panics in `Drop` when `kill` resolves it: `Killed`, no abort.
    fn a_killed_task_whose_closure_panics_in_drop_is_killed() {
        let made = Made::default();
        let m = manager(&made, false);
        let gate = hold_worker(&m);
        let drops = Arc::new(AtomicUsize::new(0));
        let loud = PanicOnDrop::new(&drops);
        let handle = m.queue_task_async(move |_: &mut Res, _| {
            let _keep = &loud;
            Ok::<u32, LoudError>(1)
        });
        let killer = {
            let m = m.clone();
            thread::spawn(move || m.kill())
        };
        // `kill` marks the running task cancelled; let it end.
        thread::sleep(Duration::from_millis(20));
        gate.open();
        assert!(matches!(handle.wait(), Err(TaskError::Killed)));
        killer.join().unwrap().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(m.metrics().total_user_panics >= 1);
        assert!(made.balanced());
    }

    /// A cancelled task's closure is dropped when it is cancelled (not when a worker reaches
    /// it), on the cancelling thread, where a panic in that `Drop` is caught; and its queue
    /// place is given back at once.
    fn a_cancelled_task_releases_its_closure_and_queue_place_at_once() {
        let made = Made::default();
        let m = one_worker(&made, false).queue_capacity(1).build().unwrap();
        let gate = hold_worker(&m);
        let drops = Arc::new(AtomicUsize::new(0));
        let loud = PanicOnDrop::new(&drops);
        let handle = m.queue_task_async(move |_: &mut Res, _| {
            let _keep = &loud;
            Ok::<u32, LoudError>(1)
        });
        assert!(handle.cancel());
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the closure went with the cancel");
        assert!(handle.is_finished());
        assert!(matches!(handle.wait(), Err(TaskError::Cancelled)));
        // The one queue place is free again while the worker is still held.
        let next = m.queue_task_async(|_: &mut Res, _| Ok::<u32, LoudError>(2));
        gate.open();
        assert_eq!(next.wait().unwrap(), 2);
        m.stop().unwrap();
        assert!(made.balanced());
    }

    /// A failed task's closure panics in `Drop`: still `Failed` with the task's own error.
    fn a_failed_task_whose_closure_panics_in_drop_is_failed() {
        let made = Made::default();
        let m = manager(&made, false);
        let drops = Arc::new(AtomicUsize::new(0));
        let loud = PanicOnDrop::new(&drops);
        let outcome = m.queue_task(move |_: &mut Res, _| {
            let _keep = &loud;
            Err::<u32, _>(LoudError { armed: false, broken: false })
        });
        assert!(matches!(outcome, Err(TaskError::Failed { attempts: 1, .. })));
        m.stop().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(m.metrics().total_user_panics >= 1);
        assert!(made.balanced());
    }

    /// A task that returned `Ok(7)` (its effects done) and whose closure panics in `Drop`
    /// afterwards is `Ok(7)`: a caller that retries on `Panicked` would apply it twice.
    fn a_task_whose_closure_panics_in_drop_after_ok_is_ok() {
        let made = Made::default();
        let m = manager(&made, false);
        let drops = Arc::new(AtomicUsize::new(0));
        let loud = PanicOnDrop::new(&drops);
        let outcome = m.queue_task(move |_: &mut Res, _| {
            let _keep = &loud;
            Ok::<u32, LoudError>(7)
        });
        assert_eq!(outcome.unwrap(), 7);
        m.stop().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(m.metrics().total_user_panics >= 1);
        assert!(made.balanced());
    }

    /// A value whose `Drop` panics, returned to a handle that was already dropped.
    fn a_value_that_panics_in_drop_after_its_handle_was_dropped() {
        let made = Made::default();
        let m = manager(&made, false);
        let drops = Arc::new(AtomicUsize::new(0));
        let for_task = drops.clone();
        drop(m.queue_task_async(move |_: &mut Res, _| Ok::<_, LoudError>(PanicOnDrop::new(&for_task))));
        m.stop().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(made.balanced());
    }

    /// An unhealthy error whose `Drop` panics, dropped on the retry path: the retry runs.
    fn an_error_that_panics_in_drop_on_the_retry_path() {
        let made = Made::default();
        let m = manager(&made, false);
        let outcome = m.queue_task(unhealthy_once(true));
        assert_eq!(outcome.unwrap(), 2);
        m.stop().unwrap();
        assert!(made.balanced());
    }

    /// A resource whose `Drop` panics, with the default `on_destroy`, replaced after an
    /// unhealthy error and destroyed at shutdown: caught each time, as with an `on_destroy`.
    fn a_resource_that_panics_in_drop_with_the_default_on_destroy() {
        let made = Made::default();
        let m = manager(&made, true);
        let outcome = m.queue_task(unhealthy_once(false));
        assert_eq!(outcome.unwrap(), 2);
        m.stop().unwrap();
        assert!(made.balanced());
        assert!(m.metrics().total_user_panics >= 2);
    }

    /// A task panics with a payload whose own `Drop` panics: `Panicked`, not `Killed`.
    fn a_panic_payload_that_panics_in_drop() {
        let made = Made::default();
        let m = manager(&made, false);
        let drops = Arc::new(AtomicUsize::new(0));
        let payload = PanicOnDrop::new(&drops);
        let outcome = m.queue_task_once(move |_: &mut Res, _| -> Result<u32, LoudError> {
            panic_any(payload)
        });
        assert!(matches!(outcome, Err(TaskError::Panicked { .. })), "{outcome:?}");
        m.stop().unwrap();
        assert!(made.balanced());
    }

    /// A logger that panics on every line: tasks, replacements and shutdown go on, and
    /// `stop` still shuts the manager (it refuses work afterwards).
    fn a_panicking_logger_neither_aborts_nor_keeps_the_manager_open() {
        let made = Made::default();
        let m = one_worker(&made, false).logger(PanickingLogger).build().unwrap();
        let outcome = m.queue_task(unhealthy_once(false));
        assert_eq!(outcome.unwrap(), 2);
        let panicked = m.queue_task(|_: &mut Res, _| -> Result<u32, LoudError> { panic!("task") });
        assert!(matches!(panicked, Err(TaskError::Panicked { .. })));
        m.stop().unwrap();
        assert!(matches!(
            m.queue_task(|_: &mut Res, _| Ok::<u32, LoudError>(1)),
            Err(TaskError::ShuttingDown)
        ));
        assert!(made.balanced());
    }

    /// A collector that panics once, during `run_task`: `run_task` answers, and `stop` does
    /// not wait forever for a task that was lost.
    fn a_collector_panicking_during_run_task_loses_nothing() {
        let made = Made::default();
        let m = one_worker(&made, false)
            .resource_pool_size(1)
            .metrics_collector(PanicsOnce(AtomicBool::new(false)))
            .build()
            .unwrap();
        assert_eq!(m.run_task(|_: &mut Res, _| Ok::<u32, LoudError>(3)).unwrap(), 3);
        assert_eq!(m.stats().pending_tasks, 0);
        assert_eq!(m.queue_task(|_: &mut Res, _| Ok::<u32, LoudError>(4)).unwrap(), 4);
        let stopper = {
            let m = m.clone();
            thread::spawn(move || m.stop())
        };
        let deadline = Instant::now() + TIMEOUT;
        while !stopper.is_finished() {
            assert!(Instant::now() < deadline, "stop hangs");
            thread::sleep(Duration::from_millis(5));
        }
        stopper.join().unwrap().unwrap();
        assert!(made.balanced());
        assert_eq!(m.metrics().total_user_panics, 1);
    }

    /// `run_task` needs a temporary resource, `on_create` fails, and the closure it drops
    /// unrun panics in `Drop`: `ResourceCreation`, and nothing stays pending.
    fn run_task_with_a_failing_on_create_and_a_closure_panicking_in_drop() {
        let made = Made::default();
        let made2 = made.clone();
        let calls = Arc::new(AtomicUsize::new(0));
        let m = TaskManager::builder()
            .on_create(move || {
                // The worker's resource is made; every later one fails.
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Ok(made2.make(false))
                } else {
                    Err(LoudError { armed: false, broken: true })
                }
            })
            .worker_count(1)
            .max_worker_count(1)
            .resource_pool_size(0)
            .build()
            .unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        let loud = PanicOnDrop::new(&drops);
        let outcome = m.run_task(move |_: &mut Res, _| {
            let _keep = loud;
            Ok::<u32, LoudError>(1)
        });
        assert!(matches!(outcome, Err(TaskError::ResourceCreation(_))), "{outcome:?}");
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(m.stats().pending_tasks, 0);
        m.stop().unwrap();
        assert!(made.balanced());
    }
}
