//! Resources kept for `run_task`, and the user's resource hooks.

use crate::observe::{Event, Observer, Site};
use crate::recycle::Age;
use crate::sync::deque::{Injector, Steal};
use crate::unwind::{self, PanicMessage};

pub(crate) type CreateFn<R, E> = dyn Fn() -> Result<R, E> + Send + Sync;
pub(crate) type DestroyFn<R, E> = dyn Fn(R) -> Result<(), E> + Send + Sync;
pub(crate) type HealthFn<E> = dyn Fn(&E) -> bool + Send + Sync;
pub(crate) type FormatFn<E> = dyn Fn(&E) -> String + Send + Sync;

/// Why a resource could not be made.
pub(crate) enum CreateError<E> {
    Failed(E),
    Panicked(PanicMessage),
}

/// The user's `on_create`, `on_destroy` and `check_health`, each call guarded against panics.
pub(crate) struct Hooks<R, E> {
    pub(crate) on_create: Box<CreateFn<R, E>>,
    pub(crate) on_destroy: Option<Box<DestroyFn<R, E>>>,
    pub(crate) check_health: Option<Box<HealthFn<E>>>,
    /// How logs show an `E` (`Builder::error_formatter`); none: they leave it out.
    pub(crate) error_formatter: Option<Box<FormatFn<E>>>,
}

impl<E> CreateError<E> {
    /// The error as the logs show it, and the panic's message: at most one is `Some`.
    #[cold]
    pub(crate) fn describe<R>(
        &self,
        hooks: &Hooks<R, E>,
        observer: &Observer<'_>,
    ) -> (Option<String>, Option<&str>) {
        match self {
            CreateError::Failed(e) => (hooks.describe(e, observer), None),
            CreateError::Panicked(message) => (None, Some(message)),
        }
    }
}

impl<R, E> Hooks<R, E> {
    pub(crate) fn create(&self) -> Result<R, CreateError<E>> {
        match unwind::catch(|| (self.on_create)()) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(CreateError::Failed(e)),
            Err(message) => Err(CreateError::Panicked(message)),
        }
    }

    /// Passes the resource to `on_destroy` (or drops it). Failures, and panics in either, are
    /// reported: the resource is gone either way.
    pub(crate) fn destroy(&self, resource: R, observer: &Observer<'_>) {
        let Some(on_destroy) = &self.on_destroy else {
            observer.caught(Site::Drop("a resource"), unwind::drop_quietly(resource));
            return;
        };
        match unwind::catch(|| on_destroy(resource)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let error = self.describe(&e, observer);
                observer.observe(
                    Event::DestroyFailed {
                        error: error.as_deref(),
                    },
                    None,
                );
                observer.caught(Site::Drop("on_destroy's error"), unwind::drop_quietly(e));
            }
            Err(message) => observer.caught(Site::OnDestroy, Err(message)),
        }
    }

    /// `error` as the builder's `error_formatter` writes it; `None` without one (or if it
    /// panicked: that panic is reported).
    #[cold]
    pub(crate) fn describe(&self, error: &E, observer: &Observer<'_>) -> Option<String> {
        let format = self.error_formatter.as_ref()?;
        match unwind::catch(|| format(error)) {
            Ok(text) => Some(text),
            Err(message) => {
                observer.caught(Site::ErrorFormatter, Err(message));
                None
            }
        }
    }

    /// `check_health`; a panicking check counts as unhealthy.
    pub(crate) fn is_healthy(&self, error: &E, observer: &Observer<'_>) -> bool {
        let Some(check) = &self.check_health else {
            return true;
        };
        match unwind::catch(|| check(error)) {
            Ok(healthy) => healthy,
            Err(message) => {
                observer.caught(Site::CheckHealth, Err(message));
                false
            }
        }
    }
}

/// Idle resources for `run_task`, each with its [`Age`]: a lock-free queue.
pub(crate) struct ResourcePool<R> {
    idle: Injector<(R, Age)>,
}

impl<R> ResourcePool<R> {
    pub(crate) fn new() -> Self {
        ResourcePool {
            idle: Injector::new(),
        }
    }

    pub(crate) fn take(&self) -> Option<(R, Age)> {
        loop {
            match self.idle.steal() {
                Steal::Success(r) => return Some(r),
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
    }

    pub(crate) fn put(&self, resource: R, age: Age) {
        self.idle.push((resource, age));
    }

    pub(crate) fn len(&self) -> usize {
        self.idle.len()
    }

    /// Destroys every idle resource. Each is taken once, so concurrent drains are safe.
    pub(crate) fn drain<E>(&self, hooks: &Hooks<R, E>, observer: &Observer<'_>) {
        while let Some((r, _)) = self.take() {
            hooks.destroy(r, observer);
        }
    }
}
