//! Fan-out from inside tasks: every task submits two more, down to a fixed depth, so a tree of
//! 2^L - 1 tasks is made almost entirely by the workers themselves, not by an outside
//! submitter.
//!
//! Guards the path of work made inside a task (where it is queued, who can steal it, what a
//! nested submission costs) against the peers a user would reach for to do the same, each
//! with 2 worker threads:
//!
//! - `tasker_callback`: each task submits its two children with `queue_task_with_callback`
//!   through the manager its context lends it (`TaskContext::manager`: nothing captured, no
//!   reference count written per task, as rayon's children borrow their scope); the
//!   callback counts the completion;
//! - `tasker_clone`: the same, but each task captures a clone of the manager (what a program
//!   that does not use the lent manager pays: a shared count written twice per task);
//! - `tasker_handle`: as `tasker_callback` with `queue_task_async`, the handle dropped (a
//!   task may not block on a task of its own manager: that answers `WouldDeadlock`), the body
//!   counts;
//! - `rayon_scope`: `pool.scope(|s| ..)` and `s.spawn(|s| ..)` for every child;
//! - `tokio_spawn`: a multi-thread runtime with 2 workers, `tokio::spawn` of an `async` block
//!   from inside the parent's `async` block (the join handle dropped);
//! - `threadpool_execute`: `threadpool::ThreadPool::new(2)`, each task captures a clone of the
//!   pool and `execute`s its children (one shared channel, nothing local).
//!
//! The root task is submitted from the measuring thread (for rayon, inside `scope`). Every
//! task counts itself in one shared atomic; the task that completes the tree wakes the
//! measuring thread, which parks meanwhile (it does not take a CPU from the workers), and
//! which then checks that exactly 2^L - 1 tasks ran, none failed. rayon's `scope` waits by
//! itself, as its users would let it. One iteration is one whole tree; criterion reports
//! tasks per second.
//!
//! The contenders run in rounds (`BENCH_ROUNDS`, default 5; 1 with `--quick`), each round in an
//! order rotated by one, each pool built for its own benchmark only (no idle threads of
//! another contender around). At the end, one line per contender: the median over the rounds
//! of each round's median tree rate, and each round's figure.
//!
//! Sizes: `BENCH_FANOUT_LEVELS` levels (default 20, so 2^20 - 1 = 1,048,575 tasks; 17 with
//! `--quick`, 131,071 tasks).
//!
//! Full run (about 2 min): `cargo bench -p tasker-benches --bench fanout`
//! CI (quick): `cargo bench -p tasker-benches --bench fanout -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;

use common::{RoundFigures, WORKERS, bench_batches, env_usize, quick_mode};
use criterion::Criterion;
use tasker::{TaskContext, TaskError, TaskManager};

/// Tasks of the current tree that ended (successfully or not).
static DONE: AtomicUsize = AtomicUsize::new(0);
/// Tasks of the current tree that ended in an error (checked to be 0).
static FAILED: AtomicUsize = AtomicUsize::new(0);
/// Tasks in the current tree: the one that brings `DONE` to it wakes `WAITER`.
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The measuring thread (criterion's), parked while a tree runs.
static WAITER: OnceLock<Thread> = OnceLock::new();

/// Counts one ended task; the last one of the tree wakes the measuring thread.
#[inline]
fn task_done(ok: bool) {
    if !ok {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    // AcqRel: the last task's increment is the one `wait_tree`'s Acquire load pairs with.
    if DONE.fetch_add(1, Ordering::AcqRel) + 1 == TARGET.load(Ordering::Relaxed) {
        WAITER.get().expect("set before the first tree").unpark();
    }
}

/// Resets the counters for a tree of `n` tasks (before its root is submitted).
fn start_tree(n: usize) {
    WAITER.get_or_init(thread::current);
    DONE.store(0, Ordering::Relaxed);
    FAILED.store(0, Ordering::Relaxed);
    TARGET.store(n, Ordering::Release);
}

/// Parks until the tree's `n` tasks ended (a timeout guards a lost unpark, which cannot
/// happen, and keeps a bug from hanging CI), then checks that every task ran once and ok.
fn wait_tree(n: usize) {
    while DONE.load(Ordering::Acquire) < n {
        thread::park_timeout(Duration::from_millis(5));
    }
    check_tree(n);
}

fn check_tree(n: usize) {
    let done = DONE.load(Ordering::Acquire);
    assert_eq!(done, n, "every task of the tree runs exactly once");
    assert_eq!(FAILED.load(Ordering::Relaxed), 0, "no task fails");
}

type Manager = TaskManager<(), Infallible>;

/// Submits a task that submits two children (callback delivery) until `depth` reaches 0,
/// through the manager the task's context lends it (no manager captured).
fn tasker_callback_node(m: &Manager, depth: u32) {
    m.queue_task_with_callback(
        move |_: &mut (), ctx: &TaskContext| {
            if depth > 0 {
                let m: &Manager = ctx.manager().expect("the manager's R and E");
                tasker_callback_node(m, depth - 1);
                tasker_callback_node(m, depth - 1);
            }
            Ok::<(), Infallible>(())
        },
        |r: Result<(), TaskError<Infallible>>| task_done(r.is_ok()),
    );
}

/// The same with a clone of the manager captured by every child.
fn tasker_clone_node(m: &Manager, depth: u32) {
    let me = m.clone();
    m.queue_task_with_callback(
        move |_: &mut (), _: &TaskContext| {
            if depth > 0 {
                tasker_clone_node(&me, depth - 1);
                tasker_clone_node(&me, depth - 1);
            }
            Ok::<(), Infallible>(())
        },
        |r: Result<(), TaskError<Infallible>>| task_done(r.is_ok()),
    );
}

/// As `tasker_callback_node` with handle delivery, the handles dropped; the body counts
/// itself.
fn tasker_handle_node(m: &Manager, depth: u32) {
    drop(m.queue_task_async(move |_: &mut (), ctx: &TaskContext| {
        if depth > 0 {
            let m: &Manager = ctx.manager().expect("the manager's R and E");
            tasker_handle_node(m, depth - 1);
            tasker_handle_node(m, depth - 1);
        }
        task_done(true);
        Ok::<(), Infallible>(())
    }));
}

fn rayon_node<'s>(s: &rayon::Scope<'s>, depth: u32) {
    s.spawn(move |s| {
        if depth > 0 {
            rayon_node(s, depth - 1);
            rayon_node(s, depth - 1);
        }
        task_done(true);
    });
}

/// Must run inside the runtime (a worker, or a thread that entered it).
fn tokio_node(depth: u32) {
    drop(tokio::spawn(async move {
        if depth > 0 {
            tokio_node(depth - 1);
            tokio_node(depth - 1);
        }
        task_done(true);
    }));
}

fn threadpool_node(p: &threadpool::ThreadPool, depth: u32) {
    let me = p.clone();
    p.execute(move || {
        if depth > 0 {
            threadpool_node(&me, depth - 1);
            threadpool_node(&me, depth - 1);
        }
        task_done(true);
    });
}

#[derive(Clone, Copy)]
enum Contender {
    TaskerCallback,
    TaskerClone,
    TaskerHandle,
    RayonScope,
    TokioSpawn,
    ThreadpoolExecute,
}

impl Contender {
    const ALL: [Contender; 6] = [
        Contender::TaskerCallback,
        Contender::TaskerClone,
        Contender::TaskerHandle,
        Contender::RayonScope,
        Contender::TokioSpawn,
        Contender::ThreadpoolExecute,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::TaskerCallback => "tasker_callback",
            Contender::TaskerClone => "tasker_clone",
            Contender::TaskerHandle => "tasker_handle",
            Contender::RayonScope => "rayon_scope",
            Contender::TokioSpawn => "tokio_spawn",
            Contender::ThreadpoolExecute => "threadpool_execute",
        }
    }
}

fn fanout(c: &mut Criterion) {
    let levels = env_usize("BENCH_FANOUT_LEVELS", if quick_mode() { 17 } else { 20 });
    assert!(
        (1..=30).contains(&levels),
        "BENCH_FANOUT_LEVELS={levels}: 1 to 30"
    );
    let depth = (levels - 1) as u32;
    let n = (1usize << levels) - 1;
    let mut summary = RoundFigures::default();
    let mut group = common::batch_group(c, "fanout".to_owned(), n);
    common::alternate(
        &Contender::ALL,
        Contender::name,
        &mut summary,
        |contender, id| {
            let mut rates = Vec::new();
            match contender {
                Contender::TaskerCallback => {
                    let manager = common::tasker_manager();
                    bench_batches(&mut group, id, n, &mut rates, || {
                        start_tree(n);
                        tasker_callback_node(&manager, depth);
                        wait_tree(n);
                    });
                    manager.stop().expect("stop");
                }
                Contender::TaskerClone => {
                    let manager = common::tasker_manager();
                    bench_batches(&mut group, id, n, &mut rates, || {
                        start_tree(n);
                        tasker_clone_node(&manager, depth);
                        wait_tree(n);
                    });
                    manager.stop().expect("stop");
                }
                Contender::TaskerHandle => {
                    let manager = common::tasker_manager();
                    bench_batches(&mut group, id, n, &mut rates, || {
                        start_tree(n);
                        tasker_handle_node(&manager, depth);
                        wait_tree(n);
                    });
                    manager.stop().expect("stop");
                }
                Contender::RayonScope => {
                    let pool = common::rayon_pool();
                    bench_batches(&mut group, id, n, &mut rates, || {
                        start_tree(n);
                        pool.scope(|s| rayon_node(s, depth));
                        check_tree(n);
                    });
                }
                Contender::TokioSpawn => {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(WORKERS)
                        .build()
                        .expect("build tokio runtime");
                    bench_batches(&mut group, id, n, &mut rates, || {
                        start_tree(n);
                        {
                            let _in_runtime = rt.enter();
                            tokio_node(depth);
                        }
                        wait_tree(n);
                    });
                }
                Contender::ThreadpoolExecute => {
                    let pool = threadpool::ThreadPool::new(WORKERS);
                    bench_batches(&mut group, id, n, &mut rates, || {
                        start_tree(n);
                        threadpool_node(&pool, depth);
                        wait_tree(n);
                    });
                    pool.join();
                }
            }
            rates
        },
    );
    group.finish();
    summary.print(
        &format!("fanout, {n} tasks per tree ({levels} levels), median tree rate of each round"),
        "M tasks/s",
    );
    let ratio = summary.median_of("tasker_callback") / summary.median_of("rayon_scope");
    println!("fanout: tasker_callback / rayon_scope = {ratio:.2}");
    let ratio = summary.median_of("tasker_clone") / summary.median_of("rayon_scope");
    println!("fanout: tasker_clone / rayon_scope = {ratio:.2}");
}

criterion::criterion_group!(benches, fanout);
criterion::criterion_main!(benches);
