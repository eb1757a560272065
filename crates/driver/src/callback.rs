//! [`HostCallback`]: a host function that can run many times (CUDA graph host nodes).
//!
//! A graph's host node calls the same function with the same `userData` on every replay, so its
//! closure is `FnMut` and lives as long as the graph's last launch. [`HostCallback`] owns such a
//! closure with the same guarantees as [`DeviceStream::enqueue_host_func`](crate::DeviceStream::enqueue_host_func):
//! a panic is caught and counted (never unwinds into the driver), CUDA calls inside are refused.
//! The async form is the trampoline as a graph node: each run hands the closure to a crate worker
//! and returns at once; the worker runs it and then signals the flag.

use crate::device::Device;
use crate::error::Result;
use crate::flag::CompletionFlag;
use crate::memory::DeviceBuffer;
use crate::module::Function;
use crate::runtime::gates::HostWord;
use crate::runtime::guard::HostFuncScope;
use crate::runtime::trampoline::job::{Body, Job, PanicSink, SmallFn, call};
use crate::runtime::trampoline::{self, GraphKick, KickSignal};
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct State {
    body: Arc<Body>,
    panics: Arc<PanicSink>,
    /// For the async form: the flag and the value to signal after each run.
    signal: Option<(Arc<dyn HostWord>, u64)>,
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
    pub fn new(mut f: impl FnMut() + Send + 'static) -> Self {
        HostCallback {
            state: Arc::new(State {
                body: Arc::new(Mutex::new(Box::new(move |_| f()))),
                panics: Arc::default(),
                signal: None,
            }),
        }
    }

    /// The trampoline as a reusable host function: each run hands `f` to a crate worker and
    /// returns at once; the worker calls `f`, then stores `value` in `flag` (release), also if `f`
    /// panicked. Runs of one callback never overlap (they share `f`).
    pub fn new_async(
        flag: &CompletionFlag,
        value: u64,
        mut f: impl FnMut() + Send + 'static,
    ) -> Self {
        trampoline::start_workers();
        HostCallback {
            state: Arc::new(State {
                body: Arc::new(Mutex::new(Box::new(move |_| f()))),
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

/// # Safety
/// `data` is `Arc::as_ptr` of a live `State` (the owner keeps it alive while the driver may call).
unsafe extern "C" fn sync_entry(data: *mut c_void) {
    // SAFETY: per the contract.
    let state = unsafe { &*data.cast::<State>() };
    let _scope = HostFuncScope::enter();
    call(&state.body, &state.panics, 0);
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
        SmallFn::new(move || call(&body, &panics, 0)),
        Arc::default(),
        Some(flag.clone()),
        *value,
    );
    trampoline::step_enqueued();
    trampoline::dispatch(job);
}

/// The trampoline's GPU-write kickoff as a CUDA graph kernel node (used by ferrocuda-graph).
///
/// Add a kernel node running [`kernel`](Self::kernel) with its two arguments; call
/// [`launched`](Self::launched) once per launch of a graph containing the node. Each run of the
/// node publishes a new count to a mapped slot; the crate's notifier thread sees it, a worker runs
/// the closure and then stores `value` in the flag. No host function runs, so event calls keep
/// their fresh-process cost, and the node costs one tiny kernel.
#[derive(Clone)]
pub struct GpuKickoff {
    kick: Arc<GraphKick>,
    kernel: Function,
    counter: Arc<DeviceBuffer<u64>>,
    slot: CompletionFlag,
}

impl GpuKickoff {
    /// A kickoff for `f`, signalling `value` on `flag` after each run.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`](crate::Error::Unsupported) without the kickoff kernel;
    /// [`Error::Driver`](crate::Error::Driver) if its counter or slot cannot be allocated.
    pub fn new(
        device: &Device,
        flag: &CompletionFlag,
        value: u64,
        mut f: impl FnMut() + Send + 'static,
    ) -> Result<Self> {
        let kernel = device.inner.gate_kernels(device)?.kick.clone();
        trampoline::start_workers();
        trampoline::start_notifier(&device.inner.rt)?;
        let s = device.new_stream()?;
        let counter = s.alloc_zeroed::<u64>(1)?;
        s.synchronize_timeout(Duration::from_secs(10))?;
        let slot = CompletionFlag::new(device)?;
        let kick = GraphKick::register(
            slot.inner().clone(),
            flag.inner().clone(),
            KickSignal::Value(value),
            Box::new(move |_| f()),
        );
        Ok(GpuKickoff {
            kick,
            kernel,
            counter: Arc::new(counter),
            slot,
        })
    }

    /// The kernel (`ferrocuda_kick(u64* counter, u64* slot)`, one thread) and its two arguments,
    /// to pass as resources (`LaunchArgs::arg`) so that the use path resolves and keeps them.
    pub fn kernel(&self) -> (Function, &DeviceBuffer<u64>, &CompletionFlag) {
        (self.kernel.clone(), &self.counter, &self.slot)
    }

    /// Records one more launch of a graph containing the node (so the crate's threads spin until
    /// its run is seen). Call it just before the launch; [`cancel_launch`](Self::cancel_launch)
    /// if the launch failed.
    pub fn launched(&self) {
        self.kick.launched();
    }

    /// Undoes [`launched`](Self::launched) after a failed launch.
    pub fn cancel_launch(&self) {
        self.kick.cancel_launch();
    }

    /// Panics of the closure since the last call: (count, first message).
    pub fn take_panics(&self) -> Option<(usize, String)> {
        self.kick.take_panics()
    }
}

/// The async trampoline as a CUDA graph node, by kickoff mode: the one door through which
/// ferrocuda-graph reaches the trampoline. Each run of the node hands the closure to a crate
/// worker, which runs it and then stores `value` in the flag.
#[derive(Clone, Debug)]
pub enum GraphKickoff {
    /// A host node ([`KickoffMode::HostFunc`](crate::KickoffMode::HostFunc), MAX's way): add
    /// [`HostCallback::raw_parts`] as the node's function.
    HostFunc(HostCallback),
    /// A one-thread kernel node ([`KickoffMode::GpuWrite`](crate::KickoffMode::GpuWrite)): add
    /// [`GpuKickoff::kernel`] as the node and call [`GpuKickoff::launched`] before each launch.
    GpuWrite(GpuKickoff),
}

impl GraphKickoff {
    /// The node's kickoff for `f`, signalling `value` on `flag` after each run.
    ///
    /// # Errors
    ///
    /// As [`GpuKickoff::new`] for [`KickoffMode::GpuWrite`](crate::KickoffMode::GpuWrite); the
    /// host-function form cannot fail.
    pub fn new(
        device: &Device,
        mode: crate::KickoffMode,
        flag: &CompletionFlag,
        value: u64,
        f: impl FnMut() + Send + 'static,
    ) -> Result<Self> {
        Ok(match mode {
            crate::KickoffMode::HostFunc => {
                GraphKickoff::HostFunc(HostCallback::new_async(flag, value, f))
            }
            crate::KickoffMode::GpuWrite => {
                GraphKickoff::GpuWrite(GpuKickoff::new(device, flag, value, f)?)
            }
        })
    }

    /// Panics of the closure since the last call: (count, first message).
    pub fn take_panics(&self) -> Option<(usize, String)> {
        match self {
            GraphKickoff::HostFunc(c) => c.take_panics(),
            GraphKickoff::GpuWrite(k) => k.take_panics(),
        }
    }
}

impl std::fmt::Debug for GpuKickoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuKickoff").finish_non_exhaustive()
    }
}
