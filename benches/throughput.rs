//! Fire-and-forget throughput: how many no-op tasks per second the pool takes in and runs.
//!
//! Guards against regressions of the submit/run hot path (DESIGN.md §5): the one allocation
//! per task, the injector push and batch steal, the lifecycle admission word, and above all
//! the sleep protocol, which must keep the wake syscall off the submit path (a submitter that
//! wakes a worker on every push runs several times slower). It does so against peers that do
//! the same job with the same number of threads:
//!
//! - `tasker_callback`: `queue_task_with_callback`, the callback counts completions;
//! - `tasker_async`: `queue_task_async`, each submitter keeps its handles, then waits them all
//!   (so all N completion slots are alive at once, as for a caller that collects handles);
//! - `rayon_spawn`: a 2-thread `rayon::ThreadPool` and `spawn`;
//! - `threadpool_execute`: `threadpool::ThreadPool::new(2)` and `execute`;
//! - `tokio_spawn_blocking`: a tokio runtime with `max_blocking_threads(2)`, `spawn_blocking`
//!   whose join handle is dropped;
//! - `channel_pool`: the baseline, 2 threads looping on `recv` from one unbounded crossbeam
//!   channel of `Box<dyn FnOnce>`.
//!
//! Each iteration submits N tasks (default 1,000,000; env `BENCH_TASKS`) from 1 or 4 submitter
//! threads spawned inside the measured routine (a `std::thread::scope`), then waits until all
//! N ran: a shared `AtomicUsize` counted by every task (or callback), watched with a
//! `yield_now` loop, or, for `tasker_async`, the handles. Each task captures its index, so a
//! boxed task is never a zero-sized (allocation-free) box. Criterion reports elements/s.
//!
//! tasker runs with the builder's defaults, so its two workers are pinned, one per CPU (the
//! peers' threads are not pinned). With 4 submitters the 2 cores are oversubscribed on purpose:
//! that is where a wake-per-submit protocol shows.
//!
//! Full run (about 3 min): `cargo bench -p tasker-benches --bench throughput`
//! CI (quick):
//!   `BENCH_TASKS=100000 cargo bench -p tasker-benches --bench throughput -- --quick --noplot`

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{ChannelPool, WORKERS, env_usize, measurement_time};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use tasker::{TaskContext, TaskHandle};

/// Tasks that ran in the current iteration. A static, so a task's closure needs no `Arc`
/// clone (which would add two contended atomic operations per task to every contender).
static DONE: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn task_done() {
    DONE.fetch_add(1, Ordering::Relaxed);
}

/// Spins (yielding the CPU) until `n` tasks of this iteration ran.
fn wait_done(n: usize) {
    while DONE.load(Ordering::Acquire) < n {
        thread::yield_now();
    }
}

/// How many of `n` tasks submitter `k` of `submitters` sends.
fn share(n: usize, submitters: usize, k: usize) -> usize {
    n / submitters + usize::from(k < n % submitters)
}

/// One benchmark of a fire-and-forget contender: `submit(pool, i)` must queue one task that
/// calls [`task_done`] when it has run.
fn fire_and_forget<P: Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    n: usize,
    submitters: usize,
    pool: &P,
    submit: impl Fn(&P, usize) + Sync,
) {
    let submit = &submit;
    group.bench_function(name, |b| {
        b.iter(|| {
            DONE.store(0, Ordering::Relaxed);
            thread::scope(|s| {
                for k in 0..submitters {
                    let count = share(n, submitters, k);
                    s.spawn(move || {
                        for i in 0..count {
                            submit(pool, i);
                        }
                    });
                }
            });
            wait_done(n);
        });
    });
}

fn bench_submitters(c: &mut Criterion, n: usize, submitters: usize) {
    let label = if submitters == 1 {
        "1_submitter".to_owned()
    } else {
        format!("{submitters}_submitters")
    };
    let mut group = c.benchmark_group(format!("throughput/{label}"));
    group
        .throughput(Throughput::Elements(n as u64))
        .sample_size(10)
        // One iteration is a whole batch of N tasks: equal-sized samples, at least 10 batches.
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(measurement_time(Duration::from_secs(5)));

    // Each pool lives only for its own benchmark, so idle threads of the others do not compete.
    {
        let manager = common::tasker_manager();
        fire_and_forget(
            &mut group,
            "tasker_callback",
            n,
            submitters,
            &manager,
            |m, i| {
                m.queue_task_with_callback(
                    move |_: &mut (), _: &TaskContext| {
                        black_box(i);
                        Ok::<(), Infallible>(())
                    },
                    |_| task_done(),
                );
            },
        );
        manager.stop().expect("stop");
    }
    {
        let manager = common::tasker_manager();
        // Reused between iterations, so the measured routine does not allocate them.
        let mut handles: Vec<Vec<TaskHandle<(), Infallible>>> = (0..submitters)
            .map(|k| Vec::with_capacity(share(n, submitters, k)))
            .collect();
        group.bench_function("tasker_async", |b| {
            b.iter(|| {
                thread::scope(|s| {
                    for (k, mine) in handles.iter_mut().enumerate() {
                        let count = share(n, submitters, k);
                        let manager = &manager;
                        s.spawn(move || {
                            for i in 0..count {
                                mine.push(manager.queue_task_async(
                                    move |_: &mut (), _: &TaskContext| {
                                        black_box(i);
                                        Ok(())
                                    },
                                ));
                            }
                            for h in mine.drain(..) {
                                h.wait().expect("no-op task succeeds");
                            }
                        });
                    }
                });
            });
        });
        manager.stop().expect("stop");
    }
    {
        let pool = common::rayon_pool();
        fire_and_forget(&mut group, "rayon_spawn", n, submitters, &pool, |p, i| {
            p.spawn(move || {
                black_box(i);
                task_done();
            });
        });
    }
    {
        let pool = threadpool::ThreadPool::new(WORKERS);
        fire_and_forget(
            &mut group,
            "threadpool_execute",
            n,
            submitters,
            &pool,
            |p, i| {
                p.execute(move || {
                    black_box(i);
                    task_done();
                });
            },
        );
        pool.join();
    }
    {
        let rt = common::tokio_runtime();
        let handle = rt.handle().clone();
        fire_and_forget(
            &mut group,
            "tokio_spawn_blocking",
            n,
            submitters,
            &handle,
            |h, i| {
                drop(h.spawn_blocking(move || {
                    black_box(i);
                    task_done();
                }));
            },
        );
        drop(rt);
    }
    {
        let pool = ChannelPool::new(WORKERS);
        fire_and_forget(&mut group, "channel_pool", n, submitters, &pool, |p, i| {
            p.execute(move || {
                black_box(i);
                task_done();
            });
        });
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let n = env_usize("BENCH_TASKS", 1_000_000);
    bench_submitters(c, n, 1);
    bench_submitters(c, n, 4);
}

criterion::criterion_group!(benches, throughput);
criterion::criterion_main!(benches);
