//! Named task bodies: what a message may ask a node to run.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use tasker::TaskContext;

use crate::error::Error;
use crate::topology::is_token;

/// One handler: a task body over the worker's resource, the task's context and the payload.
pub(crate) type HandlerFn<R, E> =
    dyn Fn(&mut R, &TaskContext, &[u8]) -> Result<Vec<u8>, E> + Send + Sync + 'static;

/// The handlers a node serves, by name. Closures cannot cross machines; names can: a message
/// names its handler in its subject and carries the payload.
///
/// A handler runs on a tasker worker against that worker's resource, exactly like a local
/// task: an error that `check_health` calls unhealthy replaces the resource and retries the
/// task locally, up to the manager's `max_retries`.
///
/// ```
/// use tasker_nats::Handlers;
/// let handlers = Handlers::<u64, std::io::Error>::new()
///     .register("count", |n: &mut u64, _ctx, payload: &[u8]| {
///         *n += payload.len() as u64;
///         Ok(n.to_string().into_bytes())
///     })?;
/// assert!(handlers.contains("count"));
/// # Ok::<(), tasker_nats::Error>(())
/// ```
pub struct Handlers<R, E> {
    map: HashMap<String, Arc<HandlerFn<R, E>>>,
}

impl<R, E> Default for Handlers<R, E> {
    fn default() -> Self {
        Handlers {
            map: HashMap::new(),
        }
    }
}

impl<R, E> fmt::Debug for Handlers<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.map.keys().collect();
        names.sort();
        f.debug_struct("Handlers").field("names", &names).finish()
    }
}

impl<R, E> Handlers<R, E> {
    /// No handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the handler `name`: one subject token (no `.`, `*`, `>` or spaces),
    /// else [`Error::InvalidName`].
    pub fn register<F>(mut self, name: &str, f: F) -> Result<Self, Error>
    where
        F: Fn(&mut R, &TaskContext, &[u8]) -> Result<Vec<u8>, E> + Send + Sync + 'static,
    {
        if !is_token(name) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        self.map.insert(name.to_owned(), Arc::new(f));
        Ok(self)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<HandlerFn<R, E>>> {
        self.map.get(name).cloned()
    }
}
