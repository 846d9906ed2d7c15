//! The queues and the order a worker looks in them.
//!
//! Two global injectors (priority, normal) and one local LIFO deque per worker, whose
//! [`Stealer`]s every worker holds. Submissions from other threads go to `normal` or
//! `priority`, retries go to `priority`. A normal task submitted on a worker of the manager
//! (inside a task, a callback, a hook) goes to that worker's own deque (`Shared::push`), and
//! a local deque is otherwise filled by batch steals from `normal` or from a peer: it only
//! ever holds normal tasks.
//!
//! A worker looks, in order ([`Queues::find_task`]):
//! 1. the priority injector, one task;
//! 2. its local deque, the newest task;
//! 3. the normal injector, a batch moved into the local deque (which its owner then pops in
//!    the injector's order: `crossbeam-deque` puts a batch into a LIFO deque reversed);
//! 4. its peers' deques, starting after itself, a batch each from the oldest end.
//!
//! Every [`INJECTOR_INTERVAL`]th look, step 3 comes first, followed by the *oldest* task of
//! its own deque (through its own stealer), then the usual order.
//!
//! Because step 1 comes before every pick, a priority task starts before any normal task that
//! is still queued when it arrives (local deques included). Work made inside tasks runs on its
//! worker newest first (depth first, as in rayon: a tree of tasks keeps a small working set
//! whose cells are still in this CPU's cache), ahead of what the injector holds, while idle
//! peers steal the oldest (the largest pieces of a tree). A worker whose tasks keep making work
//! still takes a task from the injector, and its own oldest task, every [`INJECTOR_INTERVAL`]
//! picks, so a task chain can starve neither work queued from outside nor work made before it
//! on the same worker (peers, which look at the injector before stealing, take both sooner
//! when they are free).

pub(crate) mod capacity;
pub(crate) mod sleep;

use crate::sync::deque::{Injector, Steal, Stealer, Worker};

use crate::lifecycle::Admitted;
use crate::task::JobRef;

/// What the queues carry: a task and the proof that it was admitted (and so is counted as
/// pending until its outcome is delivered).
pub(crate) struct Queued<R, E> {
    pub(crate) job: JobRef<R, E>,
    pub(crate) ticket: Admitted,
}

pub(crate) struct Queues<R, E> {
    pub(crate) priority: Injector<Queued<R, E>>,
    pub(crate) normal: Injector<Queued<R, E>>,
    pub(crate) stealers: Box<[Stealer<Queued<R, E>>]>,
}

/// A worker looks at the normal injector before its own deque once in this many picks (see
/// the module doc). Prime, so it does not beat in step with a task pattern of the user's.
pub(crate) const INJECTOR_INTERVAL: u32 = 61;

impl<R, E> Queues<R, E> {
    /// Makes the injectors and `n` local deques; the deques go to their workers' threads.
    pub(crate) fn new(n: usize) -> (Self, Vec<Worker<Queued<R, E>>>) {
        let locals: Vec<_> = (0..n).map(|_| Worker::new_lifo()).collect();
        let stealers = locals.iter().map(Worker::stealer).collect();
        let queues = Queues {
            priority: Injector::new(),
            normal: Injector::new(),
            stealers,
        };
        (queues, locals)
    }

    /// One pass of the search order above. `me` is the caller's index in `stealers`;
    /// `injector_first` swaps steps 2 and 3 (the worker sets it every [`INJECTOR_INTERVAL`]
    /// picks).
    pub(crate) fn find_task(
        &self,
        me: usize,
        local: &Worker<Queued<R, E>>,
        injector_first: bool,
    ) -> Option<Queued<R, E>> {
        loop {
            let mut retry = false;
            // A look first, as for the peers below: two plain loads, where a steal from an
            // empty injector pays a fence, and this look comes before every pick. A priority
            // push that happened before this look is seen by it (the loads are `SeqCst`).
            if !self.priority.is_empty() {
                match self.priority.steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if injector_first {
                match self.normal.steal_batch_and_pop(local) {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
                // The oldest task of its own deque (a pop takes the newest), through its own
                // stealer: work made long ago is not starved by tasks that keep making more.
                match self.stealers[me].steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if let Some(job) = local.pop() {
                return Some(job);
            }
            match self.normal.steal_batch_and_pop(local) {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            let n = self.stealers.len();
            for k in 1..n {
                let peer = &self.stealers[(me + k) % n];
                // A look first: two loads and a fence, where a steal attempt pins the
                // deque's epoch even to find it empty. A searching worker polls its peers
                // on every round, and their deques are mostly empty.
                if peer.is_empty() {
                    continue;
                }
                match peer.steal_batch_and_pop(local) {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    /// Any task visible anywhere (used to pass a wake-up on).
    /// Takes one queued task from anywhere (injectors, then every worker's deque), for a
    /// thread that is not a worker (`stop_timeout` resolving what is left after `kill`).
    pub(crate) fn steal_any(&self) -> Option<Queued<R, E>> {
        loop {
            let mut retry = false;
            let injectors = [&self.priority, &self.normal];
            for steal in injectors
                .into_iter()
                .map(|q| q.steal())
                .chain(self.stealers.iter().map(|s| s.steal()))
            {
                match steal {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        }
    }

    pub(crate) fn has_work(&self) -> bool {
        !self.priority.is_empty()
            || !self.normal.is_empty()
            || self.stealers.iter().any(|s| !s.is_empty())
    }

    /// Queued normal tasks (injector and local deques).
    pub(crate) fn normal_len(&self) -> usize {
        self.normal.len() + self.stealers.iter().map(Stealer::len).sum::<usize>()
    }

    pub(crate) fn priority_len(&self) -> usize {
        self.priority.len()
    }
}
