//! cust interop (feature `cust`): a cust `Context` as a [`Device`], a cust `Stream` as a
//! [`DeviceStream`] that owns it.
//!
//! cust 0.3's `Context` is always its device's primary context (`Context::new` retains it; cust's
//! own contexts, made with `cuCtxCreate`, are the separate type `cust::context::legacy::Context`),
//! so the two libraries share one context. A cust `Stream` has a single owner and is destroyed when
//! it drops, so the wrapper takes it by value and lends it back with
//! [`DeviceStream::cust_stream`].

use crate::device::Device;
use crate::error::Result;
use crate::runtime::{guard, raw};
use crate::stream::DeviceStream;
use cust::context::Context;
use cust::stream::Stream;

impl Device {
    /// The device of a cust context, sharing its primary context.
    ///
    /// cust 0.3's `Context` holds its device's primary context (`Context::new` and `Clone`
    /// retain it), the one this crate uses; the device is asked of the driver and the context
    /// checked against that device's primary one. cust's own contexts
    /// (`cust::context::legacy::Context`, made with `cuCtxCreate`) are not primary and cannot be
    /// shared: a stream made while one is current is refused by [`DeviceStream::from_cust`]. The
    /// `Device` does not hold `ctx`: ferrocuda retains the primary context itself, for the life
    /// of the process.
    ///
    /// ```no_run
    /// use ferrocuda_driver::Device;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ctx = cust::quick_init()?; // cust::init and device 0's primary context, made current
    /// let device = Device::from_cust(&ctx)?;
    /// assert_eq!(device.raw_context(), ctx.as_raw().cast());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `ctx` is not its device's
    /// primary context; the errors of [`Device::new`]; [`Error::Driver`](crate::Error::Driver) if
    /// the driver cannot say which device `ctx` is on.
    pub fn from_cust(ctx: &Context) -> Result<Device> {
        let _op = guard::enter("Device::from_cust")?;
        // SAFETY: `ctx` retains its primary context while it is borrowed (cust releases it only
        // when the `Context` drops), so the handle is live for this call.
        unsafe { Device::of_context(ctx.as_raw().cast(), "the cust") }
    }
}

impl DeviceStream {
    /// Wraps a cust stream, taking it over: every operation of this crate works on it, in order
    /// with the work cust enqueues there through [`cust_stream`](Self::cust_stream).
    ///
    /// The returned stream owns `stream` and drops it (cust then destroys the handle) only once
    /// the crate is done with it: after the last clone of the `DeviceStream` dropped and the
    /// crate's fences recorded their last event on it. So every cust and ferrocuda handle may be
    /// dropped while a gate is closed, and the work behind the gate still runs when it opens;
    /// the queued work finishes after the destroy, as with any `cuStreamDestroy`. The device is
    /// the stream's own, asked of the driver; it must be a primary context.
    ///
    /// What cust releases with a call that waits behind a closed gate (the driver blocks there,
    /// docs/deadlocks.md) must stay alive until the gate opened, or be released stream-ordered:
    /// a `Module` (its `Drop` unloads it), a `DeviceBuffer` or `DeviceBox` (its `Drop` is
    /// `cuMemFree`: use `drop_async` on the stream instead), a `LockedBuffer` (`cuMemFreeHost`).
    /// And cust makes every stream blocking (it drops `NON_BLOCKING`): while a gate on it is
    /// closed, the legacy default stream waits too, and with it cust's synchronous copies
    /// (`copy_from`, `copy_to`, `DeviceBuffer::from_slice`, `as_host_vec`), which do not return
    /// until the gate opened; until then use the `_async` forms on another stream.
    ///
    /// ```no_run
    /// use cust::stream::{Stream, StreamFlags};
    /// use ferrocuda_driver::{CompletionFlag, DeviceStream};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let _ctx = cust::quick_init()?;
    /// let stream = DeviceStream::from_cust(Stream::new(StreamFlags::DEFAULT, None)?)?;
    /// let flag = CompletionFlag::new(stream.device())?;
    /// stream.wait_for_host_value_ge(&flag, 1)?; // cust's later work on the stream waits too
    /// let cu = stream.cust_stream().expect("made by from_cust");
    /// // ... cust's `launch!` and `_async` copies on `cu` ...
    /// flag.signal(1);
    /// cu.synchronize()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a stream of a context that
    /// is not its device's primary one (made while a cust legacy context was current); as
    /// [`from_raw_borrowed`](Self::from_raw_borrowed) for the stream. On an error `stream` is
    /// dropped: cust destroys it.
    pub fn from_cust(stream: Stream) -> Result<DeviceStream> {
        let _op = guard::enter("DeviceStream::from_cust")?;
        let raw = stream.as_inner().cast();
        // SAFETY: `raw` is the handle of `stream`, which cust created (`Stream::new` is its only
        // constructor) and destroys only when the `Stream` drops: it is live here.
        let ctx = unsafe { raw::stream_get_ctx(raw) }?;
        // SAFETY: a live stream's context is live (destroying a context destroys its streams).
        let device = unsafe { Device::of_context(ctx, "the cust stream's") }?;
        // SAFETY: `raw` is the handle of `stream`, a stream of `device`'s primary context (checked
        // above; `from_raw_borrowed` checks again). `stream` itself is the keep-alive: cust
        // destroys the handle only in the `Stream`'s `Drop`, which runs when the crate drops the
        // keep-alive. Nothing else can destroy it: cust's `Stream` has no other owner (it is not
        // `Clone`), and its context can no longer be destroyed under it, since `device` retains
        // that primary context for the life of the process.
        unsafe { DeviceStream::from_raw_borrowed(&device, raw, stream) }
    }

    /// The cust stream this stream wraps, if it was made by [`from_cust`](Self::from_cust):
    /// cust's own calls take it (`launch!`, `_async` copies, `drop_async`, `Event::record`).
    ///
    /// The reverse direction, handing a stream this crate created to cust, is not offered: cust
    /// 0.3 can only create streams, not wrap one. Create the stream with cust and wrap it instead.
    pub fn cust_stream(&self) -> Option<&Stream> {
        self.keep_alive::<Stream>()
    }
}
