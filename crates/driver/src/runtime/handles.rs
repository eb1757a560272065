//! Owned event and stream handles whose release never blocks the dropping thread: where no
//! driver call may be made (inside a host function, on a crate thread after shutdown began), the
//! handle goes to the reclaimer instead.

use super::context::Context;
use super::guard;
use super::raw::{self, CUevent, CUstream};
use super::reclaim;
use crate::error::Result;
use ferrocuda_sys::CUevent_flags;

/// An owned `CUevent`; destroyed on drop (the driver defers the release past pending records, so
/// this never blocks).
pub(crate) struct RawEvent(pub(crate) CUevent);

// SAFETY: CUevent handles may be recorded, queried, waited on and destroyed from any thread: the
// driver API is thread-safe and an event is not bound to a thread (CUDA Driver API, "Thread
// safety"). The handle itself is never mutated.
unsafe impl Send for RawEvent {}
// SAFETY: as above: every use through `&RawEvent` is a driver call on an immutable handle.
unsafe impl Sync for RawEvent {}

impl RawEvent {
    /// An event without timing (the cheap kind), on `ctx`.
    pub(crate) fn new_untimed(ctx: &Context) -> Result<RawEvent> {
        ctx.bind_checked()?;
        // SAFETY: the device's context is current.
        unsafe { raw::event_create(CUevent_flags::CU_EVENT_DISABLE_TIMING.0) }.map(RawEvent)
    }
}

impl Drop for RawEvent {
    fn drop(&mut self) {
        let e = self.0;
        if guard::must_defer() {
            reclaim::defer(reclaim::Garbage::Event(RawEvent(e)));
            return;
        }
        // SAFETY: the handle is live and this is its only owner.
        if let Err(err) = unsafe { raw::event_destroy(e) } {
            tracing::warn!(%err, "cuEventDestroy failed");
        }
    }
}

/// A stream handle moved to the reclaimer to be destroyed.
pub(crate) struct RawStream(pub(crate) CUstream);
// SAFETY: a stream handle may be destroyed from any thread: the driver API is thread-safe and a
// stream is not bound to the thread that created it (CUDA Driver API, "Thread safety").
unsafe impl Send for RawStream {}

impl Drop for RawStream {
    fn drop(&mut self) {
        if guard::must_defer() {
            reclaim::defer(reclaim::Garbage::Stream(RawStream(std::mem::replace(
                &mut self.0,
                std::ptr::null_mut(),
            ))));
            return;
        }
        if self.0.is_null() {
            return;
        }
        // SAFETY: the handle is live and this is its last owner. cuStreamDestroy returns at once;
        // the driver finishes the work still queued.
        if let Err(err) = unsafe { raw::stream_destroy(self.0) } {
            tracing::warn!(%err, "cuStreamDestroy failed");
        }
    }
}
