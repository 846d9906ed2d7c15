//! The one place that chooses the synchronisation primitives.
//!
//! Every module imports its atomics, fences, `Arc`, `Mutex`, `Condvar`, threads, thread-locals,
//! `UnsafeCell`, futex words, wakers, deques and spin backoff from here, never from `std`,
//! `crossbeam-deque`, `crossbeam-utils`, `atomic-wait` or `atomic-waker` directly, so that a
//! model-checking build (`RUSTFLAGS="--cfg loom"`, see `loom-tests/`) swaps all of them in this
//! one file. (`crossbeam_utils::CachePadded` is imported directly: it is layout, not
//! synchronisation.)
//!
//! # Normal build
//!
//! Each item is the real thing, re-exported, or a `#[repr(transparent)]` wrapper whose
//! methods are `#[inline]` one-line pass-throughs: the code the compiler sees is the same as
//! calling the primitive directly.
//!
//! # Under `cfg(loom)`
//!
//! Loom runs every model thread on one OS thread and switches between them only at its own
//! operations, exploring the interleavings (and the weak-memory outcomes) of those. So every
//! primitive whose ordering matters must be loom's, and anything that would spin must not:
//!
//! - `fence`, `Arc`, `Mutex`, `Condvar`, `thread`, `thread_local!`, `mpsc` and `UnsafeCell`
//!   are loom's (its `UnsafeCell` checks that no two accesses race);
//! - the atomics are loom's, with one change (module `seq_cst`): loom treats a `SeqCst` access as
//!   `AcqRel` (its README: "Unsupported features"), which makes it report executions the
//!   language forbids, for instance the one [`slot`](crate::slot)'s proof rules out with the total order
//!   of `SeqCst` operations. So a `SeqCst` read-modify-write (including a failed
//!   compare-and-swap) is bracketed by `fence(SeqCst)`, which loom does model;
//! - [`Futex`] is a loom `AtomicU32` plus a `Mutex<()>` and a `Condvar`: `wait` checks the
//!   word under the lock and `wake_*` notify under the lock, which is exactly the guarantee
//!   a kernel futex gives (the check and the sleep are atomic with respect to a wake);
//! - [`AtomicWaker`] is a `Mutex<Option<Waker>>` with the `atomic-waker` surface and its
//!   documented ordering (`register` acquires what `wake` released before it; a `wake` after
//!   a `register` wakes that waker): the real one's std atomics would be invisible to loom,
//!   which would then miss that ordering and report wake-ups lost that are not;
//! - [`deque`] is a `VecDeque` behind a lock loom does not see, plus one loom step per push
//!   and per take, with the surface of `crossbeam-deque` (which loom cannot see into), and
//!   small batches;
//! - [`Backoff`] completes at once, so spin loops go straight to their blocking path instead
//!   of multiplying the interleavings (a spinning model exhausts loom's branch budget);
//! - time does not pass: a timed park is an untimed one, and a timed condvar wait is a plain
//!   wait (loom's own), so models never rely on a timeout;
//! - constants that size things (arrival shards, steal batches) shrink, so models stay small;
//! - statistics ([`stats`]) stay std's: they are not protocol, and the models need not
//!   interleave them.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicU32, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, mpsc};

#[cfg(loom)]
pub(crate) use self::seq_cst::{AtomicBool, AtomicIsize, AtomicU32, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, mpsc};

/// Loom's atomics, with `SeqCst` read-modify-writes bracketed by `SeqCst` fences.
///
/// Why: loom models a `SeqCst` access as `AcqRel`, but the protocols' proofs use the single
/// total order of `SeqCst` operations. Take [`slot`](crate::slot): the parking slot CASes its state
/// `PARK_REQUESTED -> PARKED` then loads the lifecycle flags; shutdown `fetch_or`s `CLOSED`
/// into the flags then CASes the state `PARKED -> CLOSED`. With `AcqRel` only, loom lets
/// shutdown's CAS fail (it read `PARK_REQUESTED`) *and* the slot's load miss `CLOSED`, and
/// reports a parked slot sleeping through shutdown (seen with plain loom atomics). Rust's
/// memory model forbids that execution: the four operations would form a cycle in the
/// `SeqCst` order. A `SeqCst` fence on each side of each `SeqCst` read-modify-write rules it
/// out again, and loom models fences exactly.
///
/// The cost in precision: such a fence also orders the thread's other accesses around the
/// read-modify-write, which the language does not promise, so a model cannot notice a
/// *missing* fence next to a `SeqCst` read-modify-write (`Sleep::sleep`'s fence after its
/// `fetch_add` is one). Plain `SeqCst` loads and stores are left as loom has them (`AcqRel`):
/// a missing fence next to those is still caught (`Sleep::notify_one`'s before its load), and
/// a proof that needs their total order would fail its model loudly, never pass silently.
#[cfg(loom)]
mod seq_cst {
    use loom::sync::atomic::{self as loom_atomic, Ordering, fence};

    /// Runs a read-modify-write, between `SeqCst` fences when any of its orderings is `SeqCst`.
    fn rmw<R>(orders: &[Ordering], op: impl FnOnce() -> R) -> R {
        if orders.contains(&Ordering::SeqCst) {
            fence(Ordering::SeqCst);
            let r = op();
            fence(Ordering::SeqCst);
            r
        } else {
            op()
        }
    }

    macro_rules! atomic {
        ($name:ident, $int:ty) => {
            #[derive(Debug, Default)]
            pub(crate) struct $name(loom_atomic::$name);

            #[allow(dead_code)] // each type uses a part of the surface
            impl $name {
                pub(crate) fn new(value: $int) -> Self {
                    $name(loom_atomic::$name::new(value))
                }
                pub(crate) fn load(&self, order: Ordering) -> $int {
                    self.0.load(order)
                }
                pub(crate) fn store(&self, value: $int, order: Ordering) {
                    self.0.store(value, order)
                }
                pub(crate) fn swap(&self, value: $int, order: Ordering) -> $int {
                    rmw(&[order], || self.0.swap(value, order))
                }
                pub(crate) fn compare_exchange(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    rmw(&[success, failure], || {
                        self.0.compare_exchange(current, new, success, failure)
                    })
                }
                pub(crate) fn compare_exchange_weak(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    rmw(&[success, failure], || {
                        self.0.compare_exchange_weak(current, new, success, failure)
                    })
                }
                pub(crate) fn fetch_update(
                    &self,
                    set: Ordering,
                    fetch: Ordering,
                    f: impl FnMut($int) -> Option<$int>,
                ) -> Result<$int, $int> {
                    rmw(&[set, fetch], || self.0.fetch_update(set, fetch, f))
                }
            }
        };
        ($name:ident, $int:ty, integer) => {
            atomic!($name, $int);

            #[allow(dead_code)]
            impl $name {
                pub(crate) fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                    rmw(&[order], || self.0.fetch_add(value, order))
                }
                pub(crate) fn fetch_sub(&self, value: $int, order: Ordering) -> $int {
                    rmw(&[order], || self.0.fetch_sub(value, order))
                }
                pub(crate) fn fetch_or(&self, value: $int, order: Ordering) -> $int {
                    rmw(&[order], || self.0.fetch_or(value, order))
                }
            }
        };
    }

    atomic!(AtomicBool, bool);
    atomic!(AtomicU32, u32, integer);
    atomic!(AtomicUsize, usize, integer);
    atomic!(AtomicIsize, isize, integer);
}

/// The same, signed: a count that may dip below zero for a moment (`completion`).
pub(crate) use std::sync::atomic::AtomicIsize as StdAtomicIsize;
/// A std atomic, never modelled: for a counter that must live in a `static` (loom's atomics
/// cannot), the arrival-shard picker (under loom there is one shard, so its value never
/// matters there), and for the models' own tallies, which must not add interleavings.
pub(crate) use std::sync::atomic::AtomicUsize as StdAtomicUsize;

/// Statistics: totals, rate windows and latency histograms. They are written by one thread
/// and read by snapshots; no protocol reads them to decide anything, so they are std's in
/// every build, and under loom they add no interleavings: the models check the protocols
/// around them, not the counting (the tokio way: its metrics are no-ops under loom).
///
/// Their `Mutex` (a worker publishing its histograms, a snapshot merging them) is held only
/// around plain memory work, never across a loom operation, so under loom, where every model
/// thread runs on one OS thread, it can never be found locked.
pub(crate) mod stats {
    pub(crate) use std::sync::Mutex;
    pub(crate) use std::sync::atomic::AtomicU64;
}

/// Std's `Arc`, never modelled: the one [`std::task::Wake`] is defined over (a thread's waker,
/// whose `wake` calls [`thread::Thread::unpark`], under loom the shim's parker), and what loom
/// need not count: the parker handles, a deque's owners, the models' harness and tallies.
pub(crate) use std::sync::Arc as StdArc;

/// Threads: spawn, park, current, yield.
pub(crate) mod thread {
    #[cfg(not(loom))]
    #[cfg_attr(not(test), allow(unused_imports))] // `spawn` is for tests
    pub(crate) use std::thread::{
        Builder, JoinHandle, Thread, available_parallelism, current, park, park_timeout, spawn,
        yield_now,
    };

    #[cfg(loom)]
    pub(crate) use loom::thread::{Builder, JoinHandle, spawn, yield_now};

    #[cfg(loom)]
    pub(crate) use self::parker::{Thread, current, park};

    /// `park`/`unpark` with std's meaning, a token, on a loom mutex and condvar.
    ///
    /// Loom's own `unpark` makes the target runnable whatever it is blocked on (a join, a
    /// mutex), where std's only leaves a token for the next `park`. A waker that fires after
    /// its handle moved on (the value was taken first) unparks a thread that may then be
    /// joining another: harmless with std, but it breaks loom's bookkeeping.
    #[cfg(loom)]
    mod parker {
        use crate::sync::{Condvar, Mutex, StdArc};

        struct Parker {
            token: Mutex<bool>,
            unparked: Condvar,
        }

        /// A handle on a thread, to unpark it. (Shared through a std `Arc`: its count is not
        /// what the models check, and each loom `Arc` step would be one more to interleave.)
        #[derive(Clone)]
        pub(crate) struct Thread(StdArc<Parker>);

        impl Thread {
            /// Makes the token available, waking the thread if it is parked.
            pub(crate) fn unpark(&self) {
                let mut token = self.0.token.lock().unwrap_or_else(|e| e.into_inner());
                *token = true;
                self.0.unparked.notify_one();
            }
        }

        crate::sync::loom_thread_local! {
            static CURRENT: Thread = Thread(StdArc::new(Parker {
                token: Mutex::new(false),
                unparked: Condvar::new(),
            }));
        }

        pub(crate) fn current() -> Thread {
            CURRENT.with(Thread::clone)
        }

        /// Blocks until the token is available, and consumes it.
        pub(crate) fn park() {
            CURRENT.with(|me| {
                let mut token = me.0.token.lock().unwrap_or_else(|e| e.into_inner());
                while !*token {
                    token = me.0.unparked.wait(token).unwrap_or_else(|e| e.into_inner());
                }
                *token = false;
            });
        }
    }

    /// Under loom time does not pass: a timed park ends only when unparked (callers already
    /// treat an early return as spurious, and no model relies on a timeout).
    #[cfg(loom)]
    pub(crate) fn park_timeout(_timeout: std::time::Duration) {
        park();
    }

    /// Under loom the CPU count is fixed, so a model never depends on the machine.
    #[cfg(loom)]
    pub(crate) fn available_parallelism() -> std::io::Result<std::num::NonZeroUsize> {
        Ok(std::num::NonZeroUsize::new(2).expect("2 is not zero"))
    }
}

/// `thread_local!`, loom's under loom (model threads share one OS thread there, so a std
/// thread-local would be shared by all of them).
#[cfg(not(loom))]
pub(crate) use std::thread_local;

/// Loom's `thread_local!` takes no `const { .. }` initialiser: this strips it (under loom the
/// initialiser runs lazily, once per model thread).
#[cfg(loom)]
macro_rules! loom_thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }; $($rest:tt)*) => {
        ::loom::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::sync::loom_thread_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        ::loom::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::sync::loom_thread_local!($($rest)*);
    };
}
#[cfg(loom)]
pub(crate) use {loom_thread_local, loom_thread_local as thread_local};

/// An `UnsafeCell` reached only through closures, so that loom can see where each access
/// starts and ends (and fail a model in which two of them race).
#[cfg(not(loom))]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline]
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }
}

#[cfg(not(loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Runs `f` with a pointer for reading. The caller's protocol must exclude concurrent
    /// writes for as long as `f` uses it.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a pointer for writing. The caller's protocol must exclude every other
    /// access for as long as `f` uses it.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// A futex word: a `u32` that threads can sleep on while it holds an expected value.
///
/// Normally a transparent wrapper over an `AtomicU32` and `atomic-wait`. Under loom, an
/// `AtomicU32` with a mutex and a condvar standing in for the kernel's wait queue (see the
/// module docs).
#[cfg(not(loom))]
#[derive(Default)]
#[repr(transparent)]
pub(crate) struct Futex(AtomicU32);

#[cfg(not(loom))]
impl Futex {
    #[inline]
    pub(crate) const fn new(value: u32) -> Self {
        Futex(AtomicU32::new(value))
    }

    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u32 {
        self.0.load(order)
    }

    #[inline]
    #[allow(dead_code)] // part of the word's surface; the crate moves its words by CAS and add
    pub(crate) fn store(&self, value: u32, order: Ordering) {
        self.0.store(value, order);
    }

    #[inline]
    pub(crate) fn fetch_add(&self, value: u32, order: Ordering) -> u32 {
        self.0.fetch_add(value, order)
    }

    #[inline]
    pub(crate) fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        self.0.compare_exchange(current, new, success, failure)
    }

    /// Sleeps while the word equals `expected`. May return spuriously: callers re-check their
    /// condition.
    #[inline]
    pub(crate) fn wait(&self, expected: u32) {
        atomic_wait::wait(&self.0, expected);
    }

    /// Wakes at most one thread sleeping in [`wait`](Self::wait).
    #[inline]
    pub(crate) fn wake_one(&self) {
        atomic_wait::wake_one(&self.0);
    }

    /// Wakes every thread sleeping in [`wait`](Self::wait).
    #[inline]
    pub(crate) fn wake_all(&self) {
        atomic_wait::wake_all(&self.0);
    }
}

#[cfg(loom)]
#[derive(Default)]
pub(crate) struct Futex {
    word: AtomicU32,
    /// The kernel's wait-queue lock: `wait` checks the word while holding it, `wake_*` take it
    /// before notifying, so a wake that follows a change of the word cannot slip between a
    /// waiter's check and its sleep.
    queue: Mutex<()>,
    sleepers: Condvar,
}

#[cfg(loom)]
impl Futex {
    pub(crate) fn new(value: u32) -> Self {
        Futex {
            word: AtomicU32::new(value),
            queue: Mutex::new(()),
            sleepers: Condvar::new(),
        }
    }

    pub(crate) fn load(&self, order: Ordering) -> u32 {
        self.word.load(order)
    }

    #[allow(dead_code)]
    pub(crate) fn store(&self, value: u32, order: Ordering) {
        self.word.store(value, order);
    }

    pub(crate) fn fetch_add(&self, value: u32, order: Ordering) -> u32 {
        self.word.fetch_add(value, order)
    }

    pub(crate) fn compare_exchange(
        &self,
        current: u32,
        new: u32,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u32, u32> {
        self.word.compare_exchange(current, new, success, failure)
    }

    pub(crate) fn wait(&self, expected: u32) {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // The kernel's check is a full barrier (futex(2)): SeqCst.
        if self.word.load(Ordering::SeqCst) == expected {
            drop(self.sleepers.wait(queue));
        }
    }

    pub(crate) fn wake_one(&self) {
        let _queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.notify_one();
    }

    pub(crate) fn wake_all(&self) {
        let _queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.notify_all();
    }
}

/// A slot for one `Waker`, woken at most once per registration (`completion`'s handle).
#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;

#[cfg(loom)]
#[derive(Default)]
pub(crate) struct AtomicWaker(Mutex<Option<std::task::Waker>>);

#[cfg(loom)]
impl AtomicWaker {
    pub(crate) fn new() -> Self {
        AtomicWaker(Mutex::new(None))
    }

    /// Keeps `waker` for the next `wake`; acquires what earlier `wake`s released.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Wakes (and forgets) the registered waker, if any.
    pub(crate) fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The bounded spin of a polling loop before it blocks: a worker looking for a task, a caller
/// waiting for its outcome.
///
/// Each [`snooze`](Self::snooze) pauses between two polls. The pauses double from one
/// `spin_loop` up to `max_pauses` and stay there until [`SPIN_BUDGET`] pauses are spent
/// (about 4 µs here: one `spin_loop` costs ~31 ns on this 2-core machine); then
/// [`YIELDS`] polls each give the CPU away (`yield_now`); then
/// [`is_completed`](Self::is_completed): time to block. The budget bounds the CPU an idle
/// thread burns; the cap bounds how long a hand-off that lands between two polls waits for
/// the next one. (An uncapped doubling reaches 64 pauses, 2 µs between polls: most of a
/// sub-microsecond round trip was spent there.)
///
/// Under loom it is complete from the start: a spin loop there only multiplies interleavings,
/// and every loop that uses it falls back to a blocking wait.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct Backoff {
    /// `spin_loop` hints per pause, doubling up to `max_pauses`.
    pauses: std::cell::Cell<u32>,
    max_pauses: u32,
    /// Pauses spent so far, then `SPIN_BUDGET + yields`.
    spent: std::cell::Cell<u32>,
}

/// `spin_loop` hints a [`Backoff`] spends before it starts yielding.
#[cfg(not(loom))]
pub(crate) const SPIN_BUDGET: u32 = 128;
/// Polls after a `yield_now` before a [`Backoff`] is completed.
#[cfg(not(loom))]
pub(crate) const YIELDS: u32 = 4;

#[cfg(not(loom))]
impl Backoff {
    /// A spin whose pause between polls grows to at most `max_pauses` `spin_loop` hints.
    pub(crate) fn with_max_pauses(max_pauses: u32) -> Self {
        Backoff {
            pauses: std::cell::Cell::new(1),
            max_pauses: max_pauses.max(1),
            spent: std::cell::Cell::new(0),
        }
    }

    /// Starts the spin over (after a wake-up that found nothing).
    pub(crate) fn reset(&self) {
        self.pauses.set(1);
        self.spent.set(0);
    }

    /// Waits a little before the next poll.
    #[inline]
    pub(crate) fn snooze(&self) {
        let spent = self.spent.get();
        if spent < SPIN_BUDGET {
            let pauses = self.pauses.get();
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
            self.spent.set((spent + pauses).min(SPIN_BUDGET));
            self.pauses.set((pauses * 2).min(self.max_pauses));
        } else {
            std::thread::yield_now();
            self.spent.set(spent + 1);
        }
    }

    /// True once the spin is spent: the caller should block.
    #[inline]
    pub(crate) fn is_completed(&self) -> bool {
        self.spent.get() >= SPIN_BUDGET + YIELDS
    }
}

#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct Backoff(());

#[cfg(loom)]
impl Backoff {
    pub(crate) fn with_max_pauses(_: u32) -> Self {
        Backoff(())
    }
    pub(crate) fn reset(&self) {}
    pub(crate) fn snooze(&self) {}
    pub(crate) fn is_completed(&self) -> bool {
        true
    }
}

/// The work-stealing deques: `crossbeam-deque`, or under loom a stand-in with its surface.
///
/// The stand-in keeps what the scheduler relies on: FIFO order, one owner popping its local
/// deque, stealers taking from the same end, and batch steals that move tasks into the thief's
/// deque. A batch is taken out of the
/// source under its lock and put into the destination under the destination's lock, one after
/// the other, never both held (two thieves stealing from each other cannot deadlock); in
/// between, the batch is visible in neither, as it is in `crossbeam-deque` between its claim
/// and its publish. It never returns `Steal::Retry`.
pub(crate) mod deque {
    #[cfg(not(loom))]
    pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};

    #[cfg(loom)]
    pub(crate) use self::model::{Injector, Steal, Stealer, Worker};

    #[cfg(loom)]
    mod model {
        use std::collections::VecDeque;

        use crate::sync::{AtomicUsize, Ordering, StdArc};

        /// Most tasks one batch steal moves (crossbeam moves up to 32).
        const MAX_BATCH: usize = 2;

        /// The outcome of a steal.
        #[must_use]
        #[derive(Debug, PartialEq, Eq)]
        pub(crate) enum Steal<T> {
            Empty,
            Success(T),
            #[allow(dead_code)] // never produced by a mutex; matched by callers
            Retry,
        }

        /// One FIFO queue.
        ///
        /// The tasks sit under a *std* mutex, which loom does not see: loom switches threads
        /// only at its own operations and none runs while that lock is held, so it is never
        /// contended. What loom sees is one read-modify-write of `handoff` per push and per
        /// take (`AcqRel`): the point where it may switch threads, and the edge that hands a
        /// task's memory from its pusher to its taker. Looking at an empty queue (a failed
        /// steal, `is_empty`, `len`) is no loom operation at all: it sees the queue as it is
        /// at that point of the interleaving, like a lock would, but is not a point where loom
        /// switches threads or that conflicts with another look, which keeps the pool models
        /// small (every worker's search looks at every queue). The weak-memory side of "a push
        /// racing a look" is the sleep protocol's; its own model checks it with a queue that
        /// gives no ordering at all.
        ///
        /// A LIFO worker deque (`lifo`) has its owner pop the newest task (the back), while
        /// stealers take the oldest (the front), and a batch moved into it is put so that its
        /// owner pops it in the batch's order, as `crossbeam-deque` does.
        struct Queue<T> {
            tasks: std::sync::Mutex<VecDeque<T>>,
            handoff: AtomicUsize,
            lifo: bool,
        }

        impl<T> Queue<T> {
            fn new() -> Self {
                Self::with_flavor(false)
            }

            fn with_flavor(lifo: bool) -> Self {
                Queue {
                    tasks: std::sync::Mutex::new(VecDeque::new()),
                    handoff: AtomicUsize::new(0),
                    lifo,
                }
            }

            fn tasks(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
                self.tasks.lock().unwrap_or_else(|e| e.into_inner())
            }

            fn is_empty(&self) -> bool {
                self.tasks().is_empty()
            }

            fn len(&self) -> usize {
                self.tasks().len()
            }

            fn push(&self, task: T) {
                // The loom step first: the push is then visible from the same point on.
                self.handoff.fetch_add(1, Ordering::AcqRel);
                self.tasks().push_back(task);
            }

            fn push_all(&self, batch: VecDeque<T>) {
                self.handoff.fetch_add(1, Ordering::AcqRel);
                if self.lifo {
                    self.tasks().extend(batch.into_iter().rev());
                } else {
                    self.tasks().extend(batch);
                }
            }

            /// The owner's pop: the newest task of a LIFO deque, else the oldest.
            fn pop_own(&self) -> Option<T> {
                if !self.lifo {
                    return self.pop();
                }
                if self.is_empty() {
                    return None;
                }
                self.handoff.fetch_add(1, Ordering::AcqRel);
                self.tasks().pop_back()
            }

            /// Takes up to `n` tasks from the front (none if the queue is empty).
            fn take(&self, n: impl FnOnce(usize) -> usize) -> VecDeque<T> {
                if self.is_empty() {
                    return VecDeque::new();
                }
                self.handoff.fetch_add(1, Ordering::AcqRel);
                // Loom may have switched threads at that step: look again.
                let mut tasks = self.tasks();
                let n = n(tasks.len());
                tasks.drain(..n).collect()
            }

            fn pop(&self) -> Option<T> {
                self.take(|len| len.min(1)).pop_front()
            }

            fn steal(&self) -> Steal<T> {
                match self.pop() {
                    Some(task) => Steal::Success(task),
                    None => Steal::Empty,
                }
            }

            /// Takes the first task and up to `MAX_BATCH - 1` more (about half of what is
            /// there, as crossbeam does), then puts the rest into `dest`.
            fn steal_batch_and_pop(&self, dest: &Queue<T>) -> Steal<T> {
                let mut batch = self.take(|len| len.div_ceil(2).min(MAX_BATCH));
                let Some(first) = batch.pop_front() else {
                    return Steal::Empty;
                };
                if !batch.is_empty() {
                    dest.push_all(batch);
                }
                Steal::Success(first)
            }
        }

        /// The global queue every thread may push to.
        pub(crate) struct Injector<T>(Queue<T>);

        impl<T> Injector<T> {
            pub(crate) fn new() -> Self {
                Injector(Queue::new())
            }
            pub(crate) fn push(&self, task: T) {
                self.0.push(task);
            }
            pub(crate) fn steal(&self) -> Steal<T> {
                self.0.steal()
            }
            pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
                self.0.steal_batch_and_pop(&dest.0)
            }
            pub(crate) fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
            pub(crate) fn len(&self) -> usize {
                self.0.len()
            }
        }

        /// A worker's own deque.
        pub(crate) struct Worker<T>(StdArc<Queue<T>>);

        #[allow(dead_code)] // the surface the scheduler may use
        impl<T> Worker<T> {
            pub(crate) fn new_fifo() -> Self {
                Worker(StdArc::new(Queue::with_flavor(false)))
            }
            pub(crate) fn new_lifo() -> Self {
                Worker(StdArc::new(Queue::with_flavor(true)))
            }
            pub(crate) fn push(&self, task: T) {
                self.0.push(task);
            }
            pub(crate) fn pop(&self) -> Option<T> {
                self.0.pop_own()
            }
            pub(crate) fn stealer(&self) -> Stealer<T> {
                Stealer(self.0.clone())
            }
            pub(crate) fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
            pub(crate) fn len(&self) -> usize {
                self.0.len()
            }
        }

        /// Another thread's handle on a worker's deque.
        pub(crate) struct Stealer<T>(StdArc<Queue<T>>);

        impl<T> Clone for Stealer<T> {
            fn clone(&self) -> Self {
                Stealer(self.0.clone())
            }
        }

        #[allow(dead_code)]
        impl<T> Stealer<T> {
            pub(crate) fn steal(&self) -> Steal<T> {
                self.0.steal()
            }
            pub(crate) fn steal_batch_and_pop(&self, dest: &Worker<T>) -> Steal<T> {
                self.0.steal_batch_and_pop(&dest.0)
            }
            pub(crate) fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
            pub(crate) fn len(&self) -> usize {
                self.0.len()
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A spin is bounded whatever its cap (so an idle thread always reaches its blocking
    /// wait), polls more often with a smaller cap, and starts over after `reset`.
    #[test]
    fn a_backoff_spends_its_budget_then_yields_then_completes() {
        let polls_until_complete = |backoff: &Backoff| {
            let mut polls = 0;
            while !backoff.is_completed() {
                backoff.snooze();
                polls += 1;
                assert!(polls <= SPIN_BUDGET + YIELDS, "the spin is not bounded");
            }
            polls
        };
        let fine = Backoff::with_max_pauses(2);
        let coarse = Backoff::with_max_pauses(8);
        let (fine_polls, coarse_polls) =
            (polls_until_complete(&fine), polls_until_complete(&coarse));
        assert!(coarse_polls > YIELDS && fine_polls > coarse_polls);
        fine.reset();
        assert!(!fine.is_completed());
        assert_eq!(polls_until_complete(&fine), fine_polls);
    }
}
