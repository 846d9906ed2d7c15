//! Resources kept for `run_task`, and the user's resource hooks.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::sync::deque::{Injector, Steal};

use crate::error::panic_message;
use crate::log::Log;

pub(crate) type CreateFn<R, E> = dyn Fn() -> Result<R, E> + Send + Sync;
pub(crate) type DestroyFn<R, E> = dyn Fn(R) -> Result<(), E> + Send + Sync;
pub(crate) type HealthFn<E> = dyn Fn(&E) -> bool + Send + Sync;

/// Why a resource could not be made.
pub(crate) enum CreateError<E> {
    Failed(E),
    Panicked(String),
}

/// The user's `on_create`, `on_destroy` and `check_health`, each call guarded against panics.
pub(crate) struct Hooks<R, E> {
    pub(crate) on_create: Box<CreateFn<R, E>>,
    pub(crate) on_destroy: Option<Box<DestroyFn<R, E>>>,
    pub(crate) check_health: Option<Box<HealthFn<E>>>,
}

impl<R, E> Hooks<R, E> {
    pub(crate) fn create(&self) -> Result<R, CreateError<E>> {
        match catch_unwind(AssertUnwindSafe(|| (self.on_create)())) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(CreateError::Failed(e)),
            Err(payload) => Err(CreateError::Panicked(panic_message(payload.as_ref()))),
        }
    }

    /// Passes the resource to `on_destroy` (or drops it). Failures are logged: the resource is
    /// gone either way.
    pub(crate) fn destroy(&self, resource: R, log: &Log<'_>) {
        let Some(on_destroy) = &self.on_destroy else {
            drop(resource);
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| on_destroy(resource))) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => log.destroy_failed(),
            Err(payload) => log.destroy_panicked(&panic_message(payload.as_ref())),
        }
    }

    /// `check_health`; a panicking check counts as unhealthy.
    pub(crate) fn is_healthy(&self, error: &E, log: &Log<'_>) -> bool {
        let Some(check) = &self.check_health else {
            return true;
        };
        match catch_unwind(AssertUnwindSafe(|| check(error))) {
            Ok(healthy) => healthy,
            Err(payload) => {
                log.health_check_panicked(&panic_message(payload.as_ref()));
                false
            }
        }
    }
}

/// Idle resources for `run_task`: a lock-free queue.
pub(crate) struct ResourcePool<R> {
    idle: Injector<R>,
}

impl<R> ResourcePool<R> {
    pub(crate) fn new() -> Self {
        ResourcePool {
            idle: Injector::new(),
        }
    }

    pub(crate) fn take(&self) -> Option<R> {
        loop {
            match self.idle.steal() {
                Steal::Success(r) => return Some(r),
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
    }

    pub(crate) fn put(&self, resource: R) {
        self.idle.push(resource);
    }

    pub(crate) fn len(&self) -> usize {
        self.idle.len()
    }

    /// Destroys every idle resource. Each is taken once, so concurrent drains are safe.
    pub(crate) fn drain<E>(&self, hooks: &Hooks<R, E>, log: &Log<'_>) {
        while let Some(r) = self.take() {
            hooks.destroy(r, log);
        }
    }
}
