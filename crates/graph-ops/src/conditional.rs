//! Conditional nodes: [`Condition`] handles, and the [`Body`] builder of an IF, WHILE or SWITCH
//! node's body graphs.
//!
//! A body is built with the same node methods as a [`Graph`], through a `&mut Body` that lives
//! only inside the closure that fills it. CUDA allows only kernel, empty, child-graph, memset,
//! memcpy and conditional nodes in a body; the others (host nodes, the driver's wait and write
//! nodes, the async trampoline's host-node and GPU-write kickoffs) are refused with
//! [`Error::NotAllowedInBody`] when they are added. Inside a loop, the host gates a step through
//! a polling node ([`Body::poll_host_value`]) and is kicked off by the gated device loop
//! ([`Graph::gated_loop`]).
//!
//! Everything a body's nodes use is owned by the graph, as for its other nodes.

use crate::error::{Error, Result};
use crate::graph::{Graph, Node, Target};
use crate::raw;
use bytemuck::Pod;
use ferrocuda_driver::{
    CompletionFlag, Device, DeviceBuffer, Function, KernelParam, LaunchArgs, LaunchConfig,
    WaitCondition,
};
use ferrocuda_sys as sys;
use std::ffi::c_void;

/// A conditional handle of a graph (`CUgraphConditionalHandle`): the value an IF, WHILE or SWITCH
/// node of that graph tests. Kernels of the graph set it with `ferrocuda::set_condition` (or
/// `end_loop`) from `ferrocuda/loop.cuh`, receiving it as a kernel parameter: pass the
/// `Condition` itself to [`LaunchArgs::arg`] (the kernel's parameter is an
/// `unsigned long long`).
///
/// Use a handle in the graph it was made for, in exactly one conditional node: the driver refuses
/// to instantiate a graph with a handle no node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Condition {
    handle: sys::CUgraphConditionalHandle,
    graph: usize,
}

// SAFETY: the parameter is the handle's 8 bytes, which `param_ptr` points to while `self` is
// borrowed.
unsafe impl KernelParam for Condition {
    fn param_ptr(&self) -> *mut c_void {
        (&raw const self.handle).cast_mut().cast()
    }
}

impl Condition {
    /// The driver's handle.
    pub fn as_raw(&self) -> sys::CUgraphConditionalHandle {
        self.handle
    }
}

/// The filler of a node with one body, from a closure that builds it.
fn once(
    f: impl FnOnce(&mut Body<'_>) -> Result<()>,
) -> impl FnMut(u32, &mut Body<'_>) -> Result<()> {
    let mut f = Some(f);
    move |_, b| f.take().map_or(Ok(()), |f| f(b))
}

/// What kind of conditional node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    If,
    While,
    Switch,
}

impl Graph {
    /// A new conditional handle for a node of this graph or of one of its bodies. With
    /// `Some(v)`, every launch starts with the condition set to `v`; with `None`, it keeps the
    /// value the last launch left (0 at first).
    ///
    /// # Errors
    ///
    /// [`Error::Driver`] (`CUDA_ERROR_NOT_SUPPORTED` on a driver without conditional nodes).
    pub fn condition(&mut self, default: Option<u32>) -> Result<Condition> {
        self.device.make_current()?;
        // SAFETY: the graph is live and of this context.
        let handle = unsafe {
            raw::conditional_handle_create(self.raw, self.device.raw_context(), default)
        }?;
        Ok(Condition {
            handle,
            graph: self.id,
        })
    }

    /// A WHILE node: runs its body as long as `cond` is non-zero when the body ends (tested first
    /// before the first run). `body` adds the body's nodes.
    ///
    /// ```no_run
    /// # use ferrocuda_driver::{Device, LaunchArgs, LaunchConfig, Module};
    /// # use ferrocuda_graph::Graph;
    /// # fn main() -> ferrocuda_graph::Result<()> {
    /// # let device = Device::new(0)?;
    /// # let cubin: Vec<u8> = Vec::new();
    /// let module = Module::from_cubin(&device, &cubin)?; // a cubin: it sets a condition
    /// let step = module.function("step")?; // calls ferrocuda::end_loop(cond) when done
    /// let mut g = Graph::new(&device)?;
    /// let cond = g.condition(Some(1))?;
    /// g.while_loop(&cond, &[], |body| {
    ///     // SAFETY: `step(unsigned long long cond)`.
    ///     unsafe { body.kernel(&step, LaunchConfig::single_thread(), LaunchArgs::new().arg(&cond), &[]) }?;
    ///     Ok(())
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a condition of another graph; the body's error; as the other
    /// node methods.
    pub fn while_loop(
        &mut self,
        cond: &Condition,
        deps: &[Node],
        body: impl FnOnce(&mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        let t = self.root();
        self.conditional_in(t, Kind::While, cond, 1, deps, once(body))
    }

    /// An IF node: runs `then` when `cond` is non-zero.
    ///
    /// # Errors
    ///
    /// As [`while_loop`](Self::while_loop).
    pub fn if_then(
        &mut self,
        cond: &Condition,
        deps: &[Node],
        then: impl FnOnce(&mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        let t = self.root();
        self.conditional_in(t, Kind::If, cond, 1, deps, once(then))
    }

    /// A SWITCH node of `cases` bodies: runs body `i` when `cond` equals `i` (none when it is
    /// `cases` or more). `body(i, b)` adds the nodes of body `i`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for zero cases; as [`while_loop`](Self::while_loop).
    pub fn switch(
        &mut self,
        cond: &Condition,
        cases: u32,
        deps: &[Node],
        body: impl FnMut(u32, &mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        let t = self.root();
        self.conditional_in(t, Kind::Switch, cond, cases, deps, body)
    }

    /// Adds a conditional node of `kind` with `size` bodies at `t`, then fills body `i` with
    /// `fill(i, body)`.
    fn conditional_in(
        &mut self,
        t: Target,
        kind: Kind,
        cond: &Condition,
        size: u32,
        deps: &[Node],
        mut fill: impl FnMut(u32, &mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        if cond.graph != self.id {
            return Err(Error::InvalidArgument(
                "the condition belongs to another graph".into(),
            ));
        }
        if size == 0 {
            return Err(Error::InvalidArgument(
                "a SWITCH node needs at least one case".into(),
            ));
        }
        let dep_nodes = Graph::deps(t, deps)?;
        let mut p = sys::CUgraphNodeParams {
            type_: sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_CONDITIONAL,
            reserved0: [0; 3],
            __bindgen_anon_1: sys::CUgraphNodeParams_st__bindgen_ty_1 { reserved1: [0; 29] },
            reserved2: 0,
        };
        p.__bindgen_anon_1.conditional = sys::CUDA_CONDITIONAL_NODE_PARAMS {
            handle: cond.handle,
            type_: match kind {
                Kind::If => sys::CUgraphConditionalNodeType::CU_GRAPH_COND_TYPE_IF,
                Kind::While => sys::CUgraphConditionalNodeType::CU_GRAPH_COND_TYPE_WHILE,
                Kind::Switch => sys::CUgraphConditionalNodeType::CU_GRAPH_COND_TYPE_SWITCH,
            },
            size,
            phGraph_out: std::ptr::null_mut(),
            ctx: self.device.raw_context(),
        };
        self.device.make_current()?;
        // SAFETY: the graph is live, the deps are its nodes (checked above), `p` is a conditional
        // node's parameters with a handle of this graph and its context.
        let n = unsafe { raw::add_node(t.raw, &dep_nodes, &mut p) }?;
        // SAFETY: the driver wrote the conditional variant's output array: `size` body graphs,
        // owned by the node for its life (the graph's), never destroyed by this crate.
        let bodies: Vec<sys::CUgraph> = unsafe {
            let out = p.__bindgen_anon_1.conditional.phGraph_out;
            if out.is_null() {
                return Err(Error::InvalidArgument(
                    "the driver returned no body graph for the conditional node".into(),
                ));
            }
            std::slice::from_raw_parts(out, size as usize).to_vec()
        };
        for (i, raw) in (0u32..).zip(bodies) {
            let mut body = Body {
                g: self,
                t: Target {
                    raw,
                    id: Graph::next_id(),
                    in_body: true,
                },
            };
            fill(i, &mut body)?;
        }
        Ok(Graph::node(t, n))
    }
}

/// The body of a conditional node, being built: the node methods of [`Graph`] that CUDA allows in
/// a body (kernels, polling gates, memsets, copies, nested conditional nodes), and the others,
/// which return [`Error::NotAllowedInBody`].
///
/// Nodes of a body depend only on nodes of the same body ([`Error::ForeignNode`] otherwise); a
/// body's first nodes run when the body starts.
pub struct Body<'g> {
    g: &'g mut Graph,
    t: Target,
}

impl Body<'_> {
    /// The device of the graph.
    pub fn device(&self) -> &Device {
        self.g.device()
    }

    /// A kernel node in the body. As [`Graph::kernel`].
    ///
    /// # Safety
    ///
    /// As [`Graph::kernel`].
    ///
    /// # Errors
    ///
    /// As [`Graph::kernel`].
    pub unsafe fn kernel(
        &mut self,
        f: &Function,
        config: LaunchConfig,
        args: &mut LaunchArgs<'_>,
        deps: &[Node],
    ) -> Result<Node> {
        // SAFETY: forwarded from the caller.
        unsafe { self.g.kernel_raw(self.t, f, config, args, deps) }
    }

    /// A polling-gate kernel node in the body: the host's gate inside a loop. As
    /// [`Graph::poll_host_value`], except that its value is fixed (a body's nodes are not updated
    /// per launch): wait for an epoch the loop advances on the device, or reset the flag.
    ///
    /// # Errors
    ///
    /// As [`Graph::poll_host_value`].
    pub fn poll_host_value(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        cond: WaitCondition,
        deps: &[Node],
    ) -> Result<Node> {
        self.g.poll_host_value_in(self.t, flag, value, cond, deps)
    }

    /// Refused: the driver's wait is a batch mem-op node, which CUDA does not allow in a body.
    ///
    /// # Errors
    ///
    /// Always [`Error::NotAllowedInBody`]; use [`poll_host_value`](Self::poll_host_value).
    pub fn wait_host_value(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        cond: WaitCondition,
        deps: &[Node],
    ) -> Result<Node> {
        self.g.wait_host_value_in(self.t, flag, value, cond, deps)
    }

    /// Refused: a write-value node is a batch mem-op node, which CUDA does not allow in a body.
    ///
    /// # Errors
    ///
    /// Always [`Error::NotAllowedInBody`]; write the flag from a kernel instead.
    pub fn write_host_value(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        deps: &[Node],
    ) -> Result<Node> {
        self.g.write_host_value_in(self.t, flag, value, deps)
    }

    /// Refused: CUDA does not allow host nodes in a body.
    ///
    /// # Errors
    ///
    /// Always [`Error::NotAllowedInBody`]; kick the host off with [`Graph::gated_loop`].
    pub fn launch_host_func(
        &mut self,
        f: impl FnMut() + Send + 'static,
        deps: &[Node],
    ) -> Result<Node> {
        drop(f);
        let _ = deps;
        Err(Error::NotAllowedInBody { node: "host" })
    }

    /// Refused: the async trampoline's kickoff runs once per launch (a host node, or a GPU-write
    /// node the crate expects once per launch); inside a loop it would run any number of times.
    ///
    /// # Errors
    ///
    /// Always [`Error::NotAllowedInBody`]; use [`Graph::gated_loop`], whose kick runs once per
    /// step.
    pub fn launch_async_host_func(
        &mut self,
        flag: &CompletionFlag,
        value: u64,
        f: impl FnMut() + Send + 'static,
        deps: &[Node],
    ) -> Result<Node> {
        let _ = (flag, value, deps);
        drop(f);
        Err(Error::NotAllowedInBody {
            node: "async host-function",
        })
    }

    /// A memset node in the body. As [`Graph::memset_u32`].
    ///
    /// # Errors
    ///
    /// As [`Graph::memset_u32`].
    pub fn memset_u32<T: Pod>(
        &mut self,
        buf: &DeviceBuffer<T>,
        value: u32,
        deps: &[Node],
    ) -> Result<Node> {
        self.g.memset_u32_in(self.t, buf, value, deps)
    }

    /// A device-to-device copy node in the body. As [`Graph::copy_dtod`].
    ///
    /// # Errors
    ///
    /// As [`Graph::copy_dtod`].
    pub fn copy_dtod<T: Pod>(
        &mut self,
        src: &DeviceBuffer<T>,
        dst: &DeviceBuffer<T>,
        deps: &[Node],
    ) -> Result<Node> {
        self.g.copy_dtod_in(self.t, src, dst, deps)
    }

    /// A new conditional handle for a nested node (as [`Graph::condition`]).
    ///
    /// # Errors
    ///
    /// As [`Graph::condition`].
    pub fn condition(&mut self, default: Option<u32>) -> Result<Condition> {
        self.g.condition(default)
    }

    /// A nested WHILE node. As [`Graph::while_loop`].
    ///
    /// # Errors
    ///
    /// As [`Graph::while_loop`].
    pub fn while_loop(
        &mut self,
        cond: &Condition,
        deps: &[Node],
        body: impl FnOnce(&mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        self.g
            .conditional_in(self.t, Kind::While, cond, 1, deps, once(body))
    }

    /// A nested IF node. As [`Graph::if_then`].
    ///
    /// # Errors
    ///
    /// As [`Graph::if_then`].
    pub fn if_then(
        &mut self,
        cond: &Condition,
        deps: &[Node],
        then: impl FnOnce(&mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        self.g
            .conditional_in(self.t, Kind::If, cond, 1, deps, once(then))
    }

    /// A nested SWITCH node. As [`Graph::switch`].
    ///
    /// # Errors
    ///
    /// As [`Graph::switch`].
    pub fn switch(
        &mut self,
        cond: &Condition,
        cases: u32,
        deps: &[Node],
        body: impl FnMut(u32, &mut Body<'_>) -> Result<()>,
    ) -> Result<Node> {
        self.g
            .conditional_in(self.t, Kind::Switch, cond, cases, deps, body)
    }

    /// Moves `value` into the graph (as [`Graph::own`]).
    pub fn own<T: Send + 'static>(&mut self, value: T) {
        self.g.own(value);
    }
}
