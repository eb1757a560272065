//! The kernels in the cubins: names, tile shapes, pipeline configuration and matrix layouts.
//!
//! Everything here is host-side arithmetic that the launchers use and that runs without a GPU:
//! the entry-point name of each (op, transfer, element, stages) combination, the shared memory it
//! needs, and the checks a matrix layout must pass before a launch.

use crate::element::{Element, ElementType};
use crate::error::{Error, Result};
use crate::tensor_map::shared_memory_bytes;

/// Threads per block of every pipeline kernel: four consumer warps and one producer warp.
pub const THREADS_PER_BLOCK: u32 = 160;
/// Static shared memory per block (the ring's mbarriers, padded by the compiler), in bytes.
pub const STATIC_SHARED_BYTES: u64 = 128;
/// Every stage starts on a 1024-byte boundary (a 128-byte-swizzled TMA box must); the kernels
/// round the dynamic shared memory's base up to it, so they ask for this many bytes more.
pub const STAGE_ALIGN: u64 = 1024;

/// How a stage's tile travels from global to shared memory; it picks the barrier handler.
///
/// Mirrors MAX's `BarrierHandler` trait, the model of this design (`docs/kernels.md` in the
/// repository):
///
/// * [`Transfer::Tma`]: one thread issues a `cp.async.bulk.tensor` per tile through a
///   [`TensorMap`](crate::TensorMap). `prepare_stage` arrives on the stage's full barrier with
///   the tile's byte count as expected transactions; `complete_stage` does nothing, because the
///   copy engine itself completes those bytes on the barrier.
/// * [`Transfer::CpAsync`]: the 32 producer threads issue 16-byte `cp.async` copies.
///   `prepare_stage` does nothing (there is no byte count to announce); `complete_stage` is each
///   thread's `cp.async.mbarrier.arrive.noinc`, an arrival the hardware performs when that
///   thread's copies have landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transfer {
    /// Tensor Memory Accelerator: `cp.async.bulk.tensor.2d` completing on an mbarrier.
    Tma,
    /// Per-thread 16-byte `cp.async.cg` copies, arrival via `cp.async.mbarrier.arrive.noinc`.
    CpAsync,
}

impl Transfer {
    /// Both transfers.
    pub const ALL: [Transfer; 2] = [Transfer::Tma, Transfer::CpAsync];

    /// The name used in kernel entry points.
    pub const fn name(self) -> &'static str {
        match self {
            Transfer::Tma => "tma",
            Transfer::CpAsync => "cpasync",
        }
    }
}

/// How a pipeline kernel writes its output tiles to global memory.
///
/// Independent of the [`Transfer`], which says how tiles are *loaded*: with either barrier
/// handler, a stage holds a tile once its full barrier completes, and the store side starts
/// from there.
///
/// * [`Store::Tma`]: the output tile is left in the stage (copy: the loaded tile itself;
///   transpose: the consumer warps write the transposed tile back into the stage, in the
///   128-byte swizzled layout) and one thread stores it with `cp.async.bulk.tensor` through a
///   tensor map of the destination, which the launcher builds and validates. The copy engine
///   clips boxes at the destination's bounds. Before the copy engine reads a stage, the barrier
///   handler makes the stage's contents visible to it (`before_async_read`: nothing after a TMA
///   load, `fence.proxy.async` after cp.async); the stage is released for the next load once the
///   store has read it.
/// * [`Store::Threads`]: the consumer threads store 16-byte vectors with ordinary stores.
///
/// Row sums write one f32 per row and always use [`Store::Threads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Store {
    /// One `cp.async.bulk.tensor` store per output box, issued by one thread.
    Tma,
    /// Ordinary 16-byte stores from the consumer threads.
    Threads,
}

impl Store {
    /// Both stores.
    pub const ALL: [Store; 2] = [Store::Tma, Store::Threads];

    /// A short name (`"tmastore"`, `"ststore"`), used in benchmark rows.
    pub const fn name(self) -> &'static str {
        match self {
            Store::Tma => "tmastore",
            Store::Threads => "ststore",
        }
    }
}

/// Pipeline depth: how many tiles are in flight per block (2, 3 or 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stages(u32);

impl Stages {
    /// Double buffering.
    pub const TWO: Stages = Stages(2);
    /// Triple buffering.
    pub const THREE: Stages = Stages(3);
    /// Four stages.
    pub const FOUR: Stages = Stages(4);
    /// Every depth the kernels are built for.
    pub const ALL: [Stages; 3] = [Stages::TWO, Stages::THREE, Stages::FOUR];

    /// `stages` if the kernels are built for it.
    ///
    /// # Errors
    ///
    /// [`Error::Stages`] unless `stages` is 2, 3 or 4.
    pub fn new(stages: u32) -> Result<Stages> {
        if (2..=4).contains(&stages) {
            Ok(Stages(stages))
        } else {
            Err(Error::Stages { stages })
        }
    }

    /// The depth.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// A kernel family: one `.cu` file, one cubin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `dst[r][c] = src[r][c]`.
    Copy2d,
    /// `dst[c][r] = src[r][c]`.
    Transpose,
    /// `dst[r] = sum_c src[r][c]`, accumulated and written in f32.
    RowSum,
}

impl Op {
    /// Every op.
    pub const ALL: [Op; 3] = [Op::Copy2d, Op::Transpose, Op::RowSum];

    /// The name used in kernel entry points (and the cubin's file name).
    pub const fn name(self) -> &'static str {
        match self {
            Op::Copy2d => "copy2d",
            Op::Transpose => "transpose",
            Op::RowSum => "row_sum",
        }
    }

    /// The tile one stage holds for `element`: (rows, bytes per row), as built in by the op's
    /// `.cuh` file (`k<Op>Rows<Element>`, `k<Op>RowBytes<Element>`). Every tile is 16 KiB: copy
    /// 8 rows x 2 KiB, row sums 32 x 512 bytes, transpose 64 x 256 bytes for f32 and 128 x 128
    /// for bf16 (the shapes that measured fastest; docs/kernels.md).
    pub const fn tile(self, element: ElementType) -> (u32, u32) {
        match (self, element.size()) {
            (Op::Copy2d, _) => (8, 2048),
            (Op::RowSum, _) => (32, 512),
            (Op::Transpose, 4) => (64, 256),
            (Op::Transpose, _) => (128, 128),
        }
    }

    /// The tile in elements of `element`: (rows, columns).
    pub const fn tile_elements(self, element: ElementType) -> (u32, u32) {
        let (rows, row_bytes) = self.tile(element);
        (rows, row_bytes / element.size() as u32)
    }

    /// Bytes of one stage (the same for every op and element type).
    pub const fn tile_bytes(self) -> u64 {
        16 * 1024
    }

    /// Whether the op has kernels under dynamic item order (copy and transpose; row sums run
    /// under fixed order only): see [`ItemOrder`](crate::ItemOrder).
    pub const fn has_dynamic_order(self) -> bool {
        matches!(self, Op::Copy2d | Op::Transpose)
    }

    /// Whether the op can store its output with [`Store::Tma`] (copy and transpose; row sums
    /// write one f32 per row and always store from threads).
    pub const fn has_tma_store(self) -> bool {
        matches!(self, Op::Copy2d | Op::Transpose)
    }

    /// Bytes of one row of a load box. A stage holds its tile as `tile().1 / box_row_bytes()`
    /// boxes side by side, box-major in shared memory (`tile_load.cuh`): 512 bytes for copy and
    /// row sums, 128 for transpose (one 16-byte chunk per lane of a quarter warp).
    pub const fn box_row_bytes(self) -> u32 {
        match self {
            Op::Copy2d | Op::RowSum => 512,
            Op::Transpose => 128,
        }
    }

    /// Rows of one TMA load box of the built-in tile (`kCopy2dLoadBoxRows`; the tile's rows for
    /// the other ops). Copy loads its 8 x 2 KiB tile as 1-row boxes, issued row by row, so the
    /// copy engine reads 2 KiB runs in order as the cp.async lanes do.
    pub const fn load_box_rows(self, element: ElementType) -> u32 {
        match self {
            Op::Copy2d => 1,
            Op::RowSum | Op::Transpose => self.tile(element).0,
        }
    }

    /// The box of a TMA load of `box_rows` rows of a tile of this op, (rows, columns) in
    /// elements.
    pub const fn load_box(self, box_rows: u32, element: ElementType) -> (u32, u32) {
        (box_rows, self.box_row_bytes() / element.size() as u32)
    }

    /// The box of a [`Store::Tma`] store in the destination, (rows, columns) in elements, and
    /// whether it is 128-byte swizzled in shared memory, as in the op's `.cuh` file: copy stores
    /// the tile as whole-height boxes of the load width; transpose stores its transposed tile as
    /// boxes 128 bytes wide and one load box's columns high, swizzled so that writing them into
    /// shared memory is conflict-free.
    pub const fn store_box(self, element: ElementType) -> (u32, u32, bool) {
        self.store_box_of(self.tile(element), element)
    }

    /// [`store_box`](Self::store_box) for a `tile` (rows, bytes per row) of this op.
    pub const fn store_box_of(self, tile: (u32, u32), element: ElementType) -> (u32, u32, bool) {
        let (rows, cols) = self.load_box(tile.0, element);
        match self {
            Op::Copy2d | Op::RowSum => (rows, cols, false),
            Op::Transpose => (cols, 128 / element.size() as u32, true),
        }
    }

    /// The L2 promotion of the source tensor map's loads for `element`. Row sums: none (with
    /// 256-byte promotion the TMA row sums ran slower at the same bytes, with a far higher L2
    /// hit rate; docs/kernels.md). Transpose: its box rows are 128 bytes (one line) of a source
    /// row; with the bf16 tile (128 bytes wide) the neighbouring line belongs to another tile,
    /// and 256-byte promotion made the TMA transpose read far more from DRAM than the matrix
    /// holds, so 128 bytes; the f32 tile is 256 bytes wide, its two boxes read the two lines of a
    /// 256-byte block, and 256-byte promotion serves the second. Copy: 256 bytes (its box rows
    /// are 512 bytes).
    pub const fn l2_promotion(self, element: ElementType) -> crate::L2Promotion {
        self.l2_promotion_of(self.tile(element))
    }

    /// [`l2_promotion`](Self::l2_promotion) for a `tile` (rows, bytes per row) of this op.
    pub const fn l2_promotion_of(self, tile: (u32, u32)) -> crate::L2Promotion {
        match self {
            Op::RowSum => crate::L2Promotion::None,
            Op::Transpose if tile.1 >= 256 => crate::L2Promotion::B256,
            Op::Transpose => crate::L2Promotion::B128,
            Op::Copy2d => crate::L2Promotion::B256,
        }
    }

    /// At most this many blocks of the op per SM, below what fits (`None`: as many as fit), for
    /// a launch with `transfer`, `stages`, `store` and item `order`. Under dynamic item order the
    /// TMA copies and transposes run on two blocks per SM at two stages and on one at three and
    /// four (on an H200 these were the fastest grids, by 0.01-0.03 for copies and up to 0.05 for
    /// transposes; the cp.async ones were fastest as fit: docs/kernels.md, "Item order"). Under
    /// fixed item order the cp.async copy at four stages runs on
    /// one block per SM, with either store: with three, as fit, its DRAM efficiency was that of
    /// every other copy configuration, and with one it was the fastest copy measured on an H200
    /// (thread stores fastest for f32, both stores alike for bf16); every other configuration
    /// measured the same or slower on capped grids (docs/kernels.md, "The sweep" and "The third
    /// sweep").
    pub const fn max_blocks_per_sm(
        self,
        transfer: Transfer,
        stages: Stages,
        store: Store,
        order: ItemOrder,
    ) -> Option<u32> {
        match (self, transfer, stages.get(), store, order) {
            (Op::Copy2d, Transfer::CpAsync, 4, _, ItemOrder::Fixed) => Some(1),
            (Op::Copy2d | Op::Transpose, Transfer::Tma, 2, _, ItemOrder::Dynamic) => Some(2),
            (Op::Copy2d | Op::Transpose, Transfer::Tma, _, _, ItemOrder::Dynamic) => Some(1),
            _ => None,
        }
    }

    /// Work items (what one block takes at a time) for a `rows` x `cols` source.
    pub fn work_items(self, element: ElementType, rows: u32, cols: u32) -> u64 {
        self.work_items_of(self.tile(element), element, rows, cols)
    }

    /// [`work_items`](Self::work_items) for a `tile` (rows, bytes per row) of this op.
    pub fn work_items_of(
        self,
        tile: (u32, u32),
        element: ElementType,
        rows: u32,
        cols: u32,
    ) -> u64 {
        let (tr, tc) = (tile.0, tile.1 / element.size() as u32);
        let row_tiles = u64::from(rows.div_ceil(tr));
        match self {
            Op::Copy2d | Op::Transpose => row_tiles * u64::from(cols.div_ceil(tc)),
            Op::RowSum => row_tiles,
        }
    }
}

/// One entry point of the cubins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelId {
    /// The family.
    pub op: Op,
    /// The transfer (barrier handler).
    pub transfer: Transfer,
    /// The element type.
    pub element: ElementType,
    /// The pipeline depth.
    pub stages: Stages,
}

impl KernelId {
    /// Every kernel of the cubins: 3 ops x 2 transfers x 2 element types x 3 depths.
    pub fn all() -> impl Iterator<Item = KernelId> {
        Op::ALL.into_iter().flat_map(|op| {
            Transfer::ALL.into_iter().flat_map(move |transfer| {
                [ElementType::F32, ElementType::Bf16]
                    .into_iter()
                    .flat_map(move |element| {
                        Stages::ALL.into_iter().map(move |stages| KernelId {
                            op,
                            transfer,
                            element,
                            stages,
                        })
                    })
            })
        })
    }

    /// The kernel for element type `T`.
    pub fn new<T: Element>(op: Op, transfer: Transfer, stages: Stages) -> KernelId {
        KernelId {
            op,
            transfer,
            element: T::DTYPE,
            stages,
        }
    }

    /// The entry point: `ferrocuda_<op>_<transfer>_<element>_s<stages>`.
    pub fn name(&self) -> String {
        let element = match self.element {
            ElementType::F32 => "f32",
            ElementType::Bf16 => "bf16",
            _ => "unsupported", // no kernel is built for other element types
        };
        format!(
            "ferrocuda_{}_{}_{}_s{}",
            self.op.name(),
            self.transfer.name(),
            element,
            self.stages.get()
        )
    }

    /// The entry point of the same kernel under dynamic item order,
    /// `ferrocuda_<op>_dyn_<transfer>_<element>_s<stages>`, for an op that has one
    /// ([`Op::has_dynamic_order`]).
    pub fn dynamic_name(&self) -> Option<String> {
        self.op.has_dynamic_order().then(|| {
            self.name()
                .replacen(self.op.name(), &format!("{}_dyn", self.op.name()), 1)
        })
    }

    /// Dynamic shared memory the kernel needs (its stages and the [`STAGE_ALIGN`] slack),
    /// checked against the per-block limit together with the static part.
    ///
    /// # Errors
    ///
    /// [`Error::SharedMemory`] if it would not fit (it always fits for the built kernels).
    pub fn dynamic_shared_bytes(&self) -> Result<u32> {
        let total = shared_memory_bytes(
            self.stages.get(),
            self.op.tile_bytes(),
            STATIC_SHARED_BYTES + STAGE_ALIGN,
        )?;
        // Fits in u32: below SHARED_MEMORY_PER_BLOCK.
        Ok((total - STATIC_SHARED_BYTES) as u32)
    }
}

/// How the blocks of a copy or transpose share the matrix's work items (row sums always use
/// [`ItemOrder::Fixed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ItemOrder {
    /// Each block takes its next work item from a counter, so a block on a faster SM does more of
    /// them and all blocks finish within about one item of each other. The counter is a pair of
    /// words from a pool the `Kernels` holds (1024 pairs, allocated at load): a launch takes a free
    /// pair, and the pair is free again once the GPU is past the launch. It costs one driver call
    /// per launch (whether the stream captures).
    ///
    /// The launch falls back to [`Fixed`](Self::Fixed) on a stream that captures a graph (the
    /// executables of one graph may run at the same time, and they must not share a counter),
    /// where the grid has fewer than two work items per block (nothing to balance), and while
    /// every pair is held by launches the GPU may not be past yet. Do not begin a capture on a
    /// stream while another thread launches on it: a launch that asked before the capture began
    /// and enqueued after is captured with its pair, which two executables of that graph would
    /// then share (their results could miss tiles).
    #[default]
    Dynamic,
    /// Block `b` takes work items `b`, `b + grid`, `b + 2 grid`, ...: no counter, no extra driver
    /// call, but the whole launch waits for its slowest block.
    Fixed,
}

/// The shape of a row-major matrix in a buffer of elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatrixLayout {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Elements from the start of one row to the next (>= `cols`).
    pub pitch: u32,
}

impl MatrixLayout {
    /// `rows` x `cols`, rows padded to a multiple of 16 bytes of `T` (what every kernel
    /// requires of its source and destination).
    pub fn padded<T: Element>(rows: u32, cols: u32) -> MatrixLayout {
        let per_16 = (16 / T::DTYPE.size()) as u32;
        MatrixLayout {
            rows,
            cols,
            pitch: cols.div_ceil(per_16) * per_16,
        }
    }

    /// `rows` x `cols`, every row starting on a 512-byte boundary, the pitch `cuMemAllocPitch`
    /// gives on Hopper. The layout to allocate when speed matters: with a pitch that is only
    /// 16-byte aligned, every other row starts in the middle of a 32-byte sector, so tiles read
    /// sectors they only partly use and two tiles write the two halves of one sector at
    /// different times; with rows on 128-byte lines but not on 512-byte boundaries, bf16 copies
    /// and transposes of a 23170 x 23170 matrix still ran 5% and 2% slower than with this pitch
    /// (docs/kernels.md, "What ncu showed then", bf16 copy).
    pub fn aligned<T: Element>(rows: u32, cols: u32) -> MatrixLayout {
        let per_512 = (512 / T::DTYPE.size()) as u32;
        MatrixLayout {
            rows,
            cols,
            pitch: cols.div_ceil(per_512) * per_512,
        }
    }

    /// Elements a buffer must hold: `rows * pitch` (every row, the last one too, is a full pitch).
    ///
    /// The cp.async loader reads 16-byte chunks; at the right edge it asks for fewer bytes (the rest
    /// is zero-filled), but compute-sanitizer's memcheck checks the full 16-byte chunk, so a last
    /// row shorter than its pitch is reported out of bounds. Full-pitch buffers, as `cuMemAllocPitch`
    /// makes them, keep every chunk inside the allocation.
    pub fn span(&self) -> u64 {
        u64::from(self.rows) * u64::from(self.pitch)
    }

    /// Checks the layout for `element` and a buffer of `len` elements.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyMatrix`], [`Error::TooLarge`], [`Error::Pitch`] (pitch < cols, or rows not
    /// starting 16-byte aligned) or [`Error::BufferTooSmall`].
    pub fn check(&self, what: &'static str, element: ElementType, len: usize) -> Result<()> {
        let &MatrixLayout { rows, cols, pitch } = self;
        if rows == 0 || cols == 0 {
            return Err(Error::EmptyMatrix { what, rows, cols });
        }
        if rows > i32::MAX as u32 || cols > i32::MAX as u32 {
            return Err(Error::TooLarge { what, rows, cols });
        }
        if pitch < cols || !(u64::from(pitch) * element.size()).is_multiple_of(16) {
            return Err(Error::Pitch {
                what,
                pitch,
                cols,
                elem_bytes: element.size(),
            });
        }
        if (len as u64) < self.span() {
            return Err(Error::BufferTooSmall {
                what,
                needed: self.span(),
                len: len as u64,
            });
        }
        Ok(())
    }
}

/// Whether a variant kernel of `op` at `tile` (rows, bytes per row) with TMA load boxes of
/// `box_rows` rows and `stages` stages is one the op templates build: 16 KiB of whole load boxes
/// (like the built-in tiles), or 32 or 64 KiB for transpose, 4 or 8 KiB for copy, 2 to
/// `max_stages` stages. (Whether
/// the stages fit in shared memory is checked apart.)
#[cfg_attr(not(feature = "launch"), allow(dead_code))] // used by the launchers only
pub(crate) fn variant_tile_ok(
    op: Op,
    tile: (u32, u32),
    box_rows: u32,
    stages: u32,
    max_stages: u32,
) -> bool {
    let (rows, row_bytes) = tile;
    let bytes = u64::from(rows) * u64::from(row_bytes);
    let sizes_ok = bytes == op.tile_bytes()
        || (op == Op::Transpose && (bytes == 2 * op.tile_bytes() || bytes == 4 * op.tile_bytes()))
        || (op == Op::Copy2d && (4 * bytes == op.tile_bytes() || 2 * bytes == op.tile_bytes()));
    rows != 0
        && box_rows != 0
        && rows.is_multiple_of(box_rows)
        && sizes_ok
        && row_bytes.is_multiple_of(op.box_row_bytes())
        && (2..=max_stages).contains(&stages)
}

/// Whether a variant kernel of `op` at `tile` (rows, bytes per row) stores from threads only:
/// the 64 KiB transpose stages (their `Transpose::kTmaStore` is false: a TMA store would hold a
/// lane's whole share of the tile in registers).
#[cfg_attr(not(feature = "launch"), allow(dead_code))] // used by the launchers only
pub(crate) fn stores_from_threads_only(op: Op, tile: (u32, u32)) -> bool {
    op == Op::Transpose && u64::from(tile.0) * u64::from(tile.1) > 2 * op.tile_bytes()
}

/// Whether a variant that stores from threads only (`threads_only`) may run with `store`.
///
/// # Errors
///
/// [`Error::ThreadStores`] for a TMA store of such a variant.
#[cfg_attr(not(feature = "launch"), allow(dead_code))] // used by the launchers only
pub(crate) fn check_store(threads_only: bool, tile: (u32, u32), store: Store) -> Result<()> {
    if threads_only && store != Store::Threads {
        return Err(Error::ThreadStores {
            rows: tile.0,
            row_bytes: tile.1,
        });
    }
    Ok(())
}

/// The refusals of a variant launch on a `shape` (rows, columns) source with `store`, in order: a
/// placement-only variant (`whole_tiles`, square `tile`) takes thread stores on whole tiles only
/// ([`Error::WholeTiles`], also for a TMA store); a thread-stores-only one refuses a TMA store
/// ([`Error::ThreadStores`]).
///
/// # Errors
///
/// As above.
#[cfg_attr(not(feature = "launch"), allow(dead_code))] // used by the launchers only
pub(crate) fn check_variant_launch(
    whole_tiles: bool,
    threads_only: bool,
    tile: (u32, u32),
    shape: (u32, u32),
    store: Store,
) -> Result<()> {
    if whole_tiles {
        // The kernel writes whole tiles unchecked: nothing else may reach it.
        check_whole_tiles(tile.0, shape.0, shape.1, store)?;
    }
    check_store(threads_only, tile, store)
}

/// Whether a placement-only transpose variant of `side` x `side`-element tiles may run on a
/// `rows` x `cols` source with `store`: only with thread stores and whole tiles, because its
/// kernel checks no edges and has no TMA store (the kernels benchmark's `kbv::TileSwap`).
///
/// # Errors
///
/// [`Error::WholeTiles`] otherwise.
#[cfg_attr(not(feature = "launch"), allow(dead_code))] // used by the launchers only
pub(crate) fn check_whole_tiles(side: u32, rows: u32, cols: u32, store: Store) -> Result<()> {
    if store != Store::Threads
        || side == 0
        || !rows.is_multiple_of(side)
        || !cols.is_multiple_of(side)
    {
        return Err(Error::WholeTiles {
            side,
            rows,
            cols,
            store,
        });
    }
    Ok(())
}

/// Blocks to launch: at most `resident` per SM over `sm_count` SMs (the kernels loop over the
/// rest), at least one, and balanced: the fewest blocks that take the same number of rounds
/// (`ceil(items / cap)` work items each, at most) as a full grid would.
///
/// A persistent block walks items b, b + grid, ...; with `items` just above the cap, a full
/// grid leaves most blocks idle for the last round while a few finish it (row sums of 512 row
/// bands on 396 blocks ran 1.29 rounds: 0.81 of the copy bandwidth, against 0.98 on a grid of
/// 512). The balanced grid of 256 blocks runs 2 full rounds in the same time per round.
pub fn grid_size(items: u64, sm_count: u32, resident_per_sm: u32) -> u32 {
    let cap = u64::from(sm_count.max(1)) * u64::from(resident_per_sm.max(1));
    let items = items.max(1);
    let rounds = items.div_ceil(cap);
    items.div_ceil(rounds) as u32 // <= cap, which fits u32 products of small numbers
}

/// Blocks of `id` one SM holds at once, from its shared memory (228 KiB per SM on sm_90, with
/// 1 KiB reserved per block), threads (2048 per SM) and `registers` per thread (64K per SM,
/// allocated per warp in units of 256; 0 when unknown: no register limit).
pub fn resident_per_sm(id: &KernelId, registers: u32) -> u32 {
    resident_per_sm_of(
        id.op.tile_bytes() * u64::from(id.stages.get()) + STAGE_ALIGN,
        registers,
    )
}

/// [`resident_per_sm`] of a pipeline kernel that asks for `dynamic_shared` bytes of dynamic
/// shared memory (its stages and the [`STAGE_ALIGN`] slack).
pub(crate) fn resident_per_sm_of(dynamic_shared: u64, registers: u32) -> u32 {
    const SM_SHARED: u64 = 228 * 1024;
    const RESERVED_PER_BLOCK: u64 = 1024;
    const SM_REGISTERS: u32 = 64 * 1024;
    let per_block = dynamic_shared + STATIC_SHARED_BYTES + RESERVED_PER_BLOCK;
    let by_smem = (SM_SHARED / per_block) as u32;
    let by_threads = 2048 / THREADS_PER_BLOCK;
    let warps_per_block = THREADS_PER_BLOCK / 32;
    let by_registers = match registers {
        0 => u32::MAX,
        r => SM_REGISTERS / (r * 32).next_multiple_of(256) / warps_per_block,
    };
    by_smem.min(by_threads).min(by_registers).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn copies_and_transposes_have_dynamic_order_twins() {
        let dynamic: std::collections::BTreeSet<String> =
            KernelId::all().filter_map(|k| k.dynamic_name()).collect();
        assert_eq!(dynamic.len(), 24);
        assert!(dynamic.contains("ferrocuda_copy2d_dyn_tma_f32_s3"));
        assert!(dynamic.contains("ferrocuda_transpose_dyn_cpasync_bf16_s2"));
        assert!(KernelId::all().all(|k| k.dynamic_name().is_some() == k.op.has_dynamic_order()));
        assert!(!Op::RowSum.has_dynamic_order());
        // Each one's source defines it (the kernels xtask builds checks that ptxas compiled it).
        for (op, src) in [
            (Op::Copy2d, include_str!("../cuda/copy2d.cu")),
            (Op::Transpose, include_str!("../cuda/transpose.cu")),
        ] {
            assert!(
                src.contains(&format!("FERROCUDA_TILE_DYNAMIC_KERNELS({},", op.name())),
                "{op:?}"
            );
        }
    }

    #[test]
    fn there_are_36_kernels_with_distinct_systematic_names() {
        let names: std::collections::BTreeSet<String> = KernelId::all().map(|k| k.name()).collect();
        assert_eq!(names.len(), 36);
        assert!(names.contains("ferrocuda_copy2d_tma_f32_s3"));
        assert!(names.contains("ferrocuda_transpose_cpasync_bf16_s2"));
        assert!(names.contains("ferrocuda_row_sum_tma_f32_s4"));
    }

    #[test]
    fn every_kernel_fits_in_shared_memory() {
        for k in KernelId::all() {
            let bytes = k.dynamic_shared_bytes().expect("built kernels fit");
            assert_eq!(
                u64::from(bytes),
                k.op.tile_bytes() * u64::from(k.stages.get()) + STAGE_ALIGN
            );
        }
    }

    /// The host computes TMA boxes, expected bytes and shared memory from `Op::tile`; the kernels
    /// from their own constants. A mismatch would hang a TMA pipeline (the transaction count
    /// never reaches zero), so the two are compared here.
    #[test]
    fn tile_shapes_match_the_cuda_sources() {
        let constant = |src: &str, name: &str| -> u32 {
            let pat = format!("{name} = ");
            let at = src.find(&pat).map(|i| i + pat.len());
            let digits: String = at
                .map(|i| src[i..].chars().take_while(char::is_ascii_digit).collect())
                .unwrap_or_default();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("no `{name} = <number>` in the source"))
        };
        for op in Op::ALL {
            let path = format!(
                "{}/cuda/include/ferrocuda/{}.cuh",
                env!("CARGO_MANIFEST_DIR"),
                op.name()
            );
            let src = std::fs::read_to_string(&path).expect("the op's CUDA header is readable");
            // `kCopy2dRowsF32 = 8;` ...: the built-in tile of each element type.
            let camel: String = op
                .name()
                .split('_')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            for (e, suffix) in [(ElementType::F32, "F32"), (ElementType::Bf16, "Bf16")] {
                let tile = (
                    constant(&src, &format!("k{camel}Rows{suffix}")),
                    constant(&src, &format!("k{camel}RowBytes{suffix}")),
                );
                assert_eq!(tile, op.tile(e), "{path} {suffix}");
                if op == Op::Copy2d {
                    assert_eq!(constant(&src, "kCopy2dLoadBoxRows"), op.load_box_rows(e));
                }
            }
            assert_eq!(constant(&src, "kBoxRowBytes"), op.box_row_bytes(), "{path}");
        }
        let body = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/cuda/include/ferrocuda/tile_kernel.cuh"
        ))
        .expect("tile_kernel.cuh is readable");
        assert_eq!(
            (constant(&body, "kConsumerWarps") + 1) * 32,
            THREADS_PER_BLOCK
        );
    }

    #[test]
    fn the_four_stage_cp_async_copy_is_capped_under_fixed_order_tma_under_dynamic() {
        for op in Op::ALL {
            for transfer in Transfer::ALL {
                for stages in Stages::ALL {
                    for store in Store::ALL {
                        let capped = op == Op::Copy2d
                            && transfer == Transfer::CpAsync
                            && stages == Stages::FOUR;
                        let want = if capped { Some(1) } else { None };
                        let fixed = ItemOrder::Fixed;
                        assert_eq!(op.max_blocks_per_sm(transfer, stages, store, fixed), want);
                        let dynamic = ItemOrder::Dynamic;
                        let want = match (op, transfer, stages.get()) {
                            (Op::RowSum, _, _) | (_, Transfer::CpAsync, _) => None,
                            (_, Transfer::Tma, 2) => Some(2),
                            _ => Some(1),
                        };
                        assert_eq!(op.max_blocks_per_sm(transfer, stages, store, dynamic), want);
                    }
                }
            }
        }
    }

    #[test]
    fn balanced_grids_run_whole_rounds() {
        // 512 row bands on 132 SMs x 3 blocks: two rounds of 256 blocks, not 1.29 of 396.
        assert_eq!(grid_size(512, 132, 3), 256);
        assert_eq!(grid_size(512, 132, 4), 512);
        assert_eq!(grid_size(725, 132, 3), 363);
        assert_eq!(grid_size(0, 132, 3), 1);
        assert_eq!(grid_size(65_536, 132, 6), 790);
    }

    #[test]
    fn residency_counts_shared_memory_threads_and_registers() {
        let id = |stages| KernelId {
            op: Op::Transpose,
            transfer: Transfer::Tma,
            element: ElementType::F32,
            stages,
        };
        assert_eq!(resident_per_sm(&id(Stages::TWO), 0), 6);
        assert_eq!(resident_per_sm(&id(Stages::THREE), 0), 4);
        assert_eq!(resident_per_sm(&id(Stages::FOUR), 0), 3);
        // 64 registers: 2048 per warp, 32 warps, 6 blocks of 5; 72: 28 warps, 5 blocks.
        assert_eq!(resident_per_sm(&id(Stages::TWO), 64), 6);
        assert_eq!(resident_per_sm(&id(Stages::TWO), 72), 5);
    }

    #[test]
    fn residency_of_deeper_and_wider_rings_counts_their_shared_memory() {
        let kib = 1024;
        // The built-in kernels' count and the byte-count form agree.
        for id in KernelId::all() {
            let bytes = u64::from(id.dynamic_shared_bytes().expect("built kernels fit"));
            assert_eq!(resident_per_sm(&id, 0), resident_per_sm_of(bytes, 0));
        }
        // Sweep variants: 6 and 8 stages of 16 KiB, 2 to 4 stages of 32 KiB.
        assert_eq!(resident_per_sm_of(6 * 16 * kib + STAGE_ALIGN, 0), 2);
        assert_eq!(resident_per_sm_of(8 * 16 * kib + STAGE_ALIGN, 0), 1);
        assert_eq!(resident_per_sm_of(2 * 32 * kib + STAGE_ALIGN, 0), 3);
        assert_eq!(resident_per_sm_of(3 * 32 * kib + STAGE_ALIGN, 0), 2);
        assert_eq!(resident_per_sm_of(4 * 32 * kib + STAGE_ALIGN, 0), 1);
        // 128 registers: 4096 per warp, 16 warps, 3 blocks of 5.
        assert_eq!(resident_per_sm_of(2 * 32 * kib + STAGE_ALIGN, 128), 3);
    }

    #[test]
    fn store_boxes_are_valid_tensor_map_boxes() {
        for op in Op::ALL.into_iter().filter(|op| op.has_tma_store()) {
            for e in [ElementType::F32, ElementType::Bf16] {
                let (r, c, swizzled) = op.store_box(e);
                let mut m = crate::TensorMapBuilder::matrix(e, 0, (1000, 1000), 4096, (r, c));
                if swizzled {
                    m = m.swizzle(crate::Swizzle::B128);
                }
                assert!(m.validate().is_ok(), "{op:?} {e:?}: {:?}", m.validate());
                // The boxes of one tile fill the stage exactly.
                assert_eq!(op.tile_bytes() % m.box_bytes(), 0);
            }
        }
    }

    #[test]
    fn placement_variants_take_only_whole_tiles_and_thread_stores() {
        for side in [64, 128] {
            assert!(check_whole_tiles(side, 2 * side, 3 * side, Store::Threads).is_ok());
            for (rows, cols) in [(2 * side, 3 * side + 8), (side - 1, side), (side, 1)] {
                assert!(matches!(
                    check_whole_tiles(side, rows, cols, Store::Threads),
                    Err(Error::WholeTiles { side: s, rows: r, cols: c, .. })
                        if (s, r, c) == (side, rows, cols)
                ));
            }
            assert!(matches!(
                check_whole_tiles(side, side, side, Store::Tma),
                Err(Error::WholeTiles {
                    store: Store::Tma,
                    ..
                })
            ));
        }
    }

    #[test]
    fn variants_take_16_kib_tiles_copies_4_and_8_kib_and_transposes_32_and_64_kib() {
        let ok = |op, tile, box_rows, stages| variant_tile_ok(op, tile, box_rows, stages, 8);
        assert!(ok(Op::Copy2d, (8, 2048), 1, 4));
        // Smaller copy stages (the grid experiment): 4 and 8 KiB, up to 8 stages.
        assert!(ok(Op::Copy2d, (4, 2048), 1, 8));
        assert!(ok(Op::Copy2d, (2, 2048), 1, 8));
        assert!(!ok(Op::Copy2d, (1, 2048), 1, 8));
        assert!(!ok(Op::Copy2d, (3, 2048), 1, 8));
        assert!(!ok(Op::RowSum, (4, 2048), 1, 4));
        assert!(!ok(Op::Transpose, (32, 256), 32, 4));
        assert!(ok(Op::Transpose, (64, 256), 64, 4));
        assert!(ok(Op::Transpose, (128, 256), 128, 4));
        // 64 KiB stages: 128 x 512 B, at 2 and 3 stages (the shared memory decides the rest).
        assert!(ok(Op::Transpose, (128, 512), 128, 2));
        assert!(ok(Op::Transpose, (128, 512), 128, 3));
        // Only transposes take more than 16 KiB, and nothing takes 128 KiB or other sizes.
        assert!(!ok(Op::Copy2d, (16, 4096), 1, 2));
        assert!(!ok(Op::RowSum, (128, 512), 128, 2));
        assert!(!ok(Op::Transpose, (256, 512), 256, 2));
        assert!(!ok(Op::Transpose, (96, 512), 96, 2));
        // Whole boxes, and 2 to 8 stages.
        assert!(!ok(Op::Transpose, (128, 512), 96, 2));
        assert!(!ok(Op::Transpose, (128, 512), 0, 2));
        assert!(!ok(Op::Transpose, (128, 512), 128, 1));
        assert!(!ok(Op::Transpose, (128, 512), 128, 9));
        // Three 64 KiB stages and the alignment slack fit a block; four do not.
        let fits = |stages| {
            shared_memory_bytes(stages, 64 * 1024, STATIC_SHARED_BYTES + STAGE_ALIGN).is_ok()
        };
        assert!(fits(3) && !fits(4));
    }

    #[test]
    fn sixty_four_kib_transposes_store_from_threads_only() {
        assert!(stores_from_threads_only(Op::Transpose, (128, 512)));
        for (op, tile) in [
            (Op::Transpose, (64, 256)),
            (Op::Transpose, (128, 128)),
            (Op::Transpose, (128, 256)),
            (Op::Copy2d, (8, 2048)),
        ] {
            assert!(!stores_from_threads_only(op, tile), "{op:?} {tile:?}");
        }
        assert!(check_store(true, (128, 512), Store::Threads).is_ok());
        assert!(matches!(
            check_store(true, (128, 512), Store::Tma),
            Err(Error::ThreadStores {
                rows: 128,
                row_bytes: 512
            })
        ));
        for store in Store::ALL {
            assert!(check_store(false, (64, 256), store).is_ok());
        }
    }

    #[test]
    fn a_placement_only_64_kib_variant_is_refused_as_placement_only_first() {
        let (tile, whole) = ((128, 512), (256, 384));
        for store in Store::ALL {
            let r = check_variant_launch(true, true, tile, (257, 384), store);
            assert!(
                matches!(r, Err(Error::WholeTiles { side: 128, .. })),
                "{r:?}"
            );
        }
        assert!(matches!(
            check_variant_launch(true, true, tile, whole, Store::Tma),
            Err(Error::WholeTiles {
                store: Store::Tma,
                ..
            })
        ));
        assert!(check_variant_launch(true, true, tile, whole, Store::Threads).is_ok());
        // Not placement-only: any shape, thread stores only.
        assert!(check_variant_launch(false, true, tile, (257, 385), Store::Threads).is_ok());
        assert!(matches!(
            check_variant_launch(false, true, tile, whole, Store::Tma),
            Err(Error::ThreadStores { .. })
        ));
        assert!(check_variant_launch(false, false, (64, 256), (1, 1), Store::Tma).is_ok());
    }

    #[test]
    fn one_block_of_a_64_kib_ring_fits_an_sm() {
        let kib = 1024;
        for stages in [2, 3] {
            assert_eq!(resident_per_sm_of(stages * 64 * kib + STAGE_ALIGN, 0), 1);
        }
        // A 16384 x 16384 f32 matrix in 128 x 128 tiles on 132 SMs: one block per SM.
        assert_eq!(grid_size(128 * 128, 132, 1), 132);
    }

    #[test]
    fn stages_outside_2_to_4_are_refused() {
        for s in [0, 1, 5, 100] {
            assert!(matches!(Stages::new(s), Err(Error::Stages { stages }) if stages == s));
        }
        for s in 2..=4 {
            assert_eq!(Stages::new(s).map(Stages::get).ok(), Some(s));
        }
    }

    #[test]
    fn tma_boxes_of_every_op_are_valid_tensor_map_boxes() {
        for op in Op::ALL {
            for e in [ElementType::F32, ElementType::Bf16] {
                let (r, c) = op.load_box(op.load_box_rows(e), e);
                let m = crate::TensorMapBuilder::matrix(e, 0, (1000, 1000), 4096, (r, c));
                assert!(m.validate().is_ok(), "{op:?} {e:?}: {:?}", m.validate());
                // The boxes of one tile fill its stage: what the full barrier expects.
                let (rows, row_bytes) = op.tile(e);
                let boxes = u64::from(rows / r) * u64::from(row_bytes / op.box_row_bytes());
                assert_eq!(rows % r, 0);
                assert_eq!(m.box_bytes() * boxes, op.tile_bytes());
            }
        }
    }

    proptest! {
        #[test]
        fn padded_layouts_pass_and_unpadded_pitches_fail(rows in 1u32..5000, cols in 1u32..5000) {
            let l = MatrixLayout::padded::<f32>(rows, cols);
            prop_assert!(l.check("m", ElementType::F32, l.span() as usize).is_ok());
            prop_assert!(matches!(
                l.check("m", ElementType::F32, l.span() as usize - 1),
                Err(Error::BufferTooSmall { .. })
            ), "a buffer one element short was accepted");
            let b = MatrixLayout::padded::<half::bf16>(rows, cols);
            prop_assert!(b.check("m", ElementType::Bf16, b.span() as usize).is_ok());
            prop_assert_eq!(b.pitch % 8, 0);
            if cols % 4 != 0 {
                let bad = MatrixLayout { pitch: cols, ..l };
                prop_assert!(
                    matches!(bad.check("m", ElementType::F32, usize::MAX), Err(Error::Pitch { .. })),
                    "pitch {} accepted", cols
                );
            }
            let short = MatrixLayout { pitch: cols - 1, ..l };
            prop_assert!(
                matches!(short.check("m", ElementType::F32, usize::MAX), Err(Error::Pitch { .. })),
                "short pitch accepted"
            );
        }

        #[test]
        fn aligned_layouts_start_rows_on_512_byte_boundaries(rows in 1u32..5000, cols in 1u32..5000) {
            let l = MatrixLayout::aligned::<f32>(rows, cols);
            prop_assert!(l.check("m", ElementType::F32, l.span() as usize).is_ok());
            prop_assert_eq!(l.pitch % 128, 0);
            prop_assert!(l.pitch >= cols && l.pitch < cols + 128);
            let b = MatrixLayout::aligned::<half::bf16>(rows, cols);
            prop_assert!(b.check("m", ElementType::Bf16, b.span() as usize).is_ok());
            prop_assert_eq!(b.pitch % 256, 0);
            prop_assert!(b.pitch >= cols && b.pitch < cols + 256);
        }

        #[test]
        fn grid_is_between_one_and_the_resident_cap(
            items in 0u64..1 << 40,
            sms in 1u32..200,
            regs in 0u32..256,
        ) {
            for id in KernelId::all() {
                let per = resident_per_sm(&id, regs);
                let g = grid_size(items, sms, per);
                let cap = u64::from(sms) * u64::from(per);
                prop_assert!(g >= 1 && u64::from(g) <= cap);
                prop_assert!(u64::from(g) <= items.max(1));
                // Balanced: as few rounds as the full grid, and no more than one item apart.
                let rounds = items.max(1).div_ceil(u64::from(g));
                prop_assert_eq!(rounds, items.max(1).div_ceil(cap));
            }
        }
    }
}
