//! The resource lifecycle policy: when a healthy resource is destroyed and replaced anyway,
//! before its next task (`Builder::resource_max_lifetime`, `resource_max_uses`, `validate`,
//! `validate_after_idle`).
//!
//! # Who touches what
//!
//! Each resource carries an [`Age`] (when it was made, how many tasks ran on it, when the last
//! one ended). A worker's resource and its `Age` are the worker's own; a `run_task` pool
//! resource travels with its `Age` through the pool, so whoever took it from the pool holds
//! both. Nobody else reads them: no atomics here.
//!
//! # When the policy is applied
//!
//! Only between tasks, by the thread that holds the resource, never while a task runs on it:
//! a worker asks [`Recycle::due`] after it took a task and before it runs it (so the idle time
//! and the age are those the task would see), `run_task` when it takes a resource from the
//! pool. The checks, in order, the first that fires deciding the [`ReplaceReason`]:
//!
//! 1. older than `resource_max_lifetime` → [`ReplaceReason::Lifetime`];
//! 2. `resource_max_uses` tasks ran on it → [`ReplaceReason::Uses`];
//! 3. idle at least `validate_after_idle` (`ZERO`: always) and `validate` returned `false`
//!    (or panicked) → [`ReplaceReason::Validation`].
//!
//! A fresh resource is not validated before its first task (it was just made). With no knob
//! set, [`Recycle::due`] is one branch on a `bool`: the task path reads no clock for it.

use std::time::Duration;

use crate::clock::Stamp;
use crate::observe::{Observer, Site};
use crate::unwind;

pub(crate) type ValidateFn<R> = dyn Fn(&mut R) -> bool + Send + Sync;

/// Why a healthy resource was destroyed and replaced before its next task.
///
/// Counted in [`TaskMetrics`](crate::TaskMetrics) (`resources_replaced_lifetime`,
/// `resources_replaced_uses`, `resources_replaced_validation`) and reported to a
/// [`MetricsCollector`](crate::MetricsCollector) as
/// [`WorkerEvent::ResourceRecycled`](crate::WorkerEvent::ResourceRecycled).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tasker::{MetricsCollector, ReplaceReason, WorkerEvent};
///
/// #[derive(Default)]
/// struct ByUses(AtomicU64);
/// impl MetricsCollector for ByUses {
///     fn record_worker_event(&self, event: WorkerEvent) {
///         if let WorkerEvent::ResourceRecycled { reason: ReplaceReason::Uses, .. } = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// let recycled = Arc::new(ByUses::default());
/// let manager = tasker::TaskManager::builder()
///     .on_create(|| Ok::<(), std::io::Error>(()))
///     .resource_max_uses(2)
///     .worker_count(1)
///     .max_worker_count(1)
///     .metrics_collector(recycled.clone())
///     .build()?;
/// for _ in 0..3 {
///     manager.queue_task(|_, _| Ok(()))?;
/// }
/// manager.stop()?;
/// // The third task found a resource that had run two: it was replaced first.
/// assert_eq!(recycled.0.load(Ordering::Relaxed), 1);
/// assert_eq!(manager.metrics().resources_replaced_uses, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplaceReason {
    /// It was older than [`resource_max_lifetime`](crate::Builder::resource_max_lifetime).
    Lifetime,
    /// It had run [`resource_max_uses`](crate::Builder::resource_max_uses) tasks.
    Uses,
    /// It sat idle and [`validate`](crate::Builder::validate) returned `false` (or panicked).
    Validation,
}

impl ReplaceReason {
    /// A short name for logs: `lifetime`, `uses` or `validation`.
    ///
    /// ```
    /// assert_eq!(tasker::ReplaceReason::Lifetime.as_str(), "lifetime");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ReplaceReason::Lifetime => "lifetime",
            ReplaceReason::Uses => "uses",
            ReplaceReason::Validation => "validation",
        }
    }
}

/// One resource's history, kept next to it by whoever holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Age {
    born: Stamp,
    uses: u64,
    last_used: Stamp,
}

impl Age {
    /// A resource made at `now`.
    pub(crate) fn new(now: Stamp) -> Self {
        Age {
            born: now,
            uses: 0,
            last_used: now,
        }
    }

    /// A task ran on it and ended at `now`.
    #[inline]
    pub(crate) fn used(&mut self, now: Stamp) {
        self.uses += 1;
        self.last_used = self.last_used.max(now);
    }
}

/// The builder's lifecycle knobs, as the workers and `run_task` apply them.
pub(crate) struct Recycle<R> {
    /// Nanoseconds; `None`: no limit.
    max_lifetime: Option<u64>,
    max_uses: Option<u64>,
    validate: Option<Box<ValidateFn<R>>>,
    /// Nanoseconds of idleness after which `validate` is called; 0: before every task.
    validate_after_idle: u64,
    /// Some knob is set (else `due` answers at once).
    active: bool,
}

impl<R> Recycle<R> {
    pub(crate) fn new(
        max_lifetime: Option<Duration>,
        max_uses: Option<u64>,
        validate: Option<Box<ValidateFn<R>>>,
        validate_after_idle: Duration,
    ) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Recycle {
            active: max_lifetime.is_some() || max_uses.is_some() || validate.is_some(),
            max_lifetime: max_lifetime.map(nanos),
            max_uses,
            validate,
            validate_after_idle: nanos(validate_after_idle),
        }
    }

    /// Whether any knob is set: only then does a resource's `Age` need the clock.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// Decides, before a task runs on `resource` at `now()`, whether the resource must be
    /// replaced first (see the module docs for the order). `now` is read only if a knob that
    /// needs it is set. `validate` is user code: called under a catch, a panic counting as
    /// `false` and reported through `observer`.
    #[inline]
    pub(crate) fn due(
        &self,
        resource: &mut R,
        age: &Age,
        now: impl FnOnce() -> Stamp,
        observer: &Observer<'_>,
    ) -> Option<ReplaceReason> {
        if !self.active {
            return None;
        }
        self.check(resource, age, now, observer)
    }

    #[cold]
    fn check(
        &self,
        resource: &mut R,
        age: &Age,
        now: impl FnOnce() -> Stamp,
        observer: &Observer<'_>,
    ) -> Option<ReplaceReason> {
        if self.max_uses.is_some_and(|max| age.uses >= max) {
            return Some(ReplaceReason::Uses);
        }
        if self.max_lifetime.is_none() && self.validate.is_none() {
            return None;
        }
        let now = now();
        if self
            .max_lifetime
            .is_some_and(|max| now.saturating_sub(age.born) >= max)
        {
            return Some(ReplaceReason::Lifetime);
        }
        let validate = self.validate.as_ref()?;
        // A fresh resource (no task yet) was just made: nothing to validate.
        if age.uses == 0 || now.saturating_sub(age.last_used) < self.validate_after_idle {
            return None;
        }
        match unwind::catch(|| validate(resource)) {
            Ok(true) => None,
            Ok(false) => Some(ReplaceReason::Validation),
            Err(message) => {
                observer.caught(Site::Validate, Err(message));
                Some(ReplaceReason::Validation)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::TracingLogger;
    use crate::metrics::Metrics;

    fn with_observer(f: impl FnOnce(&Observer<'_>)) {
        let metrics = Metrics::new(Duration::from_secs(1), None, "t");
        f(&Observer {
            metrics: &metrics,
            logger: &TracingLogger,
        });
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn no_knob_never_replaces_nor_reads_the_clock() {
        let policy = Recycle::<u8>::new(None, None, None, Duration::ZERO);
        with_observer(|o| {
            let age = Age::new(0);
            let due = policy.due(&mut 0, &age, || panic!("clock read"), o);
            assert_eq!(due, None);
        });
    }

    #[test]
    fn uses_then_lifetime_then_validation() {
        let validate: Box<ValidateFn<bool>> = Box::new(|ok: &mut bool| *ok);
        let policy = Recycle::new(
            Some(Duration::from_millis(100)),
            Some(3),
            Some(validate),
            Duration::from_millis(10),
        );
        with_observer(|o| {
            let mut age = Age::new(0);
            // Fresh: never validated, even when `validate` would say no.
            assert_eq!(policy.due(&mut false, &age, || 50 * MS, o), None);
            age.used(MS);
            // Idle 4 ms < 10 ms: not validated.
            assert_eq!(policy.due(&mut false, &age, || 5 * MS, o), None);
            // Idle 19 ms: validated.
            assert_eq!(
                policy.due(&mut false, &age, || 20 * MS, o),
                Some(ReplaceReason::Validation)
            );
            assert_eq!(policy.due(&mut true, &age, || 20 * MS, o), None);
            // Too old, whatever `validate` says.
            assert_eq!(
                policy.due(&mut true, &age, || 100 * MS, o),
                Some(ReplaceReason::Lifetime)
            );
            age.used(2 * MS);
            age.used(3 * MS);
            // Uses first: three tasks ran on it.
            assert_eq!(
                policy.due(&mut true, &age, || 100 * MS, o),
                Some(ReplaceReason::Uses)
            );
        });
    }

    #[test]
    fn a_panicking_validate_counts_as_invalid() {
        let validate: Box<ValidateFn<u8>> = Box::new(|_: &mut u8| panic!("validate broke"));
        let policy = Recycle::new(None, None, Some(validate), Duration::ZERO);
        with_observer(|o| {
            let mut age = Age::new(0);
            age.used(0);
            assert_eq!(
                policy.due(&mut 0, &age, || 0, o),
                Some(ReplaceReason::Validation)
            );
            assert_eq!(o.metrics.user_panics(), 1);
        });
    }
}
