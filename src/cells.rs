//! Recycled memory for task cells: a steady stream of tasks takes no trip through the global
//! allocator.
//!
//! Every task is one cell (`task`), made on the submitter's thread and let go on a worker (or
//! on the caller's thread, when its handle is the last owner). Through `malloc` that is the
//! allocator's worst case: memory made on one thread and freed on another, one block at a
//! time. Here cells come from *blocks* of a few sizes that are recycled: each thread keeps a
//! few lists of free blocks (*magazines*), and whole magazines move between threads through a
//! small global *depot*, one shared operation per [`MAGAZINE`] tasks.
//!
//! # What a cell costs
//!
//! A cell is rounded up to the smallest size class that holds it: 64, 128, 256 or 512 bytes
//! ([`CLASSES`]), aligned to [`BLOCK_ALIGN`] (16) bytes. On x86-64 (the test
//! `task::tests::cell_sizes`): a callback cell whose closure and callback capture one `Arc`
//! each is 48 bytes, so it takes a 64-byte block; a handle or blocking cell returning a `u64`
//! (the completion slot, with room for any `TaskError`, and the owners' count) is 104 bytes,
//! a 128-byte block. Each word a closure captures adds to that; past 512 bytes, or aligned to
//! more than 16, a cell is not cached: it is allocated and freed through the global allocator,
//! exactly as a `Box` would be (one allocation per task, as before this cache).
//!
//! # Where a block is
//!
//! A block is, at any time, in exactly one of these places, and whoever has it owns it:
//!
//! 1. in use: it holds a task cell, owned by that cell's owner(s) ([`Boxed`], [`Shared`]);
//! 2. free in a thread's cache ([`Magazines`]): per class, a `loaded` list of at most
//!    [`MAGAZINE`] blocks and a `spare` list that is empty or full (exactly `MAGAZINE`
//!    blocks). Only that thread touches them (they live in a thread-local);
//! 3. free in the depot ([`Depot`]), as part of a full magazine: per class, a FIFO of up to
//!    [`depot_cap`] magazines ([`DEPOT_BYTES`] of blocks);
//! 4. back in the global allocator.
//!
//! A free block's first word links it to the next block of its list (`Free::next`); a
//! magazine is such a list, null-terminated, `MAGAZINE` blocks long, named by its first
//! block.
//!
//! # The steps
//!
//! Taking a block of a class (a cell is made), on the submitter's thread:
//! - T1. pop the first block of `loaded`;
//! - T2. `loaded` is empty: if `spare` is full, it becomes `loaded` (T1);
//! - T3. both are empty: take a magazine from the depot as `loaded` (T1);
//! - T4. the depot has none: allocate one block from the global allocator.
//!
//! Giving a block back (a cell was dropped), on the thread that dropped it:
//! - G1. `loaded` has room: push the block on it;
//! - G2. `loaded` is full: it becomes `spare` (if `spare` was full too, that older magazine
//!   first goes to the depot), and the block starts a new, empty `loaded`;
//! - G3. the depot holds its cap: the magazine's blocks go back to the global allocator.
//!
//! Two lists per thread (Bonwick's magazines) keep a thread that takes and gives around a
//! magazine boundary from going to the depot on every step. In a steady stream the
//! submitter empties its lists and then takes a full magazine from the depot (T3), while
//! each worker fills its lists and hands a full magazine to the depot (G2): one depot
//! operation per `MAGAZINE` tasks on each side, and none on the global allocator.
//!
//! # The depot protocol: why a magazine never has two owners
//!
//! A class's depot is a lock-free FIFO of magazines (`crossbeam-deque`'s `Injector`, the
//! queue the scheduler uses) and a gauge of how many it holds:
//!
//! - D1 (put, G2): if the gauge reads below the cap, count the magazine in and push it;
//!   once pushed, the putting thread no longer owns it and never touches it again. Putters
//!   racing past the gauge may each pass the cap by one magazine: it bounds memory, not a
//!   protocol.
//! - D2 (take, T3): steal one magazine, then count it out. The queue hands each pushed
//!   value to exactly one successful steal, so two takers never get the same magazine.
//!
//! The queue's push happens before the steal that returns its value (its own
//! release/acquire pair), so everything the putting thread did to the magazine's blocks
//! before D1 (the links it wrote in G1, and before that, the drop of the cells that were in
//! them) happens before the taker reads the links and writes a new cell there. A link
//! written by an earlier owner (the magazine's blocks may have come to the putter through
//! the depot too) is ordered by the same chain, one D1/D2 pair per hand-off. Nobody follows
//! a `next` link of a block it does not own: a magazine is a value moved through the queue,
//! not a list shared in place. The price is one push or one steal (and one count) per
//! `MAGAZINE` tasks on each side, and one allocation of the queue's own per 63 magazines.
//!
//! Blocks inside a thread's cache are its own: nothing else can reach them (they are in a
//! thread-local, and a block given back was owned by the giver, by the cell owners'
//! contract).
//!
//! # Bounds
//!
//! A thread's cache holds at most `2 * MAGAZINE` blocks per class (2 KiB of 64-byte blocks,
//! 4 KiB of 128-byte ones); the depot about [`DEPOT_BYTES`] (2 MiB) per class, 8 MiB for
//! all four, reached only after that many cells were in flight at once. The depot is sized
//! for the backlog a busy manager swings through, not for a trickle: with 16 magazines (the
//! first cut), a main thread submitting 1M callbacks to 2 workers (backlogs of ~1,000 to
//! ~17,000 tasks) found it empty and allocated every cell afresh (`malloc` and
//! `malloc_consolidate` took a quarter of the submitter's time in a `perf` profile). A
//! burst deeper than what is cached allocates fresh blocks (T4) and, once they come back,
//! returns the overflow to the global allocator (G3): memory use follows the backlog down
//! to the cap.
//!
//! A block taken (T1) is cold in this thread's cache: a worker freed it last. The next block
//! of the list is prefetched for writing as this one is taken, so its transfer overlaps the
//! rest of the submission (the same profile: the cell's first write and the store-buffer
//! drain behind it fell from 9 % to 3 % of the run).
//!
//! When a thread exits, its cache's destructor (the thread-local's) returns every block it
//! holds to the global allocator. A cell dropped after that, during the thread's own
//! teardown (a thread-local holding a handle), finds no cache and goes to the global
//! allocator too (`try_with`). The depot is a `static`: what it holds is reused by the next
//! thread that asks, and is still reachable at process exit (valgrind: "still reachable").
//!
//! # Under loom
//!
//! The thread-local cache and the `static` depot are not used (`alloc`/`dealloc` pass
//! through to the global allocator): loom's objects must be made inside each execution, and
//! caching blocks across the pool models would only add interleavings to models about other
//! protocols. The owners' count of a [`Shared`] cell *is* loom's (the completion models
//! check who frees the cell). The caching code itself, [`Magazines`] and [`Depot`] with the
//! free-block links in loom `UnsafeCell`s, is checked by its own model
//! (`loom_models::cells`), which drives the shipped types with a small `MAGAZINE` and a
//! depot cap of one magazine (the queue there is the `sync::deque` stand-in).

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem;
use std::ops::Deref;
use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::sync::deque::{Injector, Steal};
use crate::sync::{AtomicUsize, Ordering, UnsafeCell, fence};

/// The block sizes, in bytes: a cell takes the smallest that holds it.
pub(crate) const CLASSES: [usize; 4] = [64, 128, 256, 512];

/// Every block's alignment. A cell aligned to more is not cached.
pub(crate) const BLOCK_ALIGN: usize = 16;

/// Blocks in a full magazine: the unit the depot trades in.
#[cfg(not(loom))]
pub(crate) const MAGAZINE: usize = 16;
#[cfg(loom)]
pub(crate) const MAGAZINE: usize = 2;

/// Bytes of free blocks the depot keeps per class (`DEPOT_BYTES / (size * MAGAZINE)`
/// magazines: 2,048 of 64-byte blocks down to 256 of 512-byte ones).
#[cfg(not(loom))]
pub(crate) const DEPOT_BYTES: usize = 2 << 20;

/// Magazines the depot keeps of `class`.
#[cfg(not(loom))]
pub(crate) const fn depot_cap(class: usize) -> usize {
    DEPOT_BYTES / (CLASSES[class] * MAGAZINE)
}

/// Under loom one magazine per class, so the cap is reached (and G3 runs) with two.
#[cfg(loom)]
pub(crate) const fn depot_cap(_class: usize) -> usize {
    1
}

const NUM_CLASSES: usize = CLASSES.len();

/// The class whose blocks hold `layout`, if any.
#[inline]
#[cfg_attr(loom, allow(dead_code))] // loom's build passes every layout through
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > BLOCK_ALIGN {
        return None;
    }
    CLASSES.iter().position(|&size| layout.size() <= size)
}

/// The layout every block of `class` is allocated and freed with.
#[inline]
fn block_layout(class: usize) -> Layout {
    match Layout::from_size_align(CLASSES[class], BLOCK_ALIGN) {
        Ok(layout) => layout,
        Err(_) => unreachable!("the classes are valid layouts"),
    }
}

/// What a free block holds: the link to the next block of its list.
///
/// Written when the block is given back (G1) and read when it is taken (T1), possibly by
/// another thread after a trip through the depot: a (loom) `UnsafeCell` so the model checks
/// that hand-off.
struct Free {
    next: UnsafeCell<*mut Free>,
}

const _: () =
    assert!(mem::size_of::<Free>() <= CLASSES[0] && mem::align_of::<Free>() <= BLOCK_ALIGN);

/// Blocks allocated by [`fresh`] and not yet freed (the loom model checks that it comes
/// back to zero: no block lost, none freed twice).
#[cfg(loom)]
pub(crate) static LIVE_BLOCKS: crate::sync::StdAtomicUsize = crate::sync::StdAtomicUsize::new(0);

/// A fresh block of `class` from the global allocator (T4).
#[cold]
pub(crate) fn fresh(class: usize) -> NonNull<u8> {
    let layout = block_layout(class);
    // SAFETY: a class layout has a non-zero size.
    let block = unsafe { alloc::alloc(layout) };
    #[cfg(loom)]
    LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
    NonNull::new(block).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// Returns a block of `class` to the global allocator.
///
/// # Safety
/// `block` came from [`fresh`] with this `class`, is owned by the caller, and is not used
/// again.
unsafe fn free_block(block: NonNull<u8>, class: usize) {
    #[cfg(loom)]
    {
        let before = LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "a block freed twice");
    }
    // SAFETY: allocated by `fresh` with this very layout (caller's contract).
    unsafe { alloc::dealloc(block.as_ptr(), block_layout(class)) }
}

/// Writes the link of the free block `block`, making it the head of a list whose rest
/// starts at `next`.
///
/// # Safety
/// The caller owns `block`, a block of some class (so at least `size_of::<Free>()` bytes,
/// aligned for it), and nothing else uses it while it is free.
unsafe fn link(block: NonNull<u8>, next: *mut Free) -> *mut Free {
    let free = block.cast::<Free>();
    // SAFETY: owned and large enough (caller's contract); whatever the block held was
    // dropped before it was given back, so nothing is overwritten that needs a drop.
    unsafe {
        free.write(Free {
            next: UnsafeCell::new(next),
        })
    };
    free.as_ptr()
}

/// Reads the link of the free block `block` and ends its life as a free block (the caller
/// may then write a cell there, or free it).
///
/// # Safety
/// The caller owns `block`, a block written by [`link`], and the write is ordered before
/// this read (same thread, or the depot's D1/D2 pair).
unsafe fn unlink(block: *mut Free) -> *mut Free {
    // SAFETY: a `Free` was written there by `link` (caller's contract); reading it out
    // moves it, so the block is raw memory again.
    let free = unsafe { ptr::read(block) };
    // SAFETY: the cell is ours: it was just moved out of the block.
    free.next.with(|next| unsafe { *next })
}

/// Asks the CPU to bring the `size` bytes at `block` (the next block this thread will take,
/// or null) into its cache, ready to be written: a recycled block was last written on the
/// worker that freed it, and the next cell is written there after this submission's work,
/// so the transfer overlaps that work instead of stalling the next `take`. A hint only: no
/// memory is read or written, and a null or stale address is harmless.
#[inline]
fn prefetch_for_write(block: *mut Free, size: usize) {
    #[cfg(all(target_arch = "x86_64", not(loom), not(miri)))]
    if !block.is_null() {
        use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
        let mut offset = 0;
        while offset < size {
            // SAFETY: a prefetch is a hint that never faults and touches no memory the
            // program can observe; `wrapping_add` makes no claim that the address is valid.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(block.cast::<i8>().wrapping_add(offset)) };
            offset += 64;
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom), not(miri))))]
    let _ = (block, size);
}

/// A full magazine: `MAGAZINE` free blocks of one class, linked from this first one. Owned:
/// whoever holds the value owns every block of the list.
#[must_use = "a magazine owns its blocks: put it in the depot or free it"]
pub(crate) struct Magazine(NonNull<Free>);

impl Magazine {
    /// Returns every block of the magazine to the global allocator (G3).
    ///
    /// # Safety
    /// Its blocks are of `class`.
    unsafe fn free(self, class: usize) {
        // SAFETY: a magazine's blocks are owned by its holder, linked by `link`, and of
        // `class` (caller's contract).
        unsafe { free_list(self.0.as_ptr(), class) }
    }
}

// SAFETY: a magazine owns its blocks (plain memory, no value inside but the links), and the
// thread it moves to reads the links only after the depot's D1/D2 pair ordered their writes.
unsafe impl Send for Magazine {}

/// Returns every block of the list starting at `head` to the global allocator.
///
/// # Safety
/// The caller owns the whole list (null-terminated, linked by `link` on this thread or
/// handed over through the depot), and every block is of `class`.
unsafe fn free_list(mut head: *mut Free, class: usize) {
    while let Some(block) = NonNull::new(head) {
        // SAFETY: owned and linked (caller's contract).
        head = unsafe { unlink(block.as_ptr()) };
        // SAFETY: owned, of `class`, and no longer in any list.
        unsafe { free_block(block.cast(), class) };
    }
}

/// One class's share of the global depot: up to `depot_cap(class)` full magazines in a
/// lock-free FIFO (D1, D2 in the module docs).
pub(crate) struct Depot {
    magazines: Injector<Magazine>,
    /// Magazines in `magazines`, give or take the puts and takes under way: the cap's gauge.
    len: AtomicUsize,
    cap: usize,
}

impl Depot {
    pub(crate) fn new(cap: usize) -> Self {
        Depot {
            magazines: Injector::new(),
            len: AtomicUsize::new(0),
            cap,
        }
    }

    /// D1: puts a full magazine in the depot; gives it back when the depot holds its cap.
    pub(crate) fn put(&self, magazine: Magazine) -> Result<(), Magazine> {
        // A gauge, not a lock: putters racing here may each pass the cap by one magazine.
        if self.len.load(Ordering::Relaxed) >= self.cap {
            return Err(magazine);
        }
        // Counted before it is pushed, so the take that finds it counts it out after (no
        // underflow: the push happens before that take's steal).
        self.len.fetch_add(1, Ordering::Relaxed);
        self.magazines.push(magazine);
        Ok(())
    }

    /// D2: takes a full magazine, if the depot holds one.
    pub(crate) fn take(&self) -> Option<Magazine> {
        loop {
            match self.magazines.steal() {
                Steal::Success(magazine) => {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Some(magazine);
                }
                Steal::Empty => return None,
                Steal::Retry => {}
            }
        }
    }

    /// How many magazines it holds (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Frees every magazine it holds (a depot that is not the global one, going away).
    ///
    /// # Safety
    /// Its magazines are of `class`.
    #[cfg(any(test, loom))]
    pub(crate) unsafe fn drain(&self, class: usize) {
        while let Some(magazine) = self.take() {
            // SAFETY: taken, so ours; of `class` (caller's contract).
            unsafe { magazine.free(class) };
        }
    }
}

/// The depot: one [`Depot`] per class, each on its own cache lines.
pub(crate) struct Pool {
    depots: [CachePadded<Depot>; NUM_CLASSES],
}

impl Pool {
    pub(crate) fn new() -> Self {
        Pool {
            depots: std::array::from_fn(|class| CachePadded::new(Depot::new(depot_cap(class)))),
        }
    }

    /// The depot of `class`.
    pub(crate) fn depot(&self, class: usize) -> &Depot {
        &self.depots[class]
    }
}

/// A singly linked list of free blocks of one class, owned by one thread's cache.
#[derive(Clone, Copy)]
struct List {
    head: *mut Free,
    len: usize,
}

const EMPTY: List = List {
    head: ptr::null_mut(),
    len: 0,
};

/// One class's lists in a thread's cache.
struct Local {
    /// Blocks are taken from and given to this one; at most `MAGAZINE`.
    loaded: Cell<List>,
    /// Empty, or a full magazine.
    spare: Cell<List>,
}

/// A thread's cache: per class, two lists of free blocks (module docs, steps T1-T3, G1-G3).
///
/// Not `Send`: it lives in one thread (a thread-local; a model thread's own value under
/// loom). Dropping it returns every block it holds to the global allocator.
pub(crate) struct Magazines {
    classes: [Local; NUM_CLASSES],
}

impl Magazines {
    pub(crate) const fn new() -> Self {
        Magazines {
            classes: [const {
                Local {
                    loaded: Cell::new(EMPTY),
                    spare: Cell::new(EMPTY),
                }
            }; NUM_CLASSES],
        }
    }

    /// A free block of `class` (T1-T3), or `None` when neither this cache nor `pool`'s depot
    /// has one (T4 is the caller's).
    #[inline]
    pub(crate) fn take(&self, pool: &Pool, class: usize) -> Option<NonNull<u8>> {
        let local = &self.classes[class];
        let mut loaded = local.loaded.get();
        if loaded.len == 0 {
            loaded = Self::refill(local, pool, class)?;
        }
        let block = loaded.head;
        // T1.
        // SAFETY: `loaded` is this thread's own list, `len > 0` so `head` is a block of it,
        // linked by `link` here or handed over through D1/D2 (its `refill`).
        loaded.head = unsafe { unlink(block) };
        loaded.len -= 1;
        local.loaded.set(loaded);
        prefetch_for_write(loaded.head, CLASSES[class]);
        NonNull::new(block.cast::<u8>())
    }

    /// T2, T3: a full list for an empty `loaded`.
    #[cold]
    fn refill(local: &Local, pool: &Pool, class: usize) -> Option<List> {
        let spare = local.spare.get();
        if spare.len != 0 {
            // T2.
            local.spare.set(EMPTY);
            return Some(spare);
        }
        // T3 (D2).
        let magazine = pool.depot(class).take()?;
        Some(List {
            head: magazine.0.as_ptr(),
            len: MAGAZINE,
        })
    }

    /// Gives a block of `class` back (G1-G3).
    ///
    /// # Safety
    /// The caller owns `block`, a block of `class` (from [`take`](Self::take) on any thread,
    /// or from the global allocator with that class's layout), whatever it held was dropped,
    /// and the caller never touches it again.
    #[inline]
    pub(crate) unsafe fn give(&self, pool: &Pool, class: usize, block: NonNull<u8>) {
        let local = &self.classes[class];
        let mut loaded = local.loaded.get();
        if loaded.len == MAGAZINE {
            // G2.
            Self::rotate(local, pool, class, loaded);
            loaded = EMPTY;
        }
        // G1.
        // SAFETY: owned by the caller, of a class (contract); from now on this cache's.
        loaded.head = unsafe { link(block, loaded.head) };
        loaded.len += 1;
        local.loaded.set(loaded);
    }

    /// G2, G3: the full `loaded` becomes the spare; a full spare goes to the depot first.
    #[cold]
    fn rotate(local: &Local, pool: &Pool, class: usize, full: List) {
        let spare = local.spare.replace(full);
        if spare.len == MAGAZINE
            && let Some(head) = NonNull::new(spare.head)
            && let Err(magazine) = pool.depot(class).put(Magazine(head))
        {
            // G3.
            // SAFETY: our own full list (of `class`), handed back by `put`.
            unsafe { magazine.free(class) };
        }
    }

    /// How many free blocks of `class` this cache holds (tests).
    #[cfg(any(test, loom))]
    pub(crate) fn cached(&self, class: usize) -> usize {
        let local = &self.classes[class];
        local.loaded.get().len + local.spare.get().len
    }
}

impl Drop for Magazines {
    fn drop(&mut self) {
        for (class, local) in self.classes.iter().enumerate() {
            for list in [local.loaded.replace(EMPTY), local.spare.replace(EMPTY)] {
                // SAFETY: this cache's own lists, of `class`; the cache is going away, so
                // nobody reaches them after this.
                unsafe { free_list(list.head, class) };
            }
        }
    }
}

#[cfg(not(loom))]
static POOL: std::sync::LazyLock<Pool> = std::sync::LazyLock::new(Pool::new);

#[cfg(not(loom))]
std::thread_local! {
    /// This thread's cache. Its destructor runs when the thread exits and frees its blocks.
    static CACHE: Magazines = const { Magazines::new() };
}

/// Memory for a value of `layout`: a recycled block if a class holds it, else the global
/// allocator's.
#[inline]
pub(crate) fn alloc(layout: Layout) -> NonNull<u8> {
    #[cfg(not(loom))]
    if let Some(class) = class_of(layout) {
        return match CACHE.try_with(|cache| cache.take(&POOL, class)) {
            Ok(Some(block)) => block,
            // T4, or the thread's cache is gone (the thread is exiting).
            _ => fresh(class),
        };
    }
    oversize_alloc(layout)
}

/// Gives back memory from [`alloc()`].
///
/// # Safety
/// `ptr` came from `alloc(layout)` (on any thread), whatever was written there was dropped,
/// and it is not used again.
#[inline]
pub(crate) unsafe fn dealloc(ptr: NonNull<u8>, layout: Layout) {
    #[cfg(not(loom))]
    if let Some(class) = class_of(layout) {
        // SAFETY: `alloc` took this block from class `class` (the same `class_of`), and the
        // caller hands it over.
        let given = CACHE.try_with(|cache| unsafe { cache.give(&POOL, class, ptr) });
        if given.is_err() {
            // The thread's cache is gone (the thread is exiting).
            // SAFETY: as above; every block of a class has that class's layout.
            unsafe { free_block(ptr, class) };
        }
        return;
    }
    // SAFETY: allocated by `oversize_alloc` with this layout (caller's contract).
    unsafe { oversize_dealloc(ptr, layout) }
}

/// The global allocator's layout for a value not held by a class (at least one byte).
#[inline]
fn heap_layout(layout: Layout) -> Layout {
    match Layout::from_size_align(layout.size().max(1), layout.align()) {
        Ok(layout) => layout,
        Err(_) => unreachable!("growing a zero size to one keeps a layout valid"),
    }
}

#[cold]
fn oversize_alloc(layout: Layout) -> NonNull<u8> {
    let layout = heap_layout(layout);
    // SAFETY: `heap_layout` has a non-zero size.
    let ptr = unsafe { alloc::alloc(layout) };
    NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// # Safety
/// As for [`dealloc`], for a `layout` no class holds.
unsafe fn oversize_dealloc(ptr: NonNull<u8>, layout: Layout) {
    // SAFETY: `oversize_alloc` allocated it with `heap_layout(layout)` (caller's contract).
    unsafe { alloc::dealloc(ptr.as_ptr(), heap_layout(layout)) }
}

/// Drops the value at `ptr` in place and gives its memory back, also if the drop unwinds.
///
/// # Safety
/// `ptr` points to a live value in memory from `alloc(Layout::for_value(value))`, owned by
/// the caller, and neither is used again.
unsafe fn drop_and_free<T: ?Sized>(ptr: NonNull<T>) {
    struct FreeOnExit(NonNull<u8>, Layout);
    impl Drop for FreeOnExit {
        fn drop(&mut self) {
            // SAFETY: the value was dropped (or its drop unwound, which still dropped
            // every field): the memory is no longer used (`drop_and_free`'s contract).
            unsafe { dealloc(self.0, self.1) }
        }
    }
    // SAFETY: live (caller's contract).
    let layout = Layout::for_value(unsafe { ptr.as_ref() });
    let _free = FreeOnExit(ptr.cast(), layout);
    // SAFETY: live, owned, never used again (caller's contract).
    unsafe { ptr::drop_in_place(ptr.as_ptr()) };
}

/// A value in recycled memory with one owner: a `Box` whose memory comes from [`alloc()`].
pub(crate) struct Boxed<T: ?Sized> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: a `Boxed` owns its value alone, like a `Box`.
unsafe impl<T: ?Sized + Send> Send for Boxed<T> {}
// SAFETY: as above: `&Boxed<T>` only gives `&T`.
unsafe impl<T: ?Sized + Sync> Sync for Boxed<T> {}
// Moving the pointer never moves the value (as for `Box`).
impl<T: ?Sized> Unpin for Boxed<T> {}

impl<T> Boxed<T> {
    pub(crate) fn new(value: T) -> Self {
        let ptr = alloc(Layout::new::<T>()).cast::<T>();
        // SAFETY: fresh memory for a `T` (`alloc` aligns to the layout's alignment).
        unsafe { ptr.write(value) };
        Boxed {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: ?Sized> Boxed<T> {
    /// The pointer, ownership passed to the caller (for [`unsize!`]).
    pub(crate) fn into_raw(this: Self) -> NonNull<T> {
        let ptr = this.ptr;
        mem::forget(this);
        ptr
    }

    /// # Safety
    /// `ptr` came from [`into_raw`](Self::into_raw), unsized or not, and is owned by the
    /// caller.
    pub(crate) unsafe fn from_raw(ptr: NonNull<T>) -> Self {
        Boxed {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for Boxed<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: live until `drop`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized> Drop for Boxed<T> {
    fn drop(&mut self) {
        // SAFETY: the one owner lets go.
        unsafe { drop_and_free(self.ptr) }
    }
}

/// What a [`Shared`] points to: the owners' count, then the value.
pub(crate) struct SharedInner<T: ?Sized> {
    owners: AtomicUsize,
    value: T,
}

impl<T: ?Sized> SharedInner<T> {
    /// The value behind a pointer from [`Shared::into_raw`].
    ///
    /// # Safety
    /// `inner` came from `Shared::into_raw` and an owner's share keeps it alive for `'a`.
    #[inline]
    pub(crate) unsafe fn value<'a>(inner: NonNull<Self>) -> &'a T {
        // SAFETY: live for `'a` (the caller's share); only shared references are made.
        unsafe { &inner.as_ref().value }
    }
}

/// A value in recycled memory with two owners (a task's `JobRef` and its handle): an `Arc`
/// made with a count of two and never cloned, whose last owner drops the value and gives
/// the memory back.
///
/// The count: each owner's drop is a `fetch_sub(Release)`; the one that takes it to zero
/// runs `fence(Acquire)` first, so everything the other owner did with the value happens
/// before the drop and the reuse of the block (as in `Arc`).
pub(crate) struct Shared<T: ?Sized> {
    inner: NonNull<SharedInner<T>>,
    _owns: PhantomData<SharedInner<T>>,
}

// SAFETY: as `Arc<T>`: the value is shared between threads (`Sync`) and dropped by whichever
// lets go last (`Send`).
unsafe impl<T: ?Sized + Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for Shared<T> {}
// Moving the pointer never moves the value (as for `Arc`): a `TaskHandle` stays `Unpin`.
impl<T: ?Sized> Unpin for Shared<T> {}

impl<T> Shared<T> {
    /// The value, with its two owners.
    pub(crate) fn pair(value: T) -> (Self, Self) {
        let inner = alloc(Layout::new::<SharedInner<T>>()).cast::<SharedInner<T>>();
        // SAFETY: fresh memory for a `SharedInner<T>`.
        unsafe {
            inner.write(SharedInner {
                owners: AtomicUsize::new(2),
                value,
            })
        };
        let owner = || Shared {
            inner,
            _owns: PhantomData,
        };
        (owner(), owner())
    }
}

impl<T: ?Sized> Shared<T> {
    /// The pointer, this owner's share passed to the caller (for [`unsize!`]).
    pub(crate) fn into_raw(this: Self) -> NonNull<SharedInner<T>> {
        let inner = this.inner;
        mem::forget(this);
        inner
    }

    /// # Safety
    /// `inner` came from [`into_raw`](Self::into_raw), unsized or not, and that owner's
    /// share is the caller's.
    pub(crate) unsafe fn from_raw(inner: NonNull<SharedInner<T>>) -> Self {
        Shared {
            inner,
            _owns: PhantomData,
        }
    }

    #[inline]
    fn inner(&self) -> &SharedInner<T> {
        // SAFETY: live while an owner is.
        unsafe { self.inner.as_ref() }
    }
}

impl<T: ?Sized> Deref for Shared<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.inner().value
    }
}

impl<T: ?Sized> Drop for Shared<T> {
    fn drop(&mut self) {
        // Release: our uses of the value happen before the last owner's drop.
        if self.inner().owners.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with the other owner's Release decrement.
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero: we are the last owner, and nobody reaches the
        // value again.
        unsafe { drop_and_free(self.inner) }
    }
}

/// Turns a [`Boxed`] or [`Shared`] of a concrete type into one of a trait object, same
/// memory: `unsize!(Boxed, cell => dyn Trait)`.
macro_rules! unsize {
    (Boxed, $cell:expr => $target:ty) => {{
        let raw = $crate::cells::Boxed::into_raw($cell);
        let raw: ::std::ptr::NonNull<$target> = raw;
        // SAFETY: `raw` comes from `into_raw`; the coercion only attached the vtable of
        // the value's own type, so the address, and the layout `Layout::for_value` will
        // find when it is freed, are unchanged.
        unsafe { $crate::cells::Boxed::from_raw(raw) }
    }};
    (Shared, $cell:expr => $target:ty) => {{
        let raw = $crate::cells::Shared::into_raw($cell);
        let raw: ::std::ptr::NonNull<$crate::cells::SharedInner<$target>> = raw;
        // SAFETY: as for `Boxed`; the owner's share moves from the old pointer to the new.
        unsafe { $crate::cells::Shared::from_raw(raw) }
    }};
}
pub(crate) use unsize;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as Count;
    use std::thread;

    /// A pool whose depots are freed when the test ends (the global one lives forever).
    struct TestPool(Pool);

    impl Drop for TestPool {
        fn drop(&mut self) {
            for class in 0..NUM_CLASSES {
                // SAFETY: every magazine of depot `class` holds blocks of `class`.
                unsafe { self.0.depot(class).drain(class) };
            }
        }
    }

    fn pool() -> TestPool {
        TestPool(Pool::new())
    }

    fn depot_len(pool: &Pool, class: usize) -> usize {
        pool.depot(class).len()
    }

    /// Takes a block (T4 when the cache and depot are empty).
    fn take(cache: &Magazines, pool: &Pool, class: usize) -> NonNull<u8> {
        cache.take(pool, class).unwrap_or_else(|| fresh(class))
    }

    #[test]
    fn layouts_pick_the_smallest_class_that_holds_them() {
        let class = |size, align| class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(0, 1), Some(0));
        assert_eq!(class(64, 8), Some(0));
        assert_eq!(class(65, 8), Some(1));
        assert_eq!(class(200, 16), Some(2));
        assert_eq!(class(512, 16), Some(3));
        assert_eq!(class(513, 8), None, "too big: the global allocator");
        assert_eq!(class(64, 32), None, "over-aligned: the global allocator");
    }

    #[test]
    fn a_block_given_back_is_the_next_one_taken() {
        let pool = pool();
        let cache = Magazines::new();
        let a = take(&cache, &pool.0, 1);
        // SAFETY: ours, of class 1, unused.
        unsafe { cache.give(&pool.0, 1, a) };
        assert_eq!(cache.cached(1), 1);
        assert_eq!(cache.take(&pool.0, 1), Some(a), "reused, not allocated");
        assert_eq!(cache.take(&pool.0, 1), None, "nothing else cached");
        // SAFETY: as above.
        unsafe { cache.give(&pool.0, 1, a) };
    }

    #[test]
    fn full_magazines_go_through_the_depot_to_another_thread() {
        let pool = Arc::new(pool());
        // A "worker" frees 3 magazines' worth: two stay in its cache, one goes to the depot.
        let given: Vec<usize> = {
            let pool = pool.clone();
            thread::spawn(move || {
                let cache = Magazines::new();
                let blocks: Vec<_> = (0..3 * MAGAZINE).map(|_| fresh(0)).collect();
                let addresses = blocks.iter().map(|b| b.as_ptr() as usize).collect();
                for block in blocks {
                    // SAFETY: fresh blocks of class 0, ours.
                    unsafe { cache.give(&pool.0, 0, block) };
                }
                assert_eq!(cache.cached(0), 2 * MAGAZINE);
                addresses
            })
            .join()
            .unwrap()
        };
        assert_eq!(depot_len(&pool.0, 0), 1);
        // A "submitter" takes the depot's magazine: MAGAZINE of those blocks, no more.
        let cache = Magazines::new();
        let taken: Vec<_> = (0..MAGAZINE)
            .map(|_| cache.take(&pool.0, 0).expect("from the depot"))
            .collect();
        assert!(cache.take(&pool.0, 0).is_none());
        assert_eq!(depot_len(&pool.0, 0), 0);
        for block in &taken {
            assert!(given[..MAGAZINE].contains(&(block.as_ptr() as usize)));
        }
        for block in taken {
            // SAFETY: ours, class 0.
            unsafe { cache.give(&pool.0, 0, block) };
        }
    }

    #[test]
    fn the_depot_is_capped_and_the_overflow_is_freed() {
        let pool = pool();
        let cache = Magazines::new();
        // Enough for the depot's cap, both lists of the cache, and one magazine more.
        let blocks: Vec<_> = (0..(depot_cap(2) + 3) * MAGAZINE)
            .map(|_| fresh(2))
            .collect();
        for block in blocks {
            // SAFETY: fresh blocks of class 2, ours.
            unsafe { cache.give(&pool.0, 2, block) };
        }
        assert_eq!(depot_len(&pool.0, 2), depot_cap(2), "full, and no more");
        assert_eq!(cache.cached(2), 2 * MAGAZINE);
        // The magazine that found the depot full went back to the allocator: Miri (and
        // valgrind) would report it leaked otherwise.
    }

    #[test]
    fn a_thread_frees_its_cache_when_it_exits() {
        // Through the real thread-local: a thread leaves blocks in its cache, and exits. Its
        // destructor returns them to the allocator; under Miri a block left behind fails the
        // run ("memory leaked": a dead thread's thread-locals are unreachable), as it does
        // with the destructor's loop removed.
        thread::spawn(|| {
            let layout = Layout::new::<[u64; 4]>();
            let blocks: Vec<_> = (0..3).map(|_| alloc(layout)).collect();
            for block in blocks {
                // SAFETY: from `alloc(layout)`, nothing in it.
                unsafe { dealloc(block, layout) };
            }
            CACHE.with(|cache| assert!(cache.cached(0) >= 3));
        })
        .join()
        .unwrap();

        // The same for a cache dropped by hand, with both of its lists in use.
        let pool = pool();
        let cache = Magazines::new();
        for _ in 0..MAGAZINE + 5 {
            // SAFETY: fresh, ours.
            unsafe { cache.give(&pool.0, 3, fresh(3)) };
        }
        assert_eq!(cache.cached(3), MAGAZINE + 5);
        drop(cache);
    }

    #[test]
    fn oversize_and_overaligned_values_use_the_global_allocator() {
        let big = Boxed::new([7u8; 4096]);
        assert_eq!(big[4095], 7);
        #[repr(align(64))]
        struct Aligned(u8);
        let aligned = Boxed::new(Aligned(3));
        assert_eq!(aligned.0, 3);
        assert_eq!((&*aligned as *const Aligned as usize) % 64, 0);
        CACHE.with(|cache| {
            let before: usize = (0..NUM_CLASSES).map(|c| cache.cached(c)).sum();
            drop(big);
            drop(aligned);
            let after: usize = (0..NUM_CLASSES).map(|c| cache.cached(c)).sum();
            assert_eq!(before, after, "neither went into a class");
        });
    }

    /// Counts its drops.
    struct Dropped(Arc<Count>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn values_in_recycled_blocks_are_dropped_once_each() {
        let drops = Arc::new(Count::new(0));
        let rounds = if cfg!(miri) { 40 } else { 1000 };
        for round in 0..rounds {
            // The same blocks come back round after round: each value is still dropped
            // exactly once, by its last owner.
            let one = Boxed::new((Dropped(drops.clone()), round));
            assert_eq!(one.1, round);
            let (a, b) = Shared::pair((Dropped(drops.clone()), round));
            drop(one);
            assert_eq!(drops.load(Ordering::SeqCst), 2 * round + 1);
            let other = thread::spawn(move || {
                assert_eq!(b.1, round);
                drop(b);
            });
            assert_eq!(a.1, round);
            drop(a);
            other.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 2 * round + 2);
        }
    }

    #[test]
    fn a_shared_value_unsized_to_two_traits_is_dropped_once() {
        trait Name {
            fn name(&self) -> String;
        }
        trait Number {
            fn number(&self) -> usize;
        }
        struct Both(#[allow(dead_code)] Dropped, usize); // field 0: its drop is counted
        impl Name for Both {
            fn name(&self) -> String {
                format!("#{}", self.1)
            }
        }
        impl Number for Both {
            fn number(&self) -> usize {
                self.1
            }
        }
        let drops = Arc::new(Count::new(0));
        let (a, b) = Shared::pair(Both(Dropped(drops.clone()), 5));
        let a: Shared<dyn Name + Send + Sync> = unsize!(Shared, a => dyn Name + Send + Sync);
        let b: Shared<dyn Number + Send + Sync> = unsize!(Shared, b => dyn Number + Send + Sync);
        assert_eq!((a.name(), b.number()), ("#5".to_string(), 5));
        drop(a);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        let boxed: Boxed<dyn Number + Send> =
            unsize!(Boxed, Boxed::new(Both(Dropped(drops.clone()), 6)) => dyn Number + Send);
        assert_eq!(boxed.number(), 6);
        drop(boxed);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_panicking_drop_still_frees_the_block() {
        struct Loud;
        impl Drop for Loud {
            fn drop(&mut self) {
                panic!("loud drop");
            }
        }
        let boxed = Boxed::new(Loud);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(boxed)));
        assert!(result.is_err());
        // The block went back to this thread's cache (Miri would report a leak otherwise).
    }
}
