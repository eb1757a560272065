//! Host functions on streams, and the async trampoline's worker pool.
//!
//! A closure given to [`DeviceStream::enqueue_host_func`](crate::DeviceStream::enqueue_host_func)
//! is moved into a reusable [`Job`] (small closures are stored inline: no allocation per call),
//! and the job's address is the `userData` of `cuLaunchHostFunc`. When the stream reaches it, the
//! driver calls [`host_func_entry`] on its callback thread, which runs the closure once, inside
//! `catch_unwind` (a panic never unwinds into the driver) and with driver calls refused.
//!
//! The trampoline's jobs ([`DeviceStream::enqueue_async_host_func`](crate::DeviceStream::enqueue_async_host_func))
//! are kicked off by [`kickoff_entry`] (host-function mode) or by a GPU write the crate's notifier
//! sees (see `trampoline.rs`); a worker runs the closure and then signals the flag (release) — also
//! when the closure panicked, so the waiters it owes are never stranded.

use crate::runtime::gates::HostWord;
use crate::runtime::guard::{self, HostFuncScope};
use crate::runtime::park::{Rank, Ranked};
use crossbeam_queue::ArrayQueue;
use std::ffi::c_void;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Bytes of closure state stored inline in a job; larger closures are boxed.
const INLINE_BYTES: usize = 64;

#[repr(C, align(16))]
struct InlineBuf(MaybeUninit<[u8; INLINE_BYTES]>);

/// A type-erased `FnOnce() + Send + 'static`, stored inline when it fits.
pub(crate) struct SmallFn {
    buf: InlineBuf,
    call: unsafe fn(*mut u8),
    drop_in_place: unsafe fn(*mut u8),
}

// SAFETY: a SmallFn is only ever built from an `F: Send` (or a Box of one), and it is the sole
// owner of that closure; moving it moves the closure.
unsafe impl Send for SmallFn {}

unsafe fn call_inline<F: FnOnce()>(p: *mut u8) {
    // SAFETY: `p` holds an initialised `F`, read out exactly once (the caller forgets the SmallFn).
    let f = unsafe { std::ptr::read(p.cast::<F>()) };
    f()
}

unsafe fn drop_inline<F>(p: *mut u8) {
    // SAFETY: `p` holds an initialised `F` that was never called.
    unsafe { std::ptr::drop_in_place(p.cast::<F>()) }
}

impl SmallFn {
    pub(crate) fn new<F: FnOnce() + Send + 'static>(f: F) -> SmallFn {
        let mut buf = InlineBuf(MaybeUninit::uninit());
        if size_of::<F>() <= INLINE_BYTES && align_of::<F>() <= align_of::<InlineBuf>() {
            // SAFETY: `buf` is large and aligned enough for `F` (checked just above).
            unsafe { std::ptr::write(buf.0.as_mut_ptr().cast::<F>(), f) };
            SmallFn {
                buf,
                call: call_inline::<F>,
                drop_in_place: drop_inline::<F>,
            }
        } else {
            let boxed: Box<F> = Box::new(f);
            // SAFETY: a Box is one pointer: it fits and is aligned.
            unsafe { std::ptr::write(buf.0.as_mut_ptr().cast::<Box<F>>(), boxed) };
            SmallFn {
                buf,
                call: call_inline::<Box<F>>,
                drop_in_place: drop_inline::<Box<F>>,
            }
        }
    }

    /// Runs the closure (consuming it). A panic propagates to the caller.
    pub(crate) fn call(self) {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: the buffer holds the closure; `me` is never dropped, so it is read exactly once.
        unsafe { (me.call)(me.buf.0.as_mut_ptr().cast()) }
    }
}

impl Drop for SmallFn {
    fn drop(&mut self) {
        // SAFETY: the closure was not called (calling forgets the SmallFn), so it is initialised.
        unsafe { (self.drop_in_place)(self.buf.0.as_mut_ptr().cast()) }
    }
}

/// Panics of host functions and trampoline closures of one stream, reported at its next synchronize.
#[derive(Default)]
pub(crate) struct PanicSink {
    count: AtomicUsize,
    first: Mutex<Option<String>>,
}

impl PanicSink {
    pub(crate) fn report(&self, msg: String) {
        tracing::debug!(%msg, "host function panicked");
        let mut first = Ranked::lock(Rank::Leaf, || {
            self.first.lock().unwrap_or_else(|p| p.into_inner())
        });
        if first.is_none() {
            *first = Some(msg);
        }
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes the panics reported so far: (count, first message).
    pub(crate) fn take(&self) -> Option<(usize, String)> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut first = Ranked::lock(Rank::Leaf, || {
            self.first.lock().unwrap_or_else(|p| p.into_inner())
        });
        let n = self.count.swap(0, Ordering::AcqRel);
        Some((n, first.take().unwrap_or_default()))
    }
}

/// One enqueued host function (or trampoline step).
pub(crate) struct Job {
    f: Option<SmallFn>,
    sink: Option<Arc<PanicSink>>,
    /// For the trampoline: the flag to signal after `f`, and the value.
    flag: Option<Arc<dyn HostWord>>,
    value: u64,
}

/// Recycled jobs: enqueueing a host function allocates nothing once the pool is warm.
fn job_pool() -> &'static ArrayQueue<Box<Job>> {
    static P: OnceLock<ArrayQueue<Box<Job>>> = OnceLock::new();
    P.get_or_init(|| ArrayQueue::new(4096))
}

impl Job {
    pub(crate) fn new(
        f: SmallFn,
        sink: Arc<PanicSink>,
        flag: Option<Arc<dyn HostWord>>,
        value: u64,
    ) -> Box<Job> {
        match job_pool().pop() {
            Some(mut j) => {
                j.f = Some(f);
                j.sink = Some(sink);
                j.flag = flag;
                j.value = value;
                j
            }
            None => Box::new(Job {
                f: Some(f),
                sink: Some(sink),
                flag,
                value,
            }),
        }
    }

    /// Runs the closure once, containing a panic (and a panicking panic payload); then, for a
    /// trampoline job, signals the flag.
    fn run(&mut self) {
        if let Some(f) = self.f.take()
            && let Err(msg) = guard::contain(|| f.call())
            && let Some(s) = &self.sink
        {
            s.report(msg);
        }
        // The flag is signalled whether or not the closure panicked: the waiters it owes must go on.
        if let Some(flag) = &self.flag {
            // Never over an abort: whoever aborted the flag (the user, a failed producer) must
            // still be seen by the waiters.
            flag.signal_unless_aborted(self.value);
            crate::runtime::trampoline::step_done();
        }
    }

    /// Drops the closure unrun, forgets the flag (the enqueue failed: nothing is owed) and
    /// recycles the job.
    pub(crate) fn disarm_and_recycle(mut self: Box<Self>) {
        self.f = None;
        if self.flag.take().is_some() {
            crate::runtime::trampoline::step_done();
        }
        self.recycle();
    }

    /// Runs the job (its closure, then its signal) and recycles it.
    pub(crate) fn run_and_recycle(mut self: Box<Self>) {
        self.run();
        self.recycle();
    }

    /// Returns the job to the pool (dropping what it held: the flag handle may be the last one;
    /// an unrun closure's captures drop under [`guard::contain`]).
    pub(crate) fn recycle(mut self: Box<Self>) {
        if let Some(f) = self.f.take()
            && let Err(msg) = guard::contain(|| drop(f))
        {
            tracing::debug!(%msg, "dropping an unrun host closure panicked");
        }
        self.sink = None;
        self.flag = None;
        let _ = job_pool().push(self);
    }
}

/// The `cuLaunchHostFunc` callback of a blocking host function.
///
/// # Safety
/// `data` is a `Box<Job>` leaked by the enqueue, passed to the driver exactly once.
pub(crate) unsafe extern "C" fn host_func_entry(data: *mut c_void) {
    // SAFETY: per the contract above, this reclaims the box exactly once.
    let mut job = unsafe { Box::from_raw(data.cast::<Job>()) };
    // Nothing may unwind out of an extern "C" callback: `run` and `recycle` contain the user's
    // panics (and panicking payloads). Driver calls are refused while the user's code runs here.
    let scope = HostFuncScope::enter();
    job.run();
    job.recycle();
    drop(scope);
}

/// The `cuLaunchHostFunc` callback of the trampoline: hands the job to a worker and returns.
///
/// # Safety
/// As [`host_func_entry`].
pub(crate) unsafe extern "C" fn kickoff_entry(data: *mut c_void) {
    // SAFETY: per the contract, this reclaims the box exactly once.
    let job = unsafe { Box::from_raw(data.cast::<Job>()) };
    crate::runtime::trampoline::dispatch(job);
}

/// A closure that runs many times (a graph host node's), behind a lock: a `FnMut` may be called
/// from several replays at once.
/// A graph node's closure; its argument is the run's step (the gated device loop's step count, 0
/// for other nodes).
pub(crate) type Body = Mutex<Box<dyn FnMut(u64) + Send>>;

/// Runs `body` with `step` under [`guard::contain`], reporting a panic to `panics`.
pub(crate) fn call(body: &Body, panics: &PanicSink, step: u64) {
    let r = guard::contain(|| {
        // A panic inside poisons the mutex; the next run still calls the closure.
        let mut f = Ranked::lock(Rank::HostNode, || {
            body.lock().unwrap_or_else(|p| p.into_inner())
        });
        f(step)
    });
    if let Err(msg) = r {
        panics.report(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn small_fn_runs_inline_and_boxed_closures_exactly_once() {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        SmallFn::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .call();
        let big = [7u64; 32]; // 256 bytes: boxed
        let h = hits.clone();
        SmallFn::new(move || {
            h.fetch_add(big.iter().sum::<u64>() as usize, Ordering::SeqCst);
        })
        .call();
        assert_eq!(hits.load(Ordering::SeqCst), 1 + 7 * 32);
    }

    #[test]
    fn dropped_small_fn_drops_its_captures_once() {
        let token = Arc::new(());
        let t = token.clone();
        let f = SmallFn::new(move || drop(t));
        assert_eq!(Arc::strong_count(&token), 2);
        drop(f);
        assert_eq!(Arc::strong_count(&token), 1);
        let t = token.clone();
        let big = [0u8; 200];
        let f = SmallFn::new(move || drop((t, big)));
        drop(f);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn panicking_job_is_reported_and_its_capture_dropped() {
        let sink = Arc::new(PanicSink::default());
        let token = Arc::new(());
        let t = token.clone();
        let mut job = Job::new(
            SmallFn::new(move || {
                let _t = t;
                panic!("boom {}", 7)
            }),
            sink.clone(),
            None,
            0,
        );
        job.run();
        job.recycle();
        assert_eq!(Arc::strong_count(&token), 1);
        assert_eq!(sink.take(), Some((1, "boom 7".to_owned())));
        assert_eq!(sink.take(), None);
    }

    proptest! {
        /// Jobs through the host-function entry point, in any mix of panicking and not: every
        /// closure runs exactly once, every panic is counted, and each capture is dropped once.
        #[test]
        fn host_func_entry_runs_each_job_once(panics in proptest::collection::vec(any::<bool>(), 1..64)) {
            let sink = Arc::new(PanicSink::default());
            let runs = Arc::new(AtomicU64::new(0));
            let token = Arc::new(());
            for &p in &panics {
                let (r, t) = (runs.clone(), token.clone());
                let job = Job::new(SmallFn::new(move || {
                    let _t = t;
                    r.fetch_add(1, Ordering::SeqCst);
                    if p { panic!("planned") }
                }), sink.clone(), None, 0);
                // SAFETY: a leaked Box<Job>, handed over once, as the driver would.
                unsafe { host_func_entry(Box::into_raw(job).cast()) };
            }
            prop_assert_eq!(runs.load(Ordering::SeqCst), panics.len() as u64);
            let expected = panics.iter().filter(|&&p| p).count();
            prop_assert_eq!(sink.take().map_or(0, |(n, _)| n), expected);
            prop_assert_eq!(Arc::strong_count(&token), 1);
        }
    }

    #[test]
    fn driver_calls_are_refused_inside_a_host_function() {
        let sink = Arc::new(PanicSink::default());
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        let job = Job::new(
            SmallFn::new(move || {
                *s.lock().unwrap() = Some(crate::runtime::raw::device_count());
            }),
            sink,
            None,
            0,
        );
        // SAFETY: as above.
        unsafe { host_func_entry(Box::into_raw(job).cast()) };
        let r = seen.lock().unwrap().take().unwrap();
        assert!(
            matches!(
                r,
                Err(crate::Error::CalledFromHostFunc {
                    op: "cuDeviceGetCount"
                })
            ),
            "{r:?}"
        );
        // Outside the host function the same call is not refused for that reason.
        assert!(!matches!(
            crate::runtime::raw::device_count(),
            Err(crate::Error::CalledFromHostFunc { .. })
        ));
    }
}
