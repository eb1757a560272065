//! [`Backend`]: the driver operations the shared benchmark loops ([`crate::loops`]) are written
//! against, implemented once for ferrocuda ([`crate::ferrocuda::Env`]) and once for cudarc (in
//! `cudarc_bench.rs`).
//!
//! Each method is one driver call of the C baseline's loop, as the implementation's user would
//! make it (ferrocuda's safe API; cudarc's safe API where it has one, its `sys`/`result` tiers
//! where it has none), and dies with a message when the call fails: the loops are generic over
//! the backend, so each program's timed regions make exactly the calls they made when the loops
//! were written out per program, with no dynamic dispatch between them. The implementations mark
//! the methods `#[inline]` so that a call costs no more than writing the driver call in the loop.
//!
//! Every backend owns, as the C baseline's `env_t` does: two non-blocking streams of device 0's
//! primary context, the bench kernels of `bench/raw/bench_kernels.cu` (loaded from the cubin before
//! anything waits), and two 8-byte slots of mapped pinned memory: the *flag* the GPU waits on
//! and the host signals, and the *ack* slot the GPU writes and the host spins on.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{now_ns, wait_geq};

/// The operations of the shared loops. See the module docs.
pub trait Backend {
    /// A stream (`CUstream`).
    type Stream;
    /// An event (`CUevent`).
    type Event;

    /// What the `alloc_free_pinned` row measures for this backend (its `note`).
    const PINNED_NOTE: &'static str;

    /// The stream every benchmark runs on.
    fn stream(&self) -> &Self::Stream;
    /// The second stream (`cross_stream_event_wait`'s waiting side).
    fn second_stream(&self) -> &Self::Stream;
    /// Idle streams and zeroed slots between benchmarks, ending, as the C baseline's
    /// `env_reset`, with a memset of device scratch on the second stream, then on the main
    /// one, each synchronized (the last operation of a stream decides what event calls cost:
    /// bench/README.md, "Process states").
    fn reset(&self);

    /// `cuStreamSynchronize`.
    fn synchronize(&self, s: &Self::Stream);
    /// `cuLaunchKernel` of `empty_kernel()`, one thread.
    fn launch_empty(&self, s: &Self::Stream);
    /// `cuLaunchKernel` of `spin_ns(ns)`: one thread spinning `ns` on `%globaltimer`.
    fn launch_spin(&self, s: &Self::Stream, ns: u64);
    /// `cuLaunchKernel` of `ack(ack slot, v)`: one thread stores `v` to the ack slot.
    fn launch_ack(&self, s: &Self::Stream, v: u64);
    /// `cuStreamWaitValue64(flag, v, GEQ)`: later work on `s` waits until the flag is ≥ `v`.
    fn wait_for_flag(&self, s: &Self::Stream, v: u64);
    /// `cuStreamWriteValue64(ack slot, v)`.
    fn write_ack(&self, s: &Self::Stream, v: u64);

    /// The host's release store of `v` to the flag.
    fn signal(&self, v: u64);
    /// The host's acquire load of the ack slot.
    fn ack(&self) -> u64;
    /// Spins until the ack slot is ≥ `v`; the time it saw it. Dies after 2 s, naming `what`.
    #[inline]
    fn wait_ack(&self, v: u64, what: &str) -> u64 {
        wait_geq(|| self.ack(), v, what)
    }

    /// `cuEventCreate`: with timing, or with `CU_EVENT_DISABLE_TIMING`.
    fn new_event(&self, timing: bool) -> Self::Event;
    /// `cuEventRecord` of `ev` on `s`.
    fn record_event(&self, s: &Self::Stream, ev: &Self::Event);
    /// `cuEventSynchronize`.
    fn synchronize_event(&self, ev: &Self::Event);
    /// `cuEventQuery`: whether `ev` completed.
    fn is_ready(&self, ev: &Self::Event) -> bool;
    /// `cuEventElapsedTime` from `start` to `end`, in ms.
    fn elapsed_time(&self, start: &Self::Event, end: &Self::Event) -> f32;
    /// `cuStreamWaitEvent`: later work on `s` waits for `ev`.
    fn wait_for_event(&self, s: &Self::Stream, ev: &Self::Event);

    /// `cuMemAllocAsync` of `bytes` on `s`, then `cuMemFreeAsync`.
    fn alloc_free_device(&self, s: &Self::Stream, bytes: usize);
    /// An 8-byte slot of mapped pinned memory allocated and freed ([`Self::PINNED_NOTE`] says
    /// how).
    fn alloc_free_pinned(&self);

    /// `cuLaunchHostFunc` of a callback that runs [`Mark::stamp`].
    fn enqueue_stamp(&self, s: &Self::Stream, mark: &'static Mark);
    /// `cuLaunchHostFunc` of a callback that runs [`Mark::count`] (cudarc's runs
    /// [`Mark::stamp`]: see `cudarc_bench.rs`).
    fn enqueue_count(&self, s: &Self::Stream, mark: &'static Mark);
}

/// What the host-function callbacks write: how many ran, and the time stamped in the latest.
#[derive(Default)]
pub struct Mark {
    /// Callbacks run so far.
    pub count: AtomicU64,
    /// [`now_ns`] inside the latest stamping callback.
    pub ran_ns: AtomicU64,
}

impl Mark {
    /// A mark that lives as long as the process: a callback gets a plain reference, as the C
    /// callback gets a pointer (an `Arc` clone per enqueue would add two contended atomics).
    pub fn leak() -> &'static Mark {
        Box::leak(Box::default())
    }

    /// Stamps the time, then publishes the count (the C baseline's `hf_mark`).
    #[inline]
    pub fn stamp(&self) {
        self.ran_ns.store(now_ns(), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Release);
    }

    /// Publishes the count (the C baseline's `hf_count`).
    #[inline]
    pub fn count(&self) {
        self.count.fetch_add(1, Ordering::Release);
    }
}
