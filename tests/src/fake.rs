//! What every fake-driver test (`tests/tests/fake_*.rs`) shares.
//!
//! Each test calls [`device`] first: it opens device 0 and fails the test unless the loaded
//! `libcuda.so.1` is the fake driver, so these tests can never pass against a real GPU or without
//! a driver. [`violations`] reads the fake's count of uses after free, double frees and destroyed
//! handles in use; a test that expects none compares it before and after. The count is
//! process-wide and a use after free leaves the context with a sticky error: a test that provokes
//! one belongs in a test binary of its own.
//!
//! To run one file by hand: build the fake (`cargo xtask test` leaves it in `target/fake-tests/fake`,
//! and the copy that cust links against in `target/cust-link`) and run
//! `CUDA_LIBRARY_PATH=$PWD/target/cust-link LD_LIBRARY_PATH=target/fake-tests/fake cargo test -p
//! ferrocuda-tests --features fake-tests --test fake_detector`.

use ferrocuda_driver::Device;
use ferrocuda_driver::sys::{self, CUresult};
use std::ffi::{c_int, c_ulonglong};
use std::sync::OnceLock;

/// Device 0 of the fake driver.
///
/// The first call opens it while every other caller waits: `Device::new` can return to a second
/// thread before the first has loaded the device's own kernels, and that load would then run
/// behind the other test's pending waits (the fake exits with status 4 there, since the real
/// driver would block).
///
/// # Panics
///
/// When no driver loads, or when the driver is not `xtask/fake/fake_cuda.c` (its device is named
/// "Fake GPU ..."): these tests must not run against a real GPU.
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    let d = DEVICE.get_or_init(|| {
        Device::new(0).unwrap_or_else(|e| {
            panic!(
                "no CUDA driver ({e}): run the fake-driver tests through `cargo xtask test`, or \
                 put the fake driver on LD_LIBRARY_PATH"
            )
        })
    });
    assert!(
        d.name().contains("Fake"),
        "device 0 is {:?}, not the fake driver (xtask/fake/fake_cuda.c)",
        d.name()
    );
    d.clone()
}

/// How many violations the fake driver has seen in this process so far: stream work that touched
/// freed memory, double frees, destroyed handles in use, user objects released too often. It
/// prints each one on stderr, starting `fake_cuda:`.
///
/// # Panics
///
/// As [`device`], or when the driver lacks `fake_cuda_violations`.
pub fn violations() -> u64 {
    static COUNTER: OnceLock<unsafe extern "C" fn() -> c_ulonglong> = OnceLock::new();
    // SAFETY: the fake defines `unsigned long long fake_cuda_violations(void)`.
    let counter = COUNTER.get_or_init(|| unsafe { fake_fn(b"fake_cuda_violations\0") });
    // SAFETY: no arguments; it reads an atomic counter.
    unsafe { counter() }
}

/// Whether the fake driver destroyed `stream` (it never reuses a handle, so any handle it once
/// returned can be asked about).
///
/// # Panics
///
/// As [`device`], or when the driver lacks `fake_cuda_stream_destroyed`.
pub fn stream_destroyed(stream: sys::CUstream) -> bool {
    static DESTROYED: OnceLock<unsafe extern "C" fn(sys::CUstream) -> c_int> = OnceLock::new();
    // SAFETY: the fake defines `int fake_cuda_stream_destroyed(CUstream)`.
    let destroyed = DESTROYED.get_or_init(|| unsafe { fake_fn(b"fake_cuda_stream_destroyed\0") });
    // SAFETY: it reads a flag of the stream's record, which the fake never frees.
    unsafe { destroyed(stream) != 0 }
}

/// Whether `flag` becomes true within five seconds (releases and destructors run on threads of
/// the crate or of the driver, a moment after the event that allows them).
pub fn becomes_true(flag: &std::sync::atomic::AtomicBool) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(5) {
        if flag.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// How many user-object references graph `g` holds now (the fake counts them; CUDA has no query).
///
/// # Panics
///
/// As [`device`], or when the driver lacks `fake_cuda_graph_user_objects`.
pub fn graph_user_objects(g: sys::CUgraph) -> usize {
    static COUNT: OnceLock<unsafe extern "C" fn(sys::CUgraph) -> usize> = OnceLock::new();
    // SAFETY: the fake defines `size_t fake_cuda_graph_user_objects(CUgraph)`.
    let count = COUNT.get_or_init(|| unsafe { fake_fn(b"fake_cuda_graph_user_objects\0") });
    // SAFETY: the caller passes a live graph; the fake reads its references under its lock.
    unsafe { count(g) }
}

/// How many user-object references executable `e` holds now: each one makes the real driver
/// track every launch's completion on its event thread.
///
/// # Panics
///
/// As [`device`], or when the driver lacks `fake_cuda_exec_user_objects`.
pub fn exec_user_objects(e: sys::CUgraphExec) -> usize {
    static COUNT: OnceLock<unsafe extern "C" fn(sys::CUgraphExec) -> usize> = OnceLock::new();
    // SAFETY: the fake defines `size_t fake_cuda_exec_user_objects(CUgraphExec)`.
    let count = COUNT.get_or_init(|| unsafe { fake_fn(b"fake_cuda_exec_user_objects\0") });
    // SAFETY: the caller passes a live executable; the fake reads its references under its lock.
    unsafe { count(e) }
}

/// The fake driver's function `name` (NUL-terminated), of type `F`.
///
/// # Safety
///
/// `F` is the function pointer type of `name` in xtask/fake/fake_cuda.c.
unsafe fn fake_fn<F: Copy>(name: &[u8]) -> F {
    device();
    // SAFETY: the library is the one ferrocuda-sys opened already (`device` checked it is the
    // fake): loading it again runs no initialiser and returns the same object.
    let lib = unsafe { libloading::Library::new(sys::LIBRARY) }
        .unwrap_or_else(|e| panic!("{}: {e}", sys::LIBRARY));
    // SAFETY: the caller guarantees `F` is the function's type.
    let f = unsafe { lib.get::<F>(name) }
        .map(|s| *s)
        .unwrap_or_else(|e| {
            panic!(
                "the fake driver has no {}: {e}",
                String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name))
            )
        });
    // The function pointer must stay valid: keep the library loaded for the process.
    std::mem::forget(lib);
    f
}

/// Panics unless a raw driver call returned `CUDA_SUCCESS`, naming the call and the code.
pub fn check(call: &str, rc: CUresult) {
    assert_eq!(
        rc,
        CUresult::CUDA_SUCCESS,
        "{call} failed: {} ({})",
        sys::error_name(rc).unwrap_or("unknown"),
        rc.0
    );
}

/// The driver's entry points, for calls the safe crates do not wrap.
///
/// # Panics
///
/// As [`device`].
pub fn driver() -> &'static sys::Driver {
    device();
    sys::driver().unwrap_or_else(|e| panic!("{e}"))
}
