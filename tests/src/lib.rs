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

/// `n` values that differ per element and, through `salt`, per run (the interop tests' inputs).
pub fn pattern(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| i.wrapping_mul(2_654_435_761).wrapping_add(salt))
        .collect()
}

/// A value that differs per run (the sub-second nanoseconds of the clock).
pub fn salt() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.subsec_nanos())
}

/// The fake driver's count of uses after free and of destroyed handles in use
/// (`fake::violations`); 0 on a GPU, where the bundle's memcheck passes check the same.
pub fn violations() -> u64 {
    #[cfg(all(feature = "fake-tests", not(feature = "gpu-tests")))]
    return fake::violations();
    #[cfg(not(all(feature = "fake-tests", not(feature = "gpu-tests"))))]
    0
}
