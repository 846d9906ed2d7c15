//! Bursting: worker slots above `worker_count`, made at build, parked and unparked by a
//! rate-based controller. No thread is ever spawned after `build` returns.
//!
//! The slots' own protocol (states, who moves what, why a parked slot cannot miss shutdown)
//! is in `slot`; this module is the controller that moves them.
//!
//! # The controller
//!
//! One thread made at build (only when `max_worker_count > worker_count`). A dedicated thread
//! rather than a worker's tick: bursting matters most when every worker is busy with long
//! tasks, and then no worker would get to its tick. Every `burst_interval` it reads, over the
//! metrics window: the arrival rate `λ`, the rate at which workers end tasks `μ`, the busy
//! time per second `B` (nanoseconds of execution per second, all workers), and the queued
//! tasks `q`. With the mean service time `S = B / μ`:
//!
//! ```text
//!   needed = ceil( λ·S / TARGET_UTILIZATION  +  q·S / horizon )      clamped to [base, max]
//! ```
//!
//! the workers that keep up with arrivals at 80 % utilisation, plus those that clear the
//! backlog within one metrics window (`horizon`). With no task ended in the window but tasks
//! queued (every worker stuck on something long), `needed = up + 1`.
//!
//! - `needed > up`: activate `needed - up` parked slots at once (a large deficit brings
//!   several up in one tick).
//! - the formula's value (before rounding and clamping) at least 25 % below `up - 1`,
//!   nothing queued, for `DOWN_TICKS` ticks in a row:
//!   park one burst slot (the most recently activated whose keep-alive has passed). One per
//!   decision, so capacity comes down gradually; the streak and the margin are the hysteresis
//!   that keeps it from flapping.

use std::time::{Duration, Instant};

use crate::metrics::Load;
use crate::shared::Shared;
use crate::slot::{ACTIVE, Activation, PARK_REQUESTED, PARKED, ParkRequest};
use crate::sync::{Ordering, thread};
use crate::unwind::AbortOnUnwind;

/// Workers are sized to run at this utilisation.
const TARGET_UTILIZATION: f64 = 0.8;
/// Scale down only when `needed * SURPLUS_MARGIN <= up - 1`...
const SURPLUS_MARGIN: f64 = 1.25;
/// ...for this many decisions in a row.
const DOWN_TICKS: u32 = 3;

/// The controller's inputs at one decision.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inputs {
    pub(crate) load: Load,
    /// Tasks waiting in the queues.
    pub(crate) queued: usize,
    /// Workers up: base plus burst slots up.
    pub(crate) up: usize,
    pub(crate) base: usize,
    pub(crate) max: usize,
    /// Seconds to clear a backlog in (the metrics window).
    pub(crate) horizon_secs: f64,
}

/// The controller's decision.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Activate this many slots.
    Up(usize),
    /// Park one slot.
    Down,
    Hold,
}

/// The rule in the module docs. `surplus_ticks` carries the hysteresis streak between calls.
pub(crate) fn decide(i: &Inputs, surplus_ticks: &mut u32) -> Decision {
    let Load {
        arrival_rate,
        ended_rate,
        busy_rate,
    } = i.load;
    // Workers needed, before rounding: what the rule's formula gives.
    let raw = if ended_rate > 0.0 {
        let service_secs = busy_rate / ended_rate * 1e-9;
        arrival_rate * service_secs / TARGET_UTILIZATION
            + i.queued as f64 * service_secs / i.horizon_secs
    } else if i.queued > 0 {
        (i.up + 1) as f64
    } else {
        0.0
    };
    let needed = (raw.ceil() as usize).clamp(i.base, i.max);
    if needed > i.up {
        *surplus_ticks = 0;
        return Decision::Up(needed - i.up);
    }
    // Compared unrounded and unclamped, so an idle pool (raw 0) parks down to base.
    let surplus = i.queued == 0 && i.up > i.base && raw * SURPLUS_MARGIN <= (i.up - 1) as f64;
    if !surplus {
        *surplus_ticks = 0;
        return Decision::Hold;
    }
    *surplus_ticks += 1;
    if *surplus_ticks >= DOWN_TICKS {
        *surplus_ticks = 0;
        Decision::Down
    } else {
        Decision::Hold
    }
}

/// The controller's `Down` action on slot `index`: `ACTIVE -> PARK_REQUESTED`, then wakes
/// whatever the slot may be waiting on so it sees the request: an idle slot sleeps in the
/// worker sleep protocol, and one re-making a broken resource backs off on the condvar.
/// (The models in `loom_models` act as the controller through this and
/// [`SlotState::activate`](crate::slot::SlotState::activate).)
pub(crate) fn ask_to_park<R, E>(shared: &Shared<R, E>, index: usize) -> ParkRequest {
    let request = shared.workers[index].state.request_park();
    if request == ParkRequest::Requested {
        shared.sleep.wake_all();
        shared.wake_backoff();
    }
    request
}

/// The controller thread's body.
pub(crate) fn controller<R, E>(shared: &Shared<R, E>, interval: Duration, keep_alive: Duration) {
    // The controller runs no user code: a panic here is a bug in this crate, and a dead
    // controller would leave the manager stuck at whatever size it had (see `unwind`).
    let _guard = AbortOnUnwind("the burst controller");
    let base = shared.base_workers;
    let max = shared.workers.len();
    let mut activated_at: Vec<Option<Instant>> = vec![None; max];
    let mut surplus_ticks = 0;
    // An interval too long for `Instant` means the controller never decides (it still exits
    // at shutdown).
    let mut next = Instant::now().checked_add(interval);
    loop {
        // Sleep until the next tick; shutdown notifies this condvar (see `Shared::wake_all`).
        {
            let mut lock = shared.backoff.0.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if shared.lifecycle.is_closed() {
                    return;
                }
                let now = Instant::now();
                let Some(at) = next else {
                    lock = shared
                        .backoff
                        .1
                        .wait(lock)
                        .unwrap_or_else(|e| e.into_inner());
                    continue;
                };
                if now >= at {
                    break;
                }
                lock = shared
                    .backoff
                    .1
                    .wait_timeout(lock, at - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let now = Instant::now();
        next = next
            .and_then(|at| at.checked_add(interval))
            .map(|at| if at < now { now + interval } else { at });

        let burst = &shared.workers[base..];
        // Slots asked to park are on their way down: not counted as up.
        let up = base + burst.iter().filter(|w| w.state.load() == ACTIVE).count();
        let inputs = Inputs {
            load: shared
                .metrics
                .load(shared.workers.iter().map(|w| &w.metrics)),
            queued: shared.queues.normal_len() + shared.queues.priority_len(),
            up,
            base,
            max,
            horizon_secs: shared.metrics.ticks.window().as_secs_f64(),
        };
        match decide(&inputs, &mut surplus_ticks) {
            Decision::Up(n) => {
                let mut left = n;
                // First take back slots asked to park (they still hold their resource)...
                for w in burst {
                    if left > 0
                        && w.state.load() == PARK_REQUESTED
                        && w.state.activate() == Activation::Activated
                    {
                        left -= 1;
                    }
                }
                // ...then activate parked ones, skipping those still backing off.
                for (i, w) in burst.iter().enumerate() {
                    if left == 0 {
                        break;
                    }
                    let failures = w.activation_failures.load(Ordering::Relaxed).min(6);
                    let backing_off = failures > 0
                        && activated_at[base + i].is_some_and(|t| {
                            now.duration_since(t) < interval.saturating_mul(1 << failures)
                        });
                    if w.state.load() == PARKED
                        && !backing_off
                        && w.state.activate() == Activation::Activated
                    {
                        activated_at[base + i] = Some(now);
                        left -= 1;
                    }
                }
            }
            Decision::Down => {
                let candidate = (base..max).rev().find(|&i| {
                    shared.workers[i].state.load() == ACTIVE
                        && activated_at[i].is_none_or(|t| now.duration_since(t) >= keep_alive)
                });
                if let Some(i) = candidate {
                    let _ = ask_to_park(shared, i);
                }
            }
            Decision::Hold => {}
        }
        thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(arrival: f64, ended: f64, service_ms: f64, queued: usize, up: usize) -> Inputs {
        Inputs {
            load: Load {
                arrival_rate: arrival,
                ended_rate: ended,
                busy_rate: ended * service_ms * 1e6,
            },
            queued,
            up,
            base: 2,
            max: 8,
            horizon_secs: 1.0,
        }
    }

    #[test]
    fn a_deficit_brings_several_slots_up_at_once() {
        let mut streak = 0;
        // 1000 tasks/s of 4 ms need 5 workers at 80 %: from 2, three more at once.
        assert_eq!(
            decide(&inputs(1000.0, 500.0, 4.0, 0, 2), &mut streak),
            Decision::Up(3)
        );
        // A backlog adds workers to clear it within the horizon: 500 queued × 4 ms = 2 more.
        assert_eq!(
            decide(&inputs(1000.0, 500.0, 4.0, 500, 2), &mut streak),
            Decision::Up(5)
        );
    }

    #[test]
    fn never_above_max_or_below_base() {
        let mut streak = 0;
        assert_eq!(
            decide(&inputs(1e6, 1.0, 1000.0, 0, 2), &mut streak),
            Decision::Up(6)
        );
        assert_eq!(
            decide(&inputs(1e6, 1.0, 1000.0, 0, 8), &mut streak),
            Decision::Hold
        );
        for _ in 0..10 {
            assert_eq!(
                decide(&inputs(0.0, 0.0, 0.0, 0, 2), &mut streak),
                Decision::Hold
            );
        }
    }

    #[test]
    fn stuck_workers_with_a_backlog_get_one_more() {
        let mut streak = 0;
        assert_eq!(
            decide(&inputs(0.0, 0.0, 0.0, 10, 3), &mut streak),
            Decision::Up(1)
        );
    }

    #[test]
    fn scaling_down_waits_for_a_streak_of_surplus() {
        let mut streak = 0;
        let idle = inputs(10.0, 10.0, 1.0, 0, 6);
        assert_eq!(decide(&idle, &mut streak), Decision::Hold);
        assert_eq!(decide(&idle, &mut streak), Decision::Hold);
        assert_eq!(decide(&idle, &mut streak), Decision::Down);
        // The streak restarts after a decision...
        assert_eq!(decide(&idle, &mut streak), Decision::Hold);
        // ...and after any tick without surplus.
        assert_eq!(
            decide(&inputs(10.0, 10.0, 1.0, 3, 6), &mut streak),
            Decision::Hold
        );
        assert_eq!(decide(&idle, &mut streak), Decision::Hold);
        assert_eq!(decide(&idle, &mut streak), Decision::Hold);
        assert_eq!(decide(&idle, &mut streak), Decision::Down);
    }

    #[test]
    fn an_idle_pool_parks_down_to_base() {
        let mut streak = 0;
        let mut up = 4;
        for _ in 0..20 {
            if decide(&inputs(0.0, 0.0, 0.0, 0, up), &mut streak) == Decision::Down {
                up -= 1;
            }
        }
        assert_eq!(up, 2);
    }

    #[test]
    fn a_small_surplus_does_not_scale_down() {
        let mut streak = 0;
        // 1000/s of 4 ms needs 5 workers; with 6 up the margin is not met: hold forever.
        for _ in 0..10 {
            assert_eq!(
                decide(&inputs(1000.0, 1000.0, 4.0, 0, 6), &mut streak),
                Decision::Hold
            );
        }
    }
}
