//! [`GraphExec`]: an instantiated graph, launched many times.

use crate::error::{Error, Result};
use crate::graph::{Graph, Node, Owned, PollNode, WaitNode};
use crate::raw;
use ferrocuda_driver::KernelParam;
use ferrocuda_driver::gates::{GateArgs, wait_op};
use ferrocuda_driver::{Device, DeviceStream, HostCallback, NodeUses};
use ferrocuda_sys as sys;
use ferrocuda_sys::CUgraphExec;
use std::collections::HashMap;
use std::sync::Arc;

/// An executable graph. Launch it on any stream of its device, as often as needed; change a wait
/// node's value between launches with [`set_wait_value`](Self::set_wait_value).
///
/// `Send` but not `Sync`: CUDA executable graphs are not internally synchronised (a launch and a
/// node update must not run concurrently), so one thread at a time uses it; share it behind a
/// `Mutex`.
///
/// ```compile_fail,E0277
/// fn shared<T: Sync>() {}
/// shared::<ferrocuda_graph::GraphExec>();
/// ```
///
/// ```
/// fn sent<T: Send>() {}
/// sent::<ferrocuda_graph::GraphExec>();
/// sent::<std::sync::Mutex<ferrocuda_graph::GraphExec>>();
/// fn shared<T: Sync>() {}
/// shared::<std::sync::Mutex<ferrocuda_graph::GraphExec>>();
/// ```
///
/// Dropping it never blocks: the executable and what the graph owns are released on the driver
/// crate's reclaimer thread once the GPU is past every launch enqueued before the drop.
pub struct GraphExec {
    raw: CUgraphExec,
    device: Device,
    graph: usize,
    callbacks: Vec<HostCallback>,
    waits: HashMap<usize, WaitNode>,
    polls: HashMap<usize, PollNode>,
    kicks: Vec<ferrocuda_driver::GpuKickoff>,
    loops: Vec<ferrocuda_driver::LoopKickoff>,
    /// What the graph owns: handed to the reclaimer with the handle when the executable drops,
    /// and released once the GPU is past every launch enqueued before.
    owned: Arc<Owned>,
}

// SAFETY: an executable graph may be used from any thread, one call at a time (CUDA Runtime API,
// "Graph object thread safety": graph objects are not internally synchronised). `GraphExec` is
// `Send` and deliberately not `Sync`: every call on it (`launch`, `set_wait_value`) goes through
// `&self`, so without `Sync` no two threads can make them at once. The other fields are Send.
unsafe impl Send for GraphExec {}

struct RawExec(CUgraphExec);
// SAFETY: moved to the reclaimer thread, which destroys it once (one call, from one thread).
unsafe impl Send for RawExec {}
impl Drop for RawExec {
    fn drop(&mut self) {
        // SAFETY: live and last owner; an executable in flight is freed when it completes.
        if let Err(e) = unsafe { raw::exec_destroy(self.0) } {
            tracing::warn!(%e, "cuGraphExecDestroy failed");
        }
    }
}

impl Drop for GraphExec {
    fn drop(&mut self) {
        // Every launch was enqueued before this drop (`launch` borrows `self`) on a stream of the
        // crate, so the reclaimer's fence covers them all: the executable is destroyed, then what
        // the graph owns is let go of (the tuple drops in order), once the GPU is past them.
        ferrocuda_driver::defer_drop((RawExec(self.raw), self.owned.clone()));
    }
}

impl GraphExec {
    pub(crate) fn new(raw: CUgraphExec, g: &Graph) -> Self {
        GraphExec {
            raw,
            device: g.device.clone(),
            graph: g.id,
            callbacks: g.callbacks.clone(),
            waits: g.waits.clone(),
            polls: g.polls.clone(),
            kicks: g.kicks.clone(),
            loops: g.loops.clone(),
            owned: g.owned.clone(),
        }
    }

    /// Launches the graph on `stream` (enqueued in stream order; returns at once).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMismatch`] for a stream of another device; [`Error::Driver`].
    pub fn launch(&self, stream: &DeviceStream) -> Result<()> {
        if stream.device() != &self.device {
            return Err(Error::DeviceMismatch {
                what: "the stream",
                expected: self.device.ordinal(),
                found: stream.device().ordinal(),
            });
        }
        // A launch recorded into another graph would outlive this executable's bookkeeping (its
        // kickoff counts, what it owns): refused under capture.
        let op = stream.external_op(
            "GraphExec::launch",
            Some("a graph launch cannot be recorded into another graph here: launch the executable outside the capture"),
        )?;
        // GPU-write kickoff nodes: the notifier spins from now until this launch's run is seen.
        self.kicks.iter().for_each(|k| k.launched());
        // Gated device loops: the notifier watches their kicks until this launch's loop ended.
        self.loops.iter().for_each(|l| l.launched());
        // SAFETY: the executable and the stream are live and of one context.
        let r = unsafe { raw::launch(self.raw, op.raw()) };
        if r.is_err() {
            self.kicks.iter().for_each(|k| k.cancel_launch());
            self.loops.iter().for_each(|l| l.cancel_launch());
        }
        r
    }

    /// Sets the value a wait node ([`Graph::wait_host_value`]) or polling-gate node
    /// ([`Graph::poll_host_value`]) waits for, in launches enqueued after this call (launches
    /// already enqueued keep theirs).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignNode`] for a node of another graph, [`Error::WrongNodeKind`] for a node
    /// that is not a [`Graph::wait_host_value`] node; [`Error::Unsupported`] if the graph has host
    /// nodes (the driver's update did not return there in a test: `docs/hardware-facts.md` in the
    /// repository);
    /// [`Error::Driver`].
    pub fn set_wait_value(&self, node: Node, value: u64) -> Result<()> {
        if node.graph != self.graph {
            return Err(Error::ForeignNode);
        }
        if let Some(p) = self.polls.get(&(node.raw as usize)) {
            return self.set_poll_value(node, p, value);
        }
        let w = self
            .waits
            .get(&(node.raw as usize))
            .ok_or(Error::WrongNodeKind {
                expected: "wait_host_value or poll_host_value",
                found: "other",
            })?;
        if !self.callbacks.is_empty() {
            // On an H100 (driver 580.159) a test that updated the wait of an executable with host
            // nodes while launches of it were queued did not return; use the reset scheme there.
            return Err(Error::Unsupported {
                what: "per-launch wait values in a graph with host nodes (use a reset node instead)",
            });
        }
        let address = NodeUses::new(&self.device).flag(&w.flag)?;
        let mut op = wait_op(address, value, w.cond);
        let p = sys::CUDA_BATCH_MEM_OP_NODE_PARAMS {
            ctx: self.device.raw_context(),
            count: 1,
            paramArray: &mut op,
            flags: 0,
        };
        // SAFETY: the executable is live and was instantiated from the node's graph.
        unsafe { raw::exec_set_batch_mem_op(self.raw, node.raw, &p) }
    }

    fn set_poll_value(&self, node: Node, p: &PollNode, value: u64) -> Result<()> {
        let gate_args = GateArgs::<dyn KernelParam>::new(&p.flag, value, p.cond, None, None);
        let mut args = ferrocuda_driver::LaunchArgs::new();
        gate_args.push(&mut args);
        // The graph already owns the flag and the gate: these uses are checks only.
        let mut uses = NodeUses::new(&self.device);
        let func = uses.function(&p.gate)?;
        let kernel_params = uses.launch_args(&mut args)?;
        let params = sys::CUDA_KERNEL_NODE_PARAMS {
            func,
            gridDimX: 1,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: 1,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: 0,
            kernelParams: kernel_params,
            extra: std::ptr::null_mut(),
            kern: std::ptr::null_mut(),
            ctx: std::ptr::null_mut(),
        };
        self.device.make_current()?;
        // SAFETY: the executable is live and was instantiated from the node's graph; the
        // parameters match `ferrocuda_gate_poll` as when the node was added (only the value
        // changes); the driver copies them.
        unsafe { raw::exec_set_kernel(self.raw, node.raw, &params) }
    }

    /// Reports host-function panics of earlier replays (the replays went on).
    ///
    /// # Errors
    ///
    /// [`Error::HostFuncPanicked`] with the count and first message since the last report.
    pub fn take_panics(&self) -> Result<()> {
        let mut count = 0;
        let mut first = None;
        let sinks = self
            .callbacks
            .iter()
            .map(|c| c.take_panics())
            .chain(self.kicks.iter().map(|k| k.take_panics()))
            .chain(self.loops.iter().map(|l| l.take_panics()));
        for (n, msg) in sinks.flatten() {
            count += n;
            first.get_or_insert(msg);
        }
        match first {
            Some(first) => Err(Error::HostFuncPanicked { count, first }),
            None => Ok(()),
        }
    }

    /// Synchronizes `stream`, then reports host-function panics of this graph.
    ///
    /// # Errors
    ///
    /// As [`DeviceStream::synchronize`] and [`take_panics`](Self::take_panics).
    pub fn synchronize(&self, stream: &DeviceStream) -> Result<()> {
        stream.synchronize()?;
        self.take_panics()
    }

    /// The raw handle (owned by `self`). A launch made through it outside this crate is not
    /// covered by the release of what the graph owns (the crate docs, "Ownership"): it must have
    /// finished before `self` drops.
    pub fn as_raw(&self) -> CUgraphExec {
        self.raw
    }
}
