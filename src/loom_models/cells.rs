//! The cell cache (`cells`): full magazines of free blocks handed between threads through
//! the depot. The races it must survive: two threads putting a magazine into the last free
//! place, two threads taking the one magazine there, a put racing a take. Run on the shipped
//! [`Magazines`] and [`Pool`], with loom's `MAGAZINE = 2` and a depot cap of 1 (so the
//! depot's cap is reached, and G3 runs, with two magazines).

use super::explore;
use crate::cells::{LIVE_BLOCKS, MAGAZINE, Magazines, Pool, fresh};
use std::ptr::NonNull;

use crate::sync::{Ordering, StdArc, thread};

/// The class the models use (any would do).
const CLASS: usize = 1;

/// A thread that frees cells: gives back `2 * MAGAZINE + 1` blocks, which fills both of its
/// lists and hands the first full magazine to the depot (G2), then exits (its cache is
/// dropped, freeing what it kept).
fn giver(pool: &StdArc<Pool>) -> thread::JoinHandle<()> {
    let pool = pool.clone();
    thread::spawn(move || {
        let cache = Magazines::new();
        for _ in 0..2 * MAGAZINE + 1 {
            // SAFETY: a fresh block of `CLASS`, ours, holding nothing.
            unsafe { cache.give(&pool, CLASS, fresh(CLASS)) };
        }
        assert_eq!(cache.cached(CLASS), MAGAZINE + 1);
    })
}

/// A thread that makes cells: takes `MAGAZINE` blocks (from the depot when a magazine is
/// there, else fresh ones) and returns them, still its own (so blocks held at the same time
/// can be compared: a freed block's address may come back from the allocator).
fn taker(pool: &StdArc<Pool>) -> thread::JoinHandle<Vec<Block>> {
    let pool = pool.clone();
    thread::spawn(move || {
        let cache = Magazines::new();
        (0..MAGAZINE)
            .map(|_| Block(cache.take(&pool, CLASS).unwrap_or_else(|| fresh(CLASS))))
            .collect()
    })
}

/// A block a taker holds, sent back to the main thread by `join`.
struct Block(NonNull<u8>);

// SAFETY: an owned block of plain memory; `join` orders the taker's accesses before the main
// thread's.
unsafe impl Send for Block {}

/// Joins the takers, checks that no block is held twice, gives their blocks back (to a cache
/// then dropped), empties the depot, and checks every block made was freed exactly once.
fn settle(pool: &Pool, takers: Vec<thread::JoinHandle<Vec<Block>>>) {
    let taken: Vec<Block> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let mut addresses: Vec<usize> = taken.iter().map(|b| b.0.as_ptr() as usize).collect();
    addresses.sort_unstable();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        taken.len(),
        "a block was handed to two owners"
    );
    let cache = Magazines::new();
    for block in taken {
        // SAFETY: taken by a taker, now ours, holding nothing.
        unsafe { cache.give(pool, CLASS, block.0) };
    }
    drop(cache);
    // SAFETY: the depot's magazines hold blocks of `CLASS`.
    unsafe { pool.depot(CLASS).drain(CLASS) };
    assert_eq!(
        LIVE_BLOCKS.load(Ordering::Relaxed),
        0,
        "every block made is freed once"
    );
}

/// **A magazine put in the depot has one owner at a time: puts vs. a take.**
///
/// Two threads free cells, each filling its cache and putting one full magazine in the
/// depot (D1), which has room for one: the second put finds it full, unless a third thread,
/// taking a magazine's worth of blocks (D2), emptied it first; a put that finds it full frees
/// its magazine (G3). Checked: the taker reads each block's link only after the giver wrote
/// it (loom's `UnsafeCell` in `Free`), no block reaches two owners, and every block made is
/// freed exactly once, wherever it went (caches dropped at thread exit, the depot drained).
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 949 executions, 0.1 s.
///
/// The depot's queue is the `sync::deque` stand-in here (its ordering is a lock's; the
/// shipped one is `crossbeam-deque`'s, checked by that crate): this model checks what the
/// cache builds on it, that a block has one owner at a time and is freed exactly once. (The
/// first depot, a slot array of compare-and-swaps, was caught here with a `Relaxed` put.)
pub fn cell_cache_magazines_put_racing_a_take_have_one_owner() {
    explore("cell cache: two puts vs a take", || {
        let pool = StdArc::new(Pool::new());
        let givers = [giver(&pool), giver(&pool)];
        let taker = taker(&pool);
        for g in givers {
            g.join().unwrap();
        }
        settle(&pool, vec![taker]);
    });
}

/// **Two takers racing for the one magazine in the depot: one gets it.**
///
/// One thread frees cells and puts a full magazine in the depot (D1) while two threads take
/// a magazine's worth of blocks each (D2): at most one of them gets the magazine, the other
/// finds the depot empty and allocates fresh blocks (T4). Checked as above.
///
/// Measured (release, `LOOM_MAX_PREEMPTIONS=3`): 98 executions, 0.01 s.
///
/// As above, the depot's own queue is the stand-in: the model checks the cache's use of it.
pub fn cell_cache_two_takes_racing_for_one_magazine_have_one_owner() {
    explore("cell cache: a put vs two takes", || {
        let pool = StdArc::new(Pool::new());
        let giver = giver(&pool);
        let takers = vec![taker(&pool), taker(&pool)];
        giver.join().unwrap();
        settle(&pool, takers);
    });
}
