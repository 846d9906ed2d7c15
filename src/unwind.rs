//! Panic capture: where tasker catches what user code throws.
//!
//! # The panic policy
//!
//! User code may panic anywhere: a task body, a callback, `on_create`, `on_destroy`,
//! `check_health`, a [`Logger`](crate::Logger), a [`MetricsCollector`](crate::MetricsCollector),
//! and the `Drop` of anything tasker drops for the user (a closure, a value, an error, a
//! resource, a panic payload). Each such call is made through [`catch`] or [`drop_quietly`]:
//! the panic is caught where it happens, turned into a message, logged and counted
//! ([`TaskMetrics::total_user_panics`](crate::TaskMetrics::total_user_panics)), and an outcome
//! that was already decided stays decided. Nothing a user's code does takes a worker down.
//!
//! A panic in tasker's own bookkeeping is a bug: its invariants can no longer be trusted, so
//! the thread it happens on aborts the process ([`AbortOnUnwind`]) rather than leave
//! submitters waiting forever.
//!
//! # Payloads
//!
//! A panic payload is user data too: its `Drop` may panic in turn. [`catch`] reads the
//! message and drops the payload under a second catch; a payload whose drop panics again has
//! that second payload leaked (`mem::forget`) rather than dropped, so the chain ends.

use std::any::Any;
use std::mem;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Payload of a caught panic, reduced to its message.
pub(crate) type PanicMessage = String;

/// Runs `f`, catching a panic: `Err` carries the panic's message (see the module docs).
#[inline]
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, PanicMessage> {
    catch_unwind(AssertUnwindSafe(f)).map_err(message_of)
}

/// Drops `value`, catching a panic in its `Drop`.
#[inline]
pub(crate) fn drop_quietly<T>(value: T) -> Result<(), PanicMessage> {
    if mem::needs_drop::<T>() {
        catch(move || drop(value))
    } else {
        mem::forget(value);
        Ok(())
    }
}

/// The message of a caught panic; the payload is dropped under a catch of its own.
#[cold]
pub(crate) fn message_of(payload: Box<dyn Any + Send>) -> PanicMessage {
    let message = panic_message(payload.as_ref());
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // The payload's own drop panicked: leak that second payload (see the module docs).
        mem::forget(again);
    }
    message
}

/// The text of a panic payload (`&str` or `String`; anything else is named as such).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> PanicMessage {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Aborts the process if dropped while its thread unwinds: held by tasker's own threads
/// (workers, the burst controller) around their bodies. See "The panic policy".
pub(crate) struct AbortOnUnwind(pub(crate) &'static str);

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "tasker: {}'s own bookkeeping panicked (a bug in tasker); aborting",
                self.0
            );
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("drop panicked");
        }
    }

    #[test]
    fn catch_returns_the_value_or_the_message() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> u8 { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
        assert_eq!(
            catch(|| std::panic::panic_any(42_u8)),
            Err("non-string panic payload".into())
        );
    }

    #[test]
    fn a_drop_that_panics_is_caught() {
        assert_eq!(drop_quietly(PanicsOnDrop), Err("drop panicked".into()));
        assert_eq!(drop_quietly(vec![1, 2]), Ok(()));
    }

    #[test]
    fn a_payload_whose_drop_panics_ends_the_chain() {
        // Dropping the payload panics again: the first message is returned, the second
        // payload is leaked, and nothing escapes.
        let got = catch(|| std::panic::panic_any(PanicsOnDrop));
        assert_eq!(got, Err("non-string panic payload".into()));
    }
}
