//! [`DeviceStream`]: an ordered queue of GPU work.

use crate::device::Device;
use crate::device_flag::DeviceFlag;
use crate::error::{Error, Result};
use crate::event::{DeviceEvent, RawEvent};
use crate::flag::{CompletionFlag, CompletionFlagRef, WaitCondition};
use crate::future::StreamSync;
use crate::host_func::{self, Job, PanicSink, SmallFn};
use crate::memory::{DeviceBuffer, HostBuffer};
use crate::module::{Function, LaunchArgs, LaunchConfig};
use crate::raw::{self, CUstream};
use crate::reclaim;
use crate::trampoline::{self, KickoffMode};
use crate::waiter::Cond;
use bytemuck::Pod;
use ferrocuda_sys::{CUstreamWaitValue_flags, CUstreamWriteValue_flags};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
#[derive(Clone)]
pub struct DeviceStream {
    pub(crate) inner: Arc<StreamInner>,
}

pub(crate) struct StreamInner {
    pub(crate) raw: CUstream,
    pub(crate) device: Device,
    pub(crate) panics: Arc<PanicSink>,
    kickoff: AtomicU8,
    /// Counter the polling gates of this stream bump when their time limit expires. Only the GPU
    /// writes it (a device-scope atomic add: see `check_panics`).
    expired: OnceLock<CompletionFlag>,
    /// How many of `expired`'s expiries were reported already.
    expired_seen: AtomicU64,
    /// Set between `begin_capture` and `end_capture`.
    capturing: AtomicBool,
}

/// The crate's own kernels (crates/driver/src/kernels/gate.cu), compiled by `cargo xtask ptx`.
pub(crate) const GATE_PTX: &str = include_str!("kernels/gate.ptx");

/// How a stream waits for a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateStrategy {
    /// The driver's `cuStreamWaitValue64`: costs nothing while waiting; releases the next kernel
    /// ≈ 9 µs after the signal when the stream has been waiting a while (≈ 4–5 µs back to back).
    DriverWait,
    /// A one-thread kernel that polls the flag (`ld.acquire.sys`, `__nanosleep(32)` between
    /// loads): releases the next kernel in ≈ 3–5 µs, but holds one block on one SM while it waits
    /// (≈ 1 % of copy bandwidth per poller on an H100). `timeout` bounds the wait in GPU time; an
    /// expired gate lets the work after it run and is reported by the next `synchronize` as
    /// [`Error::GateExpired`]. [`CompletionFlag::abort`] releases it like a driver wait.
    Polling {
        /// Give up after this much GPU time (`None`: wait as long as it takes).
        timeout: Option<Duration>,
    },
}

/// A flag a gate can wait on: a host [`CompletionFlag`] (pinned host memory, visible to every
/// device) or a [`DeviceFlag`] (one device's memory). Built with `into()` from `&CompletionFlag`,
/// [`CompletionFlagRef`] or `&DeviceFlag`; see [`DeviceStream::relay_value`].
#[derive(Clone, Copy)]
pub enum FlagSource<'a> {
    /// A host flag.
    Host(CompletionFlagRef<'a>),
    /// A device flag.
    Device(&'a DeviceFlag),
}

impl FlagSource<'_> {
    /// The address a kernel loads.
    fn device_ptr(&self) -> u64 {
        match self {
            FlagSource::Host(f) => f.device_ptr(),
            FlagSource::Device(f) => f.device_ptr(),
        }
    }
}

impl<'a> From<CompletionFlagRef<'a>> for FlagSource<'a> {
    fn from(f: CompletionFlagRef<'a>) -> Self {
        FlagSource::Host(f)
    }
}

impl<'a> From<&'a CompletionFlag> for FlagSource<'a> {
    fn from(f: &'a CompletionFlag) -> Self {
        FlagSource::Host(f.as_ref())
    }
}

impl<'a> From<&'a DeviceFlag> for FlagSource<'a> {
    fn from(f: &'a DeviceFlag) -> Self {
        FlagSource::Device(f)
    }
}

impl std::fmt::Debug for FlagSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagSource::Host(_) => write!(f, "FlagSource::Host({:#x})", self.device_ptr()),
            FlagSource::Device(d) => write!(
                f,
                "FlagSource::Device({:#x} on device {})",
                self.device_ptr(),
                d.device().ordinal()
            ),
        }
    }
}

// SAFETY: CUstream handles may be used from any thread (the driver API is thread-safe); the
// other fields are Send + Sync.
unsafe impl Send for StreamInner {}
// SAFETY: as above; the handle is never mutated after creation.
unsafe impl Sync for StreamInner {}

impl Drop for StreamInner {
    fn drop(&mut self) {
        if raw::in_host_func() {
            let raw = std::mem::replace(&mut self.raw, std::ptr::null_mut());
            let device = self.device.clone();
            let panics = self.panics.clone();
            let kickoff = AtomicU8::new(self.kickoff.load(Ordering::Relaxed));
            let expired = std::mem::take(&mut self.expired);
            let expired_seen = AtomicU64::new(self.expired_seen.load(Ordering::Relaxed));
            reclaim::defer(reclaim::Garbage::Stream(Box::new(StreamInner {
                raw,
                device,
                panics,
                kickoff,
                expired,
                expired_seen,
                capturing: AtomicBool::new(false),
            })));
            return;
        }
        if self.raw.is_null() {
            return;
        }
        // Work still queued may use resources whose fences no longer see this stream: keep its
        // last event until that work has finished. cuStreamDestroy returns at once; the driver
        // finishes the queued work.
        // SAFETY: the stream is live.
        if !matches!(unsafe { raw::stream_query(self.raw) }, Ok(true)) {
            match self.record_fence_event() {
                Ok(Some(tail)) => reclaim::retire_stream_tail(tail),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "could not record a dropped stream's last event"),
            }
        }
        // SAFETY: the stream is live, and this is its last owner.
        if let Err(err) = unsafe { raw::stream_destroy(self.raw) } {
            tracing::warn!(%err, "cuStreamDestroy failed");
        }
    }
}

impl StreamInner {
    /// An event recorded now (for fences), or `None` while the stream captures a graph (the
    /// graph then owns what its work uses).
    pub(crate) fn record_fence_event(&self) -> Result<Option<RawEvent>> {
        // SAFETY: the stream is live.
        if unsafe { raw::stream_is_capturing(self.raw) }? {
            return Ok(None);
        }
        let e = RawEvent::new_untimed(&self.device)?;
        // SAFETY: event and stream are live and of one context.
        unsafe { raw::event_record(e.0, self.raw) }?;
        Ok(Some(e))
    }
}

impl DeviceStream {
    pub(crate) fn create(device: &Device) -> Result<DeviceStream> {
        device.inner.bind_checked()?;
        // SAFETY: the device's context is current.
        let raw =
            unsafe { raw::stream_create(ferrocuda_sys::CUstream_flags::CU_STREAM_NON_BLOCKING.0) }?;
        let inner = Arc::new(StreamInner {
            raw,
            device: device.clone(),
            panics: Arc::default(),
            kickoff: AtomicU8::new(KickoffMode::process_default().to_u8()),
            expired: OnceLock::new(),
            expired_seen: AtomicU64::new(0),
            capturing: AtomicBool::new(false),
        });
        reclaim::register_stream(&inner);
        Ok(DeviceStream { inner })
    }

    /// The device the stream belongs to.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The raw handle, for driver calls this crate does not wrap. It stays owned by the stream.
    pub fn as_raw(&self) -> CUstream {
        self.inner.raw
    }

    /// Reports host-function panics and expired polling gates since the last report.
    pub(crate) fn check_panics(&self) -> Result<()> {
        if let Some((count, first)) = self.inner.panics.take() {
            return Err(Error::HostFuncPanicked { count, first });
        }
        if let Some(f) = self.inner.expired.get() {
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

    /// Makes later work wait until `flag` satisfies `cond` for `value`, by `strategy`.
    ///
    /// # Errors
    ///
    /// As [`wait_value`](Self::wait_value) and [`poll_value`](Self::poll_value).
    pub fn wait_value_with(
        &self,
        flag: CompletionFlagRef<'_>,
        value: u64,
        cond: WaitCondition,
        strategy: GateStrategy,
    ) -> Result<()> {
        match strategy {
            GateStrategy::DriverWait => self.wait_value(flag, value, cond),
            GateStrategy::Polling { timeout } => self.poll_value(flag, value, cond, timeout),
        }
    }

    /// The polling gate ([`GateStrategy::Polling`]): enqueues a one-thread kernel that waits until
    /// `flag` satisfies `cond` for `value` (or holds [`CompletionFlag::ABORTED`]); later work on
    /// the stream starts when it exits. The kernel was loaded when the device was opened, so this
    /// never loads code behind a waiting stream.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the gate kernel could not be loaded on this device;
    /// [`Error::Driver`] if the launch fails.
    pub fn poll_value(
        &self,
        flag: CompletionFlagRef<'_>,
        value: u64,
        cond: WaitCondition,
        timeout: Option<Duration>,
    ) -> Result<()> {
        // SAFETY: the slot is mapped pinned memory that stays allocated until the GPU is past the
        // gate (a dropped flag's slot is recycled only after a fence).
        unsafe { self.poll_address(flag.device_ptr(), value, cond, timeout) }
    }

    /// The polling gate on any 8-byte address this device can read.
    ///
    /// # Safety
    ///
    /// `ptr` is an 8-byte aligned slot this device can load from (mapped pinned memory, its own
    /// memory, or a peer's with peer access enabled) that stays allocated until the GPU is past
    /// the gate.
    unsafe fn poll_address(
        &self,
        ptr: u64,
        value: u64,
        cond: WaitCondition,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let gate = self.own_kernel(
            &self.inner.device.inner.gate,
            "the polling gate kernel (it failed to load)",
        )?;
        let (timeout_ns, expired) = self.expiry_counter(timeout)?;
        let c = cond as u32;
        // SAFETY: ferrocuda_gate_poll(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
        // u64* expired): the flag outlives the kernel (the caller's promise) and the counter is a
        // mapped pinned slot whose release is fenced; `expired` is only written when
        // `timeout_ns != 0`.
        unsafe {
            self.launch(
                gate,
                LaunchConfig::single_thread(),
                LaunchArgs::new()
                    .arg(&ptr)
                    .arg(&value)
                    .arg(&c)
                    .arg(&timeout_ns)
                    .arg(&expired),
            )
        }
    }

    /// One of the crate's own kernels, loaded when the device was opened.
    fn own_kernel<'a>(
        &self,
        slot: &'a OnceLock<std::result::Result<Function, String>>,
        what: &'static str,
    ) -> Result<&'a Function> {
        match slot.get() {
            Some(Ok(f)) => Ok(f),
            _ => Err(self.inner.device.unsupported(what)),
        }
    }

    /// A polling kernel's time limit in ns (0: none) and the device address of the counter it
    /// bumps when the limit expires (0 when there is no limit).
    fn expiry_counter(&self, timeout: Option<Duration>) -> Result<(u64, u64)> {
        let timeout_ns = timeout.map_or(0u64, |t| (t.as_nanos() as u64).max(1));
        if timeout_ns == 0 {
            return Ok((0, 0));
        }
        let counter = match self.inner.expired.get() {
            Some(f) => f.device_ptr(),
            None => {
                let f = CompletionFlag::new(&self.inner.device)?;
                self.inner.expired.get_or_init(|| f).device_ptr()
            }
        };
        Ok((timeout_ns, counter))
    }

    /// The polling relay: one one-thread kernel that waits until `from` satisfies `cond` for
    /// `value`, as the polling gate does, and then writes `write` to `to` — so a stream of another
    /// device gated on `to` is released by this GPU's store, with no host round trip and no second
    /// kernel boundary on this stream (where [`wait_value_with`](Self::wait_value_with) +
    /// [`write_value`](Self::write_value) enqueue two operations). Later work on this stream starts
    /// when the relay has written.
    ///
    /// `from` is a host flag ([`CompletionFlag`] or [`CompletionFlagRef`]) or a [`DeviceFlag`] of
    /// this device or a peer; `to` is a [`DeviceFlag`] of this device or a peer. A system-wide
    /// memory fence precedes the store, so the work gated on `to` sees what this stream did before
    /// the relay. If `from` holds [`CompletionFlag::ABORTED`], or `timeout` (GPU time) expires
    /// first, the relay writes [`CompletionFlag::ABORTED`] to `to` instead of `write`: the waiters
    /// downstream are released and can tell that their input was not produced (the fused gate's
    /// `wait_flag` returns false); an expiry is also reported by the next
    /// [`synchronize`](Self::synchronize) as [`Error::GateExpired`].
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device, DeviceFlag, GateStrategy, WaitCondition};
    /// # fn main() -> ferrocuda_driver::Result<()> {
    /// let (gpu0, gpu1) = (Device::new(0)?, Device::new(1)?);
    /// gpu0.enable_peer_access(&gpu1)?;
    /// let (s0, s1) = (gpu0.new_stream()?, gpu1.new_stream()?);
    /// let host = CompletionFlag::new(&gpu0)?;
    /// let on_gpu1 = DeviceFlag::new(&gpu1)?;
    /// // GPU0 waits for the host's 1, then tells GPU1 at once.
    /// s0.relay_value(&host, 1, WaitCondition::GreaterOrEqual, &on_gpu1, 1, None)?;
    /// let poll = GateStrategy::Polling { timeout: None };
    /// s1.wait_value_on(&on_gpu1, 1, WaitCondition::GreaterOrEqual, poll)?;
    /// // ... GPU1's gated work ...
    /// host.signal(1);
    /// s1.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when this device cannot reach `from`'s or `to`'s device (peer
    /// access) or the relay kernel did not load; [`Error::Driver`] if the launch fails.
    pub fn relay_value<'f>(
        &self,
        from: impl Into<FlagSource<'f>>,
        value: u64,
        cond: WaitCondition,
        to: &DeviceFlag,
        write: u64,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let from = from.into();
        if let FlagSource::Device(f) = from {
            self.inner.device.ensure_peer_access(f.device())?;
        }
        self.inner.device.ensure_peer_access(to.device())?;
        let relay = self.own_kernel(
            &self.inner.device.inner.relay,
            "the polling relay kernel (it failed to load)",
        )?;
        let (timeout_ns, expired) = self.expiry_counter(timeout)?;
        let (src, dst, c) = (from.device_ptr(), to.device_ptr(), cond as u32);
        // SAFETY: ferrocuda_gate_relay(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
        // u64* expired, u64* target, u64 target_value), one thread. Both slots are reachable from
        // this device (mapped pinned memory, or device memory with peer access checked above) and
        // stay allocated until every stream is past this kernel (pooled slots come back after a
        // fence); `expired` is a fenced mapped slot, written only when `timeout_ns != 0`.
        unsafe {
            self.launch(
                relay,
                LaunchConfig::single_thread(),
                LaunchArgs::new()
                    .arg(&src)
                    .arg(&value)
                    .arg(&c)
                    .arg(&timeout_ns)
                    .arg(&expired)
                    .arg(&dst)
                    .arg(&write),
            )
        }
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
        let e = RawEvent::new_untimed(&self.inner.device)?;
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
    /// The output is as `synchronize`'s (an error recording the event is the future's output).
    pub fn synchronize_async(&self) -> StreamSync {
        let event = RawEvent::new_untimed(&self.inner.device).and_then(|e| {
            // SAFETY: event and stream are live and of one context.
            unsafe { raw::event_record(e.0, self.inner.raw) }?;
            Ok(Cond::Event(Arc::new(e)))
        });
        StreamSync::new(self.clone(), event)
    }

    /// Whether all work enqueued so far has completed (never blocks).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if enqueued work failed.
    pub fn is_idle(&self) -> Result<bool> {
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
        if !event.device().same(&self.inner.device) {
            return Err(self.mismatch("the event", event.device()));
        }
        // SAFETY: event and stream are live and of one context (checked above).
        unsafe { raw::event_record(event.raw.0, self.inner.raw) }?;
        event.mark_recorded();
        Ok(())
    }

    /// Makes later work on this stream wait until `event` (recorded on any stream, of any device)
    /// has completed. The host does not wait.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    #[inline]
    pub fn wait_for_event(&self, event: &DeviceEvent) -> Result<()> {
        // SAFETY: event and stream are live; cross-context event waits are allowed.
        unsafe { raw::stream_wait_event(self.inner.raw, event.raw.0) }
    }

    /// Makes later work on this stream wait until `flag` equals `value` (`cuStreamWaitValue64`,
    /// equality, as MAX's `wait_for_host_value`). The host does not wait.
    ///
    /// Only `value` releases an equality wait (not [`CompletionFlag::abort`]); prefer
    /// [`wait_for_host_value_ge`](Self::wait_for_host_value_ge) with increasing epochs.
    /// The flag stays alive until the wait has passed, even if every handle to it is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses (e.g. the stream is capturing in a mode that forbids it).
    #[inline]
    pub fn wait_for_host_value<'f>(
        &self,
        flag: impl Into<CompletionFlagRef<'f>>,
        value: u64,
    ) -> Result<()> {
        self.wait_value(flag.into(), value, WaitCondition::Equal)
    }

    /// Makes later work on this stream wait until `flag >= value` (the driver's cyclic comparison,
    /// `(flag - value) as i64 >= 0`; keep epochs below 2^63), the form that pairs
    /// with monotonically increasing epochs and with [`CompletionFlag::abort`].
    ///
    /// # Errors
    ///
    /// As [`wait_for_host_value`](Self::wait_for_host_value).
    #[inline]
    pub fn wait_for_host_value_ge<'f>(
        &self,
        flag: impl Into<CompletionFlagRef<'f>>,
        value: u64,
    ) -> Result<()> {
        self.wait_value(flag.into(), value, WaitCondition::GreaterOrEqual)
    }

    /// Makes later work wait until `flag` satisfies `cond` for `value`.
    ///
    /// # Errors
    ///
    /// As [`wait_for_host_value`](Self::wait_for_host_value).
    #[inline]
    pub fn wait_value(
        &self,
        flag: CompletionFlagRef<'_>,
        value: u64,
        cond: WaitCondition,
    ) -> Result<()> {
        let flags = match cond {
            WaitCondition::Equal => CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_EQ,
            WaitCondition::GreaterOrEqual => CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ,
        };
        // SAFETY: the stream is live; the slot is mapped pinned memory that stays allocated until
        // the GPU is past this wait (a dropped flag's slot is recycled only after a fence).
        unsafe { raw::stream_wait_value64(self.inner.raw, flag.device_ptr(), value, flags.0) }
    }

    /// When the stream reaches this point, the GPU writes `value` to `flag` (GPU → host; preceded
    /// by a system-wide memory fence, so the host sees the work before it). Pair with
    /// [`CompletionFlag::wait`] on the host.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    #[inline]
    pub fn write_host_value<'f>(
        &self,
        flag: impl Into<CompletionFlagRef<'f>>,
        value: u64,
    ) -> Result<()> {
        let flag = flag.into();
        // SAFETY: as in `wait_value`.
        unsafe {
            raw::stream_write_value64(
                self.inner.raw,
                flag.device_ptr(),
                value,
                CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT.0,
            )
        }
    }

    /// When the stream reaches this point, the GPU writes `value` to `flag`, a [`DeviceFlag`] of
    /// this device or of a peer (`cuStreamWriteValue64`, preceded by a system-wide memory fence, so
    /// work gated on the value sees what this stream did before). Pair with
    /// [`wait_value_on`](Self::wait_value_on) on another stream, of any device.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when this device cannot access the flag's device (peer access);
    /// [`Error::Driver`] if the driver refuses.
    pub fn write_value(&self, flag: &DeviceFlag, value: u64) -> Result<()> {
        self.inner.device.ensure_peer_access(flag.device())?;
        // SAFETY: the stream is live; the flag is this device's memory or a peer's with access
        // enabled, and is freed only after a fence past this write.
        unsafe {
            raw::stream_write_value64(
                self.inner.raw,
                flag.device_ptr(),
                value,
                CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT.0,
            )
        }
    }

    /// Makes later work on this stream wait until `flag` (a [`DeviceFlag`] of this device or of a
    /// peer) satisfies `cond` for `value`, by `strategy`: the driver's `cuStreamWaitValue64` or the
    /// polling gate (which also passes on [`CompletionFlag::ABORTED`], as for host flags). The host
    /// does not wait. The flag stays allocated until the wait has passed, whatever is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] when this device cannot access the flag's device (peer access) or
    /// the polling gate did not load; [`Error::Driver`] if the driver refuses.
    pub fn wait_value_on(
        &self,
        flag: &DeviceFlag,
        value: u64,
        cond: WaitCondition,
        strategy: GateStrategy,
    ) -> Result<()> {
        self.inner.device.ensure_peer_access(flag.device())?;
        match strategy {
            GateStrategy::DriverWait => {
                let flags = match cond {
                    WaitCondition::Equal => CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_EQ,
                    WaitCondition::GreaterOrEqual => {
                        CUstreamWaitValue_flags::CU_STREAM_WAIT_VALUE_GEQ
                    }
                };
                // SAFETY: the stream is live; the flag is reachable from this device (checked
                // above) and freed only after a fence past this wait.
                unsafe {
                    raw::stream_wait_value64(self.inner.raw, flag.device_ptr(), value, flags.0)
                }
            }
            // SAFETY: as above: a reachable, aligned 8-byte slot freed only after a fence.
            GateStrategy::Polling { timeout } => unsafe {
                self.poll_address(flag.device_ptr(), value, cond, timeout)
            },
        }
    }

    /// Runs `f` on a driver thread when the stream reaches this point; later work waits for it
    /// (`cuLaunchHostFunc`).
    ///
    /// `f` runs exactly once. It must not call CUDA (CUDA forbids it); this crate's calls return
    /// [`Error::CalledFromHostFunc`] there. A panic is caught — it never unwinds into the driver —
    /// the stream goes on, and the next [`synchronize`](Self::synchronize) reports it. Small
    /// closures (≤ 64 bytes of captures) are stored without allocating.
    ///
    /// For host work that should not hold the stream, use
    /// [`enqueue_async_host_func`](Self::enqueue_async_host_func).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses (`f` is then dropped without running).
    pub fn enqueue_host_func<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<()> {
        self.refuse_under_capture("enqueue_host_func")?;
        let job = Job::new(SmallFn::new(f), self.inner.panics.clone(), None, 0);
        self.launch_job(job, host_func::host_func_entry)
    }

    /// The async trampoline: when the stream reaches this point, `f` is handed to a worker thread
    /// of the crate and the stream moves on at once; the worker runs `f` and then signals `value`
    /// on `flag` with release ordering. The hand-off is a GPU write that the crate's notifier
    /// thread watches ([`KickoffMode::GpuWrite`], the default) or a tiny host function
    /// ([`KickoffMode::HostFunc`], MAX's way); see [`set_kickoff_mode`](Self::set_kickoff_mode). Gate downstream GPU work with
    /// [`wait_for_host_value_ge`](Self::wait_for_host_value_ge)`(&flag, value)`.
    ///
    /// `f` runs exactly once, on a worker, where CUDA calls are allowed. If it panics, the flag is
    /// still signalled (the waiters it owes go on) and the next `synchronize` reports the panic.
    /// The flag stays alive until the signal, whatever handles the caller drops.
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device};
    /// # fn main() -> ferrocuda_driver::Result<()> {
    /// let device = Device::new(0)?;
    /// let stream = device.new_stream()?;
    /// let flag = CompletionFlag::new(&device)?;
    /// for step in 1..=3u64 {
    ///     stream.enqueue_async_host_func(&flag, step, move || { /* host work for `step` */ })?;
    ///     stream.wait_for_host_value_ge(&flag, step)?; // the GPU waits for the host's result
    ///     // ... GPU work that consumes it ...
    /// }
    /// stream.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses (`f` is then dropped without running and the flag
    /// is not signalled).
    pub fn enqueue_async_host_func<F: FnOnce() + Send + 'static>(
        &self,
        flag: &CompletionFlag,
        value: u64,
        f: F,
    ) -> Result<()> {
        trampoline::start_workers();
        let job = Job::new(
            SmallFn::new(f),
            self.inner.panics.clone(),
            Some(flag.inner().clone()),
            value,
        );
        trampoline::step_enqueued();
        if self.kickoff_mode() == KickoffMode::HostFunc {
            return self.launch_job(job, host_func::kickoff_entry);
        }
        let ring = match trampoline::ring_for(&self.inner.device.inner) {
            Ok(r) => r,
            Err(e) => {
                job.disarm_and_recycle();
                return Err(e);
            }
        };
        let ticket = match trampoline::reserve(ring, job) {
            Ok(t) => t,
            // More than RING_SLOTS steps in flight: this one is kicked off by a host function.
            Err(job) => return self.launch_job(job, host_func::kickoff_entry),
        };
        // SAFETY: the stream is live; the ring slot is mapped pinned memory kept for the process.
        // The default flags put a system-wide memory fence before the write, so the closure sees
        // everything the stream did before this point.
        let w = unsafe {
            raw::stream_write_value64(
                self.inner.raw,
                ticket.addr,
                ticket.ticket,
                CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT.0,
            )
        };
        if let Err(e) = w {
            if let Some(job) = ticket.cancel() {
                job.disarm_and_recycle();
            }
            return Err(e);
        }
        Ok(())
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

    fn launch_job(
        &self,
        job: Box<Job>,
        entry: unsafe extern "C" fn(*mut std::ffi::c_void),
    ) -> Result<()> {
        let data = Box::into_raw(job);
        // SAFETY: the stream is live; `entry` reclaims `data` exactly once when the driver runs it.
        match unsafe { raw::launch_host_func(self.inner.raw, entry, data.cast()) } {
            Ok(()) => Ok(()),
            Err(e) => {
                // SAFETY: the driver did not take `data`; reclaim it here (dropping the closure).
                unsafe { Box::from_raw(data) }.disarm_and_recycle();
                Err(e)
            }
        }
    }

    /// Copies and memsets act on the current context: it must be the stream's (another device's
    /// context may be current after work on that device, e.g. NCCL's).
    #[inline]
    fn bind_for_copy(&self) -> Result<()> {
        self.inner.device.inner.bind()
    }

    #[inline]
    fn refuse_under_capture(&self, op: &'static str) -> Result<()> {
        if self.inner.capturing.load(Ordering::Relaxed) {
            return Err(Error::NotAllowedUnderCapture { op });
        }
        Ok(())
    }

    /// Starts capturing this stream's work into a CUDA graph (thread-local capture mode: other
    /// threads' CUDA calls are not affected). Work enqueued until [`end_capture`](Self::end_capture)
    /// is recorded, not run. One-shot host closures are refused meanwhile
    /// ([`Error::NotAllowedUnderCapture`]); ferrocuda-graph wraps this with host nodes that may run
    /// many times.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the stream is already capturing.
    pub fn begin_capture(&self) -> Result<()> {
        // SAFETY: the stream is live.
        unsafe { raw::stream_begin_capture(self.inner.raw) }?;
        self.inner.capturing.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the capture and returns the captured graph. The caller owns it (`cuGraphDestroy`).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the stream was not capturing or the capture was invalidated (for
    /// example by an operation CUDA does not allow under capture).
    pub fn end_capture(&self) -> Result<ferrocuda_sys::CUgraph> {
        self.inner.capturing.store(false, Ordering::Relaxed);
        // SAFETY: the stream is live.
        unsafe { raw::stream_end_capture(self.inner.raw) }
    }

    /// Whether [`begin_capture`](Self::begin_capture) is in effect.
    pub fn is_capturing(&self) -> bool {
        self.inner.capturing.load(Ordering::Relaxed)
    }

    fn mismatch(&self, what: &'static str, other: &Device) -> Error {
        Error::DeviceMismatch {
            what,
            expected: self.inner.device.ordinal(),
            found: other.ordinal(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Memory

    /// `len` uninitialised-on-the-GPU elements, allocated stream-ordered (`cuMemAllocAsync`):
    /// usable by work enqueued on this stream after this call. (The contents are whatever the
    /// memory held; `T: Pod` makes any bytes a valid `T`.)
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] when device memory runs out.
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        DeviceBuffer::alloc(self, len)
    }

    /// `len` zeroed elements, allocated and cleared on this stream.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn alloc_zeroed<T: Pod>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(len)?;
        self.memset_zero(&mut b)?;
        Ok(b)
    }

    /// A device copy of `data` (the host data may be reused as soon as this returns).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn clone_htod<T: Pod>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc(data.len())?;
        self.copy_htod(data, &mut b)?;
        Ok(b)
    }

    fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
        if expected == actual {
            Ok(())
        } else {
            Err(Error::LengthMismatch {
                what,
                expected,
                actual,
            })
        }
    }

    fn check_device<T: Pod>(&self, b: &DeviceBuffer<T>) -> Result<()> {
        if b.device().same(&self.inner.device) {
            Ok(())
        } else {
            Err(self.mismatch("the device buffer", b.device()))
        }
    }

    /// Copies pageable host memory to the device, in stream order. The driver stages `src`
    /// before returning, so it may be reused at once.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`], [`Error::DeviceMismatch`], [`Error::Driver`].
    pub fn copy_htod<T: Pod>(&self, src: &[T], dst: &mut DeviceBuffer<T>) -> Result<()> {
        self.bind_for_copy()?;
        Self::check_len("copy_htod", dst.len(), src.len())?;
        self.check_device(dst)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `dst` holds `src.len()` elements; a pageable source is staged before returning.
        unsafe {
            raw::memcpy_htod_async(
                dst.ptr,
                src.as_ptr().cast(),
                size_of_val(src),
                self.inner.raw,
            )
        }
    }

    /// Copies device memory into host memory and waits until the copy (and everything before it
    /// on this stream) has completed.
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod), plus [`Error::HostFuncPanicked`] as in `synchronize`.
    pub fn copy_dtoh<T: Pod>(&self, src: &DeviceBuffer<T>, dst: &mut [T]) -> Result<()> {
        self.bind_for_copy()?;
        Self::check_len("copy_dtoh", src.len(), dst.len())?;
        self.check_device(src)?;
        if !dst.is_empty() {
            // SAFETY: `dst` is writable for its length and borrowed mutably until the
            // synchronize below has returned, so nothing reads it while the copy runs.
            unsafe {
                raw::memcpy_dtoh_async(
                    dst.as_mut_ptr().cast(),
                    src.ptr,
                    size_of_val(dst),
                    self.inner.raw,
                )
            }?;
        }
        self.synchronize()
    }

    /// Copies device memory to device memory, in stream order.
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod).
    pub fn copy_dtod<T: Pod>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        self.bind_for_copy()?;
        Self::check_len("copy_dtod", dst.len(), src.len())?;
        src.note_use(&self.inner);
        dst.note_use(&self.inner);
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: both buffers hold `src.len()` elements and stay alive until the GPU is past the
        // copy (their drops are fenced).
        unsafe { raw::memcpy_dtod_async(dst.ptr, src.ptr, src.byte_len(), self.inner.raw) }
    }

    /// Copies pinned host memory to the device, asynchronously. Host access to `src` waits for it.
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod).
    pub fn copy_htod_async<T: Pod>(
        &self,
        src: &HostBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        self.bind_for_copy()?;
        Self::check_len("copy_htod_async", dst.len(), src.len())?;
        self.check_device(dst)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: both hold `len` elements; `src` is pinned and its mutable access waits for the
        // event recorded below; its free is fenced.
        unsafe {
            raw::memcpy_htod_async(
                dst.ptr,
                src.raw_ptr().cast_const().cast(),
                dst.byte_len(),
                self.inner.raw,
            )
        }?;
        src.note_copy(self)
    }

    /// Copies device memory into pinned host memory, asynchronously. Host access to `dst` waits for it.
    ///
    /// # Errors
    ///
    /// As [`copy_htod`](Self::copy_htod).
    pub fn copy_dtoh_async<T: Pod>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut HostBuffer<T>,
    ) -> Result<()> {
        self.bind_for_copy()?;
        Self::check_len("copy_dtoh_async", src.len(), dst.len())?;
        self.check_device(src)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: both hold `len` elements; every host access to `dst` first waits for the event
        // recorded below; its free is fenced.
        unsafe {
            raw::memcpy_dtoh_async(
                dst.raw_ptr().cast(),
                src.ptr,
                src.byte_len(),
                self.inner.raw,
            )
        }?;
        dst.note_copy(self)
    }

    /// Sets every byte of `buf` to zero, in stream order.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`].
    pub fn memset_zero<T: Pod>(&self, buf: &mut DeviceBuffer<T>) -> Result<()> {
        self.bind_for_copy()?;
        buf.note_use(&self.inner);
        if buf.is_empty() {
            return Ok(());
        }
        // SAFETY: the buffer holds `byte_len` bytes and lives until the GPU is past this.
        unsafe { raw::memset_d8_async(buf.ptr, 0, buf.byte_len(), self.inner.raw) }
    }

    /// Sets every 32-bit word of `buf` to `value`, in stream order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `T` is 4 bytes wide; [`Error::Driver`].
    pub fn memset_u32<T: Pod>(&self, buf: &mut DeviceBuffer<T>, value: u32) -> Result<()> {
        self.bind_for_copy()?;
        if size_of::<T>() != 4 {
            return Err(Error::InvalidArgument(format!(
                "memset_u32 needs 4-byte elements, not {}",
                size_of::<T>()
            )));
        }
        buf.note_use(&self.inner);
        if buf.is_empty() {
            return Ok(());
        }
        // SAFETY: the buffer holds `len` 4-byte words (cuMemAllocAsync aligns) and lives until
        // the GPU is past this.
        unsafe { raw::memset_d32_async(buf.ptr, value, buf.len(), self.inner.raw) }
    }

    // -----------------------------------------------------------------------------------------
    // Kernels

    /// Launches `f` with `config` and `args`.
    ///
    /// # Safety
    ///
    /// `args` must match the kernel's parameter list in number and types, and the kernel must
    /// only access memory its arguments make valid (in bounds of the buffers passed, for the
    /// launch's grid). The buffers, flags and module stay alive until the GPU is past the launch
    /// whatever the caller drops.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for zero dimensions or a cluster that does not divide the grid,
    /// [`Error::DeviceMismatch`] for a function of another device, [`Error::Driver`] otherwise.
    pub unsafe fn launch(
        &self,
        f: &Function,
        config: LaunchConfig,
        args: &mut LaunchArgs<'_>,
    ) -> Result<()> {
        config.validate()?;
        args.check()?;
        if !f.device().same(&self.inner.device) {
            return Err(self.mismatch("the function", f.device()));
        }
        self.inner.device.inner.bind()?;
        args.note_uses(&self.inner);
        let params = args.params.as_mut_ptr();
        match config.cluster {
            // SAFETY: the caller guarantees the parameters; handles are live and of one context.
            None => unsafe {
                raw::launch_kernel(
                    f.raw,
                    config.grid,
                    config.block,
                    config.shared_mem_bytes,
                    self.inner.raw,
                    params,
                )
            },
            Some(c) => {
                let mut attr = ferrocuda_sys::CUlaunchAttribute {
                    id: ferrocuda_sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                    ..Default::default()
                };
                attr.value.clusterDim.x = c.0;
                attr.value.clusterDim.y = c.1;
                attr.value.clusterDim.z = c.2;
                let cfg = ferrocuda_sys::CUlaunchConfig {
                    gridDimX: config.grid.0,
                    gridDimY: config.grid.1,
                    gridDimZ: config.grid.2,
                    blockDimX: config.block.0,
                    blockDimY: config.block.1,
                    blockDimZ: config.block.2,
                    sharedMemBytes: config.shared_mem_bytes,
                    hStream: self.inner.raw,
                    attrs: &mut attr,
                    numAttrs: 1,
                };
                // SAFETY: as above; `attr` outlives the call.
                unsafe { raw::launch_kernel_ex(&cfg, f.raw, params) }
            }
        }
    }
}

impl std::fmt::Debug for DeviceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceStream")
            .field("device", &self.inner.device.ordinal())
            .field("raw", &self.inner.raw)
            .finish()
    }
}
