//! cudarc interop (feature `cudarc`): a cudarc `CudaContext` as a [`Device`], a cudarc
//! `CudaStream` as a [`DeviceStream`] that keeps it alive.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::stream::DeviceStream;
use cudarc::driver::{CudaContext, CudaStream};
use std::sync::Arc;

impl Device {
    /// The device of a cudarc context, sharing its primary context.
    ///
    /// Both libraries retain the same primary context (checked: a cudarc context that is not
    /// its device's primary one, from `CudaContext::new_non_primary` or a green context, is
    /// refused). The `Device` does not hold `ctx`: ferrocuda retains the primary context itself,
    /// for the life of the process.
    ///
    /// ```no_run
    /// use ferrocuda_driver::Device;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ctx = cudarc::driver::CudaContext::new(0)?;
    /// let device = Device::from_cudarc(&ctx)?;
    /// assert_eq!(device.raw_context(), ctx.cu_ctx().cast());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `ctx` is not its device's primary context; the errors of
    /// [`Device::new`].
    pub fn from_cudarc(ctx: &Arc<CudaContext>) -> Result<Device> {
        if !ctx.is_primary() {
            return Err(Error::InvalidArgument(format!(
                "the cudarc context of device {} is not its primary context (made with \
                 `new_non_primary` or as a green context): ferrocuda shares primary contexts only",
                ctx.ordinal()
            )));
        }
        Device::sharing(ctx.ordinal(), ctx.cu_ctx().cast(), "the cudarc")
    }
}

impl DeviceStream {
    /// Wraps a cudarc stream: every operation of this crate works on it, in order with the work
    /// cudarc enqueues there.
    ///
    /// The returned stream holds a clone of `stream`'s `Arc` and drops it only once the crate is
    /// done with the handle (after the last clone of the `DeviceStream` dropped and the crate's
    /// fences recorded their last event on it), so every cudarc and ferrocuda handle may be
    /// dropped while a gate is closed: the work behind the gate still runs when it opens. (Keep
    /// cudarc's *modules* until then: unloading one waits for the gate.) cudarc's default stream
    /// (the legacy NULL stream) is accepted; its per-thread stream is refused.
    ///
    /// ```no_run
    /// use ferrocuda_driver::{CompletionFlag, Device, DeviceStream};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ctx = cudarc::driver::CudaContext::new(0)?;
    /// let cu_stream = ctx.new_stream()?;
    /// let stream = DeviceStream::from_cudarc(&cu_stream)?;
    /// let flag = CompletionFlag::new(stream.device())?;
    /// stream.wait_for_host_value_ge(&flag, 1)?; // cudarc's later work on `cu_stream` waits too
    /// flag.signal(1);
    /// cu_stream.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Device::from_cudarc`] for the stream's context; as
    /// [`from_raw_borrowed`](Self::from_raw_borrowed) for the stream.
    pub fn from_cudarc(stream: &Arc<CudaStream>) -> Result<DeviceStream> {
        let device = Device::from_cudarc(stream.context())?;
        let raw = stream.cu_stream().cast();
        // SAFETY: `raw` is the handle of `stream`, a stream of `device`'s primary context (checked
        // above; `from_raw_borrowed` checks the stream's context again). The `Arc` clone passed as
        // the keep-alive keeps it live: cudarc destroys a stream it owns only when the last `Arc`
        // of it drops, its default stream is never destroyed, and a stream it borrowed through
        // `wrap_borrowed_stream` must be kept alive by its owner while any `Arc` of the wrapper
        // is retained (that method's own safety contract).
        unsafe { DeviceStream::from_raw_borrowed(&device, raw, stream.clone()) }
    }

    /// The cudarc stream this stream wraps, if it was made by
    /// [`from_cudarc`](Self::from_cudarc).
    ///
    /// The reverse direction, handing a stream this crate created to cudarc, is not offered:
    /// cudarc's `CudaStream` lives in an `Arc` that any cudarc object may clone and keep, with no
    /// way for this crate to learn when the last one is gone, so the crate could never know when
    /// to destroy the stream. Create the stream with cudarc and wrap it instead.
    pub fn cudarc_stream(&self) -> Option<&Arc<CudaStream>> {
        self.keep_alive::<Arc<CudaStream>>()
    }
}
