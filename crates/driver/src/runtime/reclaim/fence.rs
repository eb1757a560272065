//! Fences: the streams that may have work queued, and a point past all of it.
//!
//! Every stream the crate creates is registered; when its last user handle drops it is retired:
//! the reclaimer records a *tail* event on it and, in one step under the registry's lock, the
//! stream leaves the registry and the tail enters it, so that every fence sees either the stream
//! or its tail. A [`Fence`] is one point per stream that may have work: an event recorded now on
//! every registered stream (a capturing one gets its event once the capture ends: later is only
//! more conservative), plus the tails not yet passed. It has passed once the GPU is past each
//! point, streams advancing independently.
//!
//! The bookkeeping is generic over the driver-facing half ([`Gpu`]: recording an event, asking
//! whether the GPU passed it), so that the property test below checks it against a model of
//! several streams; [`Cuda`] is the crate's.

use crate::error::{Error, Result};
use crate::runtime::context::Context;
use crate::runtime::handles::RawEvent;
use crate::runtime::park::{self, Rank, Ranked};
use crate::runtime::raw::{self, CUstream, CaptureState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

/// What fences need of a stream (the api side's stream implements it): its handle, its identity,
/// its context and the lock that orders capture transitions against operations.
pub(crate) trait FencedStream: Send + Sync {
    /// The live stream handle.
    fn raw(&self) -> CUstream;
    /// A process-unique identity, never reused (the order in which capture locks are taken).
    fn id(&self) -> u64;
    /// The stream's context.
    fn context(&self) -> &Context;
    /// Held shared by an operation from its capture check to its enqueue, exclusively by a
    /// capture transition; a module unload holds every stream's exclusively.
    fn capture_lock(&self) -> &RwLock<()>;

    /// An event recorded now on this stream, or `None` while the stream captures or a capture
    /// transition is under way (a record would land in the graph; the caller records later).
    ///
    /// The capture lock is held shared from the capture check to the record, as an operation of
    /// the crate holds it, so no capture can begin in between: an event of the reclaimer's
    /// recorded into a user's capture is work of another thread inside that capture, which the
    /// reclaimer then queries; a capture was seen invalidated on an H200
    /// (`CUDA_ERROR_STREAM_CAPTURE_INVALIDATED` in the middle of `Graph::capture`) while the
    /// reclaimer fenced. Taken without waiting: a fence never waits for a capture transition.
    fn record_now(&self) -> Result<Option<RawEvent>> {
        let _rank = park::ranked_try(Rank::Capture);
        let Ok(_shared) = self.capture_lock().try_read() else {
            return Ok(None);
        };
        // SAFETY: the stream is live (the implementor owns the handle).
        let state = unsafe { raw::stream_capture_state(self.raw()) }?;
        if !matches!(state, CaptureState::None) {
            return Ok(None);
        }
        let e = RawEvent::new_untimed(self.context())?;
        // SAFETY: event and stream are live and of one context.
        unsafe { raw::event_record(e.0, self.raw()) }?;
        Ok(Some(e))
    }
}

/// Whether the GPU is past an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    Yes,
    No,
    /// The event was recorded into a capture (a record that raced with a capture's beginning):
    /// it is no point of the stream's work.
    Captured,
}

/// The driver-facing half of fences.
pub(crate) trait Gpu {
    /// A stream handle that keeps the stream alive.
    type Stream: Clone;
    /// An event handle that keeps the event alive.
    type Event: Clone;
    /// Records an event on `s` behind everything enqueued on it so far; `Ok(None)` while `s`
    /// captures a graph (the record would land in the graph).
    fn record(&self, s: &Self::Stream) -> Result<Option<Self::Event>>;
    /// Whether the GPU is past `e`.
    fn reached(&self, e: &Self::Event) -> Reached;
    /// Whether `a` and `b` are one stream.
    fn same(a: &Self::Stream, b: &Self::Stream) -> bool;
    /// Whether `s` has no work queued and captures no graph.
    fn idle(&self, s: &Self::Stream) -> bool;
    /// Proof that no operation of the crate can enqueue on a stream while it lives.
    type Hold<'s>
    where
        Self: 's;
    /// Takes that proof for `s` without waiting (`None` when an operation is under way).
    fn try_hold<'s>(&self, s: &'s Self::Stream) -> Option<Self::Hold<'s>>;
    /// The order in which streams are held (one order for every caller).
    fn order(s: &Self::Stream) -> u64;
}

struct Streams<S, E> {
    /// Every stream that may have work queued: live ones, and retired ones until their tail is
    /// recorded. Strong references: a stream being dropped stays visible here.
    live: Vec<S>,
    /// Last events of retired streams whose work may not have finished.
    tails: Vec<E>,
}

/// The registry of streams that fences cover.
pub(crate) struct Registry<G: Gpu> {
    gpu: G,
    streams: Mutex<Streams<G::Stream, G::Event>>,
}

/// One stream's part of a fence: the event recorded on it, or none yet (it was capturing).
struct FencePoint<G: Gpu> {
    stream: Option<G::Stream>,
    event: Option<G::Event>,
}

/// A point past every use enqueued so far: one event per stream that may have work queued.
pub(crate) struct Fence<G: Gpu>(Vec<FencePoint<G>>);

impl<G: Gpu> Registry<G> {
    pub(crate) fn new(gpu: G) -> Self {
        Registry {
            gpu,
            streams: Mutex::new(Streams {
                live: Vec::new(),
                tails: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> Ranked<MutexGuard<'_, Streams<G::Stream, G::Event>>> {
        // A panic while holding the lock cannot leave the lists inconsistent (each critical
        // section is a push, a retain or a clone), so a poisoned lock is used as is.
        Ranked::lock(Rank::Fences, || {
            self.streams.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// The tails the GPU has not passed yet (the others leave the registry).
    fn tails_pending(&self, s: &mut Streams<G::Stream, G::Event>) {
        s.tails.retain(|t| self.gpu.reached(t) != Reached::Yes);
    }

    /// Registers a new stream: every fence from now on covers it.
    pub(crate) fn register(&self, s: &G::Stream) {
        self.lock().live.push(s.clone());
    }

    /// Retires `s` if it can (its tail recorded, or the stream faulted), leaving the registry in
    /// one step, so that every fence sees either the stream or its tail. `Err(s)` while the
    /// stream captures (a record would land in the graph): retried later.
    pub(crate) fn try_retire(&self, s: G::Stream) -> std::result::Result<(), G::Stream> {
        let tail = match self.gpu.record(&s) {
            Ok(Some(e)) => Some(e),
            Ok(None) => return Err(s),
            Err(err) => {
                // The stream cannot take an event (its context faulted): its work will never run.
                tracing::warn!(%err, "could not record a retired stream's last event");
                None
            }
        };
        let mut r = self.lock();
        r.live.retain(|l| !G::same(l, &s));
        r.tails.extend(tail);
        Ok(())
    }

    /// Whether `home` is the only stream that can have pending work (so a stream-ordered release
    /// on `home` is already fenced against every use).
    pub(crate) fn only_live_stream_is(&self, home: &G::Stream) -> bool {
        let mut r = self.lock();
        self.tails_pending(&mut r);
        r.tails.is_empty() && r.live.len() == 1 && G::same(&r.live[0], home)
    }

    /// Records a fence: an event on every registered stream, plus the tails not yet passed.
    pub(crate) fn fence(&self) -> Fence<G> {
        let (streams, tails) = {
            let mut r = self.lock();
            self.tails_pending(&mut r);
            (r.live.clone(), r.tails.clone())
        };
        let mut points: Vec<FencePoint<G>> = tails
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
            p.record(&self.gpu);
            points.push(p);
        }
        Fence(points)
    }

    /// Whether the GPU is past `f` (recording the points of streams that were capturing, if
    /// they no longer are).
    pub(crate) fn passed(&self, f: &mut Fence<G>) -> bool {
        f.0.iter_mut().all(|p| p.passed(&self.gpu))
    }
}

impl<G: Gpu> FencePoint<G> {
    fn record(&mut self, gpu: &G) {
        let Some(s) = &self.stream else { return };
        match gpu.record(s) {
            Ok(e) => self.event = e,
            Err(err) => {
                tracing::warn!(%err, "could not record a release fence on a stream");
                // A stream that cannot take an event has faulted: nothing more runs on it.
                self.stream = None;
            }
        }
    }

    fn passed(&mut self, gpu: &G) -> bool {
        if self.event.is_none() {
            self.record(gpu);
            if self.stream.is_none() {
                return true;
            }
        }
        match &self.event {
            None => false,
            Some(e) => match gpu.reached(e) {
                Reached::Yes => true,
                Reached::No => false,
                Reached::Captured => {
                    self.event = None;
                    false
                }
            },
        }
    }
}

/// The crate's streams and events.
pub(crate) struct Cuda;

impl Gpu for Cuda {
    type Stream = Arc<dyn FencedStream>;
    type Event = Arc<RawEvent>;

    fn record(&self, s: &Arc<dyn FencedStream>) -> Result<Option<Arc<RawEvent>>> {
        s.record_now().map(|e| e.map(Arc::new))
    }

    fn reached(&self, e: &Arc<RawEvent>) -> Reached {
        // SAFETY: the event is live (owned by the Arc).
        match unsafe { raw::event_query(e.0) } {
            Ok(true) => Reached::Yes,
            Ok(false) => Reached::No,
            Err(Error::Driver(d))
                if d.code == ferrocuda_sys::CUresult::CUDA_ERROR_CAPTURED_EVENT =>
            {
                Reached::Captured
            }
            // A failed query counts as done: an event whose stream faulted will never complete,
            // and the context is then unusable anyway.
            Err(_) => Reached::Yes,
        }
    }

    fn same(a: &Arc<dyn FencedStream>, b: &Arc<dyn FencedStream>) -> bool {
        Arc::ptr_eq(a, b)
    }

    fn idle(&self, s: &Arc<dyn FencedStream>) -> bool {
        // SAFETY: the stream is live (held by the Arc). The capture state is asked first:
        // querying a capturing stream would invalidate its capture.
        matches!(
            unsafe { raw::stream_capture_state(s.raw()) },
            Ok(CaptureState::None)
        )
            // SAFETY: as above.
            && matches!(unsafe { raw::stream_query(s.raw()) }, Ok(true))
    }

    type Hold<'s> = (std::sync::RwLockWriteGuard<'s, ()>, park::RankGuard);

    fn try_hold<'s>(&self, s: &'s Arc<dyn FencedStream>) -> Option<Self::Hold<'s>> {
        let rank = park::ranked_try(Rank::Capture);
        s.capture_lock().try_write().ok().map(|g| (g, rank))
    }

    fn order(s: &Arc<dyn FencedStream>) -> u64 {
        s.id()
    }
}

impl<G: Gpu> Registry<G> {
    /// Runs `f` at a quiet moment: every registered stream held (`Gpu::try_hold`: its capture
    /// lock exclusively, so no operation of the crate can enqueue meanwhile), every stream idle
    /// and every tail passed. The holds are taken without waiting: if one is busy, or some work is
    /// still queued, `value` is handed back (`Some(value)`) for a later try.
    ///
    /// The registry stays locked throughout, so no stream registers meanwhile: a stream created
    /// after a snapshot could take work (a wait on a host value) that `f` (a module unload, which
    /// waits for queued work while holding the driver's lock) would then wait behind. The calls
    /// made under the lock return at once: event and stream queries, and `f` itself, which runs
    /// only while every stream is idle.
    pub(crate) fn while_quiet<T>(&self, value: T, f: impl FnOnce(T)) -> Option<T> {
        let registry = self.lock();
        let (mut streams, tails) = (registry.live.clone(), registry.tails.clone());
        if !tails.iter().all(|t| self.gpu.reached(t) == Reached::Yes) {
            return Some(value);
        }
        // One order for every caller: no two reclaimer turns run at once anyway, and operations
        // hold one stream's lock at a time, shared.
        streams.sort_by_key(G::order);
        let mut held = Vec::with_capacity(streams.len());
        for s in &streams {
            match self.gpu.try_hold(s) {
                Some(h) => held.push(h),
                None => return Some(value),
            }
        }
        if !streams.iter().all(|s| self.gpu.idle(s)) {
            return Some(value);
        }
        f(value);
        drop(held);
        drop(registry);
        None
    }
}

/// The process's registry.
pub(crate) fn registry() -> &'static Registry<Cuda> {
    static R: OnceLock<Registry<Cuda>> = OnceLock::new();
    R.get_or_init(|| Registry::new(Cuda))
}

#[cfg(test)]
mod tests {
    //! The fences and the reclaimer's loop against a model of several streams.
    use super::{Fence, Gpu, Reached, Registry};
    use crate::error::Result;
    use crate::runtime::reclaim::{Backend, Reclaimer, Sort, Sweeper};
    use proptest::prelude::*;
    use std::cell::RefCell;

    /// One stream of the model GPU: work enqueued on it so far, work finished (in order, at the
    /// GPU's own pace), and whether it captures a graph (its work then goes into the graph).
    #[derive(Debug, Default)]
    struct Stream {
        enqueued: u64,
        done: u64,
        capturing: bool,
        /// Its last user handle dropped: no more work is enqueued on it.
        retired: bool,
    }

    /// The model GPU: an event is a stream and a position in its work.
    #[derive(Default)]
    struct Sim(RefCell<Vec<Stream>>);

    impl Gpu for Sim {
        type Stream = usize;
        type Event = (usize, u64);

        fn record(&self, &s: &usize) -> Result<Option<(usize, u64)>> {
            let streams = self.0.borrow();
            let st = &streams[s];
            Ok((!st.capturing).then_some((s, st.enqueued)))
        }

        fn reached(&self, &(s, at): &(usize, u64)) -> Reached {
            if self.0.borrow()[s].done >= at {
                Reached::Yes
            } else {
                Reached::No
            }
        }

        fn same(a: &usize, b: &usize) -> bool {
            a == b
        }

        fn idle(&self, &s: &usize) -> bool {
            let st = &self.0.borrow()[s];
            !st.capturing && st.done == st.enqueued
        }

        type Hold<'s> = ();

        fn try_hold(&self, _: &usize) -> Option<()> {
            Some(())
        }

        fn order(&s: &usize) -> u64 {
            s as u64
        }
    }

    /// A GPU whose streams are always idle, shared between threads.
    struct Idle;

    impl Gpu for Idle {
        type Stream = u64;
        type Event = ();
        fn record(&self, _: &u64) -> Result<Option<()>> {
            Ok(Some(()))
        }
        fn reached(&self, _: &()) -> Reached {
            Reached::Yes
        }
        fn same(a: &u64, b: &u64) -> bool {
            a == b
        }
        fn idle(&self, _: &u64) -> bool {
            true
        }
        type Hold<'s> = ();
        fn try_hold(&self, _: &u64) -> Option<()> {
            Some(())
        }
        fn order(&s: &u64) -> u64 {
            s
        }
    }

    /// A stream registered while a quiet moment's work runs (a module unload) could take work
    /// that the unload then waits behind, holding the driver's lock: the thread that was to
    /// signal that work blocked in its next driver call (seen on an H200: a new stream's wait
    /// enqueued between the registry's snapshot and the unload). So nothing may register until
    /// the quiet moment is over.
    #[test]
    fn no_stream_registers_while_a_quiet_moment_runs() {
        let registry = Registry::new(Idle);
        registry.register(&1);
        let registered = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|sc| {
            let ran = registry.while_quiet((), |()| {
                sc.spawn(|| {
                    registry.register(&2);
                    registered.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                std::thread::sleep(std::time::Duration::from_millis(100));
                assert!(
                    !registered.load(std::sync::atomic::Ordering::SeqCst),
                    "a stream registered during the quiet moment"
                );
            });
            assert!(ran.is_none(), "the quiet moment did not run");
        });
        assert!(registered.load(std::sync::atomic::Ordering::SeqCst));
    }

    /// What the model hands to the reclaimer.
    enum Item {
        /// A resource, dropped once each listed stream had enqueued work up to the position: it
        /// may be released only once the GPU is past all of them.
        Resource { id: usize, needs: Vec<(usize, u64)> },
        /// A stream whose last user handle dropped.
        Retire(usize),
    }

    /// The reclaimer's backend on the model: releases check each resource's positions.
    struct Model<'a> {
        fences: &'a Registry<Sim>,
        released: RefCell<Vec<u32>>,
    }

    impl Backend for Model<'_> {
        type Item = Item;
        type Fence = Fence<Sim>;
        type Retiring = usize;

        fn sort(&self, g: Item) -> Sort<Item, usize> {
            match g {
                Item::Retire(s) => Sort::Retire(s),
                g => Sort::Fenced(g),
            }
        }

        fn release(&self, g: Item) {
            let Item::Resource { id, needs } = g else {
                panic!("a retirement was released as garbage");
            };
            let streams = self.fences.gpu.0.borrow();
            for (s, at) in needs {
                assert!(
                    streams[s].done >= at,
                    "resource {id} released while stream {s} was at {} of {at}",
                    streams[s].done
                );
            }
            self.released.borrow_mut()[id] += 1;
        }

        fn retire(&self, s: usize) -> std::result::Result<(), usize> {
            self.fences.try_retire(s)
        }

        fn fence(&self) -> Fence<Sim> {
            self.fences.fence()
        }

        fn passed(&self, f: &mut Fence<Sim>) -> bool {
            self.fences.passed(f)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A new stream.
        Create,
        /// Work on the k-th stream still in use (mod count).
        Enqueue(usize),
        /// The GPU runs up to n more pieces of the k-th stream's work (any stream, retired too).
        Advance(usize, u64),
        /// n resources are dropped, after all the work enqueued so far, on every stream.
        Drop(usize),
        /// The last user handle of the k-th stream still in use drops.
        Retire(usize),
        /// The k-th stream (any) begins or ends a capture.
        Capture(usize),
        /// The reclaimer takes a turn.
        Turn,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::Create),
            4 => any::<usize>().prop_map(Op::Enqueue),
            4 => (any::<usize>(), 0u64..4).prop_map(|(k, n)| Op::Advance(k, n)),
            2 => (1usize..4).prop_map(Op::Drop),
            1 => any::<usize>().prop_map(Op::Retire),
            1 => any::<usize>().prop_map(Op::Capture),
            3 => Just(Op::Turn),
        ]
    }

    /// Turns the reclaimer if it has anything to do (with nothing, a turn would wait for a drop).
    fn turn(r: &Reclaimer<Item>, sweeper: &mut Sweeper<Model<'_>>) {
        if r.outstanding() > 0 {
            sweeper.turn(r);
        }
    }

    proptest! {
        /// The keep-alive rule on several streams that the GPU advances independently, created
        /// and retired between drops: a resource dropped after work was enqueued on some streams
        /// is released only once the GPU passed that work on every one of them (a fence is one
        /// point per stream that may have work, a retired stream's tail included until it
        /// passed), and exactly once; once the GPU is past everything, nothing is left. Leaving
        /// any stream, or any retired stream's tail, out of a fence fails this.
        #[test]
        fn fences_cover_every_stream_that_may_have_work(
            ops in proptest::collection::vec(op(), 1..120)
        ) {
            let fences = Registry::new(Sim::default());
            let r = Reclaimer::<Item>::new();
            let mut sweeper = Sweeper::new(Model { fences: &fences, released: RefCell::default() });
            let in_use = |fences: &Registry<Sim>| -> Vec<usize> {
                let streams = fences.gpu.0.borrow();
                (0..streams.len()).filter(|&s| !streams[s].retired).collect()
            };
            let mut dropped = 0;
            for o in ops {
                match o {
                    Op::Create => {
                        let s = {
                            let mut streams = fences.gpu.0.borrow_mut();
                            streams.push(Stream::default());
                            streams.len() - 1
                        };
                        fences.register(&s);
                    }
                    Op::Enqueue(k) => {
                        let live = in_use(&fences);
                        if let Some(&s) = live.get(k % live.len().max(1)) {
                            let st = &mut fences.gpu.0.borrow_mut()[s];
                            if !st.capturing {
                                st.enqueued += 1;
                            }
                        }
                    }
                    Op::Advance(k, n) => {
                        let mut streams = fences.gpu.0.borrow_mut();
                        let len = streams.len();
                        if let Some(st) = streams.get_mut(k % len.max(1)) {
                            st.done = (st.done + n).min(st.enqueued);
                        }
                    }
                    Op::Drop(n) => {
                        let needs: Vec<(usize, u64)> = fences
                            .gpu
                            .0
                            .borrow()
                            .iter()
                            .enumerate()
                            .filter(|(_, st)| st.enqueued > 0)
                            .map(|(s, st)| (s, st.enqueued))
                            .collect();
                        for _ in 0..n {
                            sweeper.backend.released.borrow_mut().push(0);
                            r.defer(Item::Resource { id: dropped, needs: needs.clone() });
                            dropped += 1;
                        }
                    }
                    Op::Retire(k) => {
                        let live = in_use(&fences);
                        if let Some(&s) = live.get(k % live.len().max(1)) {
                            fences.gpu.0.borrow_mut()[s].retired = true;
                            r.defer(Item::Retire(s));
                        }
                    }
                    Op::Capture(k) => {
                        let mut streams = fences.gpu.0.borrow_mut();
                        let len = streams.len();
                        if let Some(st) = streams.get_mut(k % len.max(1)) {
                            st.capturing = !st.capturing;
                        }
                    }
                    Op::Turn => turn(&r, &mut sweeper),
                }
            }
            // Captures end and the GPU finishes everything: all is released, once.
            for st in fences.gpu.0.borrow_mut().iter_mut() {
                st.capturing = false;
                st.done = st.enqueued;
            }
            for _ in 0..3 {
                turn(&r, &mut sweeper);
            }
            prop_assert_eq!(r.outstanding(), 0, "releases left after the GPU finished");
            let released = sweeper.backend.released.borrow();
            prop_assert!(released.iter().all(|&n| n == 1), "released counts: {:?}", released);
        }
    }

    /// A stream of no driver: only its capture lock is real.
    struct NoDriver(std::sync::RwLock<()>);

    impl super::FencedStream for NoDriver {
        fn raw(&self) -> crate::runtime::raw::CUstream {
            std::ptr::null_mut()
        }
        fn id(&self) -> u64 {
            1
        }
        fn context(&self) -> &crate::runtime::context::Context {
            unreachable!("no event is created while a capture transition holds the lock")
        }
        fn capture_lock(&self) -> &std::sync::RwLock<()> {
            &self.0
        }
    }

    /// While a capture transition holds a stream's capture lock, a fence records nothing on it
    /// (no driver call at all: a record could land in the capture being begun).
    #[test]
    fn fences_do_not_record_across_a_capture_transition() {
        use super::FencedStream;
        let s = NoDriver(std::sync::RwLock::new(()));
        let transition = s.0.write().unwrap();
        assert!(matches!(s.record_now(), Ok(None)));
        drop(transition);
    }
}
