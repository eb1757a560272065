//! Host functions on a [`DeviceStream`]: the blocking form (`cuLaunchHostFunc`) and the async
//! trampoline.

use super::DeviceStream;
use crate::error::Result;
use crate::flag::CompletionFlag;
use crate::resource::{StreamOp, UnderCapture};
use crate::runtime::gates::write_flags;
use crate::runtime::raw;
use crate::runtime::trampoline::job::{Job, SmallFn};
use crate::runtime::trampoline::{self, Enqueue, Kickoff};

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
        enqueue_step(op, job, Kickoff::Blocking)
    }

    /// The async trampoline: when the stream reaches this point, `f` is handed to a worker thread
    /// of the crate and the stream moves on at once; the worker runs `f` and then signals `value`
    /// on `flag` with release ordering. The hand-off is a GPU write that the crate's notifier
    /// thread watches ([`KickoffMode::GpuWrite`](crate::KickoffMode::GpuWrite), the default) or a tiny host function
    /// ([`KickoffMode::HostFunc`](crate::KickoffMode::HostFunc), MAX's way); see [`set_kickoff_mode`](Self::set_kickoff_mode).
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
        let job = Job::new(
            SmallFn::new(f),
            self.inner.panics.clone(),
            Some(flag.inner().clone()),
            value,
        );
        let ctx = &self.inner.device.inner.rt;
        enqueue_step(
            op,
            job,
            Kickoff::Async {
                mode: self.kickoff_mode(),
                ctx,
                stream: self.inner.id,
            },
        )
    }
}

/// Enqueues a trampoline step as part of `op`, by the kickoff the trampoline chose.
fn enqueue_step(op: StreamOp<'_, '_>, job: Box<Job>, how: Kickoff<'_>) -> Result<()> {
    trampoline::enqueue(job, how, |kick| match kick {
        Enqueue::HostFunc(entry, data) => op.enqueue(|s| {
            // SAFETY: the stream is live; `entry` reclaims `data` exactly once when the driver
            // runs it. The operation refused capture, so the host function runs once (it is not
            // recorded into a graph that could replay it).
            unsafe { raw::launch_host_func(s, entry, data) }
        }),
        Enqueue::WriteValue(addr, ticket) => op.enqueue(|s| {
            // SAFETY: the stream is live; the ring slot is the crate's mapped pinned memory, kept
            // for the process (no resource to record). The default flags put a system-wide memory
            // fence before the write, so the closure sees everything the stream did before this.
            unsafe { raw::stream_write_value64(s, addr, ticket, write_flags()) }
        }),
    })
}
