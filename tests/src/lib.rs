//! Cross-crate integration tests of ferrocuda; the tests live in `tests/tests/`.
//!
//! Tests that need a GPU are compiled only with the `gpu-tests` feature, which
//! `cargo xtask test-gpu` enables; a CPU-only `cargo xtask test` does not build them.
//!
//! Soundness regression tests that run against the fake driver (`xtask/fake/fake_cuda.c`, streams
//! on host threads, a use-after-free detector) are `tests/tests/fake_*.rs`, compiled only with the
//! `fake-tests` feature. The step "fake-driver tests" of `cargo xtask test` builds the fake and
//! runs them with it on `LD_LIBRARY_PATH`; what they share is the [`fake`] module.
#![deny(missing_docs)]

#[cfg(feature = "fake-tests")]
pub mod fake;
