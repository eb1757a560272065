//! The one place a `ferrocuda-sys` function is called (cudarc's `result` tier).
//!
//! Each function is a thin `unsafe fn` over one driver entry point: it refuses to run inside a host
//! function (CUDA forbids driver calls there), opens a `trace` span named after the call, and turns
//! the `CUresult` into a [`Result`]. Nothing here owns anything.

#![allow(clippy::too_many_arguments)]

use crate::error::Result;
use ferrocuda_sys as sys;
use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

/// Calls one driver entry point through the guard ([`crate::runtime::guard::call`]): refusal inside a host
/// function, span, call, check.
macro_rules! cu {
    ($f:ident($($a:expr),* $(,)?)) => {
        crate::runtime::guard::call(stringify!($f), |d| {
            // SAFETY: the enclosing `unsafe fn`'s caller guarantees the handles and pointers
            // passed here are valid for this call, as its `# Safety` section states.
            unsafe { d.$f($($a),*) }
        })
    };
}

/// Like `cu!` but `CUDA_ERROR_NOT_READY` is `Ok(false)` and success `Ok(true)`.
macro_rules! cu_query {
    ($f:ident($($a:expr),* $(,)?)) => {
        crate::runtime::guard::query(stringify!($f), |d| {
            // SAFETY: as in `cu!`.
            unsafe { d.$f($($a),*) }
        })
    };
}

pub(crate) use sys::{
    CUcontext, CUdevice, CUdevice_attribute, CUdeviceptr, CUevent, CUfunction, CUmodule, CUstream,
};

// ---------------------------------------------------------------------------------------------
// Initialisation, devices, contexts

/// `cuInit(0)`, once per process; later calls return the first outcome.
pub(crate) fn init() -> Result<()> {
    static INIT: OnceLock<Result<()>> = OnceLock::new();
    INIT.get_or_init(|| cu!(cuInit(0))).clone()
}

pub(crate) fn driver_version() -> Result<i32> {
    let mut v = 0;
    cu!(cuDriverGetVersion(&mut v))?;
    Ok(v)
}

pub(crate) fn device_count() -> Result<usize> {
    let mut n = 0;
    cu!(cuDeviceGetCount(&mut n))?;
    Ok(n.max(0) as usize)
}

pub(crate) fn device_get(ordinal: i32) -> Result<CUdevice> {
    let mut d = 0;
    cu!(cuDeviceGet(&mut d, ordinal))?;
    Ok(d)
}

pub(crate) fn device_name(dev: CUdevice) -> Result<String> {
    let mut buf = [0 as std::os::raw::c_char; 256];
    cu!(cuDeviceGetName(buf.as_mut_ptr(), buf.len() as i32, dev))?;
    // SAFETY: the driver wrote a NUL-terminated string into `buf` (it truncates to the length).
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

pub(crate) fn device_attribute(dev: CUdevice, attr: CUdevice_attribute) -> Result<i32> {
    let mut v = 0;
    cu!(cuDeviceGetAttribute(&mut v, attr, dev))?;
    Ok(v)
}

pub(crate) fn device_total_mem(dev: CUdevice) -> Result<usize> {
    let mut v = 0usize;
    cu!(cuDeviceTotalMem_v2(&mut v, dev))?;
    Ok(v)
}

pub(crate) fn device_can_access_peer(dev: CUdevice, peer: CUdevice) -> Result<bool> {
    let mut v = 0;
    cu!(cuDeviceCanAccessPeer(&mut v, dev, peer))?;
    Ok(v != 0)
}

pub(crate) fn primary_ctx_retain(dev: CUdevice) -> Result<CUcontext> {
    let mut c = std::ptr::null_mut();
    cu!(cuDevicePrimaryCtxRetain(&mut c, dev))?;
    Ok(c)
}

pub(crate) fn ctx_get_current() -> Result<CUcontext> {
    let mut c = std::ptr::null_mut();
    cu!(cuCtxGetCurrent(&mut c))?;
    Ok(c)
}

/// # Safety
/// `ctx` is a live context (or null).
pub(crate) unsafe fn ctx_set_current(ctx: CUcontext) -> Result<()> {
    cu!(cuCtxSetCurrent(ctx))
}

/// Makes `ctx` current on this thread above the one current now, which [`ctx_pop_current`] makes
/// current again.
///
/// # Safety
/// `ctx` is a live context.
pub(crate) unsafe fn ctx_push_current(ctx: CUcontext) -> Result<()> {
    cu!(cuCtxPushCurrent_v2(ctx))
}

/// Undoes the last [`ctx_push_current`] of this thread; returns the context it had pushed.
pub(crate) fn ctx_pop_current() -> Result<CUcontext> {
    let mut c = std::ptr::null_mut();
    cu!(cuCtxPopCurrent_v2(&mut c))?;
    Ok(c)
}

/// The device of the current context.
pub(crate) fn ctx_get_device() -> Result<CUdevice> {
    let mut d = 0;
    cu!(cuCtxGetDevice(&mut d))?;
    Ok(d)
}

/// # Safety
/// `peer` is a live context of another device; the current context is the one that gains access.
pub(crate) unsafe fn ctx_enable_peer_access(peer: CUcontext) -> Result<()> {
    cu!(cuCtxEnablePeerAccess(peer, 0))
}

// ---------------------------------------------------------------------------------------------
// Streams

/// # Safety
/// A context is current.
pub(crate) unsafe fn stream_create(flags: u32) -> Result<CUstream> {
    let mut s = std::ptr::null_mut();
    cu!(cuStreamCreate(&mut s, flags))?;
    Ok(s)
}

/// The context `s` belongs to (for the legacy default stream: the current context).
///
/// # Safety
/// `s` is a live stream or a legacy default stream handle.
pub(crate) unsafe fn stream_get_ctx(s: CUstream) -> Result<CUcontext> {
    let mut c = std::ptr::null_mut();
    cu!(cuStreamGetCtx(s, &mut c))?;
    Ok(c)
}

/// # Safety
/// `s` is a live stream that is not used afterwards.
pub(crate) unsafe fn stream_destroy(s: CUstream) -> Result<()> {
    cu!(cuStreamDestroy_v2(s))
}

/// # Safety
/// `s` is a live stream.
pub(crate) unsafe fn stream_synchronize(s: CUstream) -> Result<()> {
    cu!(cuStreamSynchronize(s))
}

/// # Safety
/// `s` is a live stream.
pub(crate) unsafe fn stream_query(s: CUstream) -> Result<bool> {
    cu_query!(cuStreamQuery(s))
}

/// # Safety
/// `s` and `e` are live.
pub(crate) unsafe fn stream_wait_event(s: CUstream, e: CUevent) -> Result<()> {
    cu!(cuStreamWaitEvent(s, e, 0))
}

/// # Safety
/// `s` is live; `addr` is device-visible memory that stays valid until the wait has passed.
pub(crate) unsafe fn stream_wait_value64(
    s: CUstream,
    addr: CUdeviceptr,
    value: u64,
    flags: u32,
) -> Result<()> {
    cu!(cuStreamWaitValue64_v2(s, addr, value, flags))
}

/// # Safety
/// `s` is live; `addr` is device-visible memory that stays valid until the write has happened.
pub(crate) unsafe fn stream_write_value64(
    s: CUstream,
    addr: CUdeviceptr,
    value: u64,
    flags: u32,
) -> Result<()> {
    cu!(cuStreamWriteValue64_v2(s, addr, value, flags))
}

/// # Safety
/// `s` is live.
pub(crate) unsafe fn stream_begin_capture(s: CUstream) -> Result<()> {
    cu!(cuStreamBeginCapture_v2(
        s,
        sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    ))
}

/// # Safety
/// `s` is live.
pub(crate) unsafe fn stream_end_capture(s: CUstream) -> Result<sys::CUgraph> {
    let mut g = std::ptr::null_mut();
    cu!(cuStreamEndCapture(s, &mut g))?;
    Ok(g)
}

/// What the driver says about a stream's capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CaptureState {
    /// Not capturing: work runs.
    None,
    /// Capturing into this graph (work is recorded, not run), also when the stream joined the
    /// capture of another stream by waiting on an event recorded there.
    Active(sys::CUgraph),
    /// The capture was invalidated by an operation it could not record.
    Invalidated,
}

/// Whether `s` captures, and into which graph (`cuStreamGetCaptureInfo`: the driver's own
/// answer, which includes streams that joined a capture through an event).
///
/// # Safety
/// `s` is live.
pub(crate) unsafe fn stream_capture_state(s: CUstream) -> Result<CaptureState> {
    let mut st = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
    // The status alone first (the common answer, "none"); the graph only when there is one.
    cu!(cuStreamIsCapturing(s, &mut st))?;
    if st == sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
        return Ok(CaptureState::None);
    }
    let mut id: sys::cuuint64_t = 0;
    let mut graph: sys::CUgraph = std::ptr::null_mut();
    cu!(cuStreamGetCaptureInfo_v3(
        s,
        &mut st,
        &mut id,
        &mut graph,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut()
    ))?;
    Ok(match st {
        sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE => CaptureState::Active(graph),
        sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_INVALIDATED => {
            CaptureState::Invalidated
        }
        _ => CaptureState::None,
    })
}

/// A user object owning `ptr`, with one reference (the caller's): `destroy(ptr)` runs once, on a
/// driver thread, when the last reference is released.
///
/// # Safety
/// `destroy(ptr)` is sound to call once, on any thread, at any later time, and makes no CUDA call.
pub(crate) unsafe fn user_object_create(
    ptr: *mut c_void,
    destroy: unsafe extern "C" fn(*mut c_void),
) -> Result<sys::CUuserObject> {
    let mut o = std::ptr::null_mut();
    cu!(cuUserObjectCreate(
        &mut o,
        ptr,
        Some(destroy),
        1,
        sys::CUuserObject_flags::CU_USER_OBJECT_NO_DESTRUCTOR_SYNC.0
    ))?;
    Ok(o)
}

/// Moves the caller's one reference of `o` into graph `g` (the graph, and every executable
/// instantiated from it, then hold it until they are gone and their launches have finished).
///
/// # Safety
/// `g` is a live graph (being built or captured); `o` is live and the caller owns one reference,
/// which it gives up on success.
pub(crate) unsafe fn graph_retain_user_object_move(
    g: sys::CUgraph,
    o: sys::CUuserObject,
) -> Result<()> {
    cu!(cuGraphRetainUserObject(
        g,
        o,
        1,
        sys::CUuserObjectRetain_flags::CU_GRAPH_USER_OBJECT_MOVE.0
    ))
}

/// Releases one reference of `o` (its destructor runs on a driver thread if it was the last).
///
/// # Safety
/// The caller owns that reference.
pub(crate) unsafe fn user_object_release(o: sys::CUuserObject) -> Result<()> {
    cu!(cuUserObjectRelease(o, 1))
}

/// # Safety
/// `s` is live; `f(data)` is sound to run once on a driver thread whenever the stream reaches it.
pub(crate) unsafe fn launch_host_func(
    s: CUstream,
    f: unsafe extern "C" fn(*mut c_void),
    data: *mut c_void,
) -> Result<()> {
    cu!(cuLaunchHostFunc(s, Some(f), data))
}

// ---------------------------------------------------------------------------------------------
// Events

/// # Safety
/// A context is current.
pub(crate) unsafe fn event_create(flags: u32) -> Result<CUevent> {
    let mut e = std::ptr::null_mut();
    cu!(cuEventCreate(&mut e, flags))?;
    Ok(e)
}

/// # Safety
/// `e` is live and not used afterwards (the driver defers the release past pending records).
pub(crate) unsafe fn event_destroy(e: CUevent) -> Result<()> {
    cu!(cuEventDestroy_v2(e))
}

/// # Safety
/// `e` and `s` are live and of the same context.
pub(crate) unsafe fn event_record(e: CUevent, s: CUstream) -> Result<()> {
    cu!(cuEventRecord(e, s))
}

/// # Safety
/// `e` is live.
pub(crate) unsafe fn event_query(e: CUevent) -> Result<bool> {
    cu_query!(cuEventQuery(e))
}

/// # Safety
/// `e` is live.
pub(crate) unsafe fn event_synchronize(e: CUevent) -> Result<()> {
    cu!(cuEventSynchronize(e))
}

/// # Safety
/// Both events are live.
pub(crate) unsafe fn event_elapsed_time(start: CUevent, end: CUevent) -> Result<f32> {
    let mut ms = 0f32;
    cu!(cuEventElapsedTime_v2(&mut ms, start, end))?;
    Ok(ms)
}

// ---------------------------------------------------------------------------------------------
// Memory

/// # Safety
/// `s` is live.
pub(crate) unsafe fn mem_alloc_async(bytes: usize, s: CUstream) -> Result<CUdeviceptr> {
    let mut p = 0;
    cu!(cuMemAllocAsync(&mut p, bytes, s))?;
    Ok(p)
}

/// # Safety
/// `p` came from `mem_alloc_async`, is freed once, and nothing ordered after `s` uses it.
pub(crate) unsafe fn mem_free_async(p: CUdeviceptr, s: CUstream) -> Result<()> {
    cu!(cuMemFreeAsync(p, s))
}

/// Ordinary (non-pool) device memory: unlike pool memory, peers reach it once peer access is
/// enabled (`cuCtxEnablePeerAccess` does not cover `cuMemAllocAsync` pools).
///
/// # Safety
/// A context is current.
pub(crate) unsafe fn mem_alloc(bytes: usize) -> Result<CUdeviceptr> {
    let mut p = 0;
    cu!(cuMemAlloc_v2(&mut p, bytes))?;
    Ok(p)
}

/// # Safety
/// `dst` has `bytes` bytes of device memory; `src` stays readable until the copy ran (pageable
/// sources are staged by the driver before this returns).
pub(crate) unsafe fn memcpy_htod_async(
    dst: CUdeviceptr,
    src: *const c_void,
    bytes: usize,
    s: CUstream,
) -> Result<()> {
    cu!(cuMemcpyHtoDAsync_v2(dst, src, bytes, s))
}

/// # Safety
/// `dst` is writable for `bytes` until the copy ran and nothing on the host reads it meanwhile.
pub(crate) unsafe fn memcpy_dtoh_async(
    dst: *mut c_void,
    src: CUdeviceptr,
    bytes: usize,
    s: CUstream,
) -> Result<()> {
    cu!(cuMemcpyDtoHAsync_v2(dst, src, bytes, s))
}

/// # Safety
/// Both ranges are device memory of `bytes` bytes, live until the copy ran.
pub(crate) unsafe fn memcpy_dtod_async(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    bytes: usize,
    s: CUstream,
) -> Result<()> {
    cu!(cuMemcpyDtoDAsync_v2(dst, src, bytes, s))
}

/// # Safety
/// `dst` holds `n` bytes of device memory, live until the memset ran.
pub(crate) unsafe fn memset_d8_async(dst: CUdeviceptr, v: u8, n: usize, s: CUstream) -> Result<()> {
    cu!(cuMemsetD8Async(dst, v, n, s))
}

/// # Safety
/// `dst` holds `n` 4-byte words of device memory, 4-byte aligned, live until the memset ran.
pub(crate) unsafe fn memset_d32_async(
    dst: CUdeviceptr,
    v: u32,
    n: usize,
    s: CUstream,
) -> Result<()> {
    cu!(cuMemsetD32Async(dst, v, n, s))
}

/// (free, total) bytes of the current context's device.
///
/// # Safety
/// A context is current.
pub(crate) unsafe fn mem_get_info() -> Result<(usize, usize)> {
    let (mut f, mut t) = (0usize, 0usize);
    cu!(cuMemGetInfo_v2(&mut f, &mut t))?;
    Ok((f, t))
}

/// Trims the device's default memory pool to `keep` bytes.
pub(crate) fn mem_pool_trim_default(dev: CUdevice, keep: usize) -> Result<()> {
    let mut pool = std::ptr::null_mut();
    let loc = sys::CUmemLocation {
        type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
        id: dev,
    };
    let mut loc = loc;
    cu!(cuMemGetDefaultMemPool(
        &mut pool,
        &mut loc,
        sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
    ))?;
    cu!(cuMemPoolTrimTo(pool, keep))
}

/// # Safety
/// A context is current.
pub(crate) unsafe fn mem_host_alloc(bytes: usize, flags: u32) -> Result<*mut c_void> {
    let mut p = std::ptr::null_mut();
    cu!(cuMemHostAlloc(&mut p, bytes, flags))?;
    Ok(p)
}

/// # Safety
/// `p` is mapped pinned memory; a context is current.
pub(crate) unsafe fn mem_host_get_device_pointer(p: *mut c_void) -> Result<CUdeviceptr> {
    let mut d = 0;
    cu!(cuMemHostGetDevicePointer_v2(&mut d, p, 0))?;
    Ok(d)
}

// ---------------------------------------------------------------------------------------------
// Modules and launch

/// May block while any stream of the context waits on a host value (docs/deadlocks.md).
///
/// # Safety
/// A context is current; `image` is a NUL-terminated PTX string or a cubin/fatbin image.
pub(crate) unsafe fn module_load_data(image: *const c_void) -> Result<CUmodule> {
    let mut m = std::ptr::null_mut();
    cu!(cuModuleLoadData(&mut m, image))?;
    Ok(m)
}

/// May block while any stream of the context waits on a host value (docs/deadlocks.md).
///
/// # Safety
/// `m` is live and nothing uses it or its functions afterwards.
pub(crate) unsafe fn module_unload(m: CUmodule) -> Result<()> {
    cu!(cuModuleUnload(m))
}

/// Every function of `m`.
///
/// # Safety
/// `m` is live.
pub(crate) unsafe fn module_functions(m: CUmodule) -> Result<Vec<CUfunction>> {
    let mut n = 0u32;
    cu!(cuModuleGetFunctionCount(&mut n, m))?;
    let mut fs = vec![std::ptr::null_mut(); n as usize];
    cu!(cuModuleEnumerateFunctions(fs.as_mut_ptr(), n, m))?;
    Ok(fs)
}

/// # Safety
/// `f` is live.
pub(crate) unsafe fn func_name(f: CUfunction) -> Result<String> {
    let mut p = std::ptr::null();
    cu!(cuFuncGetName(&mut p, f))?;
    // SAFETY: on success the driver returns a NUL-terminated name that lives as long as `f`.
    Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Loads `f` now rather than at its first launch (which could then block behind a waiting stream).
///
/// # Safety
/// `f` is live.
pub(crate) unsafe fn func_load(f: CUfunction) -> Result<()> {
    cu!(cuFuncLoad(f))
}

/// # Safety
/// `f` is live.
pub(crate) unsafe fn func_set_attribute(
    f: CUfunction,
    a: sys::CUfunction_attribute,
    v: i32,
) -> Result<()> {
    cu!(cuFuncSetAttribute(f, a, v))
}

/// # Safety
/// `f` is live.
pub(crate) unsafe fn func_get_attribute(
    f: CUfunction,
    a: sys::CUfunction_attribute,
) -> Result<i32> {
    let mut v = 0;
    cu!(cuFuncGetAttribute(&mut v, a, f))?;
    Ok(v)
}

/// # Safety
/// `f` and `s` are live and of one context; `params` points to one valid pointer per kernel
/// parameter, each to a value of that parameter's type; whatever the kernel touches stays valid
/// until it has run.
pub(crate) unsafe fn launch_kernel(
    f: CUfunction,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared: u32,
    s: CUstream,
    params: *mut *mut c_void,
) -> Result<()> {
    cu!(cuLaunchKernel(
        f,
        grid.0,
        grid.1,
        grid.2,
        block.0,
        block.1,
        block.2,
        shared,
        s,
        params,
        std::ptr::null_mut()
    ))
}

/// # Safety
/// As [`launch_kernel`]; `config` is fully initialised and its attributes outlive the call.
pub(crate) unsafe fn launch_kernel_ex(
    config: &sys::CUlaunchConfig,
    f: CUfunction,
    params: *mut *mut c_void,
) -> Result<()> {
    cu!(cuLaunchKernelEx(config, f, params, std::ptr::null_mut()))
}
