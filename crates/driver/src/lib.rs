//! Safe CUDA driver layer of [ferrocuda](https://github.com/ferrocuda/ferrocuda): gate GPU work on
//! values the host produces, and the host on values the GPU produces, at the latency of the hardware.
//!
//! ```no_run
//! use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
//! use std::time::Duration;
//!
//! # fn main() -> ferrocuda_driver::Result<()> {
//! let device = Device::new(0)?;
//! let stream = device.new_stream()?;
//! let flag = CompletionFlag::new(&device)?;   // 8 bytes of pinned memory the GPU sees
//! let done = CompletionFlag::new(&device)?;
//!
//! // Each step: the host computes a value on a worker (the stream does not wait for it to start),
//! // the GPU waits for that value, then tells the host it got there.
//! for step in 1..=100u64 {
//!     stream.enqueue_async_host_func(&flag, step, move || { /* host work of `step` */ })?;
//!     stream.wait_for_host_value_ge(&flag, step)?;
//!     // ... kernels that consume the host's result ...
//!     stream.write_host_value(&done, step)?;
//! }
//! done.wait(WaitCondition::GreaterOrEqual, 100, Duration::from_secs(5))?;
//! stream.synchronize()?;
//! # Ok(()) }
//! ```
//!
//! # Concepts
//!
//! * [`Device`]: one GPU and its primary context, which the crate makes current wherever it needs
//!   to. Users never push or pop contexts.
//! * [`DeviceStream`]: ordered GPU work. Besides copies and kernel launches it can wait on a
//!   [`CompletionFlag`] ([`wait_for_host_value`](DeviceStream::wait_for_host_value), equality as
//!   in MAX, and [`wait_for_host_value_ge`](DeviceStream::wait_for_host_value_ge)), write one for
//!   the host ([`write_host_value`](DeviceStream::write_host_value)), run host closures
//!   ([`enqueue_host_func`](DeviceStream::enqueue_host_func)) and kick off host work that signals a
//!   flag when done without holding the stream
//!   ([`enqueue_async_host_func`](DeviceStream::enqueue_async_host_func)).
//! * [`DeviceEvent`]: a point in a stream: query it, wait for it, time between two.
//! * [`CompletionFlag`] / [`CompletionFlagRef`]: the 8-byte flag and its non-owning view. Portable:
//!   streams of every device of the process can wait on one flag, and one `signal` releases them all.
//! * [`DeviceFlag`]: an 8-byte flag in one GPU's memory, which streams of that GPU and of its peers
//!   write ([`write_value`](DeviceStream::write_value)) and wait on
//!   ([`wait_value`](DeviceStream::wait_value)): GPU → GPU gates without the host
//!   (`docs/multi-gpu.md`); [`relay_value`](DeviceStream::relay_value) waits for a flag and writes
//!   a device flag in one polling kernel ([`FlagSource`] names what it waits on).
//! * [`DeviceBuffer`], [`HostBuffer`]: device memory (stream-ordered) and pinned host memory.
//! * [`Module`], [`Function`], [`LaunchConfig`], [`LaunchArgs`]: GPU code and how to launch it.
//!
//! # Async
//!
//! Every wait has a future, for async services (tokio, async-std, smol: the futures use only std's
//! `Future` and `Waker`, no runtime):
//!
//! | wait | blocking | future |
//! | --- | --- | --- |
//! | an event completes | [`DeviceEvent::synchronize`] | [`DeviceEvent::wait_async`] → [`EventWait`] |
//! | a flag reaches a value (GPU → host, [`DeviceStream::write_host_value`]) | [`CompletionFlag::wait`] | [`CompletionFlag::wait_async`] → [`FlagWait`] |
//! | a stream drains | [`DeviceStream::synchronize`] | [`DeviceStream::synchronize_async`] → [`StreamSync`] |
//! | an async host function ran | [`CompletionFlag::wait`] | `flag.wait_async(WaitCondition::GreaterOrEqual, v)` after `enqueue_async_host_func(&flag, v, f)` |
//!
//! ```no_run
//! use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
//!
//! # async fn serve() -> ferrocuda_driver::Result<()> {
//! let device = Device::new(0)?;
//! let stream = device.new_stream()?;
//! let done = CompletionFlag::new(&device)?;
//! // ... enqueue the job's kernels ...
//! stream.write_host_value(&done, 1)?;
//! done.wait_async(WaitCondition::GreaterOrEqual, 1).await?; // the task sleeps, no thread blocks
//! stream.synchronize_async().await?;
//! # Ok(()) }
//! ```
//!
//! One crate thread, the *waiter*, watches what pending futures wait for (a load per flag, a
//! `cuEventQuery` per event) and wakes them: it spins for [`waiter_spin`] after anything happens
//! (a wake-up then lags the GPU's write by one pass over the pending checks), spins again around
//! the predicted end of a wait whose length repeats (each flag, event and stream remembers its
//! last wait), sleeps 20–200 µs between checks otherwise (500 µs after 5 ms with nothing
//! happening), and parks, using no CPU, once no future has been pending for the spin window (at
//! most 200 µs). A future whose flag a faulted device was to write resolves with the driver's
//! error. Futures are cancel-safe: dropping
//! one deregisters it ([`pending_futures`] counts the registered ones), so `tokio::time::timeout`
//! bounds a wait, and [`CompletionFlag::abort`] releases flag futures with [`Error::Aborted`].
//! `docs/async.md` has the mechanism, its costs and the measurements; `examples/async_jobs.rs` serves
//! 1,000 concurrent jobs from tokio.
//!
//! # Guarantees
//!
//! * **Safe code cannot cause undefined behaviour.** Every address a GPU operation uses comes from
//!   one use path that checks the resource's device ([`Error::DeviceMismatch`]), records the use and
//!   applies the capture rule; see `docs/safety.md`.
//! * **Keep-alive.** Whatever an enqueued operation touches — a flag, a buffer, a module, a host
//!   closure — stays alive until the GPU is past that operation, even if every handle is dropped,
//!   also when the operation runs on another stream than the buffer's home.
//! * **Capture.** Whether a stream captures a graph is asked of the driver at every operation (a
//!   stream that joined a capture through an event counts). Under capture the graph owns what an
//!   operation touches; one-shot host closures, copies of borrowed host memory and allocations are
//!   refused ([`Error::NotAllowedUnderCapture`]).
//! * **No hidden deadlocks.** Dropping anything never blocks, even while a stream waits on a host
//!   value that has not been signalled: pinned memory goes back to a cache of the crate's instead
//!   of `cuMemFreeHost`, modules are unloaded by the crate's own thread at a moment when no stream
//!   has work, and device memory is freed stream-ordered. No lock of the crate is held across a wait for the GPU.
//!   After a module load gave up behind a wait, operations fail with [`Error::DriverHeld`] instead
//!   of blocking. See [`wait_for_releases`] and `docs/deadlocks.md`.
//! * **Host functions are contained.** A closure runs exactly once; its panic (even one whose
//!   payload panics when dropped) is caught and reported by the next `synchronize`; an operation
//!   of the crate inside it returns [`Error::CalledFromHostFunc`] naming the operation. Crate
//!   threads run user code (closures, wakers, dropped values) only under `catch_unwind`.
//! * **Errors, not panics.** A missing driver, a bad argument or a failed call is an [`Error`]
//!   that keeps the driver's code, name, message and the call that failed.
//!
//! # Tracing
//!
//! Every driver call opens a `trace`-level span named `cu` with the call's name; failures are
//! `debug` events. Nothing is logged at `info` or above. With no subscriber, this costs a branch.
//!
//! # Working inside a cudarc or cust program
//!
//! ferrocuda can be added to a program whose GPU stack is another library's: its primary context
//! is shared and its streams are wrapped, so the gates, flags, trampoline and graph ops work on the
//! streams the program already has. [`DeviceStream::from_raw_borrowed`] wraps any library's stream
//! with a keep-alive value; the `cudarc` feature adds `Device::from_cudarc` and
//! `DeviceStream::from_cudarc`, the `cust` feature `Device::from_cust` and
//! `DeviceStream::from_cust` (which takes cust's `Stream` over and lends it back). `docs/interop.md`
//! has the keep-alive rules across the libraries and what a program must not do while a gate is
//! closed; `examples/cudarc_gate.rs` and `examples/cust_gate.rs` are a cudarc and a cust program
//! that add a gate and the trampoline.
//!
//! # Features
//!
//! * `cudarc`: interop with cudarc 0.19 (`Device::from_cudarc`, `DeviceStream::from_cudarc`,
//!   `DeviceStream::cudarc_stream`). cudarc's driver API only, loaded at run time, so it builds
//!   without a CUDA install; the CUDA version is the program's own cudarc choice.
//! * `cust`: interop with cust 0.3 (`Device::from_cust`, `DeviceStream::from_cust`,
//!   `DeviceStream::cust_stream`). cust links libcuda when it is built: its build script needs a
//!   CUDA install, or `CUDA_LIBRARY_PATH` naming a folder whose `lib64/` holds a `libcuda.so` to
//!   link against (not needed on docs.rs).
//! * `gpu-tests`: compiles the crate's GPU integration tests (used by `cargo xtask test-gpu`).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The README's examples are doctests: compiled always, run where they need no GPU (`no_run`
// marks the others). Only rustdoc's test collection sees this item; the docs stay the ones above.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// The api side: what users see. It uses the runtime side, never the other way round.
mod callback;
mod device;
mod device_flag;
mod device_loop;
mod error;
mod event;
mod flag;
mod future;
mod interop;
mod memory;
mod module;
mod resource;
mod stream;

// The runtime side: raw calls and their guard, reclaim, waiter, trampoline, gates, parking.
mod runtime;

/// The gates' one argument layout and mem-op builders (sibling crates only).
#[doc(hidden)]
pub use runtime::gates;
/// The call guard every driver call of the ferrocuda crates goes through (sibling crates only).
#[doc(hidden)]
pub use runtime::guard;

pub use callback::HostCallback;
pub use callback::{GpuKickoff, GraphKickoff};
pub use device::Device;
pub use device_flag::DeviceFlag;
pub use device_loop::{LoopEnd, LoopKickoff, LoopNode, LoopOutcome, LoopParams};
pub use error::{DriverError, Error, Result};
pub use event::DeviceEvent;
pub use flag::{CompletionFlag, CompletionFlagRef};
pub use future::{EventWait, FlagWait, StreamSync};
pub use memory::{DeviceBuffer, HostBuffer};
pub use module::{
    DEFAULT_LOAD_TIMEOUT, Function, KernelParam, LaunchArgs, LaunchConfig, MAX_KERNEL_PARAMS,
    Module, ResourceParam,
};
#[doc(hidden)]
pub use resource::{CaptureKeeps, NodeUses, hand_to_graph};
pub use runtime::context::forget_current_context;
pub use runtime::gates::WaitCondition;
pub use runtime::guard::{driver_held, in_host_function};
pub use runtime::pinned::{pinned_bytes, pinned_cached_bytes};
pub use runtime::reclaim::{defer_drop, pending_releases, wait_for_releases};
pub use runtime::trampoline::{
    GRACE as TRAMPOLINE_GRACE, KickoffMode, RING_SLOTS as KICKOFF_RING_SLOTS, TrampolineStats,
    trampoline_stats,
};
pub use runtime::waiter::{pending_futures, set_waiter_spin, waiter_spin};
pub use stream::{DeviceStream, FlagSource, GateStrategy};

/// The raw driver API (`ferrocuda-sys`), for calls this crate does not wrap.
pub use ferrocuda_sys as sys;
