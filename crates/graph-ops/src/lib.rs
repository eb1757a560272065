//! CUDA graphs for [ferrocuda](https://github.com/ferrocuda/ferrocuda): gate GPU work on host
//! values inside a graph, run host functions and the async trampoline as graph nodes, and replay
//! the whole loop at graph-launch cost.
//!
//! ```no_run
//! use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
//! use ferrocuda_graph::Graph;
//!
//! # fn main() -> ferrocuda_graph::Result<()> {
//! let device = Device::new(0)?;
//! let stream = device.new_stream()?;
//! let ready = CompletionFlag::new(&device)?;
//! ready.signal(1); // priming: the first replay's wait passes before any kickoff ran
//!
//! let mut g = Graph::new(&device)?;
//! let wait = g.wait_host_value(&ready, 1, WaitCondition::Equal, &[])?; // the host's result is in
//! let reset = g.write_host_value(&ready, 0, &[wait])?;                  // consume the signal
//! // ... kernel nodes that use the host's result and produce the next input, after `reset` ...
//! g.launch_async_host_func(&ready, 1, || { /* compute the next result */ }, &[reset])?;
//!
//! let exec = g.instantiate()?;
//! for _ in 0..1000 {
//!     exec.launch(&stream)?; // each replay waits for the previous replay's host result
//! }
//! exec.synchronize(&stream)?;
//! # Ok(()) }
//! ```
//!
//! # Replay semantics
//!
//! `docs/graph-replay.md` in the repository has the full argument. In short:
//!
//! * **Reset after the wait** (the canonical loop above): the wait node waits for `flag == 1`, a
//!   write node right after it stores 0, and the async host node of the same replay stores 1 when
//!   its closure is done. The next replay's wait can only pass on that store: the reset of replay
//!   *k + 1* is ordered after its own wait, which is ordered after the signal of replay *k*; and the
//!   signal of replay *k + 1* comes from a kickoff ordered after its reset. No signal is lost or
//!   consumed twice. **Priming**: store 1 before the first launch.
//! * **Per-launch values**: [`GraphExec::set_wait_value`] changes a wait node's value for launches
//!   enqueued afterwards (epochs with `GreaterOrEqual`, no reset node); launches already enqueued
//!   keep their values.
//!
//! # Kickoff of the async node
//!
//! [`Graph::launch_async_host_func`] is a host node (MAX's way);
//! [`Graph::launch_async_host_func_with`]`(KickoffMode::GpuWrite, ..)` is a one-thread kernel node
//! whose run the driver crate's notifier sees in mapped memory: no host function holds the stream
//! or makes the process's event calls dearer, and the canonical loop replays several times faster
//! (measured in `docs/graph-replay.md`; the driver's costs in `docs/hardware-facts.md`, both in the
//! repository).
//!
//! # Loops that stay on the GPU
//!
//! Conditional nodes run a body graph once ([`Graph::if_then`]), by index ([`Graph::switch`]) or
//! as long as a [`Condition`] holds ([`Graph::while_loop`]); bodies are built through a
//! [`Body`] with the same node methods, and nodes CUDA forbids in a body (host nodes, the
//! driver's wait and write nodes) are refused with [`Error::NotAllowedInBody`].
//! [`Graph::gated_loop`] is the canonical loop as one launch: per step a kick hands the step to a
//! host closure on a crate worker, a gate waits for it, and the body's kernels consume it; it
//! ends after a number of steps, past a time limit, on [`DeviceLoop::stop`] or
//! [`DeviceLoop::abort`], or when a kernel of the body calls `ferrocuda::end_loop`. No host API
//! call is made per step. `docs/graph-replay.md` in the repository compares the loop forms.
//!
//! # Ownership
//!
//! Every closure, flag and buffer a node uses (and anything given to [`Graph::own`]) is owned by
//! the graph: it is released, by the driver crate's reclaimer, only after the last launch of any
//! executable of the graph has finished — even if the user dropped the graph and the executable
//! while replays were still queued. The graph and each executable hold it, and hand their hold to
//! the reclaimer when dropped, which lets go of it behind a fence over every stream of the crate.
//! It is not a CUDA user object: with one, the driver tracks the completion of every launch on
//! its event thread, which costs each launch time (and tens of µs where the launching thread runs
//! on the CPU that takes the GPU's interrupts). So the raw handles ([`Graph::as_raw`],
//! [`GraphExec::as_raw`]) own nothing: an executable instantiated or launched through them
//! outside this crate must not outlive the [`Graph`] or [`GraphExec`] it came from, nor run after
//! they are dropped.
//!
//! The GPU tests of this crate live in the workspace's `tests/` package (`gpu_graph.rs`).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The README's examples are doctests: compiled always, run where they need no GPU (`no_run`
// marks the others). Only rustdoc's test collection sees this item; the docs stay the ones above.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

mod conditional;
mod device_loop;
mod error;
mod exec;
mod graph;
mod raw;

pub use conditional::{Body, Condition};
pub use device_loop::{DeviceLoop, LoopLimits};
pub use error::{Error, Result};
pub use exec::GraphExec;
pub use ferrocuda_driver::{LoopEnd, LoopOutcome};
pub use graph::{Capture, Graph, Node, NodeType};
