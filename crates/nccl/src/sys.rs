//! The NCCL entry points this crate uses, loaded from `libnccl.so.2` at run time.
//!
//! Hand-written, not generated: eight functions of NCCL's stable C API (`nccl.h`, NCCL 2.x) and
//! the values of three enums. Signatures and values were checked against `nccl.h` of NCCL 2.28.3
//! (the `nvidia-nccl-cu13` wheel) and cudarc 0.19.10's bindings generated from it; the loader was
//! run against that wheel's `libnccl.so.2` (`ncclGetVersion` = 22803). cudarc's own loader is not used: it looks for
//! `libnccl.so` and `libnccl.so.{13,12,11,10,9,1}`, while the NCCL runtime package installs
//! `libnccl.so.2` (the unversioned name comes with the development package only).
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// `ncclResult_t`: 0 is `ncclSuccess`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ncclResult_t(pub c_int);

impl ncclResult_t {
    /// `ncclSuccess`.
    pub const SUCCESS: ncclResult_t = ncclResult_t(0);
    /// `ncclInProgress` (non-blocking communicators only; this crate creates blocking ones).
    pub const IN_PROGRESS: ncclResult_t = ncclResult_t(7);

    /// The enumerator's name in `nccl.h`.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "ncclSuccess",
            1 => "ncclUnhandledCudaError",
            2 => "ncclSystemError",
            3 => "ncclInternalError",
            4 => "ncclInvalidArgument",
            5 => "ncclInvalidUsage",
            6 => "ncclRemoteError",
            7 => "ncclInProgress",
            8 => "ncclTimeout (NCCL 2.30; ncclNumResults before)",
            _ => "unknown ncclResult_t",
        }
    }
}

/// An opaque communicator (`struct ncclComm*`).
pub type ncclComm_t = *mut c_void;
/// `ncclDataType_t` (an `int` enum).
pub type ncclDataType_t = c_int;
/// `ncclRedOp_t` (an `int` enum).
pub type ncclRedOp_t = c_int;
/// `cudaStream_t`: the runtime's stream handle is the driver's `CUstream`.
pub type cudaStream_t = *mut c_void;

/// `ncclInt8` … `ncclBfloat16`, as in `nccl.h` since NCCL 2.10.
pub mod data_type {
    use std::ffi::c_int;
    /// `ncclInt8`.
    pub const INT8: c_int = 0;
    /// `ncclUint8`.
    pub const UINT8: c_int = 1;
    /// `ncclInt32`.
    pub const INT32: c_int = 2;
    /// `ncclUint32`.
    pub const UINT32: c_int = 3;
    /// `ncclInt64`.
    pub const INT64: c_int = 4;
    /// `ncclUint64`.
    pub const UINT64: c_int = 5;
    /// `ncclFloat32`.
    pub const FLOAT32: c_int = 7;
    /// `ncclFloat64`.
    pub const FLOAT64: c_int = 8;
}

/// `ncclSum`, `ncclProd`, `ncclMax`, `ncclMin`, `ncclAvg`.
pub mod red_op {
    use std::ffi::c_int;
    /// `ncclSum`.
    pub const SUM: c_int = 0;
    /// `ncclProd`.
    pub const PROD: c_int = 1;
    /// `ncclMax`.
    pub const MAX: c_int = 2;
    /// `ncclMin`.
    pub const MIN: c_int = 3;
    /// `ncclAvg`.
    pub const AVG: c_int = 4;
}

/// The loaded library and its entry points.
pub struct Nccl {
    _lib: libloading::Library,
    /// `ncclResult_t ncclGetVersion(int* version)`.
    pub ncclGetVersion: unsafe extern "C" fn(*mut c_int) -> ncclResult_t,
    /// `const char* ncclGetErrorString(ncclResult_t result)`.
    pub ncclGetErrorString: unsafe extern "C" fn(ncclResult_t) -> *const c_char,
    /// `ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist)`.
    pub ncclCommInitAll: unsafe extern "C" fn(*mut ncclComm_t, c_int, *const c_int) -> ncclResult_t,
    /// `ncclResult_t ncclCommDestroy(ncclComm_t comm)`.
    pub ncclCommDestroy: unsafe extern "C" fn(ncclComm_t) -> ncclResult_t,
    /// `ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError)`.
    pub ncclCommGetAsyncError: unsafe extern "C" fn(ncclComm_t, *mut ncclResult_t) -> ncclResult_t,
    /// `ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
    /// ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)`.
    pub ncclAllReduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        cudaStream_t,
    ) -> ncclResult_t,
    /// `ncclResult_t ncclGroupStart(void)`.
    pub ncclGroupStart: unsafe extern "C" fn() -> ncclResult_t,
    /// `ncclResult_t ncclGroupEnd(void)`.
    pub ncclGroupEnd: unsafe extern "C" fn() -> ncclResult_t,
}

/// The file names tried, in order.
pub const LIBRARY_NAMES: [&str; 2] = ["libnccl.so.2", "libnccl.so"];

/// Loads NCCL once per process; later calls return the first outcome (the error as text).
pub fn nccl() -> Result<&'static Nccl, String> {
    static NCCL: OnceLock<Result<Nccl, String>> = OnceLock::new();
    NCCL.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Nccl, String> {
    let mut errors = Vec::new();
    for name in LIBRARY_NAMES {
        // SAFETY: loading NCCL runs its initialisers, which only set up NCCL's own state.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => return bind(lib).map_err(|e| format!("{name}: {e}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

fn bind(lib: libloading::Library) -> Result<Nccl, libloading::Error> {
    // SAFETY: each symbol is looked up with the signature `nccl.h` declares for it (see the field
    // docs); the function pointers are used only while `lib`, stored beside them, is loaded.
    unsafe {
        Ok(Nccl {
            ncclGetVersion: *lib.get(b"ncclGetVersion\0")?,
            ncclGetErrorString: *lib.get(b"ncclGetErrorString\0")?,
            ncclCommInitAll: *lib.get(b"ncclCommInitAll\0")?,
            ncclCommDestroy: *lib.get(b"ncclCommDestroy\0")?,
            ncclCommGetAsyncError: *lib.get(b"ncclCommGetAsyncError\0")?,
            ncclAllReduce: *lib.get(b"ncclAllReduce\0")?,
            ncclGroupStart: *lib.get(b"ncclGroupStart\0")?,
            ncclGroupEnd: *lib.get(b"ncclGroupEnd\0")?,
            _lib: lib,
        })
    }
}
