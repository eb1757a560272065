//! [`Graph`]: a CUDA graph built from explicit nodes or by stream capture.

use crate::error::{Error, Result};
use crate::exec::GraphExec;
use crate::raw;
use bytemuck::Pod;
use ferrocuda_driver::KernelParam;
use ferrocuda_driver::gates::{GateArgs, wait_op, write_op};
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceBuffer, DeviceStream, FlagSource, Function, GateStrategy,
    GpuKickoff, GraphKickoff, HostCallback, KickoffMode, LaunchArgs, LaunchConfig, LoopKickoff,
    NodeUses, WaitCondition,
};
use ferrocuda_sys as sys;
use ferrocuda_sys::{CUgraph, CUgraphNode};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Everything a graph owns: kept alive until the last launch of any executable of the graph has
/// finished. The graph and each executable hold it; each hands its hold to the driver crate's
/// reclaimer when dropped, which lets go of it once the GPU is past every launch enqueued before
/// (a fence). No CUDA user object carries it: with one, the driver tracks the completion of every
/// launch on its event thread (docs/benchmarks.md, "The 37-41 µs mode").
pub(crate) type Owned = Mutex<Vec<Box<dyn Any + Send>>>;

/// A node of a [`Graph`], for dependencies and per-launch updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    pub(crate) raw: CUgraphNode,
    pub(crate) graph: usize,
}

// SAFETY: a `Node` is an identifier, never dereferenced by this crate; every use of it is a call
// on its graph or executable, which goes through `&mut Graph` or a `GraphExec` (not `Sync`), so
// sharing the identifier lets no two threads call into one graph at once.
unsafe impl Send for Node {}
// SAFETY: as above.
unsafe impl Sync for Node {}

/// What kind of operation a node is (`CUgraphNodeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeType {
    /// A kernel launch.
    Kernel,
    /// A memory copy.
    Memcpy,
    /// A memset.
    Memset,
    /// A host function.
    Host,
    /// A child graph.
    ChildGraph,
    /// An empty node.
    Empty,
    /// An event wait.
    WaitEvent,
    /// An event record.
    EventRecord,
    /// Stream memory operations (wait-value / write-value).
    BatchMemOp,
    /// A conditional node (IF, WHILE or SWITCH).
    Conditional,
    /// Another kind (`CUgraphNodeType` value).
    Other(u32),
}

impl NodeType {
    fn from_raw(t: sys::CUgraphNodeType) -> Self {
        use sys::CUgraphNodeType as T;
        match t {
            T::CU_GRAPH_NODE_TYPE_KERNEL => NodeType::Kernel,
            T::CU_GRAPH_NODE_TYPE_MEMCPY => NodeType::Memcpy,
            T::CU_GRAPH_NODE_TYPE_MEMSET => NodeType::Memset,
            T::CU_GRAPH_NODE_TYPE_HOST => NodeType::Host,
            T::CU_GRAPH_NODE_TYPE_GRAPH => NodeType::ChildGraph,
            T::CU_GRAPH_NODE_TYPE_EMPTY => NodeType::Empty,
            T::CU_GRAPH_NODE_TYPE_WAIT_EVENT => NodeType::WaitEvent,
            T::CU_GRAPH_NODE_TYPE_EVENT_RECORD => NodeType::EventRecord,
            T::CU_GRAPH_NODE_TYPE_BATCH_MEM_OP => NodeType::BatchMemOp,
            T::CU_GRAPH_NODE_TYPE_CONDITIONAL => NodeType::Conditional,
            other => NodeType::Other(other.0),
        }
    }
}

/// A polling-gate node's fixed parts, for `GraphExec::set_wait_value`.
#[derive(Clone)]
pub(crate) struct PollNode {
    pub(crate) gate: Function,
    pub(crate) flag: CompletionFlag,
    pub(crate) cond: WaitCondition,
}

/// A wait node's fixed parts, for `GraphExec::set_wait_value`.
#[derive(Clone)]
pub(crate) struct WaitNode {
    pub(crate) flag: CompletionFlag,
    pub(crate) cond: WaitCondition,
}

/// A CUDA graph of one device: build it with the node methods (each takes the nodes it depends
/// on) or [`Graph::capture`] a stream, then [`instantiate`](Self::instantiate) it once and launch
/// the executable many times.
///
/// Closures, flags and buffers given to the graph are owned by it: they live until the last
/// launch of its executables has finished, even if the user drops the graph, the executable and
/// every handle first.
///
/// ```no_run
/// use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
/// use ferrocuda_graph::Graph;
/// # fn main() -> ferrocuda_graph::Result<()> {
/// let device = Device::new(0)?;
/// let stream = device.new_stream()?;
/// let ready = CompletionFlag::new(&device)?;
/// ready.signal(1); // priming: the first replay's wait passes at once
/// let mut g = Graph::new(&device)?;
/// let wait = g.wait_host_value(&ready, 1, WaitCondition::Equal, &[])?;
/// let reset = g.write_host_value(&ready, 0, &[wait])?;
/// // ... kernels that consume the host's result, depending on `reset` ...
/// g.launch_async_host_func(&ready, 1, || { /* the host's next result */ }, &[reset])?;
/// let exec = g.instantiate()?;
/// for _ in 0..100 {
///     exec.launch(&stream)?;
/// }
/// exec.synchronize(&stream)?;
/// # Ok(()) }
/// ```
pub struct Graph {
    pub(crate) raw: CUgraph,
    pub(crate) device: Device,
    pub(crate) id: usize,
    pub(crate) owned: Arc<Owned>,
    pub(crate) callbacks: Vec<HostCallback>,
    pub(crate) waits: HashMap<usize, WaitNode>,
    pub(crate) polls: HashMap<usize, PollNode>,
    pub(crate) kicks: Vec<GpuKickoff>,
    pub(crate) loops: Vec<LoopKickoff>,
}

/// Where a node goes: the graph itself or the body of one of its conditional nodes (`id` names
/// the graph or body for dependency checks; nodes of a body depend only on nodes of that body).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) raw: CUgraph,
    pub(crate) id: usize,
    pub(crate) in_body: bool,
}

// SAFETY: CUDA graph objects are not internally synchronised (CUDA Runtime API, "Graph object
// thread safety"): calls on one graph must not run concurrently, but may come from any thread.
// `Graph` is `Send` and not `Sync`, and every graph call takes `&mut self` or is a read through
// `&self` that no `&mut self` call can overlap. Owned values are `Send`.
unsafe impl Send for Graph {}

struct RawGraph(CUgraph);
// SAFETY: moved to the reclaimer thread, which destroys it once (graph handles may be used from
// any thread, one call at a time).
unsafe impl Send for RawGraph {}
impl Drop for RawGraph {
    fn drop(&mut self) {
        // SAFETY: the handle is live and this is its last owner.
        if let Err(e) = unsafe { raw::graph_destroy(self.0) } {
            tracing::warn!(%e, "cuGraphDestroy failed");
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // Destroying the template is deferred to the driver crate's reclaimer: never a driver call
        // on a thread that might be inside a host function or about to signal a flag. What it
        // owns goes along (a template is never launched; executables hold their own share), so
        // that no owned value's drop runs here either.
        ferrocuda_driver::defer_drop((RawGraph(self.raw), self.owned.clone()));
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

pub(crate) fn lock(o: &Owned) -> std::sync::MutexGuard<'_, Vec<Box<dyn Any + Send>>> {
    o.lock().unwrap_or_else(|p| p.into_inner())
}

impl Graph {
    /// An empty graph for `device`.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver refuses.
    pub fn new(device: &Device) -> Result<Graph> {
        device.make_current()?;
        Self::from_raw(device, raw::graph_create()?)
    }

    fn from_raw(device: &Device, g: CUgraph) -> Result<Graph> {
        Ok(Graph {
            raw: g,
            device: device.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            owned: Arc::default(),
            callbacks: Vec::new(),
            waits: HashMap::new(),
            polls: HashMap::new(),
            kicks: Vec::new(),
            loops: Vec::new(),
        })
    }

    /// Captures the work `f` enqueues on `stream` into a new graph (thread-local capture mode).
    ///
    /// The graph owns every buffer, flag and function the captured operations touch (the driver
    /// crate hands them over as they are recorded, also on streams that join the capture through
    /// an event). Operations that cannot be replayed safely — one-shot host closures, copies to
    /// or from borrowed host memory, allocations — fail with
    /// [`NotAllowedUnderCapture`](ferrocuda_driver::Error::NotAllowedUnderCapture); use this
    /// crate's host nodes instead. If `f` returns an error or panics, the capture is ended and its
    /// graph discarded, so the stream is usable again. If the capture ends some other way — the
    /// driver invalidated it, or `f` ended it itself with
    /// [`DeviceStream::end_capture`](ferrocuda_driver::DeviceStream::end_capture) and holds the raw
    /// graph — this returns the error, and what the capture's operations used stays alive for the
    /// rest of the process (leaked), since a raw graph this call does not own may still use it.
    ///
    /// ```no_run
    /// # use ferrocuda_driver::{CompletionFlag, Device, WaitCondition};
    /// # use ferrocuda_graph::Graph;
    /// # fn main() -> ferrocuda_graph::Result<()> {
    /// # let device = Device::new(0)?;
    /// let stream = device.new_stream()?;
    /// let (go, done) = (CompletionFlag::new(&device)?, CompletionFlag::new(&device)?);
    /// let g = Graph::capture(&stream, |cap| {
    ///     cap.wait_host_value(&go, 1, WaitCondition::GreaterOrEqual)?;
    ///     // ... kernels launched on cap.stream() ...
    ///     cap.write_host_value(&done, 1)
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The error of `f` (the capture is ended and discarded), or [`Error::Driver`] if the capture
    /// was invalidated.
    pub fn capture(
        stream: &DeviceStream,
        f: impl FnOnce(&mut Capture<'_>) -> Result<()>,
    ) -> Result<Graph> {
        stream.device().make_current()?;
        stream.begin_capture()?;
        /// A capture that this call ended and whose graph it discards: what its operations used
        /// is released after the graph (both behind the reclaimer's fence).
        fn discard(g: CUgraph, keeps: Option<ferrocuda_driver::CaptureKeeps>) {
            if let Some(k) = keeps {
                k.discard(g);
            }
            ferrocuda_driver::defer_drop(RawGraph(g));
        }
        // Ends the capture if `f` panics (the unwind passes through here), discarding its graph.
        struct Ending<'s> {
            stream: Option<&'s DeviceStream>,
            keeps: Option<ferrocuda_driver::CaptureKeeps>,
        }
        impl Drop for Ending<'_> {
            fn drop(&mut self) {
                if let Some(s) = self.stream.take()
                    && let Ok(g) = s.end_capture()
                {
                    discard(g, self.keeps.take());
                }
            }
        }
        let mut ending = Ending {
            stream: Some(stream),
            keeps: None,
        };
        // What the captured operations use comes to the graph's owner, not into user objects.
        ending.keeps = Some(ferrocuda_driver::CaptureKeeps::collect(stream)?);
        let mut cap = Capture {
            stream,
            owned: Vec::new(),
        };
        let r = f(&mut cap);
        let keeps = ending.keeps.take();
        ending.stream = None;
        match (r, stream.end_capture()) {
            (Ok(()), Ok(g)) => {
                let kept = keeps.map(|k| k.take(g)).unwrap_or_default();
                let graph = Self::from_raw(stream.device(), g)?;
                lock(&graph.owned).extend(cap.owned.into_iter().chain(kept));
                Ok(graph)
            }
            (Err(e), Ok(g)) => {
                discard(g, keeps);
                Err(e)
            }
            (r, Err(e)) => {
                // The capture did not end here: it was invalidated, or `f` ended it itself and
                // holds its raw graph, whose nodes may still use what the capture's operations and
                // `Capture::own` kept. They stay alive (leaked) rather than be freed under it.
                drop(keeps);
                std::mem::forget(cap.owned);
                Err(r.err().unwrap_or_else(|| e.into()))
            }
        }
    }

    /// The device of the graph.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Moves `value` into the graph: it lives until the last launch of the graph's executables
    /// has finished (e.g. the buffers a kernel node uses).
    pub fn own<T: Send + 'static>(&mut self, value: T) {
        lock(&self.owned).push(Box::new(value));
    }

    /// The graph itself as the place nodes go.
    pub(crate) fn root(&self) -> Target {
        Target {
            raw: self.raw,
            id: self.id,
            in_body: false,
        }
    }

    /// A fresh identifier for a conditional node's body.
    pub(crate) fn next_id() -> usize {
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn deps(t: Target, deps: &[Node]) -> Result<Vec<CUgraphNode>> {
        deps.iter()
            .map(|n| {
                if n.graph == t.id {
                    Ok(n.raw)
                } else {
                    Err(Error::ForeignNode)
                }
            })
            .collect()
    }

    pub(crate) fn node(t: Target, raw: CUgraphNode) -> Node {
        Node { raw, graph: t.id }
    }

    /// Refuses a node CUDA does not allow in a conditional node's body.
    fn allowed(t: Target, node: &'static str) -> Result<()> {
        if t.in_body {
            Err(Error::NotAllowedInBody { node })
        } else {
            Ok(())
        }
    }

    fn mem_op(
        &mut self,
        t: Target,
        op: sys::CUstreamBatchMemOpParams,
        deps: &[Node],
    ) -> Result<CUgraphNode> {
        let deps = Self::deps(t, deps)?;
        let mut op = op;
        let p = sys::CUDA_BATCH_MEM_OP_NODE_PARAMS {
            ctx: self.device.raw_context(),
            count: 1,
            paramArray: &mut op,
            flags: 0,
        };
        // SAFETY: the graph is live, the deps are its nodes, `p` points to one valid operation.
        unsafe { raw::add_batch_mem_op(t.raw, &deps, &p) }
    }

    /// A node that waits until `flag` satisfies `cond` for `value` (`cuStreamWaitValue64` as a
    /// wait-value batch-mem-op node). Its value can be changed per launch with
    /// [`GraphExec::set_wait_value`](crate::GraphExec::set_wait_value).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignNode`] for a dependency of another graph; [`Error::Driver`].
    pub fn wait_host_value(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        cond: WaitCondition,
        deps: &[Node],
    ) -> Result<Node> {
        self.wait_host_value_in(self.root(), flag, value, cond, deps)
    }

    pub(crate) fn wait_host_value_in(
        &mut self,
        t: Target,
        flag: &CompletionFlag,
        value: u64,
        cond: WaitCondition,
        deps: &[Node],
    ) -> Result<Node> {
        Self::allowed(t, "wait-value (batch mem-op)")?;
        let mut uses = NodeUses::new(&self.device);
        let address = uses.flag(flag)?;
        let n = self.mem_op(t, wait_op(address, value, cond), deps)?;
        self.keep(uses);
        self.waits.insert(
            n as usize,
            WaitNode {
                flag: flag.clone(),
                cond,
            },
        );
        Ok(Self::node(t, n))
    }

    /// What a node's resources need kept alive, now owned by the graph.
    pub(crate) fn keep(&mut self, uses: NodeUses) {
        lock(&self.owned).extend(uses.into_keep());
    }

    /// The polling gate as a kernel node: one thread polls `flag` until `cond` holds for `value`
    /// (or the flag is aborted); it releases dependent nodes several microseconds sooner than the
    /// mem-op wait (the measured figures for both are in `docs/hardware-facts.md` in the
    /// repository), at the cost of one resident block while it waits. Its value can be changed
    /// per launch with [`GraphExec::set_wait_value`](crate::GraphExec::set_wait_value). See
    /// [`GateStrategy::Polling`](ferrocuda_driver::GateStrategy::Polling).
    ///
    /// # Errors
    ///
    /// As [`wait_host_value`](Self::wait_host_value), and [`Error::Driver`] if the device has no
    /// polling gate kernel.
    pub fn poll_host_value(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        cond: WaitCondition,
        deps: &[Node],
    ) -> Result<Node> {
        self.poll_host_value_in(self.root(), flag, value, cond, deps)
    }

    pub(crate) fn poll_host_value_in(
        &mut self,
        t: Target,
        flag: &CompletionFlag,
        value: u64,
        cond: WaitCondition,
        deps: &[Node],
    ) -> Result<Node> {
        let gate = self.device.polling_gate_function()?;
        let gate_args = GateArgs::<dyn KernelParam>::new(flag, value, cond, None, None);
        let mut args = LaunchArgs::new();
        gate_args.push(&mut args);
        // SAFETY: `GateArgs` lays out `ferrocuda_gate_poll`'s parameters; without a time limit
        // the null `expired` pointer is never written; the flag is passed as a resource, which
        // the graph keeps.
        let n =
            unsafe { self.kernel_raw(t, &gate, LaunchConfig::single_thread(), &mut args, deps) }?;
        if t.in_body {
            // A body's nodes are not updated per launch: `set_wait_value` refuses them.
            return Ok(n);
        }
        self.polls.insert(
            n.raw as usize,
            PollNode {
                gate,
                flag: flag.clone(),
                cond,
            },
        );
        Ok(n)
    }

    /// A node that writes `value` to `flag` when it runs (GPU → host, `cuStreamWriteValue64`).
    ///
    /// # Errors
    ///
    /// As [`wait_host_value`](Self::wait_host_value).
    pub fn write_host_value(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        deps: &[Node],
    ) -> Result<Node> {
        self.write_host_value_in(self.root(), flag, value, deps)
    }

    pub(crate) fn write_host_value_in(
        &mut self,
        t: Target,
        flag: &CompletionFlag,
        value: u64,
        deps: &[Node],
    ) -> Result<Node> {
        Self::allowed(t, "write-value (batch mem-op)")?;
        let mut uses = NodeUses::new(&self.device);
        let address = uses.flag(flag)?;
        let n = self.mem_op(t, write_op(address, value), deps)?;
        self.keep(uses);
        Ok(Self::node(t, n))
    }

    fn host_node(&mut self, t: Target, cb: HostCallback, deps: &[Node]) -> Result<Node> {
        Self::allowed(t, "host")?;
        let deps = Self::deps(t, deps)?;
        let (f, data) = cb.raw_parts();
        let p = sys::CUDA_HOST_NODE_PARAMS {
            fn_: Some(f),
            userData: data,
        };
        // SAFETY: the graph is live; `cb` (which `data` points into) is owned by the graph until
        // its last launch has finished.
        let n = unsafe { raw::add_host(t.raw, &deps, &p) }?;
        lock(&self.owned).push(Box::new(cb.clone()));
        self.callbacks.push(cb);
        Ok(Self::node(t, n))
    }

    /// A host node: `f` runs on the driver's callback thread each replay, and nodes after it wait
    /// for it. Its panics are caught and reported by [`GraphExec::synchronize`](crate::GraphExec::synchronize);
    /// CUDA calls inside it return an error.
    ///
    /// # Errors
    ///
    /// As [`wait_host_value`](Self::wait_host_value).
    pub fn launch_host_func(
        &mut self,
        f: impl FnMut() + Send + 'static,
        deps: &[Node],
    ) -> Result<Node> {
        self.host_node(self.root(), HostCallback::new(f), deps)
    }

    /// The async trampoline as a host node: each replay, a tiny host function hands `f` to a
    /// worker of the driver crate and returns at once (nodes after it do not wait for `f`); the
    /// worker runs `f`, then stores `value` in `flag` (release), also if `f` panicked. Gate the
    /// consumer of `f`'s result with [`wait_host_value`](Self::wait_host_value) — in the next
    /// replay, or in this one.
    ///
    /// # Errors
    ///
    /// As [`wait_host_value`](Self::wait_host_value).
    pub fn launch_async_host_func(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        f: impl FnMut() + Send + 'static,
        deps: &[Node],
    ) -> Result<Node> {
        self.launch_async_host_func_with(KickoffMode::HostFunc, flag, value, f, deps)
    }

    /// [`launch_async_host_func`](Self::launch_async_host_func) with the kickoff chosen
    /// explicitly: [`KickoffMode::HostFunc`] (a host node, MAX's way; the default of
    /// `launch_async_host_func`) or [`KickoffMode::GpuWrite`] (a one-thread kernel node that bumps
    /// a counter and publishes it to a mapped slot the driver crate's notifier watches: no host
    /// function runs, at the cost of a spinning host core while replays are in flight).
    ///
    /// # Errors
    ///
    /// As [`launch_async_host_func`](Self::launch_async_host_func).
    pub fn launch_async_host_func_with(
        &mut self,
        mode: KickoffMode,
        flag: &CompletionFlag,
        value: u64,
        f: impl FnMut() + Send + 'static,
        deps: &[Node],
    ) -> Result<Node> {
        let t = self.root();
        let kick = match GraphKickoff::new(&self.device, mode, flag, value, f)? {
            GraphKickoff::HostFunc(callback) => return self.host_node(t, callback, deps),
            GraphKickoff::GpuWrite(kick) => kick,
        };
        let (k, counter, slot) = kick.kernel();
        let mut args = LaunchArgs::new();
        args.arg(counter).arg(slot);
        // SAFETY: `ferrocuda_kick(u64* counter, u64* slot)`: both are passed as resources, which
        // the graph keeps (and it owns `kick`, which holds them, until its last launch).
        let n = unsafe { self.kernel_raw(t, &k, LaunchConfig::single_thread(), &mut args, deps) }?;
        lock(&self.owned).push(Box::new(kick.clone()));
        self.kicks.push(kick);
        Ok(n)
    }

    /// A kernel node.
    ///
    /// Buffers and flags passed as arguments ([`LaunchArgs::arg`]) are checked against the graph's
    /// device and owned by the graph (they live until its last launch has finished), as is the
    /// function's module.
    ///
    /// # Safety
    ///
    /// As [`DeviceStream::launch`]: `args` match the kernel's parameters and the kernel stays in
    /// bounds. Memory passed as a plain address (an integer) must outlive every launch of the
    /// graph's executables — give its owner to the graph with [`own`](Self::own).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a cluster launch; [`Error::Driver`] with `DeviceMismatch` for a
    /// function or buffer of another device, or the driver's error.
    pub unsafe fn kernel(
        &mut self,
        f: &Function,
        config: LaunchConfig,
        args: &mut LaunchArgs<'_>,
        deps: &[Node],
    ) -> Result<Node> {
        // SAFETY: forwarded from the caller.
        unsafe { self.kernel_raw(self.root(), f, config, args, deps) }
    }

    /// # Safety
    /// As [`kernel`](Self::kernel).
    pub(crate) unsafe fn kernel_raw(
        &mut self,
        t: Target,
        f: &Function,
        config: LaunchConfig,
        args: &mut LaunchArgs<'_>,
        deps: &[Node],
    ) -> Result<Node> {
        let deps = Self::deps(t, deps)?;
        if config.cluster.is_some() {
            return Err(Error::Unsupported {
                what: "cluster launches in graph kernel nodes",
            });
        }
        let mut uses = NodeUses::new(&self.device);
        let func = uses.function(f)?;
        let params = uses.launch_args(args)?;
        let p = sys::CUDA_KERNEL_NODE_PARAMS {
            func,
            gridDimX: config.grid.0,
            gridDimY: config.grid.1,
            gridDimZ: config.grid.2,
            blockDimX: config.block.0,
            blockDimY: config.block.1,
            blockDimZ: config.block.2,
            sharedMemBytes: config.shared_mem_bytes,
            kernelParams: params,
            extra: std::ptr::null_mut(),
            kern: std::ptr::null_mut(),
            ctx: std::ptr::null_mut(),
        };
        self.device.make_current()?;
        // SAFETY: the graph is live; the caller guarantees the parameters; the driver copies them
        // (they stay valid while `args` is borrowed, through this call).
        let n = unsafe { raw::add_kernel(t.raw, &deps, &p) }?;
        self.keep(uses);
        Ok(Self::node(t, n))
    }

    /// A node that sets every 32-bit word of `buf` to `value`. The graph keeps `buf`'s memory
    /// alive (until its last launch has finished, whatever the caller drops).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] unless `T` is 4 bytes wide; [`Error::Driver`] with
    /// `DeviceMismatch` for a buffer of another device; as the others.
    pub fn memset_u32<T: Pod>(
        &mut self,
        buf: &DeviceBuffer<T>,
        value: u32,
        deps: &[Node],
    ) -> Result<Node> {
        self.memset_u32_in(self.root(), buf, value, deps)
    }

    pub(crate) fn memset_u32_in<T: Pod>(
        &mut self,
        t: Target,
        buf: &DeviceBuffer<T>,
        value: u32,
        deps: &[Node],
    ) -> Result<Node> {
        if size_of::<T>() != 4 {
            return Err(Error::InvalidArgument(format!(
                "memset_u32 needs 4-byte elements, not {}-byte ones",
                size_of::<T>()
            )));
        }
        let deps = Self::deps(t, deps)?;
        let mut uses = NodeUses::new(&self.device);
        let p = sys::CUDA_MEMSET_NODE_PARAMS {
            dst: uses.buffer(buf)?,
            pitch: 0,
            value,
            elementSize: 4,
            width: buf.len(),
            height: 1,
        };
        // SAFETY: the graph is live; the range is the buffer's, which the graph keeps below.
        let n = unsafe { raw::add_memset(t.raw, &deps, &p, self.device.raw_context()) }?;
        self.keep(uses);
        Ok(Self::node(t, n))
    }

    /// A node that copies `src` to `dst` (device to device). The graph keeps both buffers' memory
    /// alive.
    ///
    /// # Errors
    ///
    /// [`Error::LengthMismatch`] if the lengths differ; [`Error::Driver`] with `DeviceMismatch`
    /// for a buffer of another device; as the others.
    pub fn copy_dtod<T: Pod>(
        &mut self,
        src: &DeviceBuffer<T>,
        dst: &DeviceBuffer<T>,
        deps: &[Node],
    ) -> Result<Node> {
        self.copy_dtod_in(self.root(), src, dst, deps)
    }

    pub(crate) fn copy_dtod_in<T: Pod>(
        &mut self,
        t: Target,
        src: &DeviceBuffer<T>,
        dst: &DeviceBuffer<T>,
        deps: &[Node],
    ) -> Result<Node> {
        if src.len() != dst.len() {
            return Err(Error::LengthMismatch {
                what: "copy_dtod",
                expected: dst.len(),
                actual: src.len(),
            });
        }
        let deps = Self::deps(t, deps)?;
        let mut uses = NodeUses::new(&self.device);
        let p = sys::CUDA_MEMCPY3D {
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcDevice: uses.buffer(src)?,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstDevice: uses.buffer(dst)?,
            WidthInBytes: src.byte_len(),
            Height: 1,
            Depth: 1,
            ..Default::default()
        };
        // SAFETY: the graph is live; both ranges hold `byte_len` bytes and are kept below.
        let n = unsafe { raw::add_memcpy(t.raw, &deps, &p, self.device.raw_context()) }?;
        self.keep(uses);
        Ok(Self::node(t, n))
    }

    /// The kinds of the graph's nodes (in the driver's order).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`].
    pub fn node_types(&self) -> Result<Vec<NodeType>> {
        // SAFETY: the graph is live; the nodes are its own.
        unsafe { raw::nodes(self.raw) }?
            .into_iter()
            .map(|n| {
                // SAFETY: as above.
                unsafe { raw::node_type(n) }.map(NodeType::from_raw)
            })
            .collect()
    }

    /// Instantiates the graph: an executable to launch many times.
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] if the driver cannot instantiate it.
    pub fn instantiate(&self) -> Result<GraphExec> {
        self.device.make_current()?;
        // SAFETY: the graph is live.
        let e = unsafe { raw::instantiate(self.raw) }?;
        Ok(GraphExec::new(e, self))
    }

    /// The raw handle (owned by `self`). It owns nothing the nodes use (the crate docs,
    /// "Ownership"): an executable instantiated from it outside this crate must be destroyed, and
    /// its launches finished, before `self` drops.
    pub fn as_raw(&self) -> CUgraph {
        self.raw
    }
}

/// The stream being captured by [`Graph::capture`], with flag operations that the graph will own.
pub struct Capture<'s> {
    stream: &'s DeviceStream,
    owned: Vec<Box<dyn Any + Send>>,
}

impl Capture<'_> {
    /// The stream being captured: enqueue kernels and copies on it.
    pub fn stream(&self) -> &DeviceStream {
        self.stream
    }

    /// Captures a wait for `flag` (a batch-mem-op node; a host or a device flag, as
    /// [`DeviceStream::wait_value`] takes); the graph owns the flag.
    ///
    /// # Errors
    ///
    /// As [`DeviceStream::wait_value`].
    pub fn wait_host_value<'f>(
        &mut self,
        flag: impl Into<FlagSource<'f>>,
        value: u64,
        cond: WaitCondition,
    ) -> Result<()> {
        // The stream's operation hands the flag to the graph being captured.
        Ok(self
            .stream
            .wait_value(flag, value, cond, GateStrategy::DriverWait)?)
    }

    /// Captures a GPU write of `value` to `flag` (a host or a device flag); the graph owns the
    /// flag.
    ///
    /// # Errors
    ///
    /// As [`DeviceStream::write_value`].
    pub fn write_host_value<'f>(
        &mut self,
        flag: impl Into<FlagSource<'f>>,
        value: u64,
    ) -> Result<()> {
        Ok(self.stream.write_value(flag, value)?)
    }

    /// Moves `value` into the graph: it lives until the last launch of the graph's executables
    /// has finished. (Buffers, flags and functions that captured operations touch are owned by the
    /// graph already; this is for anything else the work depends on.)
    pub fn own<T: Send + 'static>(&mut self, value: T) {
        self.owned.push(Box::new(value));
    }
}
