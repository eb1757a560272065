//! The crate's one error type.

use ferrocuda_sys::{CUresult, LoadError};

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
///
/// Every constraint of a tensor map or a launch is checked on the host, before the driver is
/// called or anything is enqueued, and has a variant of its own whose message says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor map has 1 to 5 dimensions.
    #[error("a tensor map has 1 to 5 dimensions, not {rank}")]
    Rank {
        /// The rank asked for.
        rank: usize,
    },
    /// An array of per-dimension values does not have one entry per dimension it describes.
    #[error("{what} has {got} entries; the tensor map's rank needs {expected}")]
    RankMismatch {
        /// Which array (`"global strides"`, `"box dims"`, `"element strides"`).
        what: &'static str,
        /// Entries needed.
        expected: usize,
        /// Entries given.
        got: usize,
    },
    /// The tensor's global address is not 16-byte aligned.
    #[error("the tensor's global address {address:#x} is not 16-byte aligned")]
    UnalignedAddress {
        /// The address.
        address: u64,
    },
    /// A global dimension is 0 or above 2^32 elements.
    #[error("global dimension {dim} has {size} elements; it must be 1..=2^32")]
    GlobalDim {
        /// The dimension (0 = innermost).
        dim: usize,
        /// Its size in elements.
        size: u64,
    },
    /// A global stride is not a multiple of 16 bytes.
    #[error("the stride of dimension {dim} is {stride} bytes, not a multiple of 16")]
    StrideAlignment {
        /// The dimension the stride steps over (1 = rows of a matrix).
        dim: usize,
        /// The stride in bytes.
        stride: u64,
    },
    /// A global stride is 2^40 bytes or more.
    #[error("the stride of dimension {dim} is {stride} bytes; it must be below 2^40")]
    StrideTooLarge {
        /// The dimension the stride steps over.
        dim: usize,
        /// The stride in bytes.
        stride: u64,
    },
    /// A global stride is smaller than the extent of the dimension below it (rows would overlap).
    #[error("the stride of dimension {dim} is {stride} bytes, less than the {min} bytes below it")]
    StrideTooSmall {
        /// The dimension the stride steps over.
        dim: usize,
        /// The stride in bytes.
        stride: u64,
        /// The smallest stride that does not overlap.
        min: u64,
    },
    /// A box dimension is 0 or above 256 elements.
    #[error("box dimension {dim} has {size} elements; it must be 1..=256")]
    BoxDim {
        /// The dimension (0 = innermost).
        dim: usize,
        /// Its size in elements.
        size: u32,
    },
    /// The box's inner dimension is not a multiple of 16 bytes.
    #[error("the box's inner dimension is {bytes} bytes, not a multiple of 16")]
    BoxInnerBytes {
        /// Inner box dimension times element size.
        bytes: u64,
    },
    /// The box's inner dimension is wider than the swizzle span.
    #[error("the box's inner dimension is {bytes} bytes, wider than the {span}-byte swizzle span")]
    BoxExceedsSwizzle {
        /// Inner box dimension times element size.
        bytes: u64,
        /// The swizzle span in bytes.
        span: u64,
    },
    /// An element stride is 0 or above 8.
    #[error("element stride {dim} is {stride}; it must be 1..=8")]
    ElementStride {
        /// The dimension.
        dim: usize,
        /// The traversal stride.
        stride: u32,
    },
    /// The pipeline's shared memory exceeds what one block may use.
    #[error(
        "the pipeline needs {needed} bytes of shared memory ({stages} stages of {tile_bytes}-byte \
         tiles + {overhead} bytes); a block may use {limit}: use fewer stages"
    )]
    SharedMemory {
        /// Stages asked for.
        stages: u32,
        /// Bytes per stage.
        tile_bytes: u64,
        /// Barriers and alignment slack.
        overhead: u64,
        /// Total bytes needed.
        needed: u64,
        /// The per-block limit.
        limit: u64,
    },
    /// The pipeline depth is not 2, 3 or 4.
    #[error("the kernels are built for 2, 3 or 4 pipeline stages, not {stages}")]
    Stages {
        /// The depth asked for.
        stages: u32,
    },
    /// A matrix has no rows or no columns.
    #[error("{what} is {rows} x {cols}; both must be at least 1")]
    EmptyMatrix {
        /// Which matrix.
        what: &'static str,
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
    },
    /// A matrix's pitch is shorter than a row or its rows do not start 16-byte aligned.
    #[error(
        "{what} has pitch {pitch} elements for {cols} columns of {elem_bytes}-byte elements; the \
         pitch must be >= the columns and pitch * element size a multiple of 16 bytes"
    )]
    Pitch {
        /// Which matrix.
        what: &'static str,
        /// The pitch in elements.
        pitch: u32,
        /// The columns.
        cols: u32,
        /// Element size in bytes.
        elem_bytes: u64,
    },
    /// A matrix's buffer holds fewer elements than its layout spans.
    #[error("{what} needs {needed} elements but its buffer holds {len}")]
    BufferTooSmall {
        /// Which buffer.
        what: &'static str,
        /// Elements the layout spans.
        needed: u64,
        /// Elements the buffer holds.
        len: u64,
    },
    /// A matrix is too large for the kernels' 31-bit tile coordinates.
    #[error("{what} is {rows} x {cols}: the kernels take at most 2^31 - 1 rows and columns")]
    TooLarge {
        /// Which matrix.
        what: &'static str,
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
    },
    /// A vector is too long for a kernel's 32-bit element index.
    #[error("{what} has {len} elements; the kernel takes at most 2^32 - 1")]
    TooLong {
        /// Which buffer.
        what: &'static str,
        /// Its length in elements.
        len: u64,
    },
    /// A kernel variant's tile or depth is not one the op templates build (16 KiB of whole load
    /// boxes, or 32 or 64 KiB for transpose; 2 to 8 stages), or a launch of it names another transfer
    /// or element type than it was resolved for.
    #[error("a {rows} x {row_bytes}-byte tile variant does not fit this op or launch")]
    Variant {
        /// Tile rows.
        rows: u32,
        /// Bytes per tile row.
        row_bytes: u32,
    },
    /// A placement-only transpose variant (the kernels benchmark's experiment) was launched with
    /// TMA stores or on a matrix that is not whole tiles: its kernel checks no edges and stores
    /// from threads only. Launch it with [`Store::Threads`](crate::Store::Threads) on a matrix
    /// whose rows and columns are multiples of the tile side.
    #[error(
        "the placement-only transpose of {side} x {side} tiles takes thread stores and rows and \
         columns that are multiples of {side}, not a {rows} x {cols} matrix with Store::{store:?}"
    )]
    WholeTiles {
        /// The tile's side in elements.
        side: u32,
        /// Rows of the source.
        rows: u32,
        /// Columns of the source.
        cols: u32,
        /// The store asked for.
        store: crate::Store,
    },
    /// A kernel variant that stores from threads only (the kernels benchmark's 64 KiB transpose
    /// stages and TMA bulk-copy loads) was launched with TMA stores. Launch it with
    /// [`Store::Threads`](crate::Store::Threads).
    #[error(
        "the {rows} x {row_bytes}-byte tile variant stores from threads only: launch it with \
         Store::Threads"
    )]
    ThreadStores {
        /// Tile rows.
        rows: u32,
        /// Bytes per tile row.
        row_bytes: u32,
    },
    /// The crate was built without real cubins (docs.rs), so no kernel can be loaded.
    #[error("this build of ferrocuda-kernels has no cubins (built with DOCS_RS set)")]
    NoCubins,
    /// A CUDA driver call failed.
    #[error("{call} failed: {name} ({}): {message}", code.0)]
    Driver {
        /// The driver entry point.
        call: &'static str,
        /// Its result code.
        code: CUresult,
        /// The code's name.
        name: &'static str,
        /// The driver's description.
        message: &'static str,
    },
    /// The CUDA driver library could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The safe driver layer failed (launch, module, memory), or refused the operation (inside a
    /// host function, behind a stuck module load).
    #[error(transparent)]
    Launch(ferrocuda_driver::Error),
}

impl From<ferrocuda_driver::Error> for Error {
    /// A driver call's failure keeps its own variant ([`Error::Driver`], [`Error::Load`]);
    /// everything else the driver layer reports is [`Error::Launch`].
    fn from(e: ferrocuda_driver::Error) -> Error {
        match e {
            ferrocuda_driver::Error::Driver(d) => Error::Driver {
                call: d.call,
                code: d.code,
                name: d.name,
                message: d.message,
            },
            ferrocuda_driver::Error::Load(l) => Error::Load(l),
            e => Error::Launch(e),
        }
    }
}
