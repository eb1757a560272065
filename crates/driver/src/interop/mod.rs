//! Working inside a program whose GPU stack is another library's: its primary context becomes a
//! [`Device`], its streams become [`DeviceStream`]s that keep the other library's stream alive.
//!
//! The generic door is [`DeviceStream::from_raw_borrowed`]; the `cudarc` and `cust` features add
//! safe constructors for those crates' types on top of it. `docs/interop.md` states the keep-alive
//! rules across the libraries.

#[cfg(feature = "cudarc")]
mod cudarc;
#[cfg(feature = "cust")]
mod cust;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::flag::CompletionFlag;
use crate::runtime::guard;
use crate::runtime::raw::{self, CUcontext, CUstream};
use crate::stream::{DeviceStream, ForeignKeep, StreamOwner};

/// `CU_STREAM_PER_THREAD`: names the calling thread's own default stream, a different stream on
/// every thread.
const PER_THREAD: usize = 0x2;

#[cfg_attr(
    not(any(feature = "cudarc", feature = "cust")),
    allow(dead_code, reason = "used by the interop features")
)]
impl Device {
    /// The device whose primary context is `ctx`, which another library retained on device
    /// `ordinal`; refused unless `ctx` really is that primary context.
    pub(crate) fn sharing(ordinal: usize, ctx: CUcontext, whose: &str) -> Result<Device> {
        let device = Device::new(ordinal)?;
        if device.raw_context() != ctx {
            return Err(Error::InvalidArgument(format!(
                "{whose} context {ctx:?} is not device {ordinal}'s primary context ({:?}): \
                 ferrocuda shares a device's primary context only (a context created with \
                 cuCtxCreate, such as cust's legacy contexts, or cudarc's non-primary and green \
                 contexts, cannot be shared)",
                device.raw_context()
            )));
        }
        Ok(device)
    }

    /// The device whose primary context is `ctx`, a context another library holds, for a library
    /// whose context does not say which device it is on; refused unless `ctx` is that device's
    /// primary context.
    ///
    /// # Safety
    ///
    /// `ctx` is a live context.
    #[cfg_attr(
        not(feature = "cust"),
        allow(dead_code, reason = "used by the cust feature")
    )]
    pub(crate) unsafe fn of_context(ctx: CUcontext, whose: &str) -> Result<Device> {
        // SAFETY: the caller guarantees `ctx` is live.
        let cu = unsafe { context_device(ctx) }?;
        let count = raw::device_count()?;
        let ordinal = (0..count)
            .find(|&o| raw::device_get(o as i32).is_ok_and(|d| d == cu))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{whose} context {ctx:?} is on a device (CUdevice {cu}) that no ordinal \
                     below {count} names"
                ))
            })?;
        Device::sharing(ordinal, ctx, whose)
    }
}

/// The device of `ctx`, asked of the driver with `ctx` pushed above this thread's current context
/// and popped again (`cuCtxGetDevice` answers for the current context only), so the thread's
/// current context, and the crate's record of it, are as before.
///
/// # Safety
///
/// `ctx` is a live context.
#[cfg_attr(
    not(feature = "cust"),
    allow(dead_code, reason = "used by the cust feature")
)]
unsafe fn context_device(ctx: CUcontext) -> Result<raw::CUdevice> {
    // SAFETY: the caller guarantees `ctx` is live.
    unsafe { raw::ctx_push_current(ctx) }?;
    let device = raw::ctx_get_device();
    if let Err(e) = raw::ctx_pop_current() {
        // The pushed context may still be current: let the next operation ask the driver.
        crate::runtime::context::forget_current_context();
        return Err(e);
    }
    device
}

impl DeviceStream {
    /// Wraps a stream that another library created and owns, so that every operation of this
    /// crate works on it: host-value gates, host functions and both trampoline kickoffs, events,
    /// graph capture, copies and launches.
    ///
    /// The returned stream holds `keep_alive`, which keeps the other library's stream alive, and
    /// drops it only once the crate is done with the handle: after the last [`DeviceStream`] clone
    /// dropped *and* the crate's fences recorded their last event behind its work there (until
    /// then a dropped buffer or flag that the work uses is kept alive through that event). The work
    /// itself may still be queued then, as when a stream is destroyed with `cuStreamDestroy`,
    /// which lets queued work finish. The crate never destroys `raw` itself. `keep_alive` is
    /// dropped on whatever thread releases the stream last (a crate thread among them, inside
    /// `catch_unwind`); its `Drop` must not wait for the GPU.
    ///
    /// The legacy default stream (a null handle, or `CU_STREAM_LEGACY`) is accepted: it
    /// synchronises implicitly with every blocking stream of the context, so a host-value gate on
    /// it also holds up those. Prefer a created stream.
    ///
    /// The `cudarc` and `cust` features wrap those crates' streams without `unsafe`:
    /// `DeviceStream::from_cudarc`, `DeviceStream::from_cust`.
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device, DeviceStream};
    /// # fn main() -> ferrocuda_driver::Result<()> {
    /// let device = Device::new(0)?;
    /// # let other_library_stream = device.new_stream()?;
    /// // A stream another library made, and the value that keeps it alive:
    /// let (raw, keep_alive) = (other_library_stream.as_raw(), other_library_stream.clone());
    /// // SAFETY: `keep_alive` keeps `raw` alive, and `raw` is a stream of device 0's primary context.
    /// let stream = unsafe { DeviceStream::from_raw_borrowed(&device, raw, keep_alive) }?;
    /// let flag = CompletionFlag::new(&device)?;
    /// stream.wait_for_host_value_ge(&flag, 1)?;
    /// flag.signal(1);
    /// stream.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Safety
    ///
    /// * `raw` is a live stream, or the legacy default stream, of `device`'s primary context. (A
    ///   stream of another context is refused with an error, but a dangling handle cannot be
    ///   detected.)
    /// * `raw` stays live as long as `keep_alive` is not dropped: the other library destroys it
    ///   only after `keep_alive` is gone.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for the per-thread default stream (`CU_STREAM_PER_THREAD`, a
    /// different stream on every thread, so the crate's threads could not record fences on it)
    /// and for a stream of another context; [`Error::Driver`] if the driver refuses.
    pub unsafe fn from_raw_borrowed<K: Send + Sync + 'static>(
        device: &Device,
        raw: CUstream,
        keep_alive: K,
    ) -> Result<DeviceStream> {
        // Whatever happens below, `keep_alive` is released the crate's way (deferred inside a host
        // function, contained, context record dropped).
        let keep = ForeignKeep(Box::new(keep_alive));
        if raw as usize == PER_THREAD {
            return Err(Error::InvalidArgument(
                "the per-thread default stream (CU_STREAM_PER_THREAD) is a different stream on \
                 every thread, so the crate's threads could not record fences on it: wrap a \
                 created stream instead"
                    .into(),
            ));
        }
        let _op = guard::enter("DeviceStream::from_raw_borrowed")?;
        device.inner.bind_checked()?;
        // SAFETY: the caller guarantees `raw` is a live stream or a legacy default stream handle.
        let ctx = unsafe { raw::stream_get_ctx(raw) }?;
        if ctx != device.raw_context() {
            return Err(Error::InvalidArgument(format!(
                "stream {raw:?} belongs to context {ctx:?}, not to device {}'s primary context \
                 ({:?}): ferrocuda works on primary contexts only",
                device.ordinal(),
                device.raw_context()
            )));
        }
        // As for a stream the crate creates: the polling gates' expiry counter is made now, not at
        // the first timed gate, which may be under capture.
        let expired = CompletionFlag::new(device)?;
        Ok(DeviceStream::register(
            device,
            raw,
            expired,
            StreamOwner::Foreign(Some(keep)),
        ))
    }

    /// The keep-alive value this stream was wrapped with, if it was made by
    /// [`from_raw_borrowed`](Self::from_raw_borrowed) with a `K`.
    #[cfg_attr(
        not(any(feature = "cudarc", feature = "cust")),
        allow(dead_code, reason = "used by the interop features")
    )]
    pub(crate) fn keep_alive<K: 'static>(&self) -> Option<&K> {
        self.inner.foreign_keep()?.downcast_ref()
    }
}
