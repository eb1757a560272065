//! Hopper (sm_90a) pipeline kernels for ferrocuda: a tiled 2D copy, a transpose and row sums,
//! each built for both tile transfers (TMA and cp.async), f32 and bf16, and 2 to 4 pipeline
//! stages, plus validated TMA tensor maps.
//!
//! # Example
//!
//! ```ignore
//! // Needs the `launch` feature and an H100/H200.
//! use ferrocuda_driver::Device;
//! use ferrocuda_kernels::{Kernels, MatrixLayout, Pipeline, Stages, Transfer};
//!
//! let dev = Device::new(0)?;
//! let stream = dev.new_stream()?;
//! let kernels = Kernels::load(&dev)?; // before any stream waits on a host value
//! let layout = MatrixLayout::aligned::<f32>(1000, 777); // rows on 512-byte boundaries
//! let src = stream.alloc::<f32>(layout.span() as usize)?;
//! let mut dst = stream.alloc::<f32>(layout.span() as usize)?;
//! kernels.copy_2d(&stream, Pipeline::new(Transfer::Tma, Stages::THREE), &src, layout, &mut dst, layout.pitch)?;
//! stream.synchronize()?;
//! ```
//!
//! # The barrier-handler design
//!
//! Every kernel runs the same warp-specialised ring pipeline (`cuda/include/ferrocuda/`): a
//! producer warp fills stage buffers in shared memory, four consumer warps use them. Each stage
//! has a *full* and an *empty* mbarrier; the ring state is a stage index and a phase parity.
//! How a stage becomes full depends on how its tile was copied, and that is the only thing a
//! `BarrierHandler` decides (MAX's `BarrierHandler` trait is the model):
//!
//! | handler | `prepare_stage` | `complete_stage` |
//! | --- | --- | --- |
//! | [`Transfer::Tma`] | arrive with the stage's bytes (all its boxes) as expected transactions | nothing: the copy engine completes the bytes on the barrier |
//! | [`Transfer::CpAsync`] | nothing: cp.async has no byte count to announce | `cp.async.mbarrier.arrive.noinc`: the hardware arrives for this thread once its copies land |
//!
//! `docs/kernels.md` in the repository explains phases, fences, the layout rules and lists each
//! kernel's registers and shared memory.
//!
//! # Item order
//!
//! The grid is persistent: each block walks several work items (tiles) through its ring. Under
//! [`ItemOrder::Dynamic`], the default for copies and transposes, a block takes its next item from
//! a counter, so the blocks finish together; on an H200 that took the TMA copy from 0.93-0.96 to
//! 0.98-0.99 of `cuMemcpyDtoD`. The counters come from a pool the `Kernels` holds, one pair per
//! launch in flight; under graph capture, or with fewer than two items per block, a launch takes
//! [`ItemOrder::Fixed`] (block `b` takes items `b`, `b + grid`, ...).
//!
//! # The fused gate
//!
//! `cuda/include/ferrocuda/gate.cuh` gives CUDA C++ kernels `ferrocuda::wait_flag`: the block waits
//! for a host-signalled `CompletionFlag` in its own prologue (thread 0 polls, the block syncs),
//! so no launch sits between the signal and the work (the target is ≤ 3 µs p50 from the signal;
//! `docs/hardware-facts.md` in the repository has the measured figures). `FusedGate` (feature
//! `launch`) is what a launcher
//! passes it; `Kernels::gated_scale_f32` is the crate's example of a gated kernel, and
//! `docs/gates.md` compares the fused gate with the driver's wait and the polling kernel.
//!
//! # Layouts
//!
//! Matrices are row-major with a row pitch in elements ([`MatrixLayout`]); a row must start
//! 16-byte aligned (pitch × element size a multiple of 16), as TMA requires and as the 16-byte
//! cp.async copies need. Any number of rows and columns works: partial edge tiles are
//! zero-filled on load and clipped or bounds-checked on store. [`MatrixLayout::padded`] gives
//! the smallest such pitch; [`MatrixLayout::aligned`] starts every row on a 512-byte boundary
//! (the pitch `cuMemAllocPitch` gives), which is faster whenever the smallest pitch is not a
//! multiple of 512 bytes (bf16 rows of 23170 elements copied measurably slower on 16-byte and on
//! 128-byte pitches than on 512-byte ones; `docs/kernels.md` in the repository, "What ncu
//! showed then", has the numbers and says why).
//!
//! # Building
//!
//! The crate embeds cubins. `prebuilt/` holds them, with the fingerprint of the `cuda/` sources
//! they were compiled from; when that matches, no CUDA toolkit is needed. Otherwise (changed
//! kernels, or `FERROCUDA_BUILD_KERNELS=1`) `build.rs` runs nvcc, found in `NVCC`,
//! `CUDA_PATH`, `PATH`, `/usr/local/cuda`, or the `.cuda-venv/` of `cargo xtask setup`. On
//! docs.rs nothing is compiled and the cubins are empty ([`cubins::available`]).
//!
//! # Features
//!
//! * `launch`: `Kernels`, the safe launchers over `ferrocuda-driver` buffers and streams, and
//!   `FusedGate`, the flag a gated kernel waits for in its prologue.
//! * `gpu-tests`: compiles the GPU tests (`cargo xtask test-gpu`).
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The README's examples are doctests: compiled always, run where they need no GPU (`no_run`
// marks the others). Only rustdoc's test collection sees this item; the docs stay the ones above.
// The launch example compiles with the `launch` feature (which `cargo test --workspace` turns on
// through the bench package); without it, it compiles to an empty `main`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod cubins;
mod element;
mod error;
#[cfg(feature = "launch")]
mod gate;
mod kernel;
#[cfg(feature = "launch")]
mod launch;
pub mod tensor_map;

pub use element::{Element, ElementType};
pub use error::{Error, Result};
#[cfg(feature = "launch")]
pub use gate::FusedGate;
pub use kernel::{
    ItemOrder, KernelId, MatrixLayout, Op, STAGE_ALIGN, STATIC_SHARED_BYTES, Stages, Store,
    THREADS_PER_BLOCK, Transfer, grid_size, resident_per_sm,
};
#[cfg(feature = "launch")]
pub use launch::{Kernels, Pipeline, Variant};
pub use tensor_map::{L2Promotion, Swizzle, TensorMap, TensorMapBuilder, shared_memory_bytes};

#[cfg(test)]
#[allow(dead_code)] // the tests use the fingerprint only
#[path = "source_hash.rs"]
mod source_hash;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_name_is_in_its_cubin() {
        for id in KernelId::all() {
            let image = match id.op {
                Op::Copy2d => cubins::COPY2D,
                Op::Transpose => cubins::TRANSPOSE,
                Op::RowSum => cubins::ROW_SUM,
            };
            let name = format!("{}\0", id.name());
            assert!(
                image.windows(name.len()).any(|w| w == name.as_bytes()),
                "{} is not in the {} cubin",
                id.name(),
                id.op.name()
            );
        }
    }

    #[test]
    fn gated_kernels_are_in_their_cubin() {
        let name = b"ferrocuda_gated_scale_f32\0";
        assert!(
            cubins::GATED
                .windows(name.len())
                .any(|w| w == name.as_slice())
        );
    }

    #[test]
    fn cubins_are_sm_90a_elf_images() {
        for image in [
            cubins::COPY2D,
            cubins::TRANSPOSE,
            cubins::ROW_SUM,
            cubins::GATED,
        ] {
            assert_eq!(&image[..4], b"\x7fELF");
            assert_eq!(image.as_ptr() as usize % 64, 0);
        }
    }

    #[test]
    fn prebuilt_cubins_match_the_cuda_sources() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let fingerprint = source_hash::fingerprint(&dir.join("cuda")).expect("cuda/ is readable");
        let manifest = std::fs::read_to_string(dir.join("prebuilt/manifest.txt"))
            .expect("prebuilt/manifest.txt exists");
        assert!(
            manifest
                .lines()
                .any(|l| l == source_hash::manifest_line(fingerprint)),
            "prebuilt/ is stale: run `cargo xtask kernels` and commit crates/kernels/prebuilt"
        );
    }
}
