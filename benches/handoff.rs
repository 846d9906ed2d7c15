//! The floor under any blocking round trip on this host: what the bare hand-offs a task
//! manager is built from cost between the two CPUs, with nothing of a task manager around
//! them, grouped by the host's placement of the two vCPUs (`common::Placement`).
//!
//! Three hand-offs, each a caller pinned to the first CPU and a responder pinned to the
//! second, both spinning, measured in windows of `ROUND_TRIPS` round trips:
//!
//! - `line`: one atomic word bounced back and forth (`common::line_round_trip`);
//! - `injector`: the caller pushes a heap-allocated answer word into a
//!   `crossbeam_deque::Injector` (tasker's queue for submissions from outside), the responder
//!   steals it and stores 1 into it, the caller spins on the word and frees it;
//! - `mailbox`: the same answer word handed over through one `AtomicPtr` the responder swaps
//!   empty (the least a queue can be).
//!
//! Each window lies between two probes of the line round trip; windows whose probes both
//! found the near placement (under 60 ns) or both the far one (over 90 ns) count for it. For
//! each placement it prints the windows' count and the median of their mean round trip. A
//! tasker round trip (`benches/latency.rs`, `latency_by_placement`) cannot be faster than the
//! injector's figure here: the distance between the two is what tasker adds (its cell, its
//! claim and outcome slot, admission, metrics).
//!
//! Not a criterion benchmark: the grouping by placement is the figure.
//!
//! Full run (about 20 s): `cargo bench -p tasker-benches --bench handoff`
//! CI (quick): `cargo bench -p tasker-benches --bench handoff -- --quick`

mod common;

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Placement, env_usize, line_round_trip, median, pinned_pair, quick_mode};
use crossbeam_deque::{Injector, Steal};

/// Round trips per window and hand-off.
const ROUND_TRIPS: u64 = 50_000;

/// Mean nanoseconds per round trip of `ROUND_TRIPS` hand-offs of a fresh answer word: `give`
/// hands it to the responder, whose `take` returns the next word handed to it (`None` while
/// there is none); the responder stores 1 into each word it takes.
fn round_trips<G, T>(give: G, take: T) -> u64
where
    G: Fn(*const AtomicU64) + Send + Sync,
    T: Fn() -> Option<*const AtomicU64> + Send + Sync,
{
    let (give, take) = (&give, &take);
    let elapsed = pinned_pair(
        move || {
            let mut answered = 0;
            while answered < ROUND_TRIPS {
                match take() {
                    Some(word) => {
                        // SAFETY: the caller keeps the word alive until it sees this store.
                        unsafe { (*word).store(1, Ordering::Release) };
                        answered += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
        },
        move || {
            for _ in 0..ROUND_TRIPS {
                let word = Box::into_raw(Box::new(AtomicU64::new(0)));
                give(word);
                // SAFETY: `word` is ours until freed below; the responder only stores into it.
                unsafe {
                    while (*word).load(Ordering::Acquire) == 0 {
                        std::hint::spin_loop();
                    }
                    drop(Box::from_raw(word));
                }
            }
        },
    )
    .expect("two CPUs (checked in main)");
    (elapsed.as_nanos() / u128::from(ROUND_TRIPS)) as u64
}

/// A raw pointer the queue may carry between the two threads.
struct Word(*const AtomicU64);
// SAFETY: the pointee is an atomic, kept alive by the caller until it is answered.
unsafe impl Send for Word {}

fn injector() -> u64 {
    let queue: Injector<Word> = Injector::new();
    round_trips(
        |word| queue.push(Word(word)),
        || match queue.steal() {
            Steal::Success(Word(word)) => Some(word),
            _ => None,
        },
    )
}

fn mailbox() -> u64 {
    let slot: AtomicPtr<AtomicU64> = AtomicPtr::new(ptr::null_mut());
    round_trips(
        |word| slot.store(word.cast_mut(), Ordering::Release),
        || {
            let word = slot.swap(ptr::null_mut(), Ordering::Acquire);
            (!word.is_null()).then_some(word.cast_const())
        },
    )
}

fn main() {
    if line_round_trip().is_none() {
        println!("handoff: fewer than two CPUs, skipped");
        return;
    }
    let secs = env_usize("BENCH_HANDOFF_SECS", if quick_mode() { 2 } else { 20 });
    const NAMES: [&str; 3] = ["line", "injector", "mailbox"];
    // [placement row][hand-off]: each window's mean round trip.
    let mut figures = vec![vec![Vec::new(); NAMES.len()]; Placement::GROUPS.len()];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(secs as u64) {
        let before = line_round_trip();
        let window = [line_round_trip().unwrap_or(0), injector(), mailbox()];
        let after = line_round_trip();
        let row = Placement::around(before, after).row();
        for (k, ns) in window.into_iter().enumerate() {
            figures[row][k].push(ns as f64);
        }
    }
    println!(
        "handoff: mean round trip per window ({ROUND_TRIPS} round trips), median over the \
         windows of each host placement, in ns"
    );
    for (row, group) in Placement::GROUPS.iter().enumerate() {
        let name = group.name();
        let windows = figures[row][0].len();
        if windows == 0 {
            println!("  {name:<5}   0 windows");
            continue;
        }
        let each: Vec<String> = NAMES
            .iter()
            .zip(&figures[row])
            .map(|(n, v)| format!("{n} {:.0}", median(v)))
            .collect();
        println!("  {name:<5} {windows:3} windows: {}", each.join(", "));
    }
}
