//! A burst slot's state word: parked, active, asked to park, closed.
//!
//! Burst slots are worker slots above `worker_count`, made at build and parked and unparked by
//! the controller (`burst`). This module is the protocol between a slot's thread, the
//! controller and shutdown; it knows nothing of the manager around it.
//!
//! # Slot states
//!
//! Each burst slot has one state word (also its futex):
//!
//! ```text
//!            activate (controller)            request_park (controller)
//!   PARKED ─────────────────────────> ACTIVE ───────────────────────────> PARK_REQUESTED
//!     ^  │                              ^  │ on_create failed (slot)              │  │
//!     │  │ close (shutdown)             │  └──────────> PARKED                    │  │
//!     │  v                              └───── activate again (controller) ───────┘  │
//!   CLOSED                                                                           │
//!     └───────────────────────── parked (slot, between tasks) <──────────────────────┘
//! ```
//!
//! Who moves what: the controller moves `PARKED -> ACTIVE` and `ACTIVE -> PARK_REQUESTED`
//! (and back: a slot asked to park is taken back first when more workers are needed); the
//! slot's own thread moves `ACTIVE -> PARKED` (its `on_create` failed: the controller then
//! backs off before trying that slot again, doubling the wait per failure in a row up to 64
//! intervals) and `PARK_REQUESTED -> PARKED` (it parked); shutdown moves `PARKED -> CLOSED`. Every move is a
//! compare-and-swap, so two movers never both win.
//!
//! A slot parks itself only between tasks: it notices `PARK_REQUESTED` before it looks for a
//! task or before it sleeps, hands its local deque back to the normal injector, destroys its
//! resource (unless `keep_burst_resources`), and stores `PARKED`. A running task is never
//! interrupted.
//!
//! # Why a parked slot cannot miss shutdown
//!
//! A parked slot loops: load its state; if `PARKED`, check the lifecycle's `CLOSED` bit, then
//! `futex_wait(state, PARKED)`. Shutdown sets `CLOSED` first, then CASes every `PARKED` slot to
//! `CLOSED` and wakes it. All SeqCst: either the slot's check sees `CLOSED`, or shutdown's CAS
//! comes after the slot stored `PARKED` and changes the word, so the wait returns at once.
//!

use crate::sync::{Futex, Ordering};

pub(crate) const PARKED: u32 = 0;
pub(crate) const ACTIVE: u32 = 1;
pub(crate) const PARK_REQUESTED: u32 = 2;
pub(crate) const CLOSED: u32 = 3;

/// What a parked slot's wait ended with.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wakeup {
    /// The controller activated the slot.
    Activate,
    /// Shutdown: the slot's thread exits.
    Exit,
}

/// What [`SlotState::activate`] did. Every move is a compare-and-swap, so another mover may
/// have changed the word first: the caller must look.
#[must_use = "the slot may not have been parked: check before counting it up"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `PARKED` or `PARK_REQUESTED` -> `ACTIVE`; the slot's thread was woken.
    Activated,
    /// The word was neither (already active, or closed): nothing changed.
    NotParked,
}

/// What [`SlotState::request_park`] did.
#[must_use = "the slot may not have been active: check before counting it down"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParkRequest {
    /// `ACTIVE -> PARK_REQUESTED`: the slot parks at its next look between tasks.
    Requested,
    /// The slot was not active (parked, already asked, or closed): nothing changed.
    NotActive,
}

/// What [`SlotState::parked_on_request`] did.
#[must_use = "the slot may have been activated again: it then stays up"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parking {
    /// `PARK_REQUESTED -> PARKED`.
    Parked,
    /// The controller took the request back first (`PARK_REQUESTED -> ACTIVE`).
    ActivatedAgain,
}

/// A burst slot's state word.
#[derive(Default)]
pub(crate) struct SlotState(Futex);

impl SlotState {
    pub(crate) fn load(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether the slot is up (activating, active, or asked to park but not parked yet).
    pub(crate) fn is_up(&self) -> bool {
        matches!(self.load(), ACTIVE | PARK_REQUESTED)
    }

    /// A slot thread: waits while parked. `closed` reads the lifecycle's `CLOSED` bit.
    pub(crate) fn wait_activation(&self, closed: impl Fn() -> bool) -> Wakeup {
        loop {
            match self.load() {
                ACTIVE => return Wakeup::Activate,
                CLOSED => return Wakeup::Exit,
                // Activated and asked to park again before this thread ever ran: it is parked
                // already. Without this the futex wait below (for PARKED) would return at once,
                // forever: a spinning slot.
                PARK_REQUESTED => {
                    let _ = self.0.compare_exchange(
                        PARK_REQUESTED,
                        PARKED,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                _ => {
                    if closed() {
                        return Wakeup::Exit;
                    }
                    self.0.wait(PARKED);
                }
            }
        }
    }

    /// A slot thread: the controller asked it to park.
    #[inline]
    pub(crate) fn park_requested(&self) -> bool {
        self.0.load(Ordering::Acquire) == PARK_REQUESTED
    }

    /// A slot thread: parked after a request (`PARK_REQUESTED -> PARKED`), unless the
    /// controller activated it again meanwhile (`PARK_REQUESTED -> ACTIVE`): it then stays up.
    pub(crate) fn parked_on_request(&self) -> Parking {
        match self
            .0
            .compare_exchange(PARK_REQUESTED, PARKED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Parking::Parked,
            Err(_) => Parking::ActivatedAgain,
        }
    }

    /// A slot thread: its `on_create` failed while activating; back to parked (from `ACTIVE`,
    /// or from `PARK_REQUESTED` if the controller meanwhile asked it to park anyway).
    pub(crate) fn activation_failed(&self) {
        let _ = self
            .0
            .compare_exchange(ACTIVE, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            .or_else(|_| {
                self.0
                    .compare_exchange(PARK_REQUESTED, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            });
    }

    /// Controller: `PARKED -> ACTIVE` (or cancels a pending park request) and wakes the slot.
    pub(crate) fn activate(&self) -> Activation {
        let moved = self
            .0
            .compare_exchange(PARKED, ACTIVE, Ordering::SeqCst, Ordering::SeqCst)
            .or_else(|_| {
                self.0
                    .compare_exchange(PARK_REQUESTED, ACTIVE, Ordering::SeqCst, Ordering::SeqCst)
            });
        match moved {
            Ok(_) => {
                self.0.wake_one();
                Activation::Activated
            }
            Err(_) => Activation::NotParked,
        }
    }

    /// Controller: `ACTIVE -> PARK_REQUESTED`.
    pub(crate) fn request_park(&self) -> ParkRequest {
        match self
            .0
            .compare_exchange(ACTIVE, PARK_REQUESTED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => ParkRequest::Requested,
            Err(_) => ParkRequest::NotActive,
        }
    }

    /// Shutdown: `PARKED -> CLOSED`, waking the slot so it exits.
    pub(crate) fn close(&self) {
        if self
            .0
            .compare_exchange(PARKED, CLOSED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.0.wake_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::thread;

    #[test]
    fn slot_state_transitions() {
        let s = SlotState::default();
        assert!(!s.is_up());
        assert_eq!(
            s.request_park(),
            ParkRequest::NotActive,
            "a parked slot cannot be asked to park"
        );
        assert_eq!(s.activate(), Activation::Activated);
        assert!(s.is_up());
        assert_eq!(s.request_park(), ParkRequest::Requested);
        assert!(s.park_requested());
        assert_eq!(
            s.activate(),
            Activation::Activated,
            "a pending park request can be cancelled"
        );
        assert!(!s.park_requested());
        assert_eq!(s.request_park(), ParkRequest::Requested);
        assert_eq!(s.parked_on_request(), Parking::Parked);
        assert!(!s.is_up());
        s.close();
        assert_eq!(s.load(), CLOSED);
        assert_eq!(
            s.activate(),
            Activation::NotParked,
            "a closed slot stays closed"
        );
        assert_eq!(s.wait_activation(|| false), Wakeup::Exit);
    }

    #[test]
    fn a_slot_activated_then_asked_to_park_before_it_ran_parks_instead_of_spinning() {
        let s = SlotState::default();
        assert_eq!(s.activate(), Activation::Activated);
        assert_eq!(s.request_park(), ParkRequest::Requested);
        // The slot's thread only now reaches its wait: it must settle to PARKED and keep
        // waiting, so here (with `closed` true on the second look) it exits instead of
        // spinning on a futex word that is not PARKED.
        let looks = std::cell::Cell::new(0);
        let wakeup = s.wait_activation(|| {
            looks.set(looks.get() + 1);
            true
        });
        assert_eq!(wakeup, Wakeup::Exit);
        assert_eq!(s.load(), PARKED);
        assert_eq!(looks.get(), 1);
    }

    #[test]
    fn a_parked_slot_wakes_on_activation_and_on_close() {
        for close in [false, true] {
            let s = crate::sync::Arc::new(SlotState::default());
            let t = {
                let s = s.clone();
                thread::spawn(move || s.wait_activation(|| false))
            };
            if close {
                s.close();
            } else {
                assert_eq!(s.activate(), Activation::Activated);
            }
            let expected = if close {
                Wakeup::Exit
            } else {
                Wakeup::Activate
            };
            assert_eq!(t.join().unwrap(), expected);
        }
    }
}
