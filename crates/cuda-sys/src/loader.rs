//! Opening `libcuda.so.1` at run time.

use crate::{CUresult, Driver};
use std::ffi::CStr;
use std::fmt;
use std::sync::OnceLock;

/// The file name of the NVIDIA driver library this crate opens.
pub const LIBRARY: &str = "libcuda.so.1";

/// Why the driver library could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The library could not be opened (not installed, or not on the loader's search path).
    Library {
        /// The file name or path that was opened.
        library: String,
        /// What the dynamic loader said.
        reason: String,
    },
    /// The library opened but lacks an entry point this crate needs (a driver older than CUDA 13.0).
    Symbol {
        /// The library that was opened.
        library: String,
        /// The missing entry point, e.g. `cuStreamWaitValue64_v2`.
        symbol: String,
        /// What the dynamic loader said.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Library { library, reason } => write!(
                f,
                "could not open the CUDA driver library `{library}` ({reason}); \
                 install the NVIDIA driver (>= 580, CUDA 13.0) to use a GPU"
            ),
            LoadError::Symbol {
                library,
                symbol,
                reason,
            } => write!(
                f,
                "the CUDA driver library `{library}` lacks the entry point `{symbol}` ({reason}); \
                 ferrocuda needs an NVIDIA driver >= 580 (CUDA 13.0)"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The process-wide driver table: `libcuda.so.1`, opened on first use.
///
/// Thread-safe; the library is opened at most once, and the outcome (success or the error) is
/// kept for the life of the process.
///
/// # Errors
///
/// [`LoadError::Library`] when the library cannot be opened, [`LoadError::Symbol`] when it lacks
/// an entry point.
pub fn driver() -> Result<&'static Driver, LoadError> {
    static DRIVER: OnceLock<Result<Driver, LoadError>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            // SAFETY: `libcuda.so.1` is the soname of the NVIDIA driver library, the file every
            // CUDA program loads (the CUDA runtime and `-lcuda` both resolve to it): it exports
            // the entry points with cuda.h's signatures, and its initialisers are the vendor's,
            // run by every CUDA program. The dynamic loader's search path chooses the file,
            // as it does for any program that links libcuda.
            unsafe { load(LIBRARY) }
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Opens a driver library by file name or path and resolves every entry point.
///
/// [`driver()`] is this with [`LIBRARY`], cached. Use `load` to open a driver somewhere else, or
/// to test what happens when one is missing.
///
/// # Errors
///
/// As [`driver()`].
///
/// # Safety
///
/// Opening a library runs its initialisers (ELF constructors), and every call through the
/// returned [`Driver`] trusts the library's symbols. The caller guarantees that `library` is a
/// CUDA driver:
///
/// * each exported symbol this crate resolves (`cuInit`, `cuMemAlloc_v2`, ...) has the signature
///   and behaviour `cuda.h` (CUDA 13.0) declares for it, since it is called through that type
///   with no further check;
/// * its initialisers, and those of the libraries it pulls in, are sound to run in this process
///   at the time of the call.
///
/// A library that lacks an entry point is refused with [`LoadError::Symbol`] before any of its
/// functions is called, but its initialisers have run by then.
///
/// Calling `load` without `unsafe` does not compile:
///
/// ```compile_fail,E0133
/// let _ = ferrocuda_sys::load("libcuda.so.1");
/// ```
pub unsafe fn load(library: &str) -> Result<Driver, LoadError> {
    // SAFETY: the caller guarantees that the library's initialisers are sound to run.
    let lib = unsafe { libloading::Library::new(library) }.map_err(|e| LoadError::Library {
        library: library.to_owned(),
        reason: e.to_string(),
    })?;
    // SAFETY: every symbol is resolved by the exact (versioned) name cuda.h declares and is
    // typed with the signature bindgen generated from that declaration; the caller guarantees
    // that the library's symbols of those names have those signatures.
    unsafe { Driver::from_library(lib) }.map_err(|e| {
        let reason = e.to_string();
        LoadError::Symbol {
            library: library.to_owned(),
            symbol: missing_symbol(&reason),
            reason,
        }
    })
}

/// Pulls the symbol's name out of a dynamic-loader message (`...: undefined symbol: cuFoo`).
fn missing_symbol(reason: &str) -> String {
    reason
        .rsplit("undefined symbol: ")
        .next()
        .filter(|s| s.len() < reason.len())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "<unknown>".to_owned())
}

/// The driver's name for a result code (`"CUDA_ERROR_INVALID_VALUE"`), if the driver is loaded
/// and knows the code.
pub fn error_name(code: CUresult) -> Option<&'static str> {
    driver_text(code, |d, c, p| {
        // SAFETY: `p` points to a writable pointer; the driver stores a static string there.
        unsafe { d.cuGetErrorName(c, p) }
    })
}

/// The driver's description of a result code, if the driver is loaded and knows the code.
pub fn error_string(code: CUresult) -> Option<&'static str> {
    driver_text(code, |d, c, p| {
        // SAFETY: as in `error_name`.
        unsafe { d.cuGetErrorString(c, p) }
    })
}

fn driver_text(
    code: CUresult,
    call: impl FnOnce(&Driver, CUresult, *mut *const std::os::raw::c_char) -> CUresult,
) -> Option<&'static str> {
    let d = driver().ok()?;
    let mut p = std::ptr::null();
    if call(d, code, &mut p) != CUresult::CUDA_SUCCESS || p.is_null() {
        return None;
    }
    // SAFETY: on success the driver returned a pointer to a NUL-terminated string with static
    // storage duration (CUDA driver API, "Error Handling").
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_an_error_naming_it() {
        // SAFETY: no such file exists, so nothing is opened and no initialiser runs.
        let err = unsafe { load("libferrocuda-no-such-driver.so.1") }
            .err()
            .expect("must not load");
        match &err {
            LoadError::Library { library, .. } => {
                assert_eq!(library, "libferrocuda-no-such-driver.so.1")
            }
            other => panic!("wrong variant: {other:?}"),
        }
        assert!(err.to_string().contains("libferrocuda-no-such-driver.so.1"));
    }

    #[test]
    fn library_without_driver_symbols_names_the_first_missing_one() {
        // libm is on every glibc system and has none of the driver's entry points.
        // SAFETY: libm is glibc's maths library, whose initialisers any C program runs; it has
        // none of the driver's symbols, so `load` fails at the first one and no function is
        // ever called through a driver type.
        let err = unsafe { load("libm.so.6") }
            .err()
            .expect("libm is not a CUDA driver");
        match &err {
            LoadError::Symbol {
                library, symbol, ..
            } => {
                assert_eq!(library, "libm.so.6");
                assert!(symbol.starts_with("cu"), "symbol not named: {err}");
            }
            other => panic!("wrong variant: {other:?}"),
        }
        assert!(err.to_string().contains("lacks the entry point `cu"));
    }

    #[test]
    fn missing_symbol_parses_loader_messages() {
        assert_eq!(
            missing_symbol("/lib/libm.so.6: undefined symbol: cuInit"),
            "cuInit"
        );
        assert_eq!(missing_symbol("something else"), "<unknown>");
    }

    /// On a machine without the NVIDIA driver (CI), `driver()` reports the library by name, and
    /// keeps reporting the same error (the outcome is cached, not retried).
    #[test]
    fn driver_without_libcuda_reports_the_library() {
        let has_libcuda = unsafe_free_probe();
        match driver() {
            Ok(_) => assert!(
                has_libcuda,
                "driver() loaded although libcuda.so.1 cannot be opened"
            ),
            Err(e) => {
                assert!(!has_libcuda || matches!(e, LoadError::Symbol { .. }));
                if let LoadError::Library { library, .. } = &e {
                    assert_eq!(library, LIBRARY);
                }
                assert_eq!(driver().err(), Some(e));
                assert_eq!(error_name(CUresult::CUDA_ERROR_INVALID_VALUE), None);
            }
        }
    }

    /// Whether `libcuda.so.1` can be opened at all, by a second loader handle.
    fn unsafe_free_probe() -> bool {
        // SAFETY: as in `driver`: the NVIDIA driver's own file, or nothing.
        unsafe { libloading::Library::new(LIBRARY) }.is_ok()
    }
}
