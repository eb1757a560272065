//! Host functions on a [`DeviceStream`]: the blocking form (`cuLaunchHostFunc`) and the async
//! trampoline.

use super::DeviceStream;
use crate::error::Result;
use crate::flag::CompletionFlag;
use crate::host_func::{self, Job, SmallFn};
use crate::raw;
use crate::resource::{StreamOp, UnderCapture};
use crate::trampoline::{self, KickoffMode};
use ferrocuda_sys::CUstreamWriteValue_flags;

/// Why one-shot host closures are refused under capture.
const ONE_SHOT: &str = "a one-shot closure would run again at every replay of the graph, after it \
     was consumed and freed by the first: add a host node with ferrocuda-graph's builder \
     (Graph::launch_host_func or Graph::launch_async_host_func), which owns a closure that can run \
     many times";

impl DeviceStream {
    /// Runs `f` on a driver thread when the stream reaches this point; later work waits for it
    /// (`cuLaunchHostFunc`).
    ///
    /// `f` runs exactly once. It must not call CUDA (CUDA forbids it); this crate's operations
    /// return [`Error::CalledFromHostFunc`](crate::Error::CalledFromHostFunc) there. A panic is
    /// caught — it never unwinds into the driver, and a panic payload whose own `Drop` panics is
    /// contained too — the stream goes on, and the next [`synchronize`](Self::synchronize) reports
    /// it. Small closures (≤ 64 bytes of captures) are stored without allocating.
    ///
    /// For host work that should not hold the stream, use
    /// [`enqueue_async_host_func`](Self::enqueue_async_host_func).
    ///
    /// # Errors
    ///
    /// [`Error::NotAllowedUnderCapture`](crate::Error::NotAllowedUnderCapture) while the stream
    /// captures a graph (also one it joined through an event); [`Error::Driver`](crate::Error::Driver)
    /// if the driver refuses. `f` is then dropped without running.
    pub fn enqueue_host_func<F: FnOnce() + Send + 'static>(&self, f: F) -> Result<()> {
        let op = self.inner.begin(
            "DeviceStream::enqueue_host_func",
            UnderCapture::Refuse(ONE_SHOT),
        )?;
        let job = Job::new(SmallFn::new(f), self.inner.panics.clone(), None, 0);
        launch_job(op, job, host_func::host_func_entry)
    }

    /// The async trampoline: when the stream reaches this point, `f` is handed to a worker thread
    /// of the crate and the stream moves on at once; the worker runs `f` and then signals `value`
    /// on `flag` with release ordering. The hand-off is a GPU write that the crate's notifier
    /// thread watches ([`KickoffMode::GpuWrite`], the default) or a tiny host function
    /// ([`KickoffMode::HostFunc`], MAX's way); see [`set_kickoff_mode`](Self::set_kickoff_mode).
    /// Gate downstream GPU work with
    /// [`wait_for_host_value_ge`](Self::wait_for_host_value_ge)`(&flag, value)`.
    ///
    /// `f` runs exactly once, on a worker, where CUDA calls are allowed. If it panics, the flag is
    /// still signalled (the waiters it owes go on) and the next `synchronize` reports the panic.
    /// The flag stays alive until the signal, whatever handles the caller drops. A closure that
    /// blocks holds only its own worker: other streams' steps run on the other workers.
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
    /// [`Error::NotAllowedUnderCapture`](crate::Error::NotAllowedUnderCapture) while the stream
    /// captures a graph, in either kickoff mode; [`Error::Driver`](crate::Error::Driver) if the
    /// driver refuses. `f` is then dropped without running and the flag is not signalled.
    pub fn enqueue_async_host_func<F: FnOnce() + Send + 'static>(
        &self,
        flag: &CompletionFlag,
        value: u64,
        f: F,
    ) -> Result<()> {
        let op = self.inner.begin(
            "DeviceStream::enqueue_async_host_func",
            UnderCapture::Refuse(ONE_SHOT),
        )?;
        trampoline::start_workers();
        let job = Job::new(
            SmallFn::new(f),
            self.inner.panics.clone(),
            Some(flag.inner().clone()),
            value,
        );
        trampoline::step_enqueued();
        if self.kickoff_mode() == KickoffMode::HostFunc {
            return launch_job(op, job, host_func::kickoff_entry);
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
            Err(job) => return launch_job(op, job, host_func::kickoff_entry),
        };
        // The ring is the crate's own mapped memory, kept for the process: no resource to record.
        let (addr, value) = (ticket.addr, ticket.ticket);
        // SAFETY: the stream is live; the ring slot is mapped pinned memory kept for the process.
        // The default flags put a system-wide memory fence before the write, so the closure sees
        // everything the stream did before this point.
        let w = op.enqueue(|s| unsafe {
            raw::stream_write_value64(
                s,
                addr,
                value,
                CUstreamWriteValue_flags::CU_STREAM_WRITE_VALUE_DEFAULT.0,
            )
        });
        if let Err(e) = w {
            if let Some(job) = ticket.cancel() {
                job.disarm_and_recycle();
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Enqueues `job` as a host function calling `entry`, as part of `op`.
fn launch_job(
    op: StreamOp<'_, '_>,
    job: Box<Job>,
    entry: unsafe extern "C" fn(*mut std::ffi::c_void),
) -> Result<()> {
    let data = Box::into_raw(job);
    // SAFETY: the stream is live; `entry` reclaims `data` exactly once when the driver runs it.
    // The operation refused capture, so the host function runs once (it is not recorded into a
    // graph that could replay it).
    match op.enqueue(|s| unsafe { raw::launch_host_func(s, entry, data.cast()) }) {
        Ok(()) => Ok(()),
        Err(e) => {
            // SAFETY: the driver did not take `data`; reclaim it here (dropping the closure).
            unsafe { Box::from_raw(data) }.disarm_and_recycle();
            Err(e)
        }
    }
}
