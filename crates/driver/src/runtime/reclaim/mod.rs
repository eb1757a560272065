//! Releases that never block the user's thread, and never free what the GPU may still touch.
//!
//! Two rules meet here (docs/deadlocks.md):
//!
//! 1. *Keep-alive.* Whatever enqueued work touches stays alive until the GPU is past it. When the
//!    last handle to a resource drops, the crate builds a **fence**: an event recorded now on every
//!    live stream the crate knows (plus the last event of each stream that was dropped with work
//!    still queued). The GPU is past every use of the resource once every fence event has completed,
//!    because every use was enqueued before the drop.
//! 2. *No hidden deadlocks.* `cuMemFreeHost`, `cuModuleUnload` (and `cuMemFree`) do not return
//!    while the context has queued work that waits (a wait on a host value, a kernel polling a
//!    flag), and hold back other threads' driver calls meanwhile. So pinned memory is never freed
//!    while the process runs (it returns to a cache, see `memory.rs`), modules are unloaded on the
//!    crate's **reclaimer** thread at a moment when every stream is idle and locked against new
//!    work, and device memory is freed stream-ordered (`cuMemFreeAsync`), which returns at once.
//!    Nothing here runs on the dropping thread, which may be the one that is about to signal.
//!
//! The reclaimer polls its pending fences with `cuEventQuery` (which never blocks), sleeps with a
//! growing back-off while anything is pending, and parks when nothing is.
//!
//! The loop is generic over what it releases ([`Backend`]: how an item is released, what a fence
//! is, when it passed), so that the handoff ([`Reclaimer`]: `defer`, the reclaimer's turns,
//! [`wait_for_releases`]'s wait) and the batches behind fences are model-checked with loom
//! (`reclaim/loom_model.rs`) without a GPU; [`Driver`] is the crate's backend. The fences and the
//! registry of streams they cover live in `reclaim/fence.rs`, generic over the driver too and
//! property-tested there against several streams that the GPU advances independently.

use super::context::Context;
use super::guard;
use super::handles::{RawEvent, RawStream};
use super::park::{self, Backoff, Rank};
use super::raw::{self, CUdeviceptr, CUmodule};
use super::sync;
use crate::error::{Error, Result};
pub(crate) use fence::FencedStream;
use fence::{Cuda, Fence};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod fence;

/// Something to release once the GPU is past every use of it.
pub(crate) enum Garbage {
    /// Device memory from `cuMemAllocAsync`.
    DevicePtr { ctx: Arc<Context>, ptr: CUdeviceptr },
    /// A module.
    Module {
        ctx: Arc<Context>,
        module: ModulePtr,
    },
    /// An event whose owner dropped it where no driver call may be made.
    Event(RawEvent),
    /// A stream handle whose owner dropped it where no driver call may be made.
    Stream(RawStream),
    /// A stream whose last user handle dropped: it leaves the fences' registry once its queued
    /// work is covered by a tail event (no fence can miss it meanwhile).
    Retire(Arc<dyn FencedStream>),
    /// Anything else: run once the fence has passed (no driver call may block in it).
    Callback(Box<dyn FnOnce() + Send>),
}

/// A module handle, movable to the reclaimer thread.
pub(crate) struct ModulePtr(pub(crate) CUmodule);
// SAFETY: module handles may be used and unloaded from any thread (the driver API is
// thread-safe); ownership moves with the value.
unsafe impl Send for ModulePtr {}

// ---------------------------------------------------------------------------------------------
// The streams that fences cover

/// Registers a new stream with the fences.
pub(crate) fn register_stream(s: Arc<dyn FencedStream>) {
    fence::registry().register(&s);
}

/// The last user handle of `s` dropped: hand it to the reclaimer (no driver call here).
pub(crate) fn retire_stream(s: Arc<dyn FencedStream>) {
    defer(Garbage::Retire(s));
}

/// Whether `home` is the only stream that can have pending work (so a stream-ordered release on
/// `home` is already fenced against every use).
pub(crate) fn only_live_stream_is(home: &Arc<dyn FencedStream>) -> bool {
    fence::registry().only_live_stream_is(home)
}

// ---------------------------------------------------------------------------------------------
// The reclaimer thread

/// The handoff between the threads that drop and the reclaimer: what was handed over, and how
/// much of it is not yet released.
pub(crate) struct Reclaimer<G> {
    incoming: sync::Mutex<VecDeque<G>>,
    wake: sync::Condvar,
    /// Items handed over and not yet released.
    outstanding: sync::atomic::AtomicUsize,
    idle: sync::Condvar,
    idle_lock: sync::Mutex<()>,
}

fn lock_sync<T>(m: &sync::Mutex<T>) -> sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the queue inconsistent (each critical
    // section is a push, a drain or nothing at all), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<G> Reclaimer<G> {
    pub(crate) fn new() -> Self {
        Reclaimer {
            incoming: sync::Mutex::new(VecDeque::new()),
            wake: sync::Condvar::new(),
            outstanding: sync::atomic::AtomicUsize::new(0),
            idle: sync::Condvar::new(),
            idle_lock: sync::Mutex::new(()),
        }
    }

    /// Hands `g` over (counted as outstanding until released) and wakes the reclaimer.
    pub(crate) fn defer(&self, g: G) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let _rank = park::ranked(Rank::Reclaimer);
        lock_sync(&self.incoming).push_back(g);
        self.wake.notify_one();
    }

    /// What was handed over since the last call; with `wait`, first waits until there is some.
    fn take(&self, wait: bool) -> Vec<G> {
        let _rank = park::ranked(Rank::Reclaimer);
        let mut q = lock_sync(&self.incoming);
        while wait && q.is_empty() {
            q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.drain(..).collect()
    }

    /// `n` items were released.
    fn done(&self, n: usize) {
        self.outstanding.fetch_sub(n, Ordering::AcqRel);
        let _rank = park::ranked(Rank::Reclaimer);
        let _g = lock_sync(&self.idle_lock);
        self.idle.notify_all();
    }

    /// Items handed over and not yet released.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Waits until every item handed over so far is released, or `timeout` passes.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let _rank = park::ranked(Rank::Reclaimer);
        let mut g = lock_sync(&self.idle_lock);
        while self.outstanding() > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: "deferred releases",
                    timeout,
                });
            }
            g = self
                .idle
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(5)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }
}

fn reclaimer() -> &'static Reclaimer<Garbage> {
    static R: OnceLock<&'static Reclaimer<Garbage>> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static Reclaimer<Garbage> = Box::leak(Box::new(Reclaimer::new()));
        let spawned = std::thread::Builder::new().name("ferrocuda-reclaimer".into()).spawn(move || run(r));
        register_exit_handler();
        if let Err(e) = spawned {
            // Without the thread nothing deferred is released: memory is kept, never freed early.
            tracing::warn!(%e, "could not start the ferrocuda reclaimer thread; deferred releases are kept");
        }
        r
    })
}

unsafe extern "C" {
    /// C's `atexit` (the process's exit handlers, run by `exit` in reverse order of registration).
    fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
}

/// Registers [`at_exit`] once (when the first device opens, or the reclaimer starts).
pub(crate) fn register_exit_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `at_exit` is a plain `extern "C" fn()` that never unwinds (it contains panics);
        // registering it has no other precondition.
        if unsafe { atexit(at_exit) } != 0 {
            tracing::warn!("could not register the ferrocuda exit handler");
        }
    });
}

/// The crate's exit handler: lets releases in progress finish (briefly), then stops the crate's
/// threads from calling the driver during its teardown ([`guard::quiesce`]).
extern "C" fn at_exit() {
    let _ = guard::contain(|| {
        let _ = wait_for_releases(Duration::from_millis(200));
        guard::quiesce();
    });
}

/// Hands `g` to the reclaimer: it is released once the GPU is past every use enqueued so far.
/// Never blocks and makes no driver call, so it is safe anywhere, host functions included.
pub(crate) fn defer(g: Garbage) {
    reclaimer().defer(g);
}

/// Garbage waiting in batches, each behind one fence: the keep-alive bookkeeping, generic over the
/// fence so that it can be tested without a GPU.
pub(crate) struct Batches<F, G> {
    pending: Vec<(F, Vec<G>)>,
}

impl<F, G> Batches<F, G> {
    pub(crate) fn new() -> Self {
        Batches {
            pending: Vec::new(),
        }
    }

    /// Adds a batch dropped before `fence` was recorded.
    pub(crate) fn push(&mut self, fence: F, batch: Vec<G>) {
        if !batch.is_empty() {
            self.pending.push((fence, batch));
        }
    }

    /// Releases (through `release`) every batch whose fence `passed`; returns how many items.
    pub(crate) fn poll(
        &mut self,
        mut passed: impl FnMut(&mut F) -> bool,
        mut release: impl FnMut(G),
    ) -> usize {
        let mut n = 0;
        self.pending.retain_mut(|(f, batch)| {
            if !passed(f) {
                return true;
            }
            n += batch.len();
            batch.drain(..).for_each(&mut release);
            false
        });
        n
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// How the reclaimer releases an item.
pub(crate) enum Sort<G, S> {
    /// At once (the driver itself waits for the item's work).
    Now(G),
    /// Once a fence recorded after the drop has passed.
    Fenced(G),
    /// A stream to retire from the fences' registry, retried until it can be.
    Retire(S),
}

/// The driver-facing half of the reclaimer's loop.
pub(crate) trait Backend {
    /// What is handed over.
    type Item;
    /// A point past every use enqueued so far.
    type Fence;
    /// A stream whose retirement is pending.
    type Retiring;
    /// How `g` is released.
    fn sort(&self, g: Self::Item) -> Sort<Self::Item, Self::Retiring>;
    /// Releases `g`.
    fn release(&self, g: Self::Item);
    /// Retires `s` if it can now.
    fn retire(&self, s: Self::Retiring) -> std::result::Result<(), Self::Retiring>;
    /// Records a fence now.
    fn fence(&self) -> Self::Fence;
    /// Whether the GPU is past `f`.
    fn passed(&self, f: &mut Self::Fence) -> bool;
    /// Releases `g`, past its fence, if it can be released now; else hands it back, to be tried
    /// again at the next turn.
    fn try_release(&self, g: Self::Item) -> Option<Self::Item> {
        self.release(g);
        None
    }
}

/// What one turn of the reclaimer did.
pub(crate) struct Turn {
    /// Something was released at once, retired, or put behind a new fence.
    pub(crate) progress: bool,
    /// Batches or retirements are still pending: the reclaimer pauses, then turns again.
    pub(crate) waiting: bool,
}

/// The reclaimer's state between turns.
pub(crate) struct Sweeper<B: Backend> {
    backend: B,
    /// Garbage waits in batches behind one shared fence: one event per stream per batch, however
    /// many resources were dropped meanwhile, so the reclaimer keeps up with drop-heavy loops.
    pending: Batches<B::Fence, B::Item>,
    /// Retired streams that were capturing: retried until the capture ends.
    retiring: Vec<B::Retiring>,
    /// Items past their fence that could not be released yet ([`Backend::try_release`]).
    held: Vec<B::Item>,
}

impl<B: Backend> Sweeper<B> {
    pub(crate) fn new(backend: B) -> Self {
        Sweeper {
            backend,
            pending: Batches::new(),
            retiring: Vec::new(),
            held: Vec::new(),
        }
    }

    /// One turn: takes what was handed over (waiting for it when nothing else is pending),
    /// releases what needs no fence, retries retirements, puts the rest behind one fence recorded
    /// now (after the drops: later is only more conservative), and releases every batch whose
    /// fence passed.
    pub(crate) fn turn(&mut self, r: &Reclaimer<B::Item>) -> Turn {
        let new =
            r.take(self.pending.is_empty() && self.retiring.is_empty() && self.held.is_empty());
        let b = &self.backend;
        let mut fenced = Vec::new();
        let mut now = 0;
        for g in new {
            match b.sort(g) {
                Sort::Retire(s) => self.retiring.push(s),
                Sort::Now(g) => {
                    b.release(g);
                    now += 1;
                }
                Sort::Fenced(g) => fenced.push(g),
            }
        }
        let before = self.retiring.len();
        self.retiring = std::mem::take(&mut self.retiring)
            .into_iter()
            .filter_map(|s| b.retire(s).err())
            .collect();
        now += before - self.retiring.len();
        if now > 0 {
            r.done(now);
        }
        let progress = now > 0 || !fenced.is_empty();
        if !fenced.is_empty() {
            self.pending.push(b.fence(), fenced);
        }
        let held = &mut self.held;
        self.pending.poll(|f| b.passed(f), |g| held.push(g));
        let before = self.held.len();
        let mut released = 0;
        for g in std::mem::take(&mut self.held) {
            match b.try_release(g) {
                None => released += 1,
                Some(g) => self.held.push(g),
            }
        }
        debug_assert!(released <= before);
        if released > 0 {
            r.done(released);
        }
        Turn {
            progress,
            waiting: !self.pending.is_empty() || !self.retiring.is_empty() || !self.held.is_empty(),
        }
    }
}

/// The crate's backend: driver releases behind fences of events.
pub(crate) struct Driver;

impl Backend for Driver {
    type Item = Garbage;
    type Fence = Fence<Cuda>;
    type Retiring = Arc<dyn FencedStream>;

    fn sort(&self, g: Garbage) -> Sort<Garbage, Arc<dyn FencedStream>> {
        match g {
            Garbage::Retire(s) => Sort::Retire(s),
            // Events and stream handles are released by the driver once their work is done.
            g @ (Garbage::Event(_) | Garbage::Stream(_)) => Sort::Now(g),
            g => Sort::Fenced(g),
        }
    }

    fn release(&self, g: Garbage) {
        release(g);
    }

    fn retire(&self, s: Arc<dyn FencedStream>) -> std::result::Result<(), Arc<dyn FencedStream>> {
        fence::registry().try_retire(s)
    }

    fn fence(&self) -> Fence<Cuda> {
        fence::registry().fence()
    }

    fn passed(&self, f: &mut Fence<Cuda>) -> bool {
        fence::registry().passed(f)
    }

    /// `cuModuleUnload`, like `cuMemFreeHost`, waits for the GPU's queued work — a wait on a host
    /// value included — and holds back other threads' driver calls meanwhile (seen on an H200: an
    /// unload behind a freshly enqueued wait blocked the thread that was to signal, in a kernel
    /// launch). So a module is unloaded only while every stream of the crate is idle *and* no
    /// operation can enqueue on any of them: the unload holds the fences' registry (no stream can
    /// be created and given work meanwhile) and every registered stream's capture lock
    /// exclusively (taken without waiting; if one is busy, the unload waits for the next turn).
    fn try_release(&self, g: Garbage) -> Option<Garbage> {
        if !matches!(g, Garbage::Module { .. }) {
            release(g);
            return None;
        }
        fence::registry().while_quiet(g, release)
    }
}

fn run(r: &'static Reclaimer<Garbage>) {
    guard::mark_reclaimer_thread();
    let mut sweeper = Sweeper::new(Driver);
    let mut backoff = Backoff::new(park::RECLAIMER);
    loop {
        let turn = sweeper.turn(r);
        if turn.progress {
            backoff.progress();
        }
        if turn.waiting {
            backoff.idle(None);
        }
    }
}

/// Releases `g`. User values (graph-owned closures, `defer_drop`ped values) drop here, inside
/// [`guard::contain`]: a panicking `Drop` is logged and the reclaimer goes on.
fn release(g: Garbage) {
    match guard::contain(|| release_now(g)) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "deferred release failed"),
        Err(panic) => tracing::warn!(%panic, "a deferred release panicked"),
    }
}

fn release_now(g: Garbage) -> Result<()> {
    match g {
        Garbage::DevicePtr { ctx, ptr } => ctx.reclaim_stream().and_then(|s| {
            // SAFETY: the fence passed, so no work uses `ptr`; it came from cuMemAllocAsync.
            unsafe { raw::mem_free_async(ptr, s) }
        }),
        Garbage::Module { ctx, module } => ctx.bind_checked().and_then(|()| {
            // SAFETY: the fence passed, so no launch of the module's functions is pending, and no
            // `Function` handle remains (each holds the module).
            unsafe { raw::module_unload(module.0) }
        }),
        Garbage::Event(e) => {
            drop(e);
            Ok(())
        }
        Garbage::Stream(s) => {
            drop(s);
            Ok(())
        }
        Garbage::Retire(s) => {
            // Only reached if a retirement is released as plain garbage (never by `run`).
            drop(s);
            Ok(())
        }
        Garbage::Callback(f) => {
            f();
            Ok(())
        }
    }
}

/// Waits until everything the crate deferred so far has been released, or `timeout` passes.
///
/// Drops never block (docs/deadlocks.md): pinned memory, modules and device memory whose last
/// handle dropped are released in the background once the GPU is past them. Call this in tests
/// and at shutdown to see memory return. A release can wait on GPU work that waits on a host value:
/// if nothing signals it, this times out.
///
/// # Errors
///
/// [`Error::Timeout`] if something is still pending after `timeout`.
pub fn wait_for_releases(timeout: Duration) -> Result<()> {
    reclaimer().wait_idle(timeout)
}

/// Drops `value` on the crate's reclaimer thread once the GPU is past all work enqueued so far on
/// every stream the crate knows (a fence). Never blocks and makes no driver call, so it may be
/// called anywhere, driver callbacks included: this is how graph-owned closures, flags and
/// buffers are released after the last launch that may use them.
pub fn defer_drop<T: Send + 'static>(value: T) {
    defer(Garbage::Callback(Box::new(move || drop(value))));
}

/// How many deferred releases are still pending.
pub fn pending_releases() -> usize {
    reclaimer().outstanding()
}

#[cfg(all(test, loom))]
mod loom_model;
