//! [`DeviceEvent`]: a point in a stream's work, optionally timed.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::future::EventWait;
use crate::runtime::handles::RawEvent;
use crate::runtime::park;
use crate::runtime::raw::{self, CUevent};

use crate::runtime::waiter::{Cond, WaitHistory};
use ferrocuda_sys::CUevent_flags;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Polls `done` until it is true or `timeout` passes, following the crate's one waiting policy.
pub(crate) fn poll_until(
    what: &'static str,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    park::wait_until(what, timeout, || Ok(done()?.then_some(())))
}

/// A marker in a stream's work that the host can query, wait for, and time.
///
/// Mirrors MAX's `max.driver.DeviceEvent`.
///
/// ```no_run
/// use ferrocuda_driver::{Device, DeviceEvent};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let device = Device::new(0)?;
/// // Create an event on the device
/// let event = DeviceEvent::new(&device, false)?;
/// // Record an event on the device (default stream)
/// device.default_stream()?.record_event(&event)?;
/// // Wait for execution on the default stream to reach the event
/// event.synchronize()?;
/// # Ok(()) }
/// ```
///
/// Timing, as MAX's `DeviceEvent` does it:
///
/// ```no_run
/// use ferrocuda_driver::{Device, DeviceEvent};
/// # fn main() -> ferrocuda_driver::Result<()> {
/// let device = Device::new(0)?;
/// let start = DeviceEvent::new(&device, true)?;
/// let end = DeviceEvent::new(&device, true)?;
///
/// let stream = device.default_stream()?;
/// stream.record_event(&start)?;
/// // ... GPU work ...
/// stream.record_event(&end)?;
/// end.synchronize()?;
///
/// let elapsed_ms: f32 = start.elapsed_time(&end)?;
/// # Ok(()) }
/// ```
pub struct DeviceEvent {
    /// Shared with the waiter thread while a future waits on it.
    pub(crate) raw: Arc<RawEvent>,
    device: Device,
    timing: bool,
    recorded: AtomicBool,
    /// How long its futures waited, for the waiter's predicted spin.
    history: Arc<WaitHistory>,
}

impl DeviceEvent {
    /// Creates an event on `device`; `enable_timing` allows [`elapsed_time`](Self::elapsed_time)
    /// (timed events cost a little more to record).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver cannot create one.
    pub fn new(device: &Device, enable_timing: bool) -> Result<DeviceEvent> {
        let _op = crate::runtime::guard::enter("DeviceEvent::new")?;
        device.inner.bind_checked()?;
        let flags = if enable_timing {
            CUevent_flags::CU_EVENT_DEFAULT
        } else {
            CUevent_flags::CU_EVENT_DISABLE_TIMING
        };
        // SAFETY: the device's context is current.
        let raw = Arc::new(RawEvent(unsafe { raw::event_create(flags.0) }?));
        Ok(DeviceEvent {
            raw,
            device: device.clone(),
            timing: enable_timing,
            recorded: AtomicBool::new(false),
            history: Arc::default(),
        })
    }

    /// The device the event belongs to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the event was created with timing enabled.
    pub fn timing_enabled(&self) -> bool {
        self.timing
    }

    /// Whether the work before the event's last record has completed (true for an event that was
    /// never recorded, as in CUDA).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the query failed (for example an earlier kernel faulted).
    pub fn is_ready(&self) -> Result<bool> {
        let _op = crate::runtime::guard::enter("DeviceEvent::is_ready")?;
        // SAFETY: the event is live.
        unsafe { raw::event_query(self.raw.0) }
    }

    /// A future that resolves once the work before the event's last record (at the time of the
    /// call) has completed: the async form of [`synchronize`](Self::synchronize).
    ///
    /// The future owns what it needs (it is `'static`: spawn it, or drop `self` meanwhile). It
    /// checks the event when first polled; if not complete, the crate's waiter thread queries it
    /// (`cuEventQuery`, a fraction of a microsecond, never blocks: `docs/hardware-facts.md` in the repository) until it is, and wakes the task. Each pending event
    /// future costs one query per check of the waiter; for thousands of concurrent waits, a
    /// [`CompletionFlag`](crate::CompletionFlag) written by the stream
    /// ([`write_host_value`](crate::DeviceStream::write_host_value)) with
    /// [`CompletionFlag::wait_async`](crate::CompletionFlag::wait_async) is cheaper (one load).
    /// Cancel-safe: dropping the future deregisters it. See docs/async.md.
    ///
    /// ```no_run
    /// use ferrocuda_driver::{Device, DeviceEvent};
    /// # async fn job() -> ferrocuda_driver::Result<()> {
    /// let device = Device::new(0)?;
    /// let stream = device.new_stream()?;
    /// let done = DeviceEvent::new(&device, false)?;
    /// // ... enqueue work ...
    /// stream.record_event(&done)?;
    /// done.wait_async().await?; // the task sleeps; no thread is blocked
    /// # Ok(()) }
    /// ```
    ///
    /// The output is the driver's error if that work failed (as `synchronize`).
    pub fn wait_async(&self) -> EventWait {
        EventWait::new(Cond::Event {
            event: self.raw.clone(),
            history: self.history.clone(),
        })
    }

    /// Blocks until the work before the event's last record has completed.
    ///
    /// This waits as long as it takes: if that work is behind a wait on a host value, the thread
    /// that will signal must not be this one. Prefer [`synchronize_timeout`](Self::synchronize_timeout)
    /// where a hang is possible.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if any of that work failed.
    pub fn synchronize(&self) -> Result<()> {
        let _op = crate::runtime::guard::enter("DeviceEvent::synchronize")?;
        // SAFETY: the event is live.
        unsafe { raw::event_synchronize(self.raw.0) }
    }

    /// Like [`synchronize`](Self::synchronize), but gives up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the event is not complete in time.
    pub fn synchronize_timeout(&self, timeout: Duration) -> Result<()> {
        let _op = crate::runtime::guard::enter("DeviceEvent::synchronize_timeout")?;
        poll_until("DeviceEvent::synchronize_timeout", timeout, || {
            // SAFETY: the event is live.
            unsafe { raw::event_query(self.raw.0) }
        })
    }

    /// Milliseconds of GPU time between this (start) event and `end`.
    ///
    /// # Errors
    ///
    /// [`Error::TimingDisabled`] if either event was created without timing,
    /// [`Error::EventNotRecorded`] if either was never recorded, [`Error::NotReady`] if `end` has
    /// not completed yet (synchronize it first).
    pub fn elapsed_time(&self, end: &DeviceEvent) -> Result<f32> {
        let _op = crate::runtime::guard::enter("DeviceEvent::elapsed_time")?;
        for (which, e) in [("start", self), ("end", end)] {
            if !e.timing {
                return Err(Error::TimingDisabled { which });
            }
        }
        for (which, e) in [("start", self), ("end", end)] {
            if !e.recorded.load(Ordering::Acquire) {
                return Err(Error::EventNotRecorded { which });
            }
        }
        // SAFETY: both events are live.
        match unsafe { raw::event_elapsed_time(self.raw.0, end.raw.0) } {
            Err(Error::Driver(e)) if e.code == ferrocuda_sys::CUresult::CUDA_ERROR_NOT_READY => {
                Err(Error::NotReady)
            }
            other => other,
        }
    }

    /// The raw handle, for driver calls this crate does not wrap. It stays owned by `self`.
    pub fn as_raw(&self) -> CUevent {
        self.raw.0
    }

    pub(crate) fn mark_recorded(&self) {
        self.recorded.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for DeviceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEvent")
            .field("device", &self.device.ordinal())
            .field("timing", &self.timing)
            .field("recorded", &self.recorded.load(Ordering::Relaxed))
            .finish()
    }
}
