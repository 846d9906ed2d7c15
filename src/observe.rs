//! The one observation point: every event tasker reports (a task accepted, an attempt ended, a
//! resource replaced, a burst slot up, a user hook that failed...) is one [`Event`] value
//! handed to [`Observer::observe`], which feeds, in this order:
//!
//! 1. the built-in tally ([`Metrics`]: totals, rate windows) — the worker's own when the event
//!    happened on a worker (single-writer), the shared one otherwise;
//! 2. the `metrics` facade (cargo feature `metrics`), through the tally's methods;
//! 3. the user's [`MetricsCollector`], if any;
//! 4. the [`Logger`], for the events an operator should see (never for a task that succeeded),
//!    as one structured [`LogEvent`] (user errors in it as the builder's `error_formatter`
//!    wrote them).
//!
//! The collector and the logger are user code: each call is made under
//! [`catch`](crate::unwind::catch). A collector's panic is logged and counted; a
//! logger's panic is counted (logging it would call the logger that just failed). Neither
//! changes anything the event reports. Latency histograms are not here: they are the worker's
//! own recorder, written on the task path without any sharing (see `metrics::recorder`).

use std::time::Duration;

use crate::clock::Stamp;
use crate::log::{LogEvent, LogKind, LogLevel, Logger};
use crate::metrics::collector::{MetricsCollector, TaskLifecycle, TaskOutcome, WorkerEvent};
use crate::metrics::{Ended, Metrics, Tally};
use crate::recycle::ReplaceReason;
use crate::unwind;

/// One attempt of a task ended: its terminal outcome, or [`TaskOutcome::Retried`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskEnd {
    pub(crate) queued_at: Stamp,
    /// `None`: resolved without running this time (killed, cancelled, or `run_task` could not
    /// make a resource).
    pub(crate) started_at: Option<Stamp>,
    pub(crate) finished_at: Stamp,
    /// Runs so far, counting this one.
    pub(crate) attempt: u32,
    pub(crate) priority: bool,
    pub(crate) outcome: TaskOutcome,
}

/// Where user code panicked, when tasker only had to catch it (a task body's panic is an
/// outcome, [`TaskOutcome::Panicked`], not one of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// A callback receiving its outcome.
    Callback,
    /// `check_health` (the error then counts as unhealthy).
    CheckHealth,
    /// `on_destroy` (the resource is gone either way).
    OnDestroy,
    /// The `Drop` of something tasker dropped for the user: what it was.
    Drop(&'static str),
    /// The [`MetricsCollector`].
    Collector,
    /// `validate` (the resource then counts as invalid and is replaced).
    Validate,
    /// The builder's `error_formatter` (the log then leaves the error out).
    ErrorFormatter,
}

/// Everything tasker reports, each handed to [`Observer::observe`] once.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event<'a> {
    /// A task was accepted (queued, or a `run_task` call began).
    Arrived { at: Stamp, priority: bool },
    /// One attempt of a task ended.
    Ended(TaskEnd),
    /// A broken resource was destroyed and is being replaced: a worker's, or (`worker: None`)
    /// one of `run_task`'s pool.
    Replaced {
        worker: Option<usize>,
        panicked: bool,
        /// The panic's message, or the unhealthy error as the builder's formatter wrote it.
        detail: Option<&'a str>,
    },
    /// A healthy resource was destroyed by the lifecycle policy (see `recycle`) before its
    /// next task: a worker's, or (`worker: None`) one of `run_task`'s pool.
    Recycled {
        worker: Option<usize>,
        reason: ReplaceReason,
    },
    /// `on_create` failed for a worker: it retries in `retry_in`, or (`None`) it was a burst
    /// slot activating, which stays parked.
    CreateFailed {
        worker: usize,
        /// The error, as the builder's formatter wrote it (none without one).
        error: Option<&'a str>,
        panic: Option<&'a str>,
        retry_in: Option<Duration>,
    },
    /// `on_create` failed while refilling `run_task`'s pool: it shrinks by one.
    PoolRefillFailed {
        error: Option<&'a str>,
        panic: Option<&'a str>,
    },
    /// A burst slot came up (`up`) or parked.
    Burst { worker: usize, up: bool },
    /// `on_destroy` returned an error.
    DestroyFailed { error: Option<&'a str> },
    /// User code panicked where tasker catches it (see [`Site`]).
    UserPanic { site: Site, message: &'a str },
    /// A worker could not be pinned to its CPU.
    PinFailed { worker: usize, core: usize },
    /// `stop` (`kill: false`) or `kill` began the shutdown.
    ShutdownBegun { kill: bool },
}

/// The metrics and the logger, borrowed together: see the module docs.
#[derive(Clone, Copy)]
pub(crate) struct Observer<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) logger: &'a dyn Logger,
}

impl Observer<'_> {
    /// Hands `event` to every observer (see the module docs). `own` is the calling worker's
    /// tally (single writer); `None` off the workers.
    #[inline]
    pub(crate) fn observe(&self, event: Event<'_>, own: Option<&Tally>) {
        let metrics = self.metrics;
        match event {
            Event::Arrived { at, priority } => {
                metrics.arrival(at, own);
                self.collect(|c| c.record_arrival(priority));
            }
            Event::Ended(end) => {
                let ended = match end.outcome {
                    TaskOutcome::Completed => Ended::Completed,
                    TaskOutcome::Panicked => Ended::Panicked,
                    TaskOutcome::Retried => Ended::Retried,
                    _ => Ended::Failed,
                };
                match own {
                    Some(tally) => metrics.worker_ended(tally, ended, end.finished_at),
                    None => metrics.outside_ended(ended, end.finished_at),
                }
                if metrics.collector.is_some() {
                    self.collect_end(&end);
                }
                if !matches!(end.outcome, TaskOutcome::Completed) {
                    self.log(&event);
                }
            }
            Event::Replaced { worker, .. } => {
                metrics.replaced(own);
                self.collect(|c| {
                    c.record_worker_event(match worker {
                        Some(worker) => WorkerEvent::ResourceReplaced { worker },
                        None => WorkerEvent::PoolResourceReplaced,
                    })
                });
                self.log(&event);
            }
            Event::Recycled { worker, reason } => {
                metrics.recycled(own, reason);
                self.collect(|c| {
                    c.record_worker_event(match worker {
                        Some(worker) => WorkerEvent::ResourceRecycled { worker, reason },
                        None => WorkerEvent::PoolResourceRecycled { reason },
                    })
                });
                self.log(&event);
            }
            Event::CreateFailed { worker, .. } => {
                self.collect(|c| {
                    c.record_worker_event(WorkerEvent::ResourceCreationFailed { worker })
                });
                self.log(&event);
            }
            Event::Burst { worker, up } => {
                self.collect(|c| {
                    c.record_worker_event(if up {
                        WorkerEvent::BurstUp { worker }
                    } else {
                        WorkerEvent::BurstDown { worker }
                    })
                });
                self.log(&event);
            }
            Event::UserPanic { .. } => {
                metrics.user_panicked();
                self.log(&event);
            }
            Event::PoolRefillFailed { .. }
            | Event::DestroyFailed { .. }
            | Event::PinFailed { .. }
            | Event::ShutdownBegun { .. } => self.log(&event),
        }
    }

    /// A `UserPanic` event, if `caught` is a caught panic.
    #[inline]
    pub(crate) fn caught(&self, site: Site, caught: Result<(), unwind::PanicMessage>) {
        if let Err(message) = caught {
            self.user_panic(site, &message);
        }
    }

    #[cold]
    fn user_panic(&self, site: Site, message: &str) {
        self.observe(Event::UserPanic { site, message }, None);
    }

    /// Calls the collector, if any, catching its panic.
    #[inline]
    fn collect(&self, call: impl FnOnce(&dyn MetricsCollector)) {
        if let Some(c) = &self.metrics.collector
            && let Err(message) = unwind::catch(|| call(&**c))
        {
            self.user_panic(Site::Collector, &message);
        }
    }

    fn collect_end(&self, end: &TaskEnd) {
        let clock = &self.metrics.clock;
        let task = TaskLifecycle {
            queued_at: clock.instant(end.queued_at),
            started_at: end.started_at.map(|t| clock.instant(t)),
            finished_at: clock.instant(end.finished_at),
            attempt: end.attempt,
            priority: end.priority,
            outcome: end.outcome,
        };
        self.collect(|c| match end.outcome {
            TaskOutcome::Completed => c.record_completion(&task),
            TaskOutcome::Retried => c.record_retry(&task),
            _ => c.record_failure(&task),
        });
    }

    /// Hands the event's [`LogEvent`], if it has one, to the logger, catching its panic.
    #[cold]
    fn log(&self, event: &Event<'_>) {
        let Some(entry) = log_event(event) else {
            return;
        };
        let logger = self.logger;
        if unwind::catch(|| logger.log(&entry)).is_err() {
            // Not logged: the logger is what failed.
            self.metrics.user_panicked();
        }
    }
}

/// A task outcome's name in logs.
fn outcome_name(outcome: TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::Completed => "completed",
        TaskOutcome::Failed => "failed",
        TaskOutcome::Panicked => "panicked",
        TaskOutcome::Killed => "killed",
        TaskOutcome::Cancelled => "cancelled",
        TaskOutcome::DeadlineExceeded => "deadline_exceeded",
        TaskOutcome::Retried => "retried",
    }
}

/// The structured log event of an event, if it has one.
fn log_event<'a>(event: &Event<'a>) -> Option<LogEvent<'a>> {
    use LogLevel::{Debug, Error, Info, Warn};
    Some(match *event {
        Event::Arrived { .. } => return None,
        Event::Ended(end) => match end.outcome {
            TaskOutcome::Completed => return None,
            TaskOutcome::Retried => LogEvent {
                attempt: Some(end.attempt),
                outcome: Some(outcome_name(end.outcome)),
                ..LogEvent::new(
                    Debug,
                    LogKind::TaskRetried,
                    "task returned an unhealthy error; re-queued with priority",
                )
            },
            outcome => LogEvent {
                attempt: Some(end.attempt),
                outcome: Some(outcome_name(outcome)),
                ..LogEvent::new(Debug, LogKind::TaskEnded, "task ended without a value")
            },
        },
        Event::Replaced {
            worker,
            panicked,
            detail,
        } => {
            let (reason, error, panic) = if panicked {
                ("task_panicked", None, detail)
            } else {
                ("unhealthy_error", detail, None)
            };
            LogEvent {
                worker,
                reason: Some(reason),
                error,
                panic,
                ..LogEvent::new(
                    Info,
                    LogKind::ResourceReplaced,
                    "resource broken; destroying it and making a new one",
                )
            }
        }
        Event::Recycled { worker, reason } => LogEvent {
            worker,
            reason: Some(reason.as_str()),
            ..LogEvent::new(
                Info,
                LogKind::ResourceRecycled,
                "replacing the resource before its next task",
            )
        },
        Event::CreateFailed {
            worker,
            error,
            panic,
            retry_in,
        } => LogEvent {
            worker: Some(worker),
            error,
            panic,
            retry_in,
            ..LogEvent::new(
                Warn,
                LogKind::CreateFailed,
                match retry_in {
                    Some(_) => "on_create failed; inactive, retrying",
                    None => "on_create failed; the burst slot stays parked",
                },
            )
        },
        Event::PoolRefillFailed { error, panic } => LogEvent {
            error,
            panic,
            ..LogEvent::new(
                Warn,
                LogKind::PoolRefillFailed,
                "on_create failed while refilling the run_task pool; it shrinks by one",
            )
        },
        Event::Burst { worker, up } => {
            let (kind, message) = if up {
                (LogKind::BurstUp, "up (burst)")
            } else {
                (LogKind::BurstDown, "parked")
            };
            LogEvent {
                worker: Some(worker),
                ..LogEvent::new(Info, kind, message)
            }
        }
        Event::DestroyFailed { error } => LogEvent {
            error,
            ..LogEvent::new(
                Warn,
                LogKind::DestroyFailed,
                "on_destroy returned an error; the resource is gone",
            )
        },
        Event::UserPanic { site, message } => {
            let (level, name, dropping, text) = match site {
                Site::Callback => (
                    Error,
                    "callback",
                    None,
                    "a task callback panicked; the worker carries on",
                ),
                Site::CheckHealth => (
                    Warn,
                    "check_health",
                    None,
                    "check_health panicked; treating the error as unhealthy",
                ),
                Site::OnDestroy => (
                    Warn,
                    "on_destroy",
                    None,
                    "on_destroy panicked; the resource is gone",
                ),
                Site::Drop(what) => (
                    Error,
                    "drop",
                    Some(what),
                    "a drop panicked; caught, nothing else changes",
                ),
                Site::Collector => (
                    Error,
                    "collector",
                    None,
                    "the metrics collector panicked; caught",
                ),
                Site::Validate => (
                    Warn,
                    "validate",
                    None,
                    "validate panicked; replacing the resource",
                ),
                Site::ErrorFormatter => (
                    Error,
                    "error_formatter",
                    None,
                    "error_formatter panicked; the error is left out of the log",
                ),
            };
            LogEvent {
                site: Some(name),
                dropping,
                panic: Some(message),
                ..LogEvent::new(level, LogKind::UserPanic, text)
            }
        }
        Event::PinFailed { worker, core } => LogEvent {
            worker: Some(worker),
            core: Some(core),
            ..LogEvent::new(
                Warn,
                LogKind::PinFailed,
                "could not pin to its CPU; running unpinned",
            )
        },
        Event::ShutdownBegun { kill } => LogEvent {
            reason: Some(if kill { "kill" } else { "stop" }),
            ..LogEvent::new(Info, LogKind::ShutdownBegun, "shutdown begun")
        },
    })
}
