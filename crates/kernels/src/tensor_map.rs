//! Tensor maps (`CUtensorMap`) for the tensor copy engine, validated before the driver sees them.
//!
//! [`TensorMapBuilder`] describes a tiled tensor map the way `cuTensorMapEncodeTiled` takes it
//! (dimensions innermost first, strides in bytes for every dimension but the innermost) and
//! checks every rule of that call with a typed [`Error`] before calling the driver, which would
//! only answer `CUDA_ERROR_INVALID_VALUE`:
//!
//! | rule | error |
//! | --- | --- |
//! | rank 1..=5 | [`Error::Rank`] |
//! | one stride per outer dimension, one box size and element stride per dimension | [`Error::RankMismatch`] |
//! | global address 16-byte aligned | [`Error::UnalignedAddress`] |
//! | every global dimension 1..=2^32 | [`Error::GlobalDim`] |
//! | strides multiples of 16 bytes, below 2^40 | [`Error::StrideAlignment`], [`Error::StrideTooLarge`] |
//! | strides not smaller than the dimension below them (no overlapping rows) | [`Error::StrideTooSmall`] |
//! | box dimensions 1..=256 | [`Error::BoxDim`] |
//! | box inner dimension × element size a multiple of 16 bytes | [`Error::BoxInnerBytes`] |
//! | box inner dimension within the swizzle span | [`Error::BoxExceedsSwizzle`] |
//! | element strides 1..=8 | [`Error::ElementStride`] |
//!
//! [`shared_memory_bytes`] checks the other budget a TMA pipeline has: its stages must fit in the
//! 227 KiB of shared memory one block may use on sm_90.
//!
//! Interleaving is not offered (always `CU_TENSOR_MAP_INTERLEAVE_NONE`) and out-of-bounds
//! elements are filled with zeros (`CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE`).

use crate::element::ElementType;
use crate::error::{Error, Result};
use ferrocuda_sys::{
    CUdeviceptr, CUtensorMap, CUtensorMapFloatOOBfill, CUtensorMapInterleave,
    CUtensorMapL2promotion, CUtensorMapSwizzle,
};

/// The most dimensions a tiled tensor map has.
pub const MAX_RANK: usize = 5;
/// The largest box extent per dimension, in elements.
pub const MAX_BOX_DIM: u32 = 256;
/// Shared memory one block may use on sm_90 (H100/H200) after opting in: 227 KiB.
pub const SHARED_MEMORY_PER_BLOCK: u64 = 227 * 1024;

/// How the copy engine arranges 16-byte chunks of a box row in shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Swizzle {
    /// Dense, row after row (what ferrocuda's kernels use).
    #[default]
    None,
    /// 16-byte chunks swizzled within 32 bytes.
    B32,
    /// 16-byte chunks swizzled within 64 bytes.
    B64,
    /// 16-byte chunks swizzled within 128 bytes.
    B128,
}

impl Swizzle {
    /// The span in bytes a box row may not exceed; `None` for no swizzle.
    pub const fn span(self) -> Option<u64> {
        match self {
            Swizzle::None => None,
            Swizzle::B32 => Some(32),
            Swizzle::B64 => Some(64),
            Swizzle::B128 => Some(128),
        }
    }

    const fn to_raw(self) -> CUtensorMapSwizzle {
        match self {
            Swizzle::None => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            Swizzle::B32 => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            Swizzle::B64 => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            Swizzle::B128 => CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        }
    }
}

/// The granularity at which L2 fetches from device memory for the copy engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum L2Promotion {
    /// No promotion.
    None,
    /// 64-byte requests.
    B64,
    /// 128-byte requests.
    B128,
    /// 256-byte requests (ferrocuda's default: whole box rows are streamed).
    #[default]
    B256,
}

impl L2Promotion {
    const fn to_raw(self) -> CUtensorMapL2promotion {
        match self {
            L2Promotion::None => CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_NONE,
            L2Promotion::B64 => CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_64B,
            L2Promotion::B128 => CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
            L2Promotion::B256 => CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        }
    }
}

/// An encoded tensor map: 128 opaque bytes, passed to a kernel by value as a
/// `const __grid_constant__ CUtensorMap` parameter.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct TensorMap(CUtensorMap);

// SAFETY: `CUtensorMap` is `#[repr(C, align(128))]` around `[u64; 16]`: 128 bytes with no padding,
// and every bit pattern (all zeros included) is a valid value of it.
unsafe impl bytemuck::Zeroable for TensorMap {}
// SAFETY: as above; it is `Copy` and `'static`, and `repr(transparent)` keeps that layout.
unsafe impl bytemuck::Pod for TensorMap {}

impl TensorMap {
    /// The driver's descriptor.
    pub fn as_raw(&self) -> &CUtensorMap {
        &self.0
    }
}

impl std::fmt::Debug for TensorMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TensorMap { .. }")
    }
}

/// Describes a tiled tensor map; [`encode`](Self::encode) validates it and asks the driver.
///
/// ```
/// use ferrocuda_kernels::{ElementType, TensorMapBuilder};
///
/// // A 1000 x 777 f32 matrix whose rows are padded to 780 elements (3120 bytes), loaded in
/// // boxes of 32 rows x 128 columns.
/// let map = TensorMapBuilder::new(ElementType::F32, 0x7f00_0000_0000)
///     .dims(&[777, 1000])
///     .strides(&[780 * 4])
///     .box_dims(&[128, 32]);
/// map.validate()?;
/// assert_eq!(map.box_bytes(), 16384);
///
/// // A box row of 3 f32 (12 bytes) is not a whole number of 16-byte chunks.
/// assert!(map.clone().box_dims(&[3, 32]).validate().is_err());
/// # Ok::<(), ferrocuda_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMapBuilder {
    element: ElementType,
    address: CUdeviceptr,
    dims: Vec<u64>,
    strides: Vec<u64>,
    box_dims: Vec<u32>,
    element_strides: Option<Vec<u32>>,
    swizzle: Swizzle,
    l2_promotion: L2Promotion,
}

impl TensorMapBuilder {
    /// A tensor of `element`s at device address `address`; set its shape with the other methods.
    pub fn new(element: ElementType, address: CUdeviceptr) -> Self {
        TensorMapBuilder {
            element,
            address,
            dims: Vec::new(),
            strides: Vec::new(),
            box_dims: Vec::new(),
            element_strides: None,
            swizzle: Swizzle::None,
            l2_promotion: L2Promotion::default(),
        }
    }

    /// A row-major matrix: `rows` x `cols` elements, `pitch_bytes` from one row to the next,
    /// loaded in boxes of `box_rows` x `box_cols`.
    pub fn matrix(
        element: ElementType,
        address: CUdeviceptr,
        (rows, cols): (u64, u64),
        pitch_bytes: u64,
        (box_rows, box_cols): (u32, u32),
    ) -> Self {
        Self::new(element, address)
            .dims(&[cols, rows])
            .strides(&[pitch_bytes])
            .box_dims(&[box_cols, box_rows])
    }

    /// Global dimensions in elements, innermost first; their count is the rank.
    pub fn dims(mut self, dims: &[u64]) -> Self {
        self.dims = dims.to_vec();
        self
    }

    /// Strides in bytes of dimensions 1.. (rank - 1 values; the innermost is contiguous).
    pub fn strides(mut self, strides: &[u64]) -> Self {
        self.strides = strides.to_vec();
        self
    }

    /// Box (tile) size in elements per dimension, innermost first.
    pub fn box_dims(mut self, box_dims: &[u32]) -> Self {
        self.box_dims = box_dims.to_vec();
        self
    }

    /// Traversal strides per dimension (default: all 1).
    pub fn element_strides(mut self, element_strides: &[u32]) -> Self {
        self.element_strides = Some(element_strides.to_vec());
        self
    }

    /// The shared-memory swizzle (default: none).
    pub fn swizzle(mut self, swizzle: Swizzle) -> Self {
        self.swizzle = swizzle;
        self
    }

    /// The L2 promotion (default: 256 bytes).
    pub fn l2_promotion(mut self, l2_promotion: L2Promotion) -> Self {
        self.l2_promotion = l2_promotion;
        self
    }

    /// Bytes one box occupies in shared memory (the expected transaction bytes of a TMA load).
    ///
    /// Exact for every map that passes [`validate`](Self::validate) (at most 256^5 elements of 8
    /// bytes). Box sizes that were not validated may not fit in a `u64`: then it saturates at
    /// `u64::MAX` (never a panic or a wrapped value), a size no shared memory holds.
    pub fn box_bytes(&self) -> u64 {
        self.box_dims.iter().fold(self.element.size(), |bytes, &b| {
            bytes.saturating_mul(u64::from(b))
        })
    }

    /// Checks every rule of `cuTensorMapEncodeTiled` (see the module docs).
    ///
    /// # Errors
    ///
    /// The variant of [`Error`] that names the first rule broken.
    pub fn validate(&self) -> Result<()> {
        let rank = self.dims.len();
        if !(1..=MAX_RANK).contains(&rank) {
            return Err(Error::Rank { rank });
        }
        let expect = |what, expected, got| {
            if expected == got {
                Ok(())
            } else {
                Err(Error::RankMismatch {
                    what,
                    expected,
                    got,
                })
            }
        };
        expect("global strides", rank - 1, self.strides.len())?;
        expect("box dims", rank, self.box_dims.len())?;
        if let Some(es) = &self.element_strides {
            expect("element strides", rank, es.len())?;
        }
        if !self.address.is_multiple_of(16) {
            return Err(Error::UnalignedAddress {
                address: self.address,
            });
        }
        for (dim, &size) in self.dims.iter().enumerate() {
            if size == 0 || size > 1 << 32 {
                return Err(Error::GlobalDim { dim, size });
            }
        }
        // The extent in bytes of everything below dimension `dim`. The checks above bound every
        // product here, but the arithmetic saturates anyway, so that no order of checks can make
        // it overflow: a saturated extent refuses the next stride as too small, where a wrapped
        // one would let overlapping rows pass.
        let mut below = self.dims[0].saturating_mul(self.element.size());
        for (i, &stride) in self.strides.iter().enumerate() {
            let dim = i + 1;
            if !stride.is_multiple_of(16) {
                return Err(Error::StrideAlignment { dim, stride });
            }
            if stride >= 1 << 40 {
                return Err(Error::StrideTooLarge { dim, stride });
            }
            if stride < below {
                return Err(Error::StrideTooSmall {
                    dim,
                    stride,
                    min: below,
                });
            }
            below = stride.saturating_mul(self.dims[dim]);
        }
        for (dim, &size) in self.box_dims.iter().enumerate() {
            if size == 0 || size > MAX_BOX_DIM {
                return Err(Error::BoxDim { dim, size });
            }
        }
        let inner = u64::from(self.box_dims[0]).saturating_mul(self.element.size());
        if !inner.is_multiple_of(16) {
            return Err(Error::BoxInnerBytes { bytes: inner });
        }
        if let Some(span) = self.swizzle.span()
            && inner > span
        {
            return Err(Error::BoxExceedsSwizzle { bytes: inner, span });
        }
        if let Some(es) = &self.element_strides {
            for (dim, &stride) in es.iter().enumerate() {
                if !(1..=8).contains(&stride) {
                    return Err(Error::ElementStride { dim, stride });
                }
            }
        }
        Ok(())
    }

    /// Validates, then encodes the map with `cuTensorMapEncodeTiled`.
    ///
    /// # Errors
    ///
    /// A validation error (nothing reaches the driver), [`Error::Load`] without a CUDA driver,
    /// [`Error::Driver`] if the driver still refuses.
    pub fn encode(&self) -> Result<TensorMap> {
        // The driver crate's guard: refused inside a host function (naming this operation) and
        // behind a stuck module load; traced like every driver call.
        let _op = ferrocuda_driver::guard::enter("TensorMapBuilder::encode")?;
        self.validate()?;
        let rank = self.dims.len();
        let ones = [1u32; MAX_RANK];
        let element_strides = self.element_strides.as_deref().unwrap_or(&ones[..rank]);
        let mut map = <TensorMap as bytemuck::Zeroable>::zeroed();
        // SAFETY: cuInit has no preconditions and may be called any number of times.
        ferrocuda_driver::guard::call("cuInit", |cu| unsafe { cu.cuInit(0) })?;
        // SAFETY: `map` is a writable, 128-byte-aligned CUtensorMap; the arrays hold `rank`,
        // `rank - 1`, `rank` and `rank` values as the call requires (checked by `validate`), and
        // outlive the call. The driver only records `address`; it does not dereference it here.
        ferrocuda_driver::guard::call("cuTensorMapEncodeTiled", |cu| unsafe {
            cu.cuTensorMapEncodeTiled(
                &mut map.0,
                self.element.to_raw(),
                rank as u32, // <= MAX_RANK, checked above
                self.address as *mut std::ffi::c_void,
                self.dims.as_ptr(),
                self.strides.as_ptr(),
                self.box_dims.as_ptr(),
                element_strides.as_ptr(),
                CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                self.swizzle.to_raw(),
                self.l2_promotion.to_raw(),
                CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        })?;
        Ok(map)
    }
}

/// Shared memory a pipeline of `stages` stages of `tile_bytes` each needs, plus `overhead`
/// (barriers, alignment), if it fits in one block's [`SHARED_MEMORY_PER_BLOCK`].
///
/// # Errors
///
/// [`Error::SharedMemory`] when it does not fit.
pub fn shared_memory_bytes(stages: u32, tile_bytes: u64, overhead: u64) -> Result<u64> {
    let needed = u64::from(stages)
        .saturating_mul(tile_bytes)
        .saturating_add(overhead);
    if needed > SHARED_MEMORY_PER_BLOCK {
        return Err(Error::SharedMemory {
            stages,
            tile_bytes,
            overhead,
            needed,
            limit: SHARED_MEMORY_PER_BLOCK,
        });
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn elem() -> impl Strategy<Value = ElementType> {
        prop_oneof![
            Just(ElementType::U8),
            Just(ElementType::Bf16),
            Just(ElementType::F32),
            Just(ElementType::F64),
        ]
    }

    /// A valid 2D map: aligned address, padded pitch, box rows a multiple of 16 bytes.
    fn valid_2d() -> impl Strategy<Value = TensorMapBuilder> {
        (
            elem(),
            0u64..1 << 30,
            1u64..100_000,
            1u64..100_000,
            0u64..64,
            1u32..=256,
            1u32..=16,
        )
            .prop_map(|(e, addr, rows, cols, pad, box_rows, box_chunks)| {
                let pitch = (cols * e.size()).div_ceil(16) * 16 + pad * 16;
                let box_cols = (box_chunks * 16 / e.size() as u32).min(256);
                TensorMapBuilder::matrix(e, addr * 16, (rows, cols), pitch, (box_rows, box_cols))
            })
    }

    proptest! {
        #[test]
        fn valid_matrices_pass(map in valid_2d()) {
            prop_assert!(map.validate().is_ok(), "{:?}", map.validate());
        }

        #[test]
        fn unaligned_address_is_refused(map in valid_2d(), off in 1u64..16) {
            let mut m = map;
            m.address += off;
            prop_assert!(matches!(m.validate(), Err(Error::UnalignedAddress { .. })), "unexpected validation result");
        }

        #[test]
        fn stride_not_multiple_of_16_is_refused(map in valid_2d(), off in 1u64..16) {
            let mut m = map;
            m.strides[0] += off;
            prop_assert!(matches!(m.validate(), Err(Error::StrideAlignment { dim: 1, .. })), "unexpected validation result");
        }

        #[test]
        fn stride_of_2_pow_40_or_more_is_refused(map in valid_2d(), k in 0u64..1 << 20) {
            let mut m = map;
            m.strides[0] = (1 << 40) + k * 16;
            prop_assert!(matches!(m.validate(), Err(Error::StrideTooLarge { dim: 1, .. })), "unexpected validation result");
        }

        #[test]
        fn overlapping_rows_are_refused(map in valid_2d()) {
            let mut m = map;
            let row = m.dims[0] * m.element.size();
            prop_assume!(row > 16);
            m.strides[0] = (row - 1) / 16 * 16;
            prop_assert!(matches!(m.validate(), Err(Error::StrideTooSmall { dim: 1, .. })), "unexpected validation result");
        }

        #[test]
        fn box_dims_outside_1_to_256_are_refused(map in valid_2d(), big in 257u32..10_000, dim in 0usize..2) {
            let mut zero = map.clone();
            zero.box_dims[dim] = 0;
            prop_assert!(matches!(zero.validate(), Err(Error::BoxDim { size: 0, .. })), "{:?}", zero.validate());
            let mut m = map;
            m.box_dims[dim] = big;
            let r = m.validate();
            // An over-wide inner box may first fail the 16-byte rule; never pass.
            prop_assert!(matches!(r, Err(Error::BoxDim { .. } | Error::BoxInnerBytes { .. })), "{r:?}");
        }

        #[test]
        fn box_rows_not_multiple_of_16_bytes_are_refused(map in valid_2d(), cols in 1u32..=256) {
            let mut m = map;
            prop_assume!(u64::from(cols) * m.element.size() % 16 != 0);
            m.box_dims[0] = cols;
            prop_assert!(matches!(m.validate(), Err(Error::BoxInnerBytes { .. })), "unexpected validation result");
        }

        #[test]
        fn zero_or_huge_global_dims_are_refused(map in valid_2d(), dim in 0usize..2, huge in (1u64 << 32) + 1..u64::MAX) {
            let mut zero = map.clone();
            zero.dims[dim] = 0;
            prop_assert!(matches!(zero.validate(), Err(Error::GlobalDim { size: 0, .. })), "unexpected validation result");
            let mut m = map;
            m.dims[dim] = huge;
            prop_assert!(matches!(m.validate(), Err(Error::GlobalDim { .. })), "unexpected validation result");
        }

        #[test]
        fn rank_outside_1_to_5_is_refused(rank in prop_oneof![Just(0usize), 6usize..12]) {
            let m = TensorMapBuilder::new(ElementType::F32, 0)
                .dims(&vec![16; rank])
                .strides(&vec![1024; rank.saturating_sub(1)])
                .box_dims(&vec![16; rank]);
            prop_assert!(matches!(m.validate(), Err(Error::Rank { .. })), "unexpected validation result");
        }

        #[test]
        fn mismatched_array_lengths_are_refused(map in valid_2d(), extra in 1usize..3) {
            let mut m = map;
            m.box_dims.extend(std::iter::repeat_n(1, extra));
            prop_assert!(matches!(m.validate(), Err(Error::RankMismatch { what: "box dims", .. })), "unexpected validation result");
        }

        #[test]
        fn element_strides_outside_1_to_8_are_refused(map in valid_2d(), s in prop_oneof![Just(0u32), 9u32..100]) {
            let m = map.element_strides(&[1, s]);
            prop_assert!(matches!(m.validate(), Err(Error::ElementStride { dim: 1, .. })), "unexpected validation result");
        }

        #[test]
        fn swizzle_span_bounds_the_box_row(map in valid_2d()) {
            let inner = u64::from(map.box_dims[0]) * map.element.size();
            for sw in [Swizzle::B32, Swizzle::B64, Swizzle::B128] {
                let r = map.clone().swizzle(sw).validate();
                let span = sw.span().unwrap_or(u64::MAX);
                prop_assert_eq!(r.is_ok(), inner <= span, "{:?}", r);
            }
        }

        #[test]
        fn shared_memory_budget_is_exact(stages in 1u32..8, tile in 1u64..200_000, overhead in 0u64..4096) {
            let needed = u64::from(stages) * tile + overhead;
            let r = shared_memory_bytes(stages, tile, overhead);
            if needed <= SHARED_MEMORY_PER_BLOCK {
                prop_assert_eq!(r.ok(), Some(needed));
            } else {
                prop_assert!(
                    matches!(r, Err(Error::SharedMemory { .. })),
                    "expected a SharedMemory error, got {:?}",
                    r
                );
            }
        }
    }

    /// Any value, with the edges (0, 1, the limits and just past them, the type's maximum) often.
    fn any_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            prop::sample::select(vec![
                0,
                1,
                16,
                (1 << 32) + 1,
                1 << 40,
                u64::MAX / 2,
                u64::MAX
            ]),
            0u64..1 << 34,
        ]
    }

    fn any_u32() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            prop::sample::select(vec![0, 1, 8, 9, 256, 257, u32::MAX]),
            0u32..512,
        ]
    }

    /// Global dimensions: any value, or (more often) a valid one.
    fn any_dim() -> impl Strategy<Value = u64> {
        prop_oneof![1 => any_u64(), 3 => 1u64..=4096]
    }

    /// Strides: any value, or (more often) a multiple of 16 bytes below 2^40.
    fn any_stride() -> impl Strategy<Value = u64> {
        prop_oneof![1 => any_u64(), 3 => (1u64..1 << 24).prop_map(|k| k * 16)]
    }

    /// Box dimensions: any value, or (more often) one in 1..=256.
    fn any_box_dim() -> impl Strategy<Value = u32> {
        prop_oneof![1 => any_u32(), 3 => 1u32..=256]
    }

    /// Element strides: any value, or (more often) one in 1..=8.
    fn any_element_stride() -> impl Strategy<Value = u32> {
        prop_oneof![1 => any_u32(), 3 => 1u32..=8]
    }

    fn any_swizzle() -> impl Strategy<Value = Swizzle> {
        prop::sample::select(vec![
            Swizzle::None,
            Swizzle::B32,
            Swizzle::B64,
            Swizzle::B128,
        ])
    }

    /// An array for a rank-`rank` map: mostly of length `rank + offset` (so that validation gets
    /// past the length checks), else of any length 0..=6.
    fn vec_for<S: Strategy>(
        values: fn() -> S,
        rank: usize,
        offset: isize,
    ) -> impl Strategy<Value = Vec<S::Value>> {
        let matched = rank.saturating_add_signed(offset);
        prop_oneof![
            9 => prop::collection::vec(values(), matched..=matched),
            1 => prop::collection::vec(values(), 0..=6),
        ]
    }

    /// Builder inputs nobody checked: any rank 0..=6, arrays of that rank's lengths or of any
    /// length, any values (16-byte aligned addresses and small sizes often, so that every rule
    /// is reached).
    fn any_builder() -> impl Strategy<Value = TensorMapBuilder> {
        prop_oneof![1 => Just(0usize), 8 => 1usize..=5, 1 => Just(6)]
            .prop_flat_map(|rank| {
                (
                    elem(),
                    prop_oneof![1 => any_u64(), 3 => (0u64..1 << 40).prop_map(|a| a * 16)],
                    vec_for(any_dim, rank, 0),
                    vec_for(any_stride, rank, -1),
                    vec_for(any_box_dim, rank, 0),
                    prop::option::of(vec_for(any_element_stride, rank, 0)),
                    any_swizzle(),
                )
            })
            .prop_map(|(e, address, dims, strides, box_dims, es, swizzle)| {
                let b = TensorMapBuilder::new(e, address)
                    .dims(&dims)
                    .strides(&strides)
                    .box_dims(&box_dims)
                    .swizzle(swizzle);
                match es {
                    Some(es) => b.element_strides(&es),
                    None => b,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// `box_bytes` and `validate` answer every input without overflowing or panicking, and
        /// `encode` refuses what `validate` refuses with the same error, before the driver.
        #[test]
        fn any_builder_input_is_answered_without_a_panic(map in any_builder()) {
            // The product of the element size and every box dimension, if it fits in a u64.
            let exact = map
                .box_dims
                .iter()
                .try_fold(map.element.size(), |acc, &b| acc.checked_mul(u64::from(b)));
            let capped = if map.box_dims.contains(&0) {
                0
            } else {
                exact.unwrap_or(u64::MAX)
            };
            prop_assert_eq!(map.box_bytes(), capped);
            match map.validate() {
                Ok(()) => {
                    // A valid map's box is at most 256^5 elements of at most 8 bytes: exact.
                    prop_assert!(exact.is_some());
                    prop_assert!((1..=5).contains(&map.dims.len()));
                }
                Err(e) => {
                    let enc = map.encode().expect_err("an invalid map must not encode");
                    prop_assert_eq!(enc.to_string(), e.to_string());
                }
            }
        }
    }

    #[test]
    fn box_bytes_saturates_instead_of_overflowing() {
        let m = TensorMapBuilder::new(ElementType::F64, 0).box_dims(&[u32::MAX; 5]);
        assert_eq!(m.box_bytes(), u64::MAX);
        let m = TensorMapBuilder::new(ElementType::F64, 0).box_dims(&[256; 5]);
        assert_eq!(m.box_bytes(), 256u64.pow(5) * 8);
        // A zero anywhere is an empty box, also after the product saturated.
        let m =
            TensorMapBuilder::new(ElementType::F32, 0).box_dims(&[u32::MAX, u32::MAX, u32::MAX, 0]);
        assert_eq!(m.box_bytes(), 0);
    }

    #[test]
    fn validation_fails_before_the_driver_is_called() {
        // No GPU or driver here: an invalid map must fail validation, not with Error::Load.
        let m = TensorMapBuilder::matrix(ElementType::F32, 8, (10, 10), 48, (8, 8));
        assert!(matches!(
            m.encode(),
            Err(Error::UnalignedAddress { address: 8 })
        ));
    }
}
