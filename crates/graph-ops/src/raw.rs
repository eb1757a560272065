//! The one place this crate calls `ferrocuda-sys`: one thin `unsafe fn` per graph driver call.

use crate::error::Result;
use ferrocuda_sys as sys;
use ferrocuda_sys::{CUgraph, CUgraphExec, CUgraphNode, CUstream};

/// Calls one graph entry point through the driver crate's guard (refusal inside a host function
/// naming the public operation, trace span, error mapping): the only way this crate reaches the
/// driver.
macro_rules! cu {
    ($f:ident($($a:expr),* $(,)?)) => {
        ferrocuda_driver::guard::call(stringify!($f), |d| {
            // SAFETY: the enclosing `unsafe fn`'s caller guarantees the handles and pointers are
            // valid for this call, as its `# Safety` section states.
            unsafe { d.$f($($a),*) }
        })
        .map_err(crate::error::Error::from)
    };
}

pub(crate) fn graph_create() -> Result<CUgraph> {
    let mut g = std::ptr::null_mut();
    cu!(cuGraphCreate(&mut g, 0))?;
    Ok(g)
}

/// # Safety
/// `g` is live and not used afterwards.
pub(crate) unsafe fn graph_destroy(g: CUgraph) -> Result<()> {
    cu!(cuGraphDestroy(g))
}

/// # Safety
/// `g` is live; `deps` are nodes of `g`; `p` is valid for the call (the driver copies it).
pub(crate) unsafe fn add_kernel(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: &sys::CUDA_KERNEL_NODE_PARAMS,
) -> Result<CUgraphNode> {
    let mut n = std::ptr::null_mut();
    cu!(cuGraphAddKernelNode_v2(
        &mut n,
        g,
        deps.as_ptr(),
        deps.len(),
        p
    ))?;
    Ok(n)
}

/// # Safety
/// As [`add_kernel`].
pub(crate) unsafe fn add_batch_mem_op(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: &sys::CUDA_BATCH_MEM_OP_NODE_PARAMS,
) -> Result<CUgraphNode> {
    let mut n = std::ptr::null_mut();
    cu!(cuGraphAddBatchMemOpNode(
        &mut n,
        g,
        deps.as_ptr(),
        deps.len(),
        p
    ))?;
    Ok(n)
}

/// # Safety
/// As [`add_kernel`]; the host function and its data stay valid while any executable of `g` runs.
pub(crate) unsafe fn add_host(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: &sys::CUDA_HOST_NODE_PARAMS,
) -> Result<CUgraphNode> {
    let mut n = std::ptr::null_mut();
    cu!(cuGraphAddHostNode(&mut n, g, deps.as_ptr(), deps.len(), p))?;
    Ok(n)
}

/// # Safety
/// As [`add_kernel`]; `ctx` is the context of the memory.
pub(crate) unsafe fn add_memset(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: &sys::CUDA_MEMSET_NODE_PARAMS,
    ctx: sys::CUcontext,
) -> Result<CUgraphNode> {
    let mut n = std::ptr::null_mut();
    cu!(cuGraphAddMemsetNode(
        &mut n,
        g,
        deps.as_ptr(),
        deps.len(),
        p,
        ctx
    ))?;
    Ok(n)
}

/// # Safety
/// As [`add_memset`].
pub(crate) unsafe fn add_memcpy(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: &sys::CUDA_MEMCPY3D,
    ctx: sys::CUcontext,
) -> Result<CUgraphNode> {
    let mut n = std::ptr::null_mut();
    cu!(cuGraphAddMemcpyNode(
        &mut n,
        g,
        deps.as_ptr(),
        deps.len(),
        p,
        ctx
    ))?;
    Ok(n)
}

/// # Safety
/// `g` is live; `ctx` is its context.
pub(crate) unsafe fn conditional_handle_create(
    g: CUgraph,
    ctx: sys::CUcontext,
    default: Option<u32>,
) -> Result<sys::CUgraphConditionalHandle> {
    let mut h = 0;
    let (value, flags) = match default {
        Some(v) => (v, sys::CU_GRAPH_COND_ASSIGN_DEFAULT),
        None => (0, 0),
    };
    cu!(cuGraphConditionalHandleCreate(&mut h, g, ctx, value, flags))?;
    Ok(h)
}

/// Adds a node from generic parameters; the driver may write back into `p` (a conditional node's
/// body graphs).
///
/// # Safety
/// As [`add_kernel`].
pub(crate) unsafe fn add_node(
    g: CUgraph,
    deps: &[CUgraphNode],
    p: &mut sys::CUgraphNodeParams,
) -> Result<CUgraphNode> {
    let mut n = std::ptr::null_mut();
    cu!(cuGraphAddNode_v2(
        &mut n,
        g,
        deps.as_ptr(),
        std::ptr::null(),
        deps.len(),
        p
    ))?;
    Ok(n)
}

/// # Safety
/// `g` is live.
pub(crate) unsafe fn nodes(g: CUgraph) -> Result<Vec<CUgraphNode>> {
    let mut n = 0usize;
    cu!(cuGraphGetNodes(g, std::ptr::null_mut(), &mut n))?;
    let mut v = vec![std::ptr::null_mut(); n];
    cu!(cuGraphGetNodes(g, v.as_mut_ptr(), &mut n))?;
    v.truncate(n);
    Ok(v)
}

/// # Safety
/// `n` is a live node.
pub(crate) unsafe fn node_type(n: CUgraphNode) -> Result<sys::CUgraphNodeType> {
    let mut t = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
    cu!(cuGraphNodeGetType(n, &mut t))?;
    Ok(t)
}

/// # Safety
/// `g` is live.
pub(crate) unsafe fn instantiate(g: CUgraph) -> Result<CUgraphExec> {
    let mut e = std::ptr::null_mut();
    cu!(cuGraphInstantiateWithFlags(&mut e, g, 0))?;
    Ok(e)
}

/// Returns at once; an executable still running is freed when its launches complete.
///
/// # Safety
/// `e` is live and not used afterwards.
pub(crate) unsafe fn exec_destroy(e: CUgraphExec) -> Result<()> {
    cu!(cuGraphExecDestroy(e))
}

/// # Safety
/// `e` and `s` are live and of one context.
pub(crate) unsafe fn launch(e: CUgraphExec, s: CUstream) -> Result<()> {
    cu!(cuGraphLaunch(e, s))
}

/// # Safety
/// `e` was instantiated from the graph of `n`, a batch-mem-op node; `p` is valid for the call.
pub(crate) unsafe fn exec_set_batch_mem_op(
    e: CUgraphExec,
    n: CUgraphNode,
    p: &sys::CUDA_BATCH_MEM_OP_NODE_PARAMS,
) -> Result<()> {
    cu!(cuGraphExecBatchMemOpNodeSetParams(e, n, p))
}

/// # Safety
/// `e` was instantiated from the graph of `n`, a kernel node of the same function; `p` is valid.
pub(crate) unsafe fn exec_set_kernel(
    e: CUgraphExec,
    n: CUgraphNode,
    p: &sys::CUDA_KERNEL_NODE_PARAMS,
) -> Result<()> {
    cu!(cuGraphExecKernelNodeSetParams_v2(e, n, p))
}
