//! One attempt of a task against a resource, the same for a worker and for `run_task`: run
//! the body catching a panic, judge an error with `check_health`, and destroy a resource that
//! came back broken.
//!
//! What happens next differs and stays with the caller: a worker re-queues a retry or
//! delivers the outcome and makes a new resource at the top of its loop; `run_task` returns
//! the outcome and refills its pool. Both report the attempt's end through the one
//! observation point ([`Event::Ended`](crate::observe::Event)).

use crate::metrics::Tally;
use crate::observe::{Event, Observer};
use crate::resource_pool::Hooks;
use crate::unwind::{self, PanicMessage};

/// What one run of a task body came to.
#[must_use]
pub(crate) enum Ran<T, E> {
    /// The body returned `Ok`.
    Ok(T),
    /// The body returned an error that `check_health` passed: a plain failure; the resource
    /// is kept.
    Failed(E),
    /// The body returned an unhealthy error: the resource is broken.
    Broken(E),
    /// The body panicked: the resource is broken.
    Panicked(PanicMessage),
}

impl<T, E> Ran<T, E> {
    /// Runs `body` against `resource`: a panic is caught, an error judged by `check_health`
    /// (whose own panic counts as unhealthy, see [`Hooks::is_healthy`]).
    #[inline]
    pub(crate) fn run<R>(
        hooks: &Hooks<R, E>,
        observer: &Observer<'_>,
        resource: &mut R,
        body: impl FnOnce(&mut R) -> Result<T, E>,
    ) -> Self {
        match unwind::catch(|| body(resource)) {
            Ok(Ok(value)) => Ran::Ok(value),
            Ok(Err(error)) if hooks.is_healthy(&error, observer) => Ran::Failed(error),
            Ok(Err(error)) => Ran::Broken(error),
            Err(message) => Ran::Panicked(message),
        }
    }

    /// Whether the resource must be replaced: `Some` if it is broken, saying why.
    #[inline]
    pub(crate) fn broken<R>(&self, hooks: &Hooks<R, E>, observer: &Observer<'_>) -> Option<Broken> {
        match self {
            Ran::Ok(_) | Ran::Failed(_) => None,
            Ran::Broken(error) => Some(Broken {
                panicked: false,
                detail: hooks.describe(error, observer),
            }),
            Ran::Panicked(message) => Some(Broken {
                panicked: true,
                detail: Some(message.to_string()),
            }),
        }
    }
}

/// Why a resource is broken, for the log: a panic (its message) or an unhealthy error (as
/// the builder's `error_formatter` wrote it, if there is one).
pub(crate) struct Broken {
    pub(crate) panicked: bool,
    pub(crate) detail: Option<String>,
}

/// Destroys a broken resource and reports it: a worker's (`worker: Some`, `own` its tally)
/// or one of `run_task`'s (`None`, `None`).
#[cold]
pub(crate) fn destroy_broken<R, E>(
    hooks: &Hooks<R, E>,
    observer: &Observer<'_>,
    resource: R,
    worker: Option<usize>,
    broken: Broken,
    own: Option<&Tally>,
) {
    observer.observe(
        Event::Replaced {
            worker,
            panicked: broken.panicked,
            detail: broken.detail.as_deref(),
        },
        own,
    );
    hooks.destroy(resource, observer);
}
