//! The one place that chooses the synchronisation primitives.
//!
//! Every module imports its atomics, `Arc`, `Mutex` and the futex from here, never from `std`
//! directly, so that a model-checking build (`cfg(loom)`) can swap them in one file.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
pub(crate) use std::sync::{Arc, Condvar, Mutex};

/// A futex word: threads sleep while it holds an expected value.
///
/// Thin wrapper over `atomic-wait` so the rest of the crate names one type.
pub(crate) mod futex {
    use super::AtomicU32;

    /// Sleeps while `word == expected`. May return spuriously: callers re-check their condition.
    #[inline]
    pub(crate) fn wait(word: &AtomicU32, expected: u32) {
        atomic_wait::wait(word, expected);
    }

    /// Wakes at most one thread sleeping in [`wait`] on `word`.
    #[inline]
    pub(crate) fn wake_one(word: &AtomicU32) {
        atomic_wait::wake_one(word);
    }

    /// Wakes every thread sleeping in [`wait`] on `word`.
    #[inline]
    pub(crate) fn wake_all(word: &AtomicU32) {
        atomic_wait::wake_all(word);
    }
}
