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
//!    while any stream of the context waits on an unsatisfied host value. So they run on the
//!    crate's **reclaimer** thread, never on the dropping thread, which may be the one that is
//!    about to signal. Device memory is freed stream-ordered (`cuMemFreeAsync`), which returns at once.
//!
//! The reclaimer polls its pending fences with `cuEventQuery` (which never blocks), sleeps with a
//! growing back-off while anything is pending, and parks when nothing is.

use crate::device::DeviceInner;
use crate::error::{Error, Result};
use crate::event::RawEvent;
use crate::guard;
use crate::raw::{self, CUdeviceptr, CUmodule};
use crate::stream::{RawStream, StreamInner};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Something to release once the GPU is past every use of it.
pub(crate) enum Garbage {
    /// Device memory from `cuMemAllocAsync`.
    DevicePtr {
        device: Arc<DeviceInner>,
        ptr: CUdeviceptr,
    },
    /// A module.
    Module {
        device: Arc<DeviceInner>,
        module: ModulePtr,
    },
    /// An event whose owner dropped it where no driver call may be made.
    Event(RawEvent),
    /// A stream handle whose owner dropped it where no driver call may be made.
    Stream(RawStream),
    /// A stream whose last user handle dropped: it leaves the fences' registry once its queued
    /// work is covered by a tail event (no fence can miss it meanwhile).
    Retire(Arc<StreamInner>),
    /// Anything else: run once the fence has passed (no driver call may block in it).
    Callback(Box<dyn FnOnce() + Send>),
}

/// A raw pointer to pinned memory, movable between threads (the cache's blocks).
pub(crate) struct HostPtr(pub(crate) *mut c_void);
// SAFETY: pinned host memory belongs to the process, not to a thread; a `HostPtr` is owned by
// one holder at a time (the cache or one allocation), which alone uses it.
unsafe impl Send for HostPtr {}

/// A module handle, movable to the reclaimer thread.
pub(crate) struct ModulePtr(pub(crate) CUmodule);
// SAFETY: module handles may be used and unloaded from any thread (the driver API is
// thread-safe); ownership moves with the value.
unsafe impl Send for ModulePtr {}

// ---------------------------------------------------------------------------------------------
// The registry of streams that fences cover

#[derive(Default)]
struct Registry {
    /// Every stream that may have work queued: live ones, and retired ones until their tail is
    /// recorded. Strong references: a stream being dropped stays visible here.
    live: Vec<Arc<StreamInner>>,
    /// Last events of retired streams whose work may not have finished.
    tails: Vec<Arc<RawEvent>>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (each critical section
    // is a push, a retain or a swap), so a poisoned lock is used as is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn register_stream(s: &Arc<StreamInner>) {
    lock(registry()).live.push(s.clone());
}

/// The last user handle of `s` dropped: hand it to the reclaimer (no driver call here).
pub(crate) fn retire_stream(s: Arc<StreamInner>) {
    defer(Garbage::Retire(s));
}

/// On the reclaimer: retires `s` if it can (its tail recorded, or it is idle), leaving the
/// registry in one step, so that every fence sees either the stream or its tail. `Err(s)` while
/// the stream captures (a record would land in the graph): retried later.
fn try_retire(s: Arc<StreamInner>) -> std::result::Result<(), Arc<StreamInner>> {
    let tail = match s.record_now() {
        Ok(Some(e)) => Some(e),
        Ok(None) => return Err(s),
        Err(err) => {
            // The stream cannot take an event (its context faulted): its work will never run.
            tracing::warn!(%err, "could not record a retired stream's last event");
            None
        }
    };
    let mut r = lock(registry());
    r.live.retain(|l| !Arc::ptr_eq(l, &s));
    r.tails.extend(tail.map(Arc::new));
    Ok(())
}

/// Whether `home` is the only stream that can have pending work (so a stream-ordered release on
/// `home` is already fenced against every use).
pub(crate) fn only_live_stream_is(home: &Arc<StreamInner>) -> bool {
    let mut r = lock(registry());
    r.tails.retain(|t| !query_done(t));
    r.tails.is_empty() && r.live.len() == 1 && Arc::ptr_eq(&r.live[0], home)
}

/// Whether every stream the crate knows is idle right now (no work queued, none capturing) and
/// every retired stream's tail has passed. `cuModuleUnload`, like `cuMemFreeHost`, waits for the
/// GPU's queued work and holds back other threads' driver calls meanwhile: the reclaimer unloads
/// only at such a moment, so that it cannot stall a thread that is about to signal a flag.
fn streams_idle() -> bool {
    let (streams, tails) = {
        let r = lock(registry());
        (r.live.clone(), r.tails.clone())
    };
    tails.iter().all(|t| query_done(t))
        && streams.iter().all(|s| {
            // SAFETY: the stream is live (held by the Arc). The capture state is asked first:
            // querying a capturing stream would invalidate its capture.
            matches!(
                unsafe { raw::stream_capture_state(s.raw) },
                Ok(crate::raw::CaptureState::None)
            )
                // SAFETY: as above.
                && matches!(unsafe { raw::stream_query(s.raw) }, Ok(true))
        })
}

fn query_done(e: &RawEvent) -> bool {
    // SAFETY: the event is live (owned by `e`).
    match unsafe { raw::event_query(e.0) } {
        Ok(done) => done,
        // Recorded into a capture (a race with a capture that began after our check): not a point
        // of the stream's work; the fence records it again.
        Err(Error::Driver(d)) if d.code == ferrocuda_sys::CUresult::CUDA_ERROR_CAPTURED_EVENT => {
            false
        }
        // A failed query counts as done: an event whose stream faulted will never complete, and
        // the context is then unusable anyway.
        Err(_) => true,
    }
}

/// One stream's part of a fence: the event recorded on it, or none yet (it was capturing).
struct FencePoint {
    stream: Option<Arc<StreamInner>>,
    event: Option<Arc<RawEvent>>,
}

/// A point past every use enqueued so far: one event per stream that may have work queued.
pub(crate) struct Fence(Vec<FencePoint>);

/// Records a fence: an event on every stream of the registry (a capturing one gets its event
/// once the capture ends: later is only more conservative), plus the tails of retired streams.
pub(crate) fn fence() -> Fence {
    let (streams, tails): (Vec<Arc<StreamInner>>, Vec<Arc<RawEvent>>) = {
        let mut r = lock(registry());
        r.tails.retain(|t| !query_done(t));
        (r.live.clone(), r.tails.clone())
    };
    let mut points: Vec<FencePoint> = tails
        .into_iter()
        .map(|t| FencePoint {
            stream: None,
            event: Some(t),
        })
        .collect();
    for s in streams {
        let mut p = FencePoint {
            stream: Some(s),
            event: None,
        };
        p.record();
        points.push(p);
    }
    Fence(points)
}

impl FencePoint {
    fn record(&mut self) {
        let Some(s) = &self.stream else { return };
        match s.record_now() {
            Ok(e) => self.event = e.map(Arc::new),
            Err(err) => {
                tracing::warn!(%err, "could not record a release fence on a stream");
                // A stream that cannot take an event has faulted: nothing more runs on it.
                self.stream = None;
            }
        }
    }

    fn passed(&mut self) -> bool {
        if self.event.is_none() {
            self.record();
            if self.stream.is_none() {
                return true;
            }
        }
        match &self.event {
            None => false,
            Some(e) => {
                // SAFETY: the event is live (owned by the Arc).
                match unsafe { raw::event_query(e.0) } {
                    Ok(done) => done,
                    Err(Error::Driver(d))
                        if d.code == ferrocuda_sys::CUresult::CUDA_ERROR_CAPTURED_EVENT =>
                    {
                        self.event = None;
                        false
                    }
                    Err(_) => true,
                }
            }
        }
    }
}

impl Fence {
    fn passed(&mut self) -> bool {
        self.0.iter_mut().all(FencePoint::passed)
    }
}

// ---------------------------------------------------------------------------------------------
// The reclaimer thread

struct Reclaimer {
    incoming: Mutex<VecDeque<Garbage>>,
    wake: Condvar,
    /// Garbage handed over and not yet released.
    outstanding: AtomicUsize,
    idle: Condvar,
    idle_lock: Mutex<()>,
}

fn reclaimer() -> &'static Reclaimer {
    static R: OnceLock<&'static Reclaimer> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static Reclaimer = Box::leak(Box::new(Reclaimer {
            incoming: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            outstanding: AtomicUsize::new(0),
            idle: Condvar::new(),
            idle_lock: Mutex::new(()),
        }));
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
    let r = reclaimer();
    r.outstanding.fetch_add(1, Ordering::AcqRel);
    lock(&r.incoming).push_back(g);
    r.wake.notify_one();
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

fn run(r: &'static Reclaimer) {
    guard::mark_reclaimer_thread();
    // Garbage waits in batches behind one shared fence: one event per stream per batch, however
    // many resources were dropped meanwhile, so the reclaimer keeps up with drop-heavy loops.
    let mut pending: Batches<Fence, Garbage> = Batches::new();
    // Retired streams that were capturing: retried until the capture ends.
    let mut retiring: Vec<Arc<StreamInner>> = Vec::new();
    // Modules past their fence, unloaded once every stream is idle (see `streams_idle`).
    let mut unloads: Vec<Garbage> = Vec::new();
    let mut pause = Duration::from_micros(20);
    loop {
        let new: Vec<Garbage> = {
            let mut q = lock(&r.incoming);
            if q.is_empty() && pending.is_empty() && retiring.is_empty() && unloads.is_empty() {
                q = r
                    .wake
                    .wait_while(q, |q| q.is_empty())
                    .unwrap_or_else(|p| p.into_inner());
            }
            q.drain(..).collect()
        };
        let mut fenced = Vec::new();
        let mut now = 0;
        for g in new {
            match g {
                Garbage::Retire(s) => retiring.push(s),
                // Events and stream handles are released by the driver once their work is done.
                g @ (Garbage::Event(_) | Garbage::Stream(_)) => {
                    release(g);
                    now += 1;
                }
                g => fenced.push(g),
            }
        }
        let before = retiring.len();
        retiring = retiring
            .into_iter()
            .filter_map(|s| try_retire(s).err())
            .collect();
        now += before - retiring.len();
        if now > 0 {
            r.done(now);
            pause = Duration::from_micros(20);
        }
        if !fenced.is_empty() {
            // The fence is recorded here, after the drops: later is only more conservative.
            pending.push(fence(), fenced);
            pause = Duration::from_micros(20);
        }
        let mut waiting = 0;
        let mut released = pending.poll(Fence::passed, |g| match g {
            g @ Garbage::Module { .. } => {
                unloads.push(g);
                waiting += 1;
            }
            g => release(g),
        });
        released -= waiting;
        if !unloads.is_empty() && streams_idle() {
            released += unloads.len();
            unloads.drain(..).for_each(release);
        }
        if released > 0 {
            r.done(released);
        }
        if !pending.is_empty() || !retiring.is_empty() || !unloads.is_empty() {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

impl Reclaimer {
    fn done(&self, n: usize) {
        self.outstanding.fetch_sub(n, Ordering::AcqRel);
        let _g = lock(&self.idle_lock);
        self.idle.notify_all();
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
        Garbage::DevicePtr { device, ptr } => device.reclaim_stream().and_then(|s| {
            // SAFETY: the fence passed, so no work uses `ptr`; it came from cuMemAllocAsync.
            unsafe { raw::mem_free_async(ptr, s) }
        }),
        Garbage::Module { device, module } => device.bind_checked().and_then(|()| {
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
    let r = reclaimer();
    let deadline = Instant::now() + timeout;
    let mut g = lock(&r.idle_lock);
    while r.outstanding.load(Ordering::Acquire) > 0 {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: "deferred releases",
                timeout,
            });
        }
        g = r
            .idle
            .wait_timeout(g, (deadline - now).min(Duration::from_millis(5)))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    Ok(())
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
    reclaimer().outstanding.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::Batches;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Drop `n` resources; the GPU has enqueued work up to the current point.
        Drop(usize),
        /// The GPU advances past `k` more enqueued points.
        Advance(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..5).prop_map(Op::Drop),
            (0u32..4).prop_map(Op::Advance)
        ]
    }

    proptest! {
        /// Model of the keep-alive rule: a resource dropped when the GPU had `e` points enqueued is
        /// released only once the GPU passed point `e` (its fence), and exactly once; at the end,
        /// with the GPU past everything, nothing is left.
        #[test]
        fn batches_release_each_item_once_and_never_before_its_fence(ops in proptest::collection::vec(op(), 1..80)) {
            let mut b: Batches<u32, (usize, u32)> = Batches::new();
            let (mut enqueued, mut gpu_at, mut next_id) = (0u32, 0u32, 0usize);
            let mut released = vec![false; 400];
            for o in ops {
                match o {
                    Op::Drop(n) => {
                        enqueued += 1; // the drop happens after work was enqueued
                        let batch: Vec<_> = (0..n).map(|_| { next_id += 1; (next_id - 1, enqueued) }).collect();
                        b.push(enqueued, batch);
                    }
                    Op::Advance(k) => gpu_at = (gpu_at + k).min(enqueued),
                }
                b.poll(|&mut fence| gpu_at >= fence, |(id, fence)| {
                    assert!(gpu_at >= fence, "released before its fence");
                    assert!(!released[id], "released twice");
                    released[id] = true;
                });
            }
            gpu_at = enqueued;
            b.poll(|&mut fence| gpu_at >= fence, |(id, _)| {
                assert!(!released[id]);
                released[id] = true;
            });
            prop_assert!(b.is_empty());
            prop_assert!(released[..next_id].iter().all(|&r| r));
        }
    }
}
