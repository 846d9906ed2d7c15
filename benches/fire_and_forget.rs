//! Fire-and-forget as a new user writes it: the program's own thread submits no-op tasks, each
//! with a clone of an `Arc` counter, then waits for the counter to reach the count.
//!
//! `throughput.rs` measures the bare submit/run path (scoped submitter threads, a static
//! counter, so no contender pays a reference count). This suite measures the shape most first
//! programs have, where the extra costs fall differently on each pool:
//!
//! - `main_thread`: the measuring thread itself is the one submitter (it is not a fresh
//!   thread, so it has run everything before: allocator caches, CPU placement), and it takes
//!   one of the two cores from the workers while it submits;
//! - `4_submitters`: 4 scoped threads share the work (the 2 cores oversubscribed).
//!
//! Every task owns an `Arc<AtomicUsize>` clone (the clone on the submitter, the increment and
//! the drop on a worker, all on one contended line), and the waiter yields until the counter
//! reaches N (default 1,000,000; env `BENCH_TASKS`), then checks it is exactly N. Contenders,
//! 2 worker threads each:
//!
//! - `tasker_callback`: `queue_task_with_callback`, a no-op body; the callback counts;
//! - `threadpool_execute`: `threadpool::ThreadPool::new(2)` and `execute`;
//! - `channel_pool`: the bare crossbeam-channel pool of `benches/common`.
//!
//! The contenders run in rounds (`BENCH_ROUNDS`, default 5; 1 with `--quick`), each round in an
//! order rotated by one, each pool built for its own benchmark only. At the end, one line per
//! contender: the median over the rounds of each round's median batch rate, and each round's.
//!
//! Full run (about 3 min): `cargo bench -p tasker-benches --bench fire_and_forget`
//! CI (quick):
//!   `BENCH_TASKS=100000 cargo bench -p tasker-benches --bench fire_and_forget -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use common::{ChannelPool, RoundFigures, WORKERS, bench_batches, env_usize};
use criterion::Criterion;
use tasker::{TaskContext, TaskError};

/// Set when a tasker task ended in an error (checked after each batch).
static FAILED: AtomicBool = AtomicBool::new(false);

/// How many of `n` tasks submitter `k` of `submitters` sends.
fn share(n: usize, submitters: usize, k: usize) -> usize {
    n / submitters + usize::from(k < n % submitters)
}

#[derive(Clone, Copy)]
enum Contender {
    TaskerCallback,
    ThreadpoolExecute,
    ChannelPool,
}

impl Contender {
    const ALL: [Contender; 3] = [
        Contender::TaskerCallback,
        Contender::ThreadpoolExecute,
        Contender::ChannelPool,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::TaskerCallback => "tasker_callback",
            Contender::ThreadpoolExecute => "threadpool_execute",
            Contender::ChannelPool => "channel_pool",
        }
    }
}

/// One batch: `submitters` submit `n` tasks in all (0 = the calling thread submits them
/// all), each through `submit(counter clone)`; then the caller yields until the counter
/// reaches `n` and checks it is exactly `n`.
fn batch(n: usize, submitters: usize, submit: &(impl Fn(Arc<AtomicUsize>) + Sync)) {
    let counter = Arc::new(AtomicUsize::new(0));
    if submitters == 0 {
        for _ in 0..n {
            submit(counter.clone());
        }
    } else {
        thread::scope(|s| {
            for k in 0..submitters {
                let count = share(n, submitters, k);
                let counter = &counter;
                s.spawn(move || {
                    for _ in 0..count {
                        submit(counter.clone());
                    }
                });
            }
        });
    }
    while counter.load(Ordering::Acquire) < n {
        thread::yield_now();
    }
    assert_eq!(counter.load(Ordering::Acquire), n, "every task ran once");
    assert!(!FAILED.load(Ordering::Relaxed), "no task fails");
}

/// The whole group for one submitter shape (`submitters` = 0: the measuring thread).
fn bench_shape(c: &mut Criterion, n: usize, label: &str, submitters: usize) {
    let mut summary = RoundFigures::default();
    let mut group = common::batch_group(c, format!("fire_and_forget/{label}"), n);
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
                        batch(n, submitters, &|counter| {
                            manager.queue_task_with_callback(
                                |_: &mut (), _: &TaskContext| Ok::<(), Infallible>(()),
                                move |r: Result<(), TaskError<Infallible>>| {
                                    if r.is_err() {
                                        FAILED.store(true, Ordering::Relaxed);
                                    }
                                    counter.fetch_add(1, Ordering::Release);
                                },
                            );
                        });
                    });
                    manager.stop().expect("stop");
                }
                Contender::ThreadpoolExecute => {
                    let pool = threadpool::ThreadPool::new(WORKERS);
                    bench_batches(&mut group, id, n, &mut rates, || {
                        batch(n, submitters, &|counter| {
                            pool.execute(move || {
                                counter.fetch_add(1, Ordering::Release);
                            });
                        });
                    });
                    pool.join();
                }
                Contender::ChannelPool => {
                    let pool = ChannelPool::new(WORKERS);
                    bench_batches(&mut group, id, n, &mut rates, || {
                        batch(n, submitters, &|counter| {
                            pool.execute(move || {
                                counter.fetch_add(1, Ordering::Release);
                            });
                        });
                    });
                }
            }
            rates
        },
    );
    group.finish();
    summary.print(
        &format!("fire_and_forget/{label}, {n} tasks per batch, median batch rate of each round"),
        "M tasks/s",
    );
    let tasker = summary.median_of("tasker_callback");
    println!(
        "fire_and_forget/{label}: tasker_callback / threadpool_execute = {:.2}, / channel_pool = {:.2}",
        tasker / summary.median_of("threadpool_execute"),
        tasker / summary.median_of("channel_pool"),
    );
}

fn fire_and_forget(c: &mut Criterion) {
    let n = env_usize("BENCH_TASKS", 1_000_000);
    bench_shape(c, n, "main_thread", 0);
    bench_shape(c, n, "4_submitters", 4);
}

criterion::criterion_group!(benches, fire_and_forget);
criterion::criterion_main!(benches);
