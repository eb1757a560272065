//! Safe launchers over `ferrocuda-driver` buffers and streams (feature `launch`).

use crate::cubins;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::gate::FusedGate;
use crate::kernel::{
    ItemOrder, KernelId, MatrixLayout, Op, STAGE_ALIGN, STATIC_SHARED_BYTES, Stages, Store,
    THREADS_PER_BLOCK, Transfer, check_variant_launch, grid_size, resident_per_sm,
    resident_per_sm_of, stores_from_threads_only, variant_tile_ok,
};
use crate::tensor_map::{L2Promotion, Swizzle, TensorMap, TensorMapBuilder, shared_memory_bytes};
use ferrocuda_driver::{
    Device, DeviceBuffer, DeviceStream, Function, LaunchArgs, LaunchConfig, Module,
};
use ferrocuda_sys::{CUdevice_attribute, CUfunction_attribute};
use std::num::NonZeroU32;

/// Threads per block of the gated kernels.
const GATED_THREADS_PER_BLOCK: u32 = 256;

/// How to run a pipeline kernel: the transfer (barrier handler), the ring's depth, how output
/// tiles are stored, how blocks share the work items and, rarely, a cap on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pipeline {
    /// How tiles are loaded.
    pub transfer: Transfer,
    /// Stages in flight.
    pub stages: Stages,
    /// How copy and transpose store their output tiles (row sums ignore it).
    pub store: Store,
    /// At most this many blocks (`None`: as many as the SMs hold at once, at most one per work
    /// item). The grid is persistent, so fewer blocks each walk more work items through their
    /// ring; tests use a single block to make every stage be reused on a small matrix.
    pub max_blocks: Option<NonZeroU32>,
    /// How blocks share the work items of a copy or transpose.
    pub item_order: ItemOrder,
}

impl Pipeline {
    /// `transfer` with `stages` stages, TMA stores, the grid sized for the device, dynamic item
    /// order.
    pub const fn new(transfer: Transfer, stages: Stages) -> Pipeline {
        Pipeline {
            transfer,
            stages,
            store: Store::Tma,
            max_blocks: None,
            item_order: ItemOrder::Dynamic,
        }
    }

    /// This pipeline with work items shared by `item_order`.
    pub const fn with_item_order(self, item_order: ItemOrder) -> Pipeline {
        Pipeline { item_order, ..self }
    }

    /// This pipeline with output tiles stored by `store`.
    pub const fn with_store(self, store: Store) -> Pipeline {
        Pipeline { store, ..self }
    }

    /// This pipeline with the grid capped at `max_blocks` blocks.
    pub const fn with_max_blocks(self, max_blocks: NonZeroU32) -> Pipeline {
        Pipeline {
            max_blocks: Some(max_blocks),
            ..self
        }
    }
}

impl Default for Pipeline {
    /// TMA, three stages.
    fn default() -> Pipeline {
        Pipeline::new(Transfer::Tma, Stages::THREE)
    }
}

/// A loaded kernel and the blocks of it one SM holds.
type Resolved = (Function, u32);

/// Counter pairs of dynamic-order launches (two words each) that [`Kernels`] holds.
const COUNTER_SLOTS: u32 = 1024;

/// The counters of dynamic-order launches: [`COUNTER_SLOTS`] pairs of words in one device buffer,
/// zero when free. A launch takes a free pair; its kernel's last block sets the pair back to zero;
/// the pair becomes free again once the GPU is past the launch ([`SlotHold`] is dropped behind the
/// reclaimer's fence). So no two launches that may run at the same time share a pair, and each
/// starts from zero.
struct CounterSlots {
    buf: DeviceBuffer<u32>,
    pool: SlotPool,
}

impl CounterSlots {
    /// The buffer, zeroed on a stream of the crate's own that this waits for, up to `timeout`
    /// (before any launch can use it).
    fn new(device: &Device, slots: u32, timeout: std::time::Duration) -> Result<CounterSlots> {
        let stream = device.new_stream()?;
        let buf = stream.alloc_zeroed::<u32>(2 * slots.max(1) as usize)?;
        stream.synchronize_timeout(timeout)?;
        Ok(CounterSlots {
            buf,
            pool: SlotPool::new(slots),
        })
    }
}

/// The free slots `0..n` of a pool: taken one at a time, each back when its [`SlotHold`] drops.
struct SlotPool(std::sync::Arc<std::sync::Mutex<Vec<u32>>>);

impl SlotPool {
    fn new(n: u32) -> SlotPool {
        SlotPool(std::sync::Arc::new(std::sync::Mutex::new(
            (0..n).rev().collect(),
        )))
    }

    /// How many slots are free.
    fn free(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// A free slot, or `None` if every one is held.
    fn take(&self) -> Option<SlotHold> {
        // The lock guards a Vec only (nothing under it calls the driver or user code); a poisoned
        // one (a panic inside cannot leave the Vec half changed) is used as is.
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(SlotHold {
            slot,
            free: self.0.clone(),
        })
    }
}

/// One slot of a [`SlotPool`], held; dropping it frees the slot.
struct SlotHold {
    slot: u32,
    free: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
}

impl Drop for SlotHold {
    fn drop(&mut self) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.slot);
    }
}

/// The pipeline kernels, loaded on one device.
///
/// Loading happens once, in [`Kernels::load`]: module loads wait behind streams that wait on host
/// values (see the driver crate), so load before any such wait exists.
pub struct Kernels {
    // Keeps the functions' code loaded.
    _modules: Vec<Module>,
    /// Each kernel, and the blocks of it one SM holds (shared memory, threads, registers); and the
    /// same for its dynamic-order twin where the op has one.
    functions: Vec<(KernelId, Function, u32, Option<Resolved>)>,
    /// `cuda/gated.cu`'s `ferrocuda_gated_scale_f32`.
    gated_scale_f32: Function,
    /// The counters of dynamic-order launches.
    counters: CounterSlots,
    sm_count: u32,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernels")
            .field("kernels", &self.functions.len())
            .field("sm_count", &self.sm_count)
            .finish()
    }
}

impl Kernels {
    /// Loads the cubins on `device`, resolves all 36 pipeline kernels and the 24 dynamic-order
    /// twins of the copies and transposes (raising each one's dynamic shared-memory limit to what
    /// its stages need) and the gated kernels, and allocates the counters of dynamic-order launches
    /// (8 KiB, zeroed on a stream of its own, which it waits for).
    ///
    /// # Errors
    ///
    /// [`Error::NoCubins`] in a docs.rs build, [`Error::Launch`] if the driver refuses a module,
    /// a function or the attribute.
    pub fn load(device: &Device) -> Result<Kernels> {
        Self::load_timeout(device, ferrocuda_driver::DEFAULT_LOAD_TIMEOUT)
    }

    /// [`load`](Self::load), giving each module load up to `timeout` (a load waits behind any
    /// stream of the device that waits on a host value: load before enqueueing such waits).
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load); [`Error::Launch`] with a timeout if a module did not load in time.
    pub fn load_timeout(device: &Device, timeout: std::time::Duration) -> Result<Kernels> {
        Self::load_with_counter_slots(device, timeout, COUNTER_SLOTS)
    }

    /// [`load_timeout`](Self::load_timeout) with `slots` counter pairs for dynamic-order launches
    /// instead of 1024 (tests run the pool dry with few). Not a stable API.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    #[doc(hidden)]
    pub fn load_with_counter_slots(
        device: &Device,
        timeout: std::time::Duration,
        slots: u32,
    ) -> Result<Kernels> {
        if !cubins::available() {
            return Err(Error::NoCubins);
        }
        let sm_count = device
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            .max(1) as u32;
        let mut modules = Vec::new();
        let mut functions = Vec::new();
        for op in Op::ALL {
            let image = match op {
                Op::Copy2d => cubins::COPY2D,
                Op::Transpose => cubins::TRANSPOSE,
                Op::RowSum => cubins::ROW_SUM,
            };
            let module = Module::from_cubin_timeout(device, image, timeout)?;
            for id in KernelId::all().filter(|k| k.op == op) {
                let resolve = |name: &str| -> Result<(Function, u32)> {
                    let f = module.function(name)?;
                    f.set_max_dynamic_shared_memory(id.dynamic_shared_bytes()?)?;
                    let registers =
                        f.attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS)?;
                    let resident = resident_per_sm(&id, u32::try_from(registers).unwrap_or(0));
                    Ok((f, resident))
                };
                let (f, resident) = resolve(&id.name())?;
                let dynamic = id.dynamic_name().map(|n| resolve(&n)).transpose()?;
                functions.push((id, f, resident, dynamic));
            }
            modules.push(module);
        }
        let gated = Module::from_cubin_timeout(device, cubins::GATED, timeout)?;
        let gated_scale_f32 = gated.function("ferrocuda_gated_scale_f32")?;
        modules.push(gated);
        Ok(Kernels {
            _modules: modules,
            functions,
            gated_scale_f32,
            counters: CounterSlots::new(device, slots, timeout)?,
            sm_count,
        })
    }

    /// How many counter pairs for dynamic-order launches are free now: none while every pair is
    /// held by a launch the GPU may not be past yet. Not a stable API (tests watch the pool).
    #[doc(hidden)]
    pub fn free_counter_slots(&self) -> usize {
        self.counters.pool.free()
    }

    /// The kernel `id`, the blocks of it an SM holds, and its dynamic-order twin (likewise).
    fn function(&self, id: &KernelId) -> (&Function, u32, Option<(&Function, u32)>) {
        self.functions
            .iter()
            .find(|(k, _, _, _)| k == id)
            .map(|(_, f, resident, dynamic)| (f, *resident, dynamic.as_ref().map(|(g, r)| (g, *r))))
            // Invariant: `load` resolved every id `KernelId::all` yields, and ids come from there.
            .expect("every kernel id was resolved by Kernels::load")
    }

    /// `dst = src`, element by element, for a `src_layout.rows` x `src_layout.cols` matrix;
    /// `dst_pitch` is the destination's row pitch in elements.
    ///
    /// # Errors
    ///
    /// A layout error ([`Error::Pitch`], [`Error::BufferTooSmall`], ...) or tensor-map error
    /// before anything is enqueued; [`Error::Launch`] if the launch fails.
    pub fn copy_2d<T: Element>(
        &self,
        stream: &DeviceStream,
        pipeline: Pipeline,
        src: &DeviceBuffer<T>,
        src_layout: MatrixLayout,
        dst: &mut DeviceBuffer<T>,
        dst_pitch: u32,
    ) -> Result<()> {
        let dst_layout = MatrixLayout {
            pitch: dst_pitch,
            ..src_layout
        };
        self.launch::<T, T>(
            stream,
            Op::Copy2d,
            pipeline,
            src,
            src_layout,
            dst,
            dst_layout,
        )
    }

    /// `dst[c][r] = src[r][c]`: `dst` is `src_layout.cols` x `src_layout.rows` with row pitch
    /// `dst_pitch` elements.
    ///
    /// # Errors
    ///
    /// As [`copy_2d`](Self::copy_2d).
    pub fn transpose<T: Element>(
        &self,
        stream: &DeviceStream,
        pipeline: Pipeline,
        src: &DeviceBuffer<T>,
        src_layout: MatrixLayout,
        dst: &mut DeviceBuffer<T>,
        dst_pitch: u32,
    ) -> Result<()> {
        let dst_layout = MatrixLayout {
            rows: src_layout.cols,
            cols: src_layout.rows,
            pitch: dst_pitch,
        };
        self.launch::<T, T>(
            stream,
            Op::Transpose,
            pipeline,
            src,
            src_layout,
            dst,
            dst_layout,
        )
    }

    /// `dst[r] = sum over c of src[r][c]`, accumulated in f32; `dst` holds at least
    /// `src_layout.rows` values.
    ///
    /// # Errors
    ///
    /// As [`copy_2d`](Self::copy_2d).
    pub fn row_sum<T: Element>(
        &self,
        stream: &DeviceStream,
        pipeline: Pipeline,
        src: &DeviceBuffer<T>,
        src_layout: MatrixLayout,
        dst: &mut DeviceBuffer<f32>,
    ) -> Result<()> {
        // One row of `rows` f32, its pitch rounded up to 16 bytes to pass the shared pitch rule;
        // `launch` asks only for `rows` values of the buffer.
        let dst_layout = MatrixLayout {
            rows: 1,
            cols: src_layout.rows,
            pitch: src_layout.rows.next_multiple_of(4),
        };
        self.launch::<T, f32>(
            stream,
            Op::RowSum,
            pipeline,
            src,
            src_layout,
            dst,
            dst_layout,
        )
    }

    /// `dst[i] = a * src[i]` for every element of `src`, once `gate` opens: the kernel waits for
    /// the flag in its own prologue ([`FusedGate`], `ferrocuda::wait_flag` of
    /// `cuda/include/ferrocuda/gate.cuh`), so no launch sits between the host's signal and the
    /// work, and it starts sooner than behind a driver wait (`docs/hardware-facts.md` in the
    /// repository has the measured figures).
    ///
    /// The grid has one block of 256 threads per 256 elements, at most one block per SM (each
    /// block polls while it waits: one poller per SM at most). If the flag is aborted, or the
    /// gate's time limit passes, a block writes nothing; an expiry adds 1 per block that gave up
    /// to the gate's counter. The stream goes on after the kernel either way.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`] if `dst` is shorter than `src`, [`Error::TooLong`] for more than
    /// `u32::MAX` elements, before anything is enqueued; [`Error::Launch`] if the launch fails.
    pub fn gated_scale_f32(
        &self,
        stream: &DeviceStream,
        gate: FusedGate<'_>,
        src: &DeviceBuffer<f32>,
        dst: &mut DeviceBuffer<f32>,
        a: f32,
    ) -> Result<()> {
        let n = u32::try_from(src.len()).map_err(|_| Error::TooLong {
            what: "source",
            len: src.len() as u64,
        })?;
        if dst.len() < src.len() {
            return Err(Error::BufferTooSmall {
                what: "destination",
                needed: src.len() as u64,
                len: dst.len() as u64,
            });
        }
        let threads = GATED_THREADS_PER_BLOCK;
        // At least one block: with no elements the kernel still gates the stream.
        let blocks = n.div_ceil(threads).clamp(1, self.sm_count);
        let cfg = LaunchConfig {
            grid: (blocks, 1, 1),
            block: (threads, 1, 1),
            shared_mem_bytes: 0,
            cluster: None,
        };
        let gate = gate.params();
        let mut args = LaunchArgs::new();
        gate.push(&mut args);
        args.arg(src).arg(dst).arg(&n).arg(&a);
        // SAFETY: the arguments match cuda/gated.cu's ferrocuda_gated_scale_f32(const u64* flag,
        // u64 value, u32 cond, u64 timeout_ns, u64* expired, const float* src, float* dst, u32 n,
        // float a). The flag and the counter are passed as resources (8-byte slots of mapped
        // pinned memory, kept alive by the launch; a `CompletionFlagRef::from_address` is valid
        // by its creator's promise); the counter is written only when a time limit is set, and
        // then it is a real slot. The kernel reads `n` elements of `src` and writes `n` of `dst`,
        // which holds at least `n`; both are resources of the stream's device (checked by the
        // launch), kept alive until it has run.
        unsafe { stream.launch(&self.gated_scale_f32, cfg, &mut args)? };
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one private funnel for the three public launchers
    fn launch<T: Element, U: Element>(
        &self,
        stream: &DeviceStream,
        op: Op,
        pipeline: Pipeline,
        src: &DeviceBuffer<T>,
        src_layout: MatrixLayout,
        dst: &mut DeviceBuffer<U>,
        dst_layout: MatrixLayout,
    ) -> Result<()> {
        let id = KernelId::new::<T>(op, pipeline.transfer, pipeline.stages);
        let (function, resident, dynamic) = self.function(&id);
        let spec = Spec {
            op,
            tile: op.tile(T::DTYPE),
            box_rows: op.load_box_rows(T::DTYPE),
            function,
            shared: id.dynamic_shared_bytes()?,
            resident,
            dynamic,
            builtin: true,
            promotion: op.l2_promotion(T::DTYPE),
        };
        self.launch_spec(stream, spec, pipeline, src, src_layout, dst, dst_layout)
    }

    /// The launch of any kernel generated by `FERROCUDA_TILE_ENTRY_POINTS`: `spec` says which
    /// function, of which op and tile shape.
    #[allow(clippy::too_many_arguments)] // the funnel under `launch` and `launch_variant`
    fn launch_spec<T: Element, U: Element>(
        &self,
        stream: &DeviceStream,
        spec: Spec<'_>,
        pipeline: Pipeline,
        src: &DeviceBuffer<T>,
        src_layout: MatrixLayout,
        dst: &mut DeviceBuffer<U>,
        dst_layout: MatrixLayout,
    ) -> Result<()> {
        let op = spec.op;
        src_layout.check("source", T::DTYPE, src.len())?;
        // The shape and pitch rules; the length is checked below.
        dst_layout.check("destination", U::DTYPE, usize::MAX)?;
        // Row sums write one f32 per source row and read nothing back: `rows` values suffice,
        // whatever the pitch their one-row layout is given. Copies and transposes need the
        // full-pitch span.
        let dst_needed = match op {
            Op::RowSum => u64::from(dst_layout.cols),
            Op::Copy2d | Op::Transpose => dst_layout.span(),
        };
        if (dst.len() as u64) < dst_needed {
            return Err(Error::BufferTooSmall {
                what: "destination",
                needed: dst_needed,
                len: dst.len() as u64,
            });
        }
        let shared = spec.shared;
        // The addresses come from the driver crate's use path: it checks the buffers' device
        // against the stream's and records their use on it (the tensor map holds `src`'s).
        // One operation for both (one capture question); it ends before the launch, which is an
        // operation of its own.
        let (src_addr, dst_addr) = {
            let mut op = stream.external_op("Kernels::launch", None)?;
            let addrs = (op.buffer(src)?, op.buffer(dst)?);
            op.finish()?;
            addrs
        };
        let map = match pipeline.transfer {
            Transfer::Tma => {
                let (box_rows, box_cols) = op.load_box(spec.box_rows, T::DTYPE);
                Some(
                    TensorMapBuilder::matrix(
                        T::DTYPE,
                        src_addr,
                        (u64::from(src_layout.rows), u64::from(src_layout.cols)),
                        u64::from(src_layout.pitch) * T::DTYPE.size(),
                        (box_rows, box_cols),
                    )
                    .l2_promotion(spec.promotion)
                    .encode()?,
                )
            }
            Transfer::CpAsync => {
                if !src_addr.is_multiple_of(16) {
                    return Err(Error::UnalignedAddress { address: src_addr });
                }
                None
            }
        };
        if !dst_addr.is_multiple_of(16) {
            return Err(Error::UnalignedAddress { address: dst_addr });
        }
        // The destination map of a TMA store, validated like the source's; an unused zeroed map
        // otherwise (the kernel reads it only when `tma_store` is 1).
        // The copy engine clips a store box at the destination's bounds in whole 16-byte pieces
        // of a row (seen on an H200: a 1 x 1 f32 matrix got 3 zeros after its element), so TMA
        // stores are used only where a destination row is a whole number of 16-byte pieces;
        // other widths are stored by the consumer threads, which write nothing past `cols`.
        let tma_store = op.has_tma_store()
            && pipeline.store == Store::Tma
            && (u64::from(dst_layout.cols) * U::DTYPE.size()).is_multiple_of(16);
        let dst_map = if tma_store {
            let (box_rows, box_cols, swizzled) = op.store_box_of(spec.tile, U::DTYPE);
            TensorMapBuilder::matrix(
                U::DTYPE,
                dst_addr,
                (u64::from(dst_layout.rows), u64::from(dst_layout.cols)),
                u64::from(dst_layout.pitch) * U::DTYPE.size(),
                (box_rows, box_cols),
            )
            .swizzle(if swizzled {
                Swizzle::B128
            } else {
                Swizzle::None
            })
            .encode()?
        } else {
            <TensorMap as bytemuck::Zeroable>::zeroed()
        };
        let tma_store = u32::from(tma_store);
        let items = op.work_items_of(spec.tile, T::DTYPE, src_layout.rows, src_layout.cols);
        if items > u64::from(u32::MAX) {
            return Err(Error::TooLarge {
                what: "source",
                rows: src_layout.rows,
                cols: src_layout.cols,
            });
        }
        let store = if tma_store != 0 {
            Store::Tma
        } else {
            Store::Threads
        };
        // The grid of `resident` blocks per SM, capped as the op and the caller say.
        let grid_of = |mut resident: u32, order: ItemOrder| {
            if spec.builtin
                && let Some(cap) =
                    op.max_blocks_per_sm(pipeline.transfer, pipeline.stages, store, order)
            {
                resident = resident.min(cap);
            }
            let grid = grid_size(items, self.sm_count, resident);
            pipeline.max_blocks.map_or(grid, |cap| grid.min(cap.get()))
        };
        // Dynamic item order where the kernel has it and the grid has work to balance, with a free
        // counter pair; not under capture (see `ItemOrder::Dynamic`).
        let mut hold = None;
        let (mut function, mut grid) = (spec.function, grid_of(spec.resident, ItemOrder::Fixed));
        if let Some((f, resident)) = spec.dynamic {
            let g = grid_of(resident, ItemOrder::Dynamic);
            if dynamic_order(op, pipeline.item_order, items, g)
                && !stream.is_capturing()?
                && let Some(h) = self.counters.pool.take()
            {
                hold = Some(h);
                (function, grid) = (f, g);
            }
        }
        let cfg = LaunchConfig {
            grid: (grid, 1, 1),
            block: (THREADS_PER_BLOCK, 1, 1),
            shared_mem_bytes: shared,
            cluster: None,
        };

        let (rows, cols) = (src_layout.rows, src_layout.cols);
        let (src_pitch, dst_pitch) = (src_layout.pitch, dst_layout.pitch);
        let mut args = LaunchArgs::new();
        if let Some(map) = &map {
            args.arg(map);
        }
        args.arg(&dst_map)
            .arg(src)
            .arg(dst)
            .arg(&rows)
            .arg(&cols)
            .arg(&src_pitch)
            .arg(&dst_pitch)
            .arg(&tma_store);
        let slot = hold.as_ref().map_or(0, |h| h.slot);
        if hold.is_some() {
            args.arg(&self.counters.buf).arg(&slot);
        }
        // SAFETY: the arguments match the entry point's signature, generated by
        // FERROCUDA_TILE_ENTRY_POINTS in cuda/include/ferrocuda/tile_kernel.cuh: (for TMA) the source
        // CUtensorMap by value, then the destination CUtensorMap by value, then (const void* src,
        // void* dst, u32 rows, u32 cols, u32 src_pitch, u32 dst_pitch, u32 tma_store); a
        // dynamic-order twin (FERROCUDA_TILE_DYNAMIC_ENTRY_POINTS, with `hold`) takes
        // `u32* counter_slots, u32 slot` last: the counter buffer and the pair this launch holds,
        // inside it (slot < COUNTER_SLOTS); the pair is zero (free pairs are), no launch the GPU
        // may not be past holds it, and the buffer lives as long as `self` (the launch keeps it
        // alive too); the kernel's atomics stay inside the pair and it touches the same tiles,
        // each once, only in another order. Both
        // layouts were checked against their buffers above, so every element the kernel reads
        // (rows x cols of `src` at `src_pitch`; the source map describes the same region) or
        // writes (`dst_layout`; the destination map describes exactly that region and the copy
        // engine clips its boxes to it) lies inside the two buffers, whose rows start 16-byte
        // aligned; the kernel never touches columns past `cols` (a placement-only variant, which
        // checks no edges, reaches here only on whole tiles: `launch_variant` checked that, and
        // the destination's rows and columns are the source's columns and rows, multiples of the
        // tile side as well; a TMA bulk-copy variant, `kbv::BulkCopy`, reads whole tile rows with
        // bulk copies only for tiles wholly inside the source, and edge tiles through the source
        // map). The destination map is read only
        // when `tma_store` is 1, and then it was encoded above. The stream keeps the buffers named
        // in `args` alive until the kernel has run.
        unsafe { stream.launch(function, cfg, &mut args)? };
        // The pair is free again once the GPU is past every launch enqueued so far, this one
        // included (its last block has set the pair back to zero by then). A launch that failed
        // returned above and freed the pair at once: nothing was enqueued.
        if let Some(h) = hold {
            ferrocuda_driver::defer_drop(h);
        }
        Ok(())
    }
}

/// Whether a launch of `op` with `items` work items on `grid` blocks takes its items from a
/// counter: asked for, a copy or transpose, and at least two items per block.
fn dynamic_order(op: Op, order: ItemOrder, items: u64, grid: u32) -> bool {
    order == ItemOrder::Dynamic && op != Op::RowSum && items >= 2 * u64::from(grid)
}

/// What the launch funnel needs to know of a pipeline kernel beyond its [`KernelId`].
#[derive(Clone, Copy)]
struct Spec<'a> {
    op: Op,
    /// (rows, bytes per row) of the tile one stage holds.
    tile: (u32, u32),
    /// Rows of one TMA load box.
    box_rows: u32,
    function: &'a Function,
    /// Dynamic shared memory of a block (its stages and the alignment slack), in bytes.
    shared: u32,
    /// Blocks of the function one SM holds.
    resident: u32,
    /// The same kernel under dynamic item order, and the blocks of it one SM holds (`None`: the
    /// op or the variant has none).
    dynamic: Option<(&'a Function, u32)>,
    /// A built-in kernel: `Op::max_blocks_per_sm` applies (variants run on the grid asked for).
    builtin: bool,
    /// L2 promotion of the source tensor map's loads (TMA).
    promotion: L2Promotion,
}

/// A pipeline kernel built from the same op templates at another tile shape, in a cubin of the
/// caller's (the kernels benchmark's sweeps: `bench/raw/kernel_variants.cuh` in the
/// repository). Not a stable API.
#[doc(hidden)]
pub struct Variant {
    function: Function,
    op: Op,
    element: crate::element::ElementType,
    transfer: Transfer,
    tile: (u32, u32),
    box_rows: u32,
    shared: u32,
    resident: u32,
    /// A placement-only transpose ([`Kernels::placement_variant`]): launched only with thread
    /// stores on whole tiles.
    whole_tiles: bool,
    /// A kernel without TMA stores (64 KiB transpose stages, [`Variant::thread_stores_only`]):
    /// launched only with thread stores.
    threads_only: bool,
}

impl Variant {
    /// This variant, launched only with [`Store::Threads`] (a TMA store is refused with
    /// [`Error::ThreadStores`]): for kernels whose op has no TMA store (the kernels benchmark's
    /// copy with TMA bulk-copy loads, `kbv::BulkCopy`, whose dense stage is not the layout the
    /// copy's TMA store reads).
    #[doc(hidden)]
    pub fn thread_stores_only(self) -> Variant {
        Variant {
            threads_only: true,
            ..self
        }
    }
}

/// The deepest ring a [`Variant`] may have.
const VARIANT_MAX_STAGES: u32 = 8;

impl Kernels {
    /// Resolves `name` in `module` as a kernel of `op` for `T` at `tile` (rows, bytes per row)
    /// with TMA load boxes of `box_rows` rows, generated by `FERROCUDA_TILE_ENTRY_POINTS` with
    /// `transfer` and `stages` (2 to 8: variants may be deeper than the built-in kernels). The
    /// tile must hold 16 KiB, like the built-in ones, or 32 or 64 KiB (transpose only), be whole
    /// load boxes wide and whole boxes high, and its stages must fit in a block's shared memory.
    /// A 64 KiB transpose stores from threads only: [`launch_variant`](Self::launch_variant)
    /// refuses it a TMA store.
    ///
    /// # Errors
    ///
    /// [`Error::Variant`] for a tile or depth the templates do not build; [`Error::SharedMemory`]
    /// if the stages do not fit; [`Error::Launch`] if the function is missing or its attributes
    /// cannot be read or set.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)] // a benchmark hook: what names a variant kernel
    pub fn variant<T: Element>(
        &self,
        module: &Module,
        name: &str,
        op: Op,
        transfer: Transfer,
        stages: u32,
        tile: (u32, u32),
        box_rows: u32,
    ) -> Result<Variant> {
        let (rows, row_bytes) = tile;
        let tile_bytes = u64::from(rows) * u64::from(row_bytes);
        if !variant_tile_ok(op, tile, box_rows, stages, VARIANT_MAX_STAGES) {
            return Err(Error::Variant { rows, row_bytes });
        }
        let total = shared_memory_bytes(stages, tile_bytes, STATIC_SHARED_BYTES + STAGE_ALIGN)?;
        // Fits in u32: below SHARED_MEMORY_PER_BLOCK.
        let shared = (total - STATIC_SHARED_BYTES) as u32;
        let function = module.function(name)?;
        function.set_max_dynamic_shared_memory(shared)?;
        let registers = function.attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS)?;
        let resident = resident_per_sm_of(u64::from(shared), u32::try_from(registers).unwrap_or(0));
        Ok(Variant {
            function,
            op,
            element: T::DTYPE,
            transfer,
            tile,
            box_rows,
            shared,
            resident,
            whole_tiles: false,
            threads_only: stores_from_threads_only(op, tile),
        })
    }

    /// [`variant`](Self::variant) for a placement-only transpose of the kernels benchmark (in the
    /// repository, `kbv::TileSwap` of `bench/raw/kernel_variants.cuh`): the transpose's loads,
    /// item order and destination tiles, with each tile's blocks swapped instead of transposed.
    /// Its tile must be square in elements of `T`. Its kernel checks no edges and has no TMA
    /// store, so [`launch_variant`](Self::launch_variant) runs it only with
    /// [`Store::Threads`] on a matrix whose rows and columns are multiples of the tile side.
    ///
    /// # Errors
    ///
    /// As [`variant`](Self::variant); [`Error::Variant`] for a tile that is not square.
    #[doc(hidden)]
    pub fn placement_variant<T: Element>(
        &self,
        module: &Module,
        name: &str,
        transfer: Transfer,
        stages: u32,
        tile: (u32, u32),
    ) -> Result<Variant> {
        let (rows, row_bytes) = tile;
        if u64::from(row_bytes) != u64::from(rows) * T::DTYPE.size() {
            return Err(Error::Variant { rows, row_bytes });
        }
        let v = self.variant::<T>(module, name, Op::Transpose, transfer, stages, tile, rows)?;
        Ok(Variant {
            whole_tiles: true,
            ..v
        })
    }

    /// Launches `variant` as [`copy_2d`](Self::copy_2d), [`transpose`](Self::transpose) or
    /// [`row_sum`](Self::row_sum) would launch the built-in kernel of its op (`dst` of `f32` for
    /// row sums, else of `T`; `dst_pitch` is ignored for row sums). `pipeline`'s transfer must be
    /// the variant's; its stages are ignored (the variant's depth is its own, fixed when it was
    /// built), and so is `Op::max_blocks_per_sm` (the grid is as many blocks as fit, or
    /// `pipeline.max_blocks`); `promotion` replaces the op's L2 promotion of TMA loads.
    ///
    /// # Errors
    ///
    /// As [`copy_2d`](Self::copy_2d); [`Error::Variant`] if the transfer, `T` or `U` does not
    /// match the variant; [`Error::WholeTiles`] for a placement-only variant
    /// ([`placement_variant`](Self::placement_variant)) with TMA stores or on a matrix that is not
    /// whole tiles; [`Error::ThreadStores`] for a TMA store of a variant that stores from threads
    /// only.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)] // a benchmark hook, the launchers' arguments plus two
    pub fn launch_variant<T: Element, U: Element>(
        &self,
        stream: &DeviceStream,
        variant: &Variant,
        pipeline: Pipeline,
        promotion: Option<L2Promotion>,
        src: &DeviceBuffer<T>,
        src_layout: MatrixLayout,
        dst: &mut DeviceBuffer<U>,
        dst_pitch: u32,
    ) -> Result<()> {
        let op = variant.op;
        let out = if op == Op::RowSum {
            crate::element::ElementType::F32
        } else {
            T::DTYPE
        };
        if pipeline.transfer != variant.transfer || T::DTYPE != variant.element || U::DTYPE != out {
            return Err(Error::Variant {
                rows: variant.tile.0,
                row_bytes: variant.tile.1,
            });
        }
        check_variant_launch(
            variant.whole_tiles,
            variant.threads_only,
            variant.tile,
            (src_layout.rows, src_layout.cols),
            pipeline.store,
        )?;
        let dst_layout = match op {
            Op::Copy2d => MatrixLayout {
                pitch: dst_pitch,
                ..src_layout
            },
            Op::Transpose => MatrixLayout {
                rows: src_layout.cols,
                cols: src_layout.rows,
                pitch: dst_pitch,
            },
            Op::RowSum => MatrixLayout {
                rows: 1,
                cols: src_layout.rows,
                pitch: src_layout.rows.next_multiple_of(4),
            },
        };
        let spec = Spec {
            op,
            tile: variant.tile,
            box_rows: variant.box_rows,
            function: &variant.function,
            shared: variant.shared,
            resident: variant.resident,
            dynamic: None,
            builtin: false,
            promotion: promotion.unwrap_or(op.l2_promotion_of(variant.tile)),
        };
        self.launch_spec(stream, spec, pipeline, src, src_layout, dst, dst_layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_order_is_for_copies_and_transposes_with_two_items_per_block() {
        for op in [Op::Copy2d, Op::Transpose] {
            assert!(dynamic_order(op, ItemOrder::Dynamic, 264, 132));
            assert!(dynamic_order(op, ItemOrder::Dynamic, 65536, 396));
            assert!(!dynamic_order(op, ItemOrder::Dynamic, 263, 132));
            assert!(!dynamic_order(op, ItemOrder::Dynamic, 1, 1));
            assert!(!dynamic_order(op, ItemOrder::Fixed, 65536, 132));
        }
        assert!(!dynamic_order(Op::RowSum, ItemOrder::Dynamic, 65536, 132));
    }

    #[test]
    fn counter_slots_are_held_once_and_free_again_when_dropped() {
        let pool = SlotPool::new(3);
        let held: Vec<SlotHold> = std::iter::from_fn(|| pool.take()).collect();
        let mut slots: Vec<u32> = held.iter().map(|h| h.slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, [0, 1, 2]);
        assert!(pool.take().is_none(), "every slot is held");
        drop(held);
        let again: Vec<SlotHold> = std::iter::from_fn(|| pool.take()).take(4).collect();
        assert_eq!(again.len(), 3);
        // Threads taking and dropping at once never hold one slot twice.
        let pool = SlotPool::new(8);
        let in_use: Vec<std::sync::atomic::AtomicBool> = (0..8)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(h) = pool.take() {
                            let flag = &in_use[h.slot as usize];
                            assert!(!flag.swap(true, std::sync::atomic::Ordering::AcqRel));
                            flag.store(false, std::sync::atomic::Ordering::Release);
                        }
                    }
                });
            }
        });
        let all: Vec<SlotHold> = std::iter::from_fn(|| pool.take()).take(9).collect();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn pipelines_take_items_dynamically_unless_told() {
        let p = Pipeline::new(Transfer::Tma, Stages::THREE);
        assert_eq!(p.item_order, ItemOrder::Dynamic);
        assert_eq!(Pipeline::default().item_order, ItemOrder::Dynamic);
        assert_eq!(
            p.with_item_order(ItemOrder::Fixed).item_order,
            ItemOrder::Fixed
        );
        assert_eq!(ItemOrder::default(), ItemOrder::Dynamic);
    }
}
