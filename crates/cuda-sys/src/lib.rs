//! Raw bindings to the CUDA driver API, loaded at run time.
//!
//! This is the lowest layer of [ferrocuda](https://github.com/ferrocuda/ferrocuda). Most programs
//! want `ferrocuda-driver`, the safe layer above it; depend on this crate when you need a driver
//! call that the safe layer does not wrap, or to build a safe layer of your own.
//!
//! # What is here
//!
//! * Every type, constant and function signature of the driver API that ferrocuda uses, generated
//!   by bindgen from CUDA 13.0 `cuda.h` and checked in (`cargo xtask bindgen` regenerates them).
//!   Building this crate needs no CUDA toolkit, no libclang and no libcuda.
//! * [`driver()`]: `libcuda.so.1`, opened once, lazily and thread-safely, on first use. Its entry
//!   points are resolved by their versioned names (`cuMemAlloc_v2`, `cuStreamWaitValue64_v2`, the
//!   names `cuda.h` maps the plain ones to), so a call has exactly the ABI the header declares.
//!   A missing library or entry point is a [`LoadError`] that names it, never a panic.
//!
//! Enumerations are newtypes over their integer (`CUresult::CUDA_SUCCESS`), so a value a newer
//! driver returns is never undefined behaviour.
//!
//! # Example
//!
//! ```no_run
//! use ferrocuda_sys::{driver, CUresult};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cu = driver()?; // Err(LoadError::Library { .. }) on a machine without the NVIDIA driver
//! let mut version = 0;
//! // SAFETY: `version` is a valid, writable int for the duration of the call.
//! let rc = unsafe { cu.cuDriverGetVersion(&mut version) };
//! assert_eq!(rc, CUresult::CUDA_SUCCESS);
//! println!("CUDA driver {}.{}", version / 1000, version % 1000 / 10);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

// The README's examples are doctests: compiled always, run where they need no GPU (`no_run`
// marks the others). Only rustdoc's test collection sees this item; the docs stay the ones above.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[allow(
    non_upper_case_globals,
    unpredictable_function_pointer_comparisons,
    non_camel_case_types,
    non_snake_case,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    rustdoc::all
)]
#[rustfmt::skip]
mod bindings;

mod loader;

pub use bindings::*;
pub use loader::{LIBRARY, LoadError, driver, error_name, error_string, load};
