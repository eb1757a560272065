//! [`DeviceStream`]: an ordered queue of GPU work.
//!
//! The stream's methods live in one file per concern: `copy.rs` (memory), `gate.rs` (host-value
//! waits and writes, polling gates and relays), `host.rs` (host functions and the async
//! trampoline), `launch.rs` (kernels). Every one of them enqueues through the use path
//! (`resource.rs`): it is the only way an operation gets the address of what it touches.

mod copy;
mod gate;
mod host;
mod launch;

pub use gate::{FlagSource, GateStrategy};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::event::DeviceEvent;
use crate::flag::CompletionFlag;
use crate::future::StreamSync;
use crate::resource::UnderCapture;
use crate::runtime::guard;
use crate::runtime::handles::{RawEvent, RawStream};
use crate::runtime::park::{Rank, Ranked};
use crate::runtime::raw::{self, CUstream, CaptureState};
use crate::runtime::reclaim;
use crate::runtime::trampoline::KickoffMode;
use crate::runtime::trampoline::job::PanicSink;
use crate::runtime::waiter::Cond;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

/// An ordered queue of GPU work on one device. Cheap to clone (clones are the same stream).
///
/// Everything enqueued runs in order. The methods return once the work is enqueued, not done;
/// [`synchronize`](Self::synchronize) waits for it. Streams are created non-blocking: they never
/// synchronise implicitly with other streams.
///
/// Gate GPU work on a host value (MAX's pattern):
///
/// ```no_run
/// use ferrocuda_driver::{CompletionFlag, Device};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let device = Device::new(0)?;
/// let stream = device.new_stream()?;
/// let flag = CompletionFlag::new(&device)?;
/// stream.wait_for_host_value_ge(&flag, 1)?; // work after this waits for the host
/// // ... enqueue the gated work ...
/// flag.signal(1); // released
/// stream.synchronize()?;
/// # Ok(()) }
/// ```
///
/// # Capture
///
/// Whether the stream captures a graph is asked of the driver at every operation (so a stream that
/// joined another stream's capture, by waiting on an event recorded there, counts too). Under
/// capture an operation is recorded, and the graph takes ownership of every buffer, flag and
/// function it touches; operations that cannot be replayed safely (one-shot host closures, copies
/// to or from borrowed host memory, allocation) return [`Error::NotAllowedUnderCapture`].
#[derive(Clone)]
pub struct DeviceStream {
    pub(crate) inner: Arc<StreamHandle>,
}

/// The user-facing owner of a stream: when the last one drops (every [`DeviceStream`] clone and
/// every buffer allocated on it), the stream is retired by the reclaimer, which keeps it visible
/// to fences until its queued work is covered by a tail event.
pub(crate) struct StreamHandle(pub(crate) Arc<StreamInner>);

impl std::ops::Deref for StreamHandle {
    type Target = Arc<StreamInner>;
    fn deref(&self) -> &Arc<StreamInner> {
        &self.0
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        // No driver call here (this may run inside a host function): the reclaimer records the
        // stream's tail and takes it out of the fences' registry.
        reclaim::retire_stream(self.0.clone());
    }
}

/// The stream itself: owned by its handle, the fences' registry and pending fences.
pub(crate) struct StreamInner {
    pub(crate) raw: CUstream,
    /// A process-unique identity, never reused (unlike the address of this value).
    pub(crate) id: u64,
    pub(crate) device: Device,
    pub(crate) panics: Arc<PanicSink>,
    kickoff: AtomicU8,
    /// Counter the polling gates of this stream bump when their time limit expires. Only the GPU
    /// writes it (a device-scope atomic add: see `check_panics`).
    pub(crate) expired: CompletionFlag,
    /// How many of `expired`'s expiries were reported already.
    expired_seen: AtomicU64,
    /// Makes an operation's capture check and its enqueue atomic with respect to the capture
    /// transitions made through the crate: operations hold it shared from the check to the
    /// enqueue; `begin_capture`, `end_capture` and `wait_for_event` (which joins the stream to a
    /// capture when the event was recorded in one) hold it exclusively. Held only across driver
    /// calls that return at once, never across one that can wait for the GPU.
    pub(crate) capture: std::sync::RwLock<()>,
    /// Who releases the handle once the crate is done with it.
    owner: StreamOwner,
    /// How long its `synchronize_async` futures waited, for the waiter's predicted spin.
    sync_history: Arc<crate::runtime::waiter::WaitHistory>,
}

/// Who releases a stream's handle when its [`StreamInner`] drops (after the stream was retired
/// and its work is covered where it matters).
pub(crate) enum StreamOwner {
    /// The crate created the stream: the handle is destroyed.
    Crate,
    /// Another library owns the stream ([`DeviceStream::from_raw_borrowed`]): the crate holds that
    /// library's keep-alive value and drops it instead, never destroying the handle itself.
    Foreign(Option<ForeignKeep>),
}

/// Another library's keep-alive of a stream (its own stream object, an `Arc` of it, ...).
pub(crate) struct ForeignKeep(pub(crate) Box<dyn std::any::Any + Send + Sync>);

impl Drop for ForeignKeep {
    fn drop(&mut self) {
        let keep = std::mem::replace(&mut self.0, Box::new(()));
        if guard::must_defer() {
            // Inside a host function (or while a stuck load holds the driver) the other library's
            // release, which calls the driver, runs on the reclaimer instead.
            reclaim::defer_drop(ForeignKeep(keep));
            return;
        }
        // User code (another library's `Drop`), possibly on a crate thread: contained. It may make
        // another context current (cudarc binds its context before destroying a stream; a
        // keep-alive may hold anything), so the crate's record of the current context is dropped
        // with it.
        if let Err(panic) = guard::contain(move || drop(keep)) {
            tracing::warn!(%panic, "dropping a borrowed stream's keep-alive panicked");
        }
        crate::runtime::context::forget_current_context();
    }
}

// SAFETY: a CUstream handle may be used from any thread: the driver API is thread-safe and a
// stream is not bound to the thread that created it (CUDA Driver API, "Thread safety"). The handle
// is never mutated after creation; the other fields are Send + Sync.
unsafe impl Send for StreamInner {}
// SAFETY: as above: every use through `&StreamInner` is a driver call on an immutable handle or
// an atomic.
unsafe impl Sync for StreamInner {}

impl Drop for StreamInner {
    fn drop(&mut self) {
        // The last owner is the reclaimer or a host buffer's record of a copy, after the stream was
        // retired: its work is covered by a tail event where it matters.
        match &mut self.owner {
            StreamOwner::Crate => drop(RawStream(self.raw)),
            StreamOwner::Foreign(keep) => drop(keep.take()),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl crate::runtime::reclaim::FencedStream for StreamInner {
    fn raw(&self) -> CUstream {
        self.raw
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn context(&self) -> &crate::runtime::context::Context {
        &self.device.inner.rt
    }
    fn capture_lock(&self) -> &std::sync::RwLock<()> {
        &self.capture
    }
}

impl StreamInner {
    /// The other library's keep-alive value, for a stream the crate borrowed.
    #[cfg_attr(
        not(any(feature = "cudarc", feature = "cust")),
        allow(dead_code, reason = "used by the interop features")
    )]
    pub(crate) fn foreign_keep(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        match &self.owner {
            StreamOwner::Foreign(Some(keep)) => Some(&*keep.0),
            _ => None,
        }
    }

    /// Excludes every operation between its capture check and its enqueue (see `capture`).
    pub(crate) fn capture_transition(&self) -> Ranked<std::sync::RwLockWriteGuard<'_, ()>> {
        // The lock guards no data: a poisoned lock is as good as a clean one.
        Ranked::lock(Rank::Capture, || {
            self.capture.write().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Held by an operation from its capture check to its enqueue (see `capture`).
    pub(crate) fn capture_shared(&self) -> Ranked<std::sync::RwLockReadGuard<'_, ()>> {
        Ranked::lock(Rank::Capture, || {
            self.capture.read().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Copies and memsets act on the current context: it must be the stream's (another device's
    /// context may be current after work on that device, e.g. NCCL's).
    #[inline]
    pub(crate) fn bind(&self) -> Result<()> {
        self.device.inner.bind()
    }
}

impl DeviceStream {
    pub(crate) fn create(device: &Device) -> Result<DeviceStream> {
        let _op = guard::enter("Device::new_stream")?;
        device.inner.bind_checked()?;
        // SAFETY: the device's context is current.
        let raw =
            unsafe { raw::stream_create(ferrocuda_sys::CUstream_flags::CU_STREAM_NON_BLOCKING.0) }?;
        // The expiry counter of the polling gates is made now, not at the first timed gate: that
        // may be under capture, where allocating pinned memory is not allowed.
        let expired = match CompletionFlag::new(device) {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: the stream was just created and nothing else has it.
                let _ = unsafe { raw::stream_destroy(raw) };
                return Err(e);
            }
        };
        Ok(Self::register(device, raw, expired, StreamOwner::Crate))
    }

    /// Makes `raw` a [`DeviceStream`] the fences cover; `owner` says who releases the handle.
    pub(crate) fn register(
        device: &Device,
        raw: CUstream,
        expired: CompletionFlag,
        owner: StreamOwner,
    ) -> DeviceStream {
        let inner = Arc::new(StreamInner {
            raw,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            device: device.clone(),
            panics: Arc::default(),
            kickoff: AtomicU8::new(KickoffMode::process_default().to_u8()),
            expired,
            expired_seen: AtomicU64::new(0),
            capture: std::sync::RwLock::new(()),
            owner,
            sync_history: Arc::default(),
        });
        reclaim::register_stream(inner.clone());
        DeviceStream {
            inner: Arc::new(StreamHandle(inner)),
        }
    }

    /// The device the stream belongs to.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The raw handle, for driver calls this crate does not wrap. It stays owned by the stream.
    ///
    /// Work you enqueue on it yourself is outside the crate's bookkeeping: record the use of the
    /// buffers it touches with [`DeviceBuffer::record_use`](crate::DeviceBuffer::record_use).
    pub fn as_raw(&self) -> CUstream {
        self.inner.raw
    }

    /// A number that identifies the stream for the life of the process (never reused).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// Reports host-function panics and expired polling gates since the last report.
    pub(crate) fn check_panics(&self) -> Result<()> {
        if let Some((count, first)) = self.inner.panics.take() {
            return Err(Error::HostFuncPanicked { count, first });
        }
        {
            let f = &self.inner.expired;
            // The host never writes the counter: the gates add to it with a device-scope atomic,
            // which is atomic only among the GPU's own threads (CUDA does not make a GPU's atomic
            // on mapped host memory atomic with the host's unless the device reports
            // CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED, which PCIe hosts do not). The total
            // only grows; what was reported is kept here.
            // A plain load first: `synchronize` passes here every time, an expiry is rare.
            let total = f.load();
            if total > self.inner.expired_seen.load(Ordering::Acquire) {
                let seen = self.inner.expired_seen.fetch_max(total, Ordering::AcqRel);
                if total > seen {
                    return Err(Error::GateExpired {
                        count: total - seen,
                    });
                }
            }
        }
        Ok(())
    }

    /// Blocks until all work enqueued so far has completed.
    ///
    /// Waits as long as it takes: if the stream waits on a host value, the thread that will signal
    /// must not be this one ([`synchronize_timeout`](Self::synchronize_timeout) gives up instead).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if enqueued work failed; [`Error::HostFuncPanicked`] if a host function
    /// (or trampoline closure) of this stream panicked since the last report.
    pub fn synchronize(&self) -> Result<()> {
        let _op = guard::enter("DeviceStream::synchronize")?;
        // SAFETY: the stream is live.
        unsafe { raw::stream_synchronize(self.inner.raw) }?;
        self.check_panics()
    }

    /// Like [`synchronize`](Self::synchronize), but gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the work has not completed in time; otherwise as `synchronize`.
    pub fn synchronize_timeout(&self, timeout: Duration) -> Result<()> {
        let _op = guard::enter("DeviceStream::synchronize_timeout")?;
        let e = RawEvent::new_untimed(&self.inner.device.inner)?;
        // SAFETY: event and stream are live and of one context.
        unsafe { raw::event_record(e.0, self.inner.raw) }?;
        crate::event::poll_until("DeviceStream::synchronize_timeout", timeout, || {
            // SAFETY: the event is live.
            unsafe { raw::event_query(e.0) }
        })?;
        self.check_panics()
    }

    /// A future that resolves once all work enqueued so far has completed: the async form of
    /// [`synchronize`](Self::synchronize).
    ///
    /// Records an event now (so later work is not waited for) and awaits it through the crate's
    /// waiter thread ([`DeviceEvent::wait_async`]); then reports host-function panics and
    /// expired gates as `synchronize` does. The future is `'static` (it holds a clone of the
    /// stream) and cancel-safe. A wait that may never be satisfied (work behind a host value
    /// nobody signals) is bounded by the caller, e.g. with `tokio::time::timeout`.
    ///
    /// ```no_run
    /// # async fn job(stream: ferrocuda_driver::DeviceStream) -> ferrocuda_driver::Result<()> {
    /// // ... enqueue work on `stream` ...
    /// stream.synchronize_async().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The output is as `synchronize`'s (an error recording the event, or the stream capturing a
    /// graph, is the future's output).
    pub fn synchronize_async(&self) -> StreamSync {
        let event = self
            .inner
            .begin(
                "DeviceStream::synchronize_async",
                UnderCapture::Refuse(
                    "a capture records work without running it: nothing to wait for",
                ),
            )
            .and_then(|op| {
                let e = RawEvent::new_untimed(&self.inner.device.inner)?;
                op.enqueue(|s| {
                    // SAFETY: event and stream are live and of one context.
                    unsafe { raw::event_record(e.0, s) }
                })?;
                Ok(Cond::Event {
                    event: Arc::new(e),
                    history: self.inner.sync_history.clone(),
                })
            });
        StreamSync::new(self.clone(), event)
    }

    /// Whether all work enqueued so far has completed (never blocks).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if enqueued work failed.
    pub fn is_idle(&self) -> Result<bool> {
        let _op = guard::enter("DeviceStream::is_idle")?;
        // SAFETY: the stream is live.
        unsafe { raw::stream_query(self.inner.raw) }
    }

    /// Records `event` at this point of the stream.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`] for an event of another device; [`Error::Driver`] otherwise.
    #[inline]
    pub fn record_event(&self, event: &DeviceEvent) -> Result<()> {
        // An event touches no memory: no use to record, and a record under capture is the
        // driver's own business (it makes the event a capture dependency).
        let _op = guard::enter("DeviceStream::record_event")?;
        if !event.device().same(&self.inner.device) {
            return Err(crate::resource::mismatch(
                "the event",
                &self.inner.device,
                event.device(),
            ));
        }
        // SAFETY: event and stream are live and of one context (checked above).
        unsafe { raw::event_record(event.raw.0, self.inner.raw) }?;
        event.mark_recorded();
        Ok(())
    }

    /// Makes later work on this stream wait until `event` (recorded on any stream, of any device)
    /// has completed. The host does not wait. Waiting on an event recorded in a capturing stream
    /// makes this stream join that capture.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    #[inline]
    pub fn wait_for_event(&self, event: &DeviceEvent) -> Result<()> {
        let _op = guard::enter("DeviceStream::wait_for_event")?;
        let _transition = self.inner.capture_transition();
        // SAFETY: event and stream are live; cross-context event waits are allowed.
        unsafe { raw::stream_wait_event(self.inner.raw, event.raw.0) }
    }

    /// How this stream kicks off [`enqueue_async_host_func`](Self::enqueue_async_host_func) steps.
    pub fn kickoff_mode(&self) -> KickoffMode {
        KickoffMode::from_u8(self.inner.kickoff.load(Ordering::Relaxed))
    }

    /// Chooses how this stream (and its clones) kicks off later async host-function steps. The
    /// default is [`KickoffMode::process_default`] (`GpuWrite` unless `FERROCUDA_KICKOFF=hostfunc`).
    pub fn set_kickoff_mode(&self, mode: KickoffMode) {
        self.inner.kickoff.store(mode.to_u8(), Ordering::Relaxed);
    }

    /// Starts capturing this stream's work into a CUDA graph (thread-local capture mode: other
    /// threads' CUDA calls are not affected). Work enqueued until [`end_capture`](Self::end_capture)
    /// is recorded, not run, and the graph owns what it touches (see the type's docs).
    /// ferrocuda-graph's `Graph::capture` wraps this pair and ends the capture whatever happens.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the stream is already capturing.
    pub fn begin_capture(&self) -> Result<()> {
        let _op = guard::enter("DeviceStream::begin_capture")?;
        let _transition = self.inner.capture_transition();
        // SAFETY: the stream is live.
        unsafe { raw::stream_begin_capture(self.inner.raw) }
    }

    /// Ends the capture and returns the captured graph. The caller owns it (`cuGraphDestroy`).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the stream was not capturing or the capture was invalidated (for
    /// example by an operation CUDA does not allow under capture).
    pub fn end_capture(&self) -> Result<ferrocuda_sys::CUgraph> {
        let _op = guard::enter("DeviceStream::end_capture")?;
        let _transition = self.inner.capture_transition();
        // SAFETY: the stream is live.
        unsafe { raw::stream_end_capture(self.inner.raw) }
    }

    /// Whether the stream captures a graph right now, as the driver says (also true for a stream
    /// that joined another stream's capture through an event).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver cannot say.
    pub fn is_capturing(&self) -> Result<bool> {
        let _op = guard::enter("DeviceStream::is_capturing")?;
        // SAFETY: the stream is live.
        Ok(!matches!(
            unsafe { raw::stream_capture_state(self.inner.raw) }?,
            CaptureState::None
        ))
    }
}

impl std::fmt::Debug for DeviceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceStream")
            .field("device", &self.inner.device.ordinal())
            .field("id", &self.inner.id)
            .field("raw", &self.inner.raw)
            .finish()
    }
}
