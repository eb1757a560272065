// ferrocuda/tile_kernel.cuh: the warp-specialised, persistent kernel body that drives a tile
// operation through the ring pipeline.
//
// CTA = kConsumerWarps consumer warps + 1 producer warp (warp index kConsumerWarps).
// The grid is persistent; a work item is a sequence of tiles (one for copy and transpose, a row
// band's column tiles for row sums). Fixed item order (run_tile_pipeline): CTA b handles work
// items b, b + gridDim.x, ...; producer and consumers walk the same item/tile sequence and the
// same ring state, so stage k of the producer is stage k of the consumers. Dynamic item order
// (run_dynamic_tile_pipeline, the `_dyn` entry points of copy and transpose): CTA b starts with
// item b and its producer fetches each next item from a counter in global memory and writes it
// beside the stage, where the consumers read it.
//
// An `Op` provides:
//   kTileRows, kTileRowBytes          the tile shape: kTileRows rows of kTileRowBytes bytes
//   kBoxRowBytes                      the width of one load box; a stage holds the tile as
//                                     kTileRowBytes / kBoxRowBytes boxes, box-major (tile_load.cuh)
//   kLoadBoxRows                      rows of one TMA load box (kTileRows, or fewer to issue the
//                                     tile's loads row group by row group)
//   kCpAsyncUnroll                    chunks of a cp.async producer lane's loop unrolled (its 32
//                                     chunks, or fewer where that would spill)
//   Op(const MatrixArgs&)             per-CTA setup
//   num_items(), tiles_per_item()     the work decomposition
//   origin(item, t, &row, &col)       the tile's first row and column, in elements
//   Acc, begin(Acc&), consume(tile, row, col, warp, lane, Acc&), finish(item, Acc&, warp, lane)
//   kTmaStore                         true if the op can store its output tiles with TMA; then
//     stage_out(tile, warp, lane)     turns the consumed stage into the output tile, in place
//                                     (every consumer thread; may use consumer_barrier and must
//                                     fence its own shared-memory writes for the async proxy)
//     store_tile(dst_map, tile, row, col)  issues the TMA store(s) of that tile (one thread)
// and may provide (else the defaults):
//   kLoadHint                         the L2 priority of the tile loads (L2Hint::kNone)
//   kContiguousItems                  true: CTA b walks the contiguous span of items
//                                     [b n / grid, (b + 1) n / grid) (false: b, b + grid, ...)
//   TmaLoader                         the TMA transfer's loader (TmaLoaderOf; the tensor
//                                     loader of the op's tile)
//
// Stages start on 1024-byte boundaries (the 128-byte swizzle's pattern repeats every 1024 bytes
// and a swizzled box must start on one): the kernel rounds the dynamic shared memory's base up,
// so it asks for kStageAlign bytes more than its stages.
#pragma once

#include <cstdint>
#include <type_traits>

#include "mbarrier.cuh"
#include "pipeline.cuh"
#include "tile_load.cuh"
#include "tile_store.cuh"

namespace ferrocuda {

constexpr uint32_t kConsumerWarps = 4;
constexpr uint32_t kProducerThreads = 32;
constexpr uint32_t kThreadsPerCta = (kConsumerWarps + 1) * 32;

/// f32 elements.
struct F32 {
  using T = float;
  static constexpr uint32_t kBytes = 4;
};
/// bf16 elements, moved as raw 16-bit words; widened to f32 where arithmetic is needed.
struct BF16 {
  using T = uint16_t;
  static constexpr uint32_t kBytes = 2;
};

/// Op::kLoadHint if the op has one (the L2 priority of its tile loads), else L2Hint::kNone.
template <class Op, class = void>
struct LoadHintOf {
  static constexpr L2Hint value = L2Hint::kNone;
};
template <class Op>
struct LoadHintOf<Op, std::void_t<decltype(Op::kLoadHint)>> {
  static constexpr L2Hint value = Op::kLoadHint;
};

/// Op::kContiguousItems if the op has it, else false: whether a block walks a contiguous span of
/// work items (items [b * n / grid, (b + 1) * n / grid)) instead of b, b + grid, ...
template <class Op, class = void>
struct ContiguousItemsOf {
  static constexpr bool value = false;
};
template <class Op>
struct ContiguousItemsOf<Op, std::void_t<decltype(Op::kContiguousItems)>> {
  static constexpr bool value = Op::kContiguousItems;
};

/// `Op` with each block walking a contiguous span of work items.
template <class Op>
struct ContiguousItems : Op {
  static constexpr bool kContiguousItems = true;
  using Op::Op;
};

/// The work items of a block: first_item, first_item + item_step, ... below end_item. Round
/// robin (b, b + grid, ...) unless kContiguous: then the span [b n / grid, (b + 1) n / grid).
template <bool kContiguous>
__device__ __forceinline__ uint32_t first_item(uint32_t items) {
  if constexpr (kContiguous) {
    return static_cast<uint32_t>(uint64_t(items) * blockIdx.x / gridDim.x);
  } else {
    return blockIdx.x;
  }
}
template <bool kContiguous>
__device__ __forceinline__ uint32_t end_item(uint32_t items) {
  if constexpr (kContiguous) {
    return static_cast<uint32_t>(uint64_t(items) * (blockIdx.x + 1) / gridDim.x);
  } else {
    return items;
  }
}
template <bool kContiguous>
__device__ __forceinline__ uint32_t item_step() {
  if constexpr (kContiguous) {
    return 1;
  } else {
    return gridDim.x;
  }
}

/// Op::TmaLoader if the op names its own TMA loader (a bench variant's: same `load` and
/// `prefetch` signatures, a Handler of TmaBarrierHandler), else the tensor loader of its tile.
template <class Op, class = void>
struct TmaLoaderOf {
  using type = TmaTileLoader<Op::kTileRows, Op::kTileRowBytes, Op::kBoxRowBytes,
                             Op::kLoadBoxRows, LoadHintOf<Op>::value>;
};
template <class Op>
struct TmaLoaderOf<Op, std::void_t<typename Op::TmaLoader>> {
  using type = typename Op::TmaLoader;
};

template <bool kTma, class Op>
using LoaderFor = typename std::conditional<
    kTma, typename TmaLoaderOf<Op>::type,
    CpAsyncTileLoader<Op::kTileRows, Op::kTileRowBytes, Op::kBoxRowBytes, kProducerThreads,
                      Op::kCpAsyncUnroll, LoadHintOf<Op>::value>>::type;

/// Alignment of every stage in shared memory, and the slack the kernel asks for to reach it.
constexpr uint32_t kStageAlign = 1024;

/// Dynamic shared memory a kernel of this op needs: kStages tiles plus the alignment slack (the
/// barriers are static).
template <class Op, uint32_t kStages>
constexpr uint32_t dynamic_smem_bytes() {
  return kStages * Op::kTileRows * Op::kTileRowBytes + kStageAlign;
}

/// The kernel body under fixed item order: block b walks items b, b + gridDim.x, ... (or its
/// contiguous span, for an op that asks for one).
template <bool kTma, class Op, uint32_t kStages>
__device__ __forceinline__ void run_tile_pipeline(const CUtensorMap* map,
                                                  const CUtensorMap* dst_map,
                                                  const MatrixArgs& args) {
  using Loader = LoaderFor<kTma, Op>;
  using Handler = typename Loader::Handler;
  static_assert(Loader::kBytes % kStageAlign == 0, "stages stay 1024-byte aligned");
  __shared__ Pipeline<Handler, kStages> pipe;
  extern __shared__ __align__(128) uint8_t dynamic_smem[];
  // Offset arithmetic on the array itself (not through an integer) keeps the pointer known to
  // be shared memory, so accesses through it compile to LDS/STS rather than generic LD/ST.
  uint8_t* const stage_mem =
      dynamic_smem + ((kStageAlign - smem_addr(dynamic_smem) % kStageAlign) % kStageAlign);

  const uint32_t warp = threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    pipe.init(kConsumerWarps * 32);
  }
  __syncthreads();

  const Op op(args);
  const uint32_t items = op.num_items();
  const uint32_t tiles = op.tiles_per_item();
  constexpr bool kContiguous = ContiguousItemsOf<Op>::value;

  if (warp == kConsumerWarps) {
    // Producer warp: TMA uses one elected lane, cp.async every lane.
    const bool issuer = Handler::kSingleIssuer ? elect_one() : true;
    if (issuer) {
      Loader::prefetch(map);
      PipelineState<kStages> st;
      for (uint32_t item = first_item<kContiguous>(items); item < end_item<kContiguous>(items);
           item += item_step<kContiguous>()) {
        for (uint32_t t = 0; t < tiles; ++t) {
          uint32_t row, col;
          op.origin(item, t, row, col);
          pipe.producer_acquire(st);
          pipe.producer_prepare(st, Loader::kBytes);
          Loader::load(stage_mem + st.index * Loader::kBytes, map, args, row, col,
                       pipe.full_barrier(st), Op::Elem::kBytes, lane);
          pipe.producer_commit(st);
          st.advance();
        }
      }
    }
    __syncwarp();
  } else {
    PipelineState<kStages> st;
    // Uniform over the block: every consumer thread takes the same branch.
    const bool tma_store = Op::kTmaStore && args.tma_store != 0;
    const bool storer = threadIdx.x == 0;
    for (uint32_t item = first_item<kContiguous>(items); item < end_item<kContiguous>(items);
           item += item_step<kContiguous>()) {
      typename Op::Acc acc;
      op.begin(acc);
      for (uint32_t t = 0; t < tiles; ++t) {
        uint32_t row, col;
        op.origin(item, t, row, col);
        pipe.consumer_wait(st);
        uint8_t* const tile = stage_mem + st.index * Loader::kBytes;
        if constexpr (Op::kTmaStore) {
          if (tma_store) {
            op.stage_out(tile, warp, lane);
            if (storer) {
              Handler::before_async_read();
              op.store_tile(dst_map, tile, row, col);
              bulk_commit_group();
              // The stage is refilled only after the copy engine has read it.
              bulk_wait_read_all();
            }
            pipe.consumer_release(st);
            st.advance();
            continue;
          }
        }
        op.consume(tile, row, col, warp, lane, acc);
        pipe.consumer_release(st);
        st.advance();
      }
      op.finish(item, acc, warp, lane);
    }
    if (tma_store && storer) {
      bulk_wait_all();
    }
  }
  // Every copy has completed (consumers waited on each full barrier): the ring can go.
  __syncthreads();
  if (threadIdx.x == 0) {
    pipe.invalidate();
  }
}

/// The kernel body under dynamic item order. `item_counters`: two words of global memory, zero at
/// the launch. Block b starts with item b, and its producer takes each next item as
/// gridDim.x + atomicAdd(&item_counters[0], 1) (fetched while the current item's stages fill, used
/// once they are issued), so a block on a faster SM does more items and every block finishes within
/// about one item of the others. The producer writes each stage's item beside it, and the
/// consumers read it after their full wait; a stage naming an item past the last (and holding no
/// tile) ends their loop. Each block counts itself in `item_counters[1]` at the end, and the last
/// one sets both counters back to zero: the launcher hands the same pair to a later launch once
/// the GPU is past this one.
template <bool kTma, class Op, uint32_t kStages>
__device__ __forceinline__ void run_dynamic_tile_pipeline(const CUtensorMap* map,
                                                          const CUtensorMap* dst_map,
                                                          const MatrixArgs& args,
                                                          uint32_t* item_counters) {
  using Loader = LoaderFor<kTma, Op>;
  using Handler = typename Loader::Handler;
  static_assert(!ContiguousItemsOf<Op>::value, "one item order");
  static_assert(Loader::kBytes % kStageAlign == 0, "stages stay 1024-byte aligned");
  // A cp.async producer's lane 0 arrives once more per stage, after writing the stage's item (its
  // copies' arrivals carry no release of that write); a TMA issuer's expect-tx arrival follows its
  // write already.
  constexpr uint32_t kExtraFull = Handler::kSingleIssuer ? 0 : 1;
  __shared__ Pipeline<Handler, kStages> pipe;
  __shared__ uint32_t stage_item[kStages];
  extern __shared__ __align__(128) uint8_t dynamic_smem[];
  uint8_t* const stage_mem =
      dynamic_smem + ((kStageAlign - smem_addr(dynamic_smem) % kStageAlign) % kStageAlign);

  const uint32_t warp = threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    pipe.init(kConsumerWarps * 32, kExtraFull);
  }
  __syncthreads();

  const Op op(args);
  const uint32_t items = op.num_items();
  const uint32_t tiles = op.tiles_per_item();

  if (warp == kConsumerWarps) {
    const bool issuer = Handler::kSingleIssuer ? elect_one() : true;
    if (issuer) {
      // The thread that fetches items and writes them beside the stages.
      const bool leader = Handler::kSingleIssuer || lane == 0;
      Loader::prefetch(map);
      PipelineState<kStages> st;
      uint32_t item = blockIdx.x;
      while (item < items) {
        uint32_t next = 0;
        if (leader) {
          next = gridDim.x + atomicAdd(&item_counters[0], 1u);
        }
        for (uint32_t t = 0; t < tiles; ++t) {
          uint32_t row, col;
          op.origin(item, t, row, col);
          pipe.producer_acquire(st);
          if (leader) {
            stage_item[st.index] = item;
            if constexpr (kExtraFull != 0) {
              mbarrier_arrive(pipe.full_barrier(st));
            }
          }
          pipe.producer_prepare(st, Loader::kBytes);
          Loader::load(stage_mem + st.index * Loader::kBytes, map, args, row, col,
                       pipe.full_barrier(st), Op::Elem::kBytes, lane);
          pipe.producer_commit(st);
          st.advance();
        }
        if constexpr (!Handler::kSingleIssuer) {
          // Only now wait for the fetch: lane 0 shares it with the warp.
          next = __shfl_sync(0xffffffffu, next, 0);
        }
        item = next;
      }
      // The end: a stage that names an item past the last and holds no tile.
      pipe.producer_acquire(st);
      if (leader) {
        stage_item[st.index] = items;
        mbarrier_arrive(pipe.full_barrier(st));
      }
      if constexpr (!Handler::kSingleIssuer) {
        pipe.producer_commit(st);  // every lane's own arrival (no copies of this stage)
      }
    }
    __syncwarp();
  } else {
    PipelineState<kStages> st;
    const bool tma_store = Op::kTmaStore && args.tma_store != 0;
    const bool storer = threadIdx.x == 0;
    for (;;) {
      pipe.consumer_wait(st);
      const uint32_t item = stage_item[st.index];
      if (item >= items) {
        break;
      }
      typename Op::Acc acc;
      op.begin(acc);
      for (uint32_t t = 0; t < tiles; ++t) {
        if (t != 0) {
          pipe.consumer_wait(st);
        }
        uint32_t row, col;
        op.origin(item, t, row, col);
        uint8_t* const tile = stage_mem + st.index * Loader::kBytes;
        bool stored = false;
        if constexpr (Op::kTmaStore) {
          if (tma_store) {
            op.stage_out(tile, warp, lane);
            if (storer) {
              Handler::before_async_read();
              op.store_tile(dst_map, tile, row, col);
              bulk_commit_group();
              bulk_wait_read_all();
            }
            stored = true;
          }
        }
        if (!stored) {
          op.consume(tile, row, col, warp, lane, acc);
        }
        pipe.consumer_release(st);
        st.advance();
      }
      op.finish(item, acc, warp, lane);
    }
    if (tma_store && storer) {
      bulk_wait_all();
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    pipe.invalidate();
    // Every fetch of this block precedes this count (its producer finished before the barrier
    // above), so the block that counts last sets the counters back to zero after every fetch.
    __threadfence();
    if (atomicAdd(&item_counters[1], 1u) == gridDim.x - 1) {
      item_counters[0] = 0;
      item_counters[1] = 0;
    }
  }
}

}  // namespace ferrocuda

/// Defines the two extern "C" entry points (TMA, cp.async) of the tile op type OP (an Op as above,
/// a single name: alias a template with several arguments first) at S stages. TMA kernels take
/// the source tensor map first; then every kernel takes the destination tensor map (read only
/// when `tma_store` is nonzero and the op stores with TMA), then (src, dst, rows, cols, src_pitch,
/// dst_pitch, tma_store), pitches in elements. TMA kernels read the source only through the map;
/// `src` is passed to them too so that every launch names the buffers it touches.
#define FERROCUDA_TILE_ENTRY_POINTS(tma_name, cpasync_name, OP, S)                              \
  extern "C" __global__ void __launch_bounds__(ferrocuda::kThreadsPerCta)                       \
      tma_name(const __grid_constant__ CUtensorMap src_map,                                      \
               const __grid_constant__ CUtensorMap dst_map, const void* src, void* dst,          \
               uint32_t rows, uint32_t cols, uint32_t src_pitch, uint32_t dst_pitch,             \
               uint32_t tma_store) {                                                             \
    const ferrocuda::MatrixArgs args{src, dst, rows, cols, src_pitch, dst_pitch, tma_store};    \
    ferrocuda::run_tile_pipeline<true, OP, S>(&src_map, &dst_map, args);                        \
  }                                                                                             \
  extern "C" __global__ void __launch_bounds__(ferrocuda::kThreadsPerCta)                       \
      cpasync_name(const __grid_constant__ CUtensorMap dst_map, const void* src, void* dst,      \
                   uint32_t rows, uint32_t cols, uint32_t src_pitch, uint32_t dst_pitch,         \
                   uint32_t tma_store) {                                                         \
    const ferrocuda::MatrixArgs args{src, dst, rows, cols, src_pitch, dst_pitch, tma_store};    \
    ferrocuda::run_tile_pipeline<false, OP, S>(nullptr, &dst_map, args);                        \
  }

/// FERROCUDA_TILE_ENTRY_POINTS under dynamic item order: the same parameters, then
/// `uint32_t* counter_slots` and `uint32_t slot`: the launch's counters are the two words
/// `counter_slots[2 slot]` and `counter_slots[2 slot + 1]`, zero at the launch.
#define FERROCUDA_TILE_DYNAMIC_ENTRY_POINTS(tma_name, cpasync_name, OP, S)                      \
  extern "C" __global__ void __launch_bounds__(ferrocuda::kThreadsPerCta)                       \
      tma_name(const __grid_constant__ CUtensorMap src_map,                                      \
               const __grid_constant__ CUtensorMap dst_map, const void* src, void* dst,          \
               uint32_t rows, uint32_t cols, uint32_t src_pitch, uint32_t dst_pitch,             \
               uint32_t tma_store, uint32_t* counter_slots, uint32_t slot) {                     \
    const ferrocuda::MatrixArgs args{src, dst, rows, cols, src_pitch, dst_pitch, tma_store};    \
    ferrocuda::run_dynamic_tile_pipeline<true, OP, S>(&src_map, &dst_map, args,                 \
                                                      counter_slots + 2 * uint64_t(slot));      \
  }                                                                                             \
  extern "C" __global__ void __launch_bounds__(ferrocuda::kThreadsPerCta)                       \
      cpasync_name(const __grid_constant__ CUtensorMap dst_map, const void* src, void* dst,      \
                   uint32_t rows, uint32_t cols, uint32_t src_pitch, uint32_t dst_pitch,         \
                   uint32_t tma_store, uint32_t* counter_slots, uint32_t slot) {                 \
    const ferrocuda::MatrixArgs args{src, dst, rows, cols, src_pitch, dst_pitch, tma_store};    \
    ferrocuda::run_dynamic_tile_pipeline<false, OP, S>(nullptr, &dst_map, args,                \
                                                       counter_slots + 2 * uint64_t(slot));     \
  }

/// The entry points ferrocuda_<name>_{tma,cpasync}_<elem>_s<S> of OP<ELEM> (the op's built-in
/// tile for that element type).
#define FERROCUDA_TILE_KERNEL(name, OP, ELEM, elem, S)                                    \
  FERROCUDA_TILE_ENTRY_POINTS(ferrocuda_##name##_tma_##elem##_s##S,                       \
                              ferrocuda_##name##_cpasync_##elem##_s##S, OP<ferrocuda::ELEM>, S)

/// Every entry point of one op: both transfers, f32 and bf16, 2..4 stages.
#define FERROCUDA_TILE_KERNELS(name, OP)          \
  FERROCUDA_TILE_KERNEL(name, OP, F32, f32, 2)    \
  FERROCUDA_TILE_KERNEL(name, OP, F32, f32, 3)    \
  FERROCUDA_TILE_KERNEL(name, OP, F32, f32, 4)    \
  FERROCUDA_TILE_KERNEL(name, OP, BF16, bf16, 2)  \
  FERROCUDA_TILE_KERNEL(name, OP, BF16, bf16, 3)  \
  FERROCUDA_TILE_KERNEL(name, OP, BF16, bf16, 4)

/// The dynamic-order entry points ferrocuda_<name>_dyn_{tma,cpasync}_<elem>_s<S> of OP<ELEM>.
#define FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, ELEM, elem, S)                             \
  FERROCUDA_TILE_DYNAMIC_ENTRY_POINTS(ferrocuda_##name##_dyn_tma_##elem##_s##S,            \
                                      ferrocuda_##name##_dyn_cpasync_##elem##_s##S,        \
                                      OP<ferrocuda::ELEM>, S)

/// Every dynamic-order entry point of one op: both transfers, f32 and bf16, 2..4 stages.
#define FERROCUDA_TILE_DYNAMIC_KERNELS(name, OP)          \
  FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, F32, f32, 2)    \
  FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, F32, f32, 3)    \
  FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, F32, f32, 4)    \
  FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, BF16, bf16, 2)  \
  FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, BF16, bf16, 3)  \
  FERROCUDA_TILE_DYNAMIC_KERNEL(name, OP, BF16, bf16, 4)
