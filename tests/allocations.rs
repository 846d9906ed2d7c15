//! Heap allocations per task, for every delivery mode.
//!
//! Guards the hot-path budget of DESIGN.md §4–5 and issue 11's "no allocator on the steady
//! path": a task is one cell (the closure, its attempt count, and its callback or the
//! completion slot it shares with its handle), and cells come from the recycling cell cache
//! (`src/cells.rs`): blocks of 64 to 512 bytes that the thread freeing a cell keeps in its
//! magazines and hands, a full magazine at a time, to the thread that makes the next cells.
//! So a steady stream of tasks makes no allocation for its cells at all. What is left is the
//! queues': a crossbeam `Injector` allocates one block per 63 pushes (the `run_task` pool is
//! an injector too). Today's figures are 0.016 per task in every mode (before the cell cache,
//! 1.016: one `Box` or `Arc` per task). The bound, 0.1, catches an allocation every ten tasks.
//!
//! *Steady* means a bounded number of tasks in flight: the submitter keeps at most
//! [`IN_FLIGHT`] tasks without an outcome (a blocking caller has one), like a service whose
//! load the pool keeps up with. Cells alive at the same time need a block each, so a burst of
//! more tasks than the caches hold (a few hundred blocks per size class; `src/cells.rs`, "Bounds")
//! allocates fresh blocks for the excess, and gives the overflow back to the allocator once
//! they come back. Two burst modes (10,000 tasks submitted before any is waited for) show that
//! figure; it is printed, not bounded.
//!
//! A counting `#[global_allocator]` (wrapping `std::alloc::System`) counts `alloc`,
//! `alloc_zeroed` and `realloc` calls on every thread, workers included, while a flag is set.
//! Each mode is warmed up first (so one-time growth of queues, thread-locals and caches is
//! not counted), then `TASKS` tasks are run and waited for (until nothing is pending), and
//! the count is divided by `TASKS`. Everything is one `#[test]`, so no other test of this
//! binary allocates while the flag is set.
//!
//! Run: `cargo test --test allocations -- --nocapture` (prints the figures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use tasker::{TaskContext, TaskHandle, TaskManager};

/// Counts allocations while [`COUNTING`] is set.
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only atomics
// and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Tasks measured per mode.
const TASKS: usize = 10_000;
/// Tasks run in the same mode, uncounted, just before.
const WARMUP: usize = 2_000;
/// Most tasks a steady mode keeps without an outcome.
const IN_FLIGHT: usize = 64;
/// The bound on allocations per task of every steady mode.
const STEADY: f64 = 0.1;

type Manager = TaskManager<u64, Infallible>;
type Handles = Vec<TaskHandle<u64, Infallible>>;

/// Callbacks run so far.
static CALLBACKS: AtomicUsize = AtomicUsize::new(0);

fn body(i: usize) -> impl FnMut(&mut u64, &TaskContext) -> Result<u64, Infallible> + Send {
    move |r: &mut u64, _: &TaskContext| {
        *r += 1;
        Ok(i as u64)
    }
}

fn body_once(i: usize) -> impl FnOnce(&mut u64, &TaskContext) -> Result<u64, Infallible> + Send {
    move |r: &mut u64, _: &TaskContext| {
        *r += 1;
        Ok(i as u64)
    }
}

fn on_done(outcome: Result<u64, tasker::TaskError<Infallible>>) {
    outcome.expect("task succeeds");
    CALLBACKS.fetch_add(1, Ordering::Relaxed);
}

/// Waits until every task accepted so far has its outcome and the workers are done with it.
fn settle(m: &Manager) {
    while m.stats().pending_tasks != 0 {
        thread::yield_now();
    }
}

/// Runs `n` callback tasks submitted by `submit`, at most `in_flight` at a time, and waits
/// for their callbacks.
fn callbacks(m: &Manager, n: usize, in_flight: usize, submit: impl Fn(&Manager, usize)) {
    let before = CALLBACKS.load(Ordering::Relaxed);
    let done = || CALLBACKS.load(Ordering::Relaxed) - before;
    for i in 0..n {
        while i - done() >= in_flight {
            thread::yield_now();
        }
        submit(m, i);
    }
    while done() < n {
        thread::yield_now();
    }
}

/// Runs `n` handle tasks submitted by `submit`, `in_flight` at a time: submits that many
/// (the handles kept in `handles`, whose capacity was reserved beforehand), then waits for
/// each.
fn handles(
    m: &Manager,
    n: usize,
    in_flight: usize,
    handles: &mut Handles,
    submit: impl Fn(&Manager, usize) -> TaskHandle<u64, Infallible>,
) {
    for i in 0..n {
        handles.push(submit(m, i));
        if handles.len() == in_flight || i + 1 == n {
            for h in handles.drain(..) {
                h.wait().expect("task succeeds");
            }
        }
    }
}

struct Mode {
    name: &'static str,
    /// Upper bound on allocations per task that the test enforces (`None`: printed only).
    max_per_task: Option<f64>,
    run: fn(&Manager, usize, &mut Handles),
}

const MODES: &[Mode] = &[
    Mode {
        name: "queue_task (blocking)",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task(body(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_with_priority (blocking)",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task_with_priority(body(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_once (blocking)",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task_once(body_once(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_with_priority_once (blocking)",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task_with_priority_once(body_once(i))
                    .expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_with_callback",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            callbacks(m, n, IN_FLIGHT, |m, i| {
                m.queue_task_with_callback(body(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_with_priority_with_callback",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            callbacks(m, n, IN_FLIGHT, |m, i| {
                m.queue_task_with_priority_with_callback(body(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_once_with_callback",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            callbacks(m, n, IN_FLIGHT, |m, i| {
                m.queue_task_once_with_callback(body_once(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_with_priority_once_with_callback",
        max_per_task: Some(STEADY),
        run: |m, n, _| {
            callbacks(m, n, IN_FLIGHT, |m, i| {
                m.queue_task_with_priority_once_with_callback(body_once(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_async (handle)",
        max_per_task: Some(STEADY),
        run: |m, n, h| handles(m, n, IN_FLIGHT, h, |m, i| m.queue_task_async(body(i))),
    },
    Mode {
        name: "queue_task_with_priority_async (handle)",
        max_per_task: Some(STEADY),
        run: |m, n, h| {
            handles(m, n, IN_FLIGHT, h, |m, i| {
                m.queue_task_with_priority_async(body(i))
            })
        },
    },
    Mode {
        name: "queue_task_once_async (handle)",
        max_per_task: Some(STEADY),
        run: |m, n, h| {
            handles(m, n, IN_FLIGHT, h, |m, i| {
                m.queue_task_once_async(body_once(i))
            })
        },
    },
    Mode {
        name: "queue_task_with_priority_once_async (handle)",
        max_per_task: Some(STEADY),
        run: |m, n, h| {
            handles(m, n, IN_FLIGHT, h, |m, i| {
                m.queue_task_with_priority_once_async(body_once(i))
            })
        },
    },
    Mode {
        name: "run_task (pooled resource)",
        max_per_task: Some(0.05),
        run: |m, n, _| {
            for i in 0..n {
                m.run_task(body_once(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "burst: queue_task_with_callback",
        max_per_task: None,
        run: |m, n, _| callbacks(m, n, n, |m, i| m.queue_task_with_callback(body(i), on_done)),
    },
    Mode {
        name: "burst: queue_task_async (handle)",
        max_per_task: None,
        run: |m, n, h| handles(m, n, n, h, |m, i| m.queue_task_async(body(i))),
    },
];

#[test]
fn allocations_per_task() {
    let manager: Manager = TaskManager::builder()
        .on_create(|| Ok::<u64, Infallible>(0))
        .worker_count(2)
        .max_worker_count(2)
        .build()
        .expect("build");
    let mut reserved: Handles = Vec::with_capacity(TASKS.max(WARMUP));

    // Grow every queue and thread-local once, whatever the mode.
    for mode in MODES {
        (mode.run)(&manager, WARMUP, &mut reserved);
    }
    settle(&manager);

    let mut over = Vec::new();
    println!("allocations per task ({TASKS} tasks per mode, 2 workers):");
    for mode in MODES {
        (mode.run)(&manager, WARMUP, &mut reserved);
        settle(&manager);

        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        (mode.run)(&manager, TASKS, &mut reserved);
        settle(&manager);
        COUNTING.store(false, Ordering::SeqCst);

        let total = ALLOCATIONS.load(Ordering::SeqCst);
        let per_task = total as f64 / TASKS as f64;
        let bound = match mode.max_per_task {
            Some(bound) => format!("bound {bound}"),
            None => "not bounded".to_string(),
        };
        println!(
            "  {:<46} {per_task:>6.3}  ({total} allocations, {bound})",
            mode.name
        );
        if let Some(bound) = mode.max_per_task
            && per_task > bound
        {
            over.push(format!("{}: {per_task:.3} > {bound}", mode.name));
        }
    }
    assert_eq!(
        reserved.capacity(),
        TASKS.max(WARMUP),
        "the handle buffer never regrew"
    );
    manager.stop().expect("stop");
    assert!(
        over.is_empty(),
        "allocations per task over budget: {over:?}"
    );
}
