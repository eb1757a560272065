//! Cross-crate integration tests of ferrocuda; the tests live in `tests/tests/`.
//!
//! Tests that need a GPU are compiled only with the `gpu-tests` feature, which
//! `cargo xtask test-gpu` enables; a CPU-only `cargo xtask test` does not build them.
