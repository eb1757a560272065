//! [`HostCallback`]: a host function that can run many times (CUDA graph host nodes).
//!
//! A graph's host node calls the same function with the same `userData` on every replay, so its
//! closure is `FnMut` and lives as long as the graph's last launch. [`HostCallback`] owns such a
//! closure with the same guarantees as [`DeviceStream::enqueue_host_func`](crate::DeviceStream::enqueue_host_func):
//! a panic is caught and counted (never unwinds into the driver), CUDA calls inside are refused.
//! The async form is the trampoline as a graph node: each run hands the closure to a crate worker
//! and returns at once; the worker runs it and then signals the flag.

use crate::flag::{CompletionFlag, FlagInner};
use crate::guard::{self, HostFuncScope};
use crate::host_func::{Job, PanicSink, SmallFn};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

pub(crate) type Body = Mutex<Box<dyn FnMut() + Send>>;

struct State {
    body: Arc<Body>,
    panics: Arc<PanicSink>,
    /// For the async form: the flag and the value to signal after each run.
    signal: Option<(Arc<FlagInner>, u64)>,
}

/// A reusable host function for CUDA graph host nodes (or raw `cuLaunchHostFunc`).
///
/// [`raw_parts`](Self::raw_parts) gives the `(fn, userData)` pair to hand to the driver; both stay
/// valid while this value (or a clone of it) lives. ferrocuda-graph keeps it alive until the last
/// launch of the graph that uses it has finished.
#[derive(Clone)]
pub struct HostCallback {
    state: Arc<State>,
}

impl HostCallback {
    /// A blocking host function: each run calls `f` on the driver's callback thread; the stream
    /// (or graph) waits for it.
    pub fn new(f: impl FnMut() + Send + 'static) -> Self {
        HostCallback {
            state: Arc::new(State {
                body: Arc::new(Mutex::new(Box::new(f))),
                panics: Arc::default(),
                signal: None,
            }),
        }
    }

    /// The trampoline as a reusable host function: each run hands `f` to a crate worker and
    /// returns at once; the worker calls `f`, then stores `value` in `flag` (release), also if `f`
    /// panicked. Runs of one callback never overlap (they share `f`).
    pub fn new_async(flag: &CompletionFlag, value: u64, f: impl FnMut() + Send + 'static) -> Self {
        crate::trampoline::start_workers();
        HostCallback {
            state: Arc::new(State {
                body: Arc::new(Mutex::new(Box::new(f))),
                panics: Arc::default(),
                signal: Some((flag.inner().clone(), value)),
            }),
        }
    }

    /// The function and `userData` to give the driver (`CUhostFn`, `void*`). Valid while `self`
    /// or a clone lives.
    pub fn raw_parts(&self) -> (unsafe extern "C" fn(*mut c_void), *mut c_void) {
        let data = Arc::as_ptr(&self.state).cast_mut().cast();
        if self.state.signal.is_some() {
            (async_entry, data)
        } else {
            (sync_entry, data)
        }
    }

    /// Panics of the closure since the last call: (count, first message).
    pub fn take_panics(&self) -> Option<(usize, String)> {
        self.state.panics.take()
    }
}

impl std::fmt::Debug for HostCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCallback")
            .field("async", &self.state.signal.is_some())
            .finish()
    }
}

pub(crate) fn call(body: &Body, panics: &PanicSink) {
    let r = guard::contain(|| {
        // A panic inside poisons the mutex; the next run still calls the closure.
        let mut f = body.lock().unwrap_or_else(|p| p.into_inner());
        f()
    });
    if let Err(msg) = r {
        panics.report(msg);
    }
}

/// # Safety
/// `data` is `Arc::as_ptr` of a live `State` (the owner keeps it alive while the driver may call).
unsafe extern "C" fn sync_entry(data: *mut c_void) {
    // SAFETY: per the contract.
    let state = unsafe { &*data.cast::<State>() };
    let _scope = HostFuncScope::enter();
    call(&state.body, &state.panics);
}

/// # Safety
/// As [`sync_entry`].
unsafe extern "C" fn async_entry(data: *mut c_void) {
    // SAFETY: per the contract.
    let state = unsafe { &*data.cast::<State>() };
    let Some((flag, value)) = &state.signal else {
        return;
    };
    let (body, panics) = (state.body.clone(), state.panics.clone());
    // The job owns what it needs (the closure, the panic sink, the flag), so it outlives the run
    // even if the graph is destroyed meanwhile.
    let job = Job::new(
        SmallFn::new(move || call(&body, &panics)),
        Arc::default(),
        Some(flag.clone()),
        *value,
    );
    crate::trampoline::step_enqueued();
    crate::trampoline::dispatch(job);
}
