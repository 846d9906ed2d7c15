//! Heap allocations per task, for every delivery mode.
//!
//! Guards the hot-path budget of DESIGN.md §4–5: a submitted task is one allocation in every
//! mode: a `Box` holding the closure, its attempt count and its callback (callback
//! deliveries), or an `Arc` holding the closure and the completion slot, shared by the queue
//! and the handle (blocking and handle deliveries). `run_task` with a pooled resource
//! allocates nothing of its own. The queues add a little on top: a crossbeam `Injector`
//! allocates one block per 63 pushes (the `run_task` pool is an injector too), so today's
//! figures are 1.016 per task and 0.016 for `run_task`. The bounds (1.05, 0.05) catch any
//! extra allocation per task, or one every 30 tasks.
//!
//! A counting `#[global_allocator]` (wrapping `std::alloc::System`) counts `alloc`,
//! `alloc_zeroed` and `realloc` calls on every thread, workers included, while a flag is set.
//! Each mode is warmed up first (so one-time growth of queues and thread-locals is not
//! counted), then `TASKS` tasks are run and waited for (until nothing is pending), and the
//! count is divided by `TASKS`. Everything is one `#[test]`, so no other test of this binary
//! allocates while the flag is set.
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

/// Runs `n` callback tasks submitted by `submit`, and waits for their callbacks.
fn callbacks(m: &Manager, n: usize, submit: impl Fn(&Manager, usize)) {
    let before = CALLBACKS.load(Ordering::Relaxed);
    for i in 0..n {
        submit(m, i);
    }
    while CALLBACKS.load(Ordering::Relaxed) < before + n {
        thread::yield_now();
    }
}

/// Runs `n` handle tasks submitted by `submit` (handles kept in `handles`, whose capacity was
/// reserved beforehand), then waits for each.
fn handles(
    m: &Manager,
    n: usize,
    handles: &mut Handles,
    submit: impl Fn(&Manager, usize) -> TaskHandle<u64, Infallible>,
) {
    for i in 0..n {
        handles.push(submit(m, i));
    }
    for h in handles.drain(..) {
        h.wait().expect("task succeeds");
    }
}

struct Mode {
    name: &'static str,
    /// Upper bound on allocations per task that the test enforces.
    max_per_task: f64,
    run: fn(&Manager, usize, &mut Handles),
}

const MODES: &[Mode] = &[
    Mode {
        name: "queue_task (blocking)",
        max_per_task: 1.05,
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task(body(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_with_priority (blocking)",
        max_per_task: 1.05,
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task_with_priority(body(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_once (blocking)",
        max_per_task: 1.05,
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task_once(body_once(i)).expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_with_priority_once (blocking)",
        max_per_task: 1.05,
        run: |m, n, _| {
            for i in 0..n {
                m.queue_task_with_priority_once(body_once(i))
                    .expect("task succeeds");
            }
        },
    },
    Mode {
        name: "queue_task_with_callback",
        max_per_task: 1.05,
        run: |m, n, _| callbacks(m, n, |m, i| m.queue_task_with_callback(body(i), on_done)),
    },
    Mode {
        name: "queue_task_with_priority_with_callback",
        max_per_task: 1.05,
        run: |m, n, _| {
            callbacks(m, n, |m, i| {
                m.queue_task_with_priority_with_callback(body(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_once_with_callback",
        max_per_task: 1.05,
        run: |m, n, _| {
            callbacks(m, n, |m, i| {
                m.queue_task_once_with_callback(body_once(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_with_priority_once_with_callback",
        max_per_task: 1.05,
        run: |m, n, _| {
            callbacks(m, n, |m, i| {
                m.queue_task_with_priority_once_with_callback(body_once(i), on_done)
            })
        },
    },
    Mode {
        name: "queue_task_async (handle)",
        max_per_task: 1.05,
        run: |m, n, h| handles(m, n, h, |m, i| m.queue_task_async(body(i))),
    },
    Mode {
        name: "queue_task_with_priority_async (handle)",
        max_per_task: 1.05,
        run: |m, n, h| handles(m, n, h, |m, i| m.queue_task_with_priority_async(body(i))),
    },
    Mode {
        name: "queue_task_once_async (handle)",
        max_per_task: 1.05,
        run: |m, n, h| handles(m, n, h, |m, i| m.queue_task_once_async(body_once(i))),
    },
    Mode {
        name: "queue_task_with_priority_once_async (handle)",
        max_per_task: 1.05,
        run: |m, n, h| {
            handles(m, n, h, |m, i| {
                m.queue_task_with_priority_once_async(body_once(i))
            })
        },
    },
    Mode {
        name: "run_task (pooled resource)",
        max_per_task: 0.05,
        run: |m, n, _| {
            for i in 0..n {
                m.run_task(body_once(i)).expect("task succeeds");
            }
        },
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
        println!(
            "  {:<46} {per_task:>6.3}  ({total} allocations, bound {})",
            mode.name, mode.max_per_task
        );
        if per_task > mode.max_per_task {
            over.push(format!(
                "{}: {per_task:.3} > {}",
                mode.name, mode.max_per_task
            ));
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
