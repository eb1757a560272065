//! The sm_90a cubins, embedded at build time (see the crate docs, "Building").

/// Raw bytes with the alignment a driver-side ELF reader may expect from an in-memory image.
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

macro_rules! cubin {
    ($name:literal) => {{
        static IMAGE: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
            env!("OUT_DIR"),
            "/",
            $name,
            ".cubin"
        )));
        &IMAGE.0
    }};
}

/// `cuda/copy2d.cu`: the `ferrocuda_copy2d_*` kernels.
pub const COPY2D: &[u8] = cubin!("copy2d");
/// `cuda/transpose.cu`: the `ferrocuda_transpose_*` kernels.
pub const TRANSPOSE: &[u8] = cubin!("transpose");
/// `cuda/row_sum.cu`: the `ferrocuda_row_sum_*` kernels.
pub const ROW_SUM: &[u8] = cubin!("row_sum");
/// `cuda/gated.cu`: kernels behind a fused gate (`ferrocuda_gated_scale_f32`).
pub const GATED: &[u8] = cubin!("gated");

/// Whether the cubins are real: false only in a docs.rs build, where nvcc is not run.
pub fn available() -> bool {
    !COPY2D.is_empty()
}
