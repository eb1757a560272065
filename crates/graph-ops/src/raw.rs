//! The one place this crate calls `ferrocuda-sys`: one thin `unsafe fn` per graph driver call.

use crate::error::{Error, Result};
use ferrocuda_driver::DriverError;
use ferrocuda_sys as sys;
use ferrocuda_sys::{CUgraph, CUgraphExec, CUgraphNode, CUresult, CUstream};
use std::ffi::c_void;

fn prologue(call: &'static str) -> Result<&'static sys::Driver> {
    if ferrocuda_driver::in_host_function() {
        return Err(ferrocuda_driver::Error::CalledFromHostFunc { call }.into());
    }
    sys::driver().map_err(|e| Error::Driver(e.into()))
}

fn check(call: &'static str, rc: CUresult) -> Result<()> {
    if rc == CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        let e = DriverError::new(call, rc);
        tracing::debug!(call, code = rc.0, name = e.name, "CUDA graph call failed");
        Err(Error::Driver(e.into()))
    }
}

macro_rules! cu {
    ($f:ident($($a:expr),* $(,)?)) => {{
        let d = prologue(stringify!($f))?;
        let _span = tracing::trace_span!("cu", call = stringify!($f)).entered();
        // SAFETY: the enclosing `unsafe fn`'s caller guarantees the handles and pointers are valid.
        check(stringify!($f), unsafe { d.$f($($a),*) })
    }};
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

/// A user object whose destructor calls `destroy(ptr)`, its one reference moved into `g`.
///
/// # Safety
/// `g` is live; `destroy(ptr)` is sound to call once, on a driver thread, after every launch of
/// every executable of `g` finished, and makes no CUDA call.
pub(crate) unsafe fn retain_user_object(
    g: CUgraph,
    ptr: *mut c_void,
    destroy: unsafe extern "C" fn(*mut c_void),
) -> Result<()> {
    let mut o = std::ptr::null_mut();
    cu!(cuUserObjectCreate(
        &mut o,
        ptr,
        Some(destroy),
        1,
        sys::CUuserObject_flags::CU_USER_OBJECT_NO_DESTRUCTOR_SYNC.0
    ))?;
    cu!(cuGraphRetainUserObject(
        g,
        o,
        1,
        sys::CUuserObjectRetain_flags::CU_GRAPH_USER_OBJECT_MOVE.0
    ))
}
