//! A device's primary context, as the runtime side sees it: the handle, binding it to the
//! calling thread, and the crate's own stream for stream-ordered frees.
//!
//! The api side's `Device` holds one [`Context`] per opened device (for the life of the process)
//! and adds what users ask of a device (name, attributes, streams, peers, the gate kernels).

use super::raw::{self, CUcontext, CUdevice, CUstream};
use crate::error::{Error, Result};
use std::cell::Cell;
use std::sync::{Arc, OnceLock};

/// Every context the crate retained, by ordinal (below 64), for the waiter's fault checks.
static RETAINED: [OnceLock<Arc<Context>>; 64] = [const { OnceLock::new() }; 64];

thread_local! {
    /// The context this crate last made current on this thread.
    static CURRENT: Cell<CUcontext> = const { Cell::new(std::ptr::null_mut()) };
}

/// Tells the crate that code outside it (the CUDA runtime, NCCL, raw driver calls) may have
/// changed this thread's current context: the next call that needs a context asks the driver
/// instead of trusting the crate's record. Call it after such code, on the same thread.
pub fn forget_current_context() {
    // `try_with`: also called from drops that may run while the thread's locals are torn down.
    let _ = CURRENT.try_with(|c| c.set(std::ptr::null_mut()));
}

/// A retained primary context of one device.
pub(crate) struct Context {
    /// The device's ordinal.
    pub(crate) ordinal: usize,
    /// The driver's device handle.
    pub(crate) cu: CUdevice,
    /// The retained primary context (never released while the process runs).
    pub(crate) ctx: CUcontext,
    /// A stream of the crate's own on which fenced device frees are ordered.
    reclaim_stream: OnceLock<Result<CUstream>>,
}

// SAFETY: a CUcontext handle may be used from any thread: the driver API is thread-safe, and a
// primary context can be current on several threads at once (CUDA Driver API, "Primary Context
// Management"); a CUdevice is a plain ordinal; the reclaim stream is a stream handle, usable from
// any thread (CUDA Driver API, "Thread safety"), set once.
unsafe impl Send for Context {}
// SAFETY: as above; nothing is mutated through a shared reference except the OnceLock.
unsafe impl Sync for Context {}

impl Context {
    /// Retains device `ordinal`'s primary context (once per process: the api side opens each
    /// device once).
    pub(crate) fn retain(ordinal: usize) -> Result<Arc<Context>> {
        let cu = raw::device_get(ordinal as i32)?;
        let ctx = raw::primary_ctx_retain(cu)?;
        let c = Arc::new(Context {
            ordinal,
            cu,
            ctx,
            reclaim_stream: OnceLock::new(),
        });
        if let Some(slot) = RETAINED.get(ordinal) {
            let _ = slot.set(c.clone());
        }
        Ok(c)
    }

    /// The context of device `ordinal`, if the crate retained it.
    pub(crate) fn retained(ordinal: usize) -> Option<&'static Arc<Context>> {
        RETAINED.get(ordinal)?.get()
    }

    /// The context's sticky error, if it has one: a fault of work in it (an illegal address, a
    /// trap) or the loss of the context, after which every call in it fails. One `cuStreamQuery`
    /// of the crate's own reclaim stream, which never blocks.
    pub(crate) fn sticky_error(&self) -> Option<Error> {
        let s = match self.reclaim_stream() {
            Ok(s) => s,
            Err(e) => return Some(e),
        };
        // SAFETY: the reclaim stream lives as long as the process.
        match unsafe { raw::stream_query(s) } {
            Ok(_) => None,
            Err(Error::Shutdown) => None,
            Err(e) => Some(e),
        }
    }

    /// Makes this context current on this thread, trusting the crate's own record of what it
    /// made current last (no driver call when it already is). For calls whose handles already
    /// name their context (launches).
    #[inline]
    pub(crate) fn bind(&self) -> Result<()> {
        if CURRENT.with(Cell::get) == self.ctx {
            return Ok(());
        }
        self.bind_checked()
    }

    /// Makes this context current, asking the driver what is current now (so raw driver calls of
    /// the user that changed it are noticed). For calls that act on "the current context".
    pub(crate) fn bind_checked(&self) -> Result<()> {
        if raw::ctx_get_current()? != self.ctx {
            // SAFETY: the primary context is retained for the life of the process.
            unsafe { raw::ctx_set_current(self.ctx)? };
        }
        CURRENT.with(|c| c.set(self.ctx));
        Ok(())
    }

    /// The crate's internal stream for stream-ordered frees.
    pub(crate) fn reclaim_stream(&self) -> Result<CUstream> {
        self.reclaim_stream
            .get_or_init(|| {
                self.bind_checked()?;
                // SAFETY: the context is current.
                unsafe {
                    raw::stream_create(ferrocuda_sys::CUstream_flags::CU_STREAM_NON_BLOCKING.0)
                }
            })
            .clone()
    }
}
