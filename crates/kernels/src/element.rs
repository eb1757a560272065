//! The element types the kernels are built for.

use ferrocuda_sys::CUtensorMapDataType;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
}

/// An element type with kernels: `f32` and [`half::bf16`]. Sealed: the kernels are compiled
/// for exactly these.
pub trait Element: sealed::Sealed + bytemuck::Pod + Copy + Send + Sync + 'static {
    /// The name used in kernel entry points: `"f32"`, `"bf16"`.
    const NAME: &'static str;
    /// The tensor-map element type.
    const DTYPE: ElementType;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    const DTYPE: ElementType = ElementType::F32;
}

impl Element for half::bf16 {
    const NAME: &'static str = "bf16";
    const DTYPE: ElementType = ElementType::Bf16;
}

/// Element types a tensor map can describe (the subset of `CUtensorMapDataType` ferrocuda uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElementType {
    /// 8-bit unsigned integer.
    U8,
    /// 16-bit unsigned integer.
    U16,
    /// 32-bit unsigned integer.
    U32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

impl ElementType {
    /// Size of one element in bytes.
    pub const fn size(self) -> u64 {
        match self {
            ElementType::U8 => 1,
            ElementType::U16 | ElementType::F16 | ElementType::Bf16 => 2,
            ElementType::U32 | ElementType::F32 => 4,
            ElementType::F64 => 8,
        }
    }

    /// The driver's enumerator.
    pub const fn to_raw(self) -> CUtensorMapDataType {
        match self {
            ElementType::U8 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            ElementType::U16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
            ElementType::U32 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT32,
            ElementType::F16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            ElementType::Bf16 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            ElementType::F32 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
            ElementType::F64 => CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT64,
        }
    }
}
