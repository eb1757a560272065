// ferrocuda/tile_load.cuh: moving one 2D tile of a row-major matrix into a pipeline stage.
//
// A tile is kRows rows of kRowBytes bytes of the matrix. A stage holds it as kRowBytes /
// kBoxRowBytes boxes side by side in the matrix, box-major in shared memory: box b (matrix
// columns b * kBoxRowBytes .. of the tile, in bytes) at b * kRows * kBoxRowBytes, its row r at
// r * kBoxRowBytes within. With one box (kBoxRowBytes == kRowBytes) that is the dense row-major
// tile. Wide tiles (a few rows of several KiB, long contiguous runs of the matrix) need several
// boxes because a TMA box row is at most 256 elements. Elements outside the matrix arrive as
// zeros with either loader, so consumers may read the whole tile and bounds-check only what they
// write.
//
//   TmaTileLoader      one thread, one `cp.async.bulk.tensor.2d` per box of kBoxRows rows (the
//                      whole tile's rows, or fewer: issued row group by row group, so the
//                      copy engine walks the tile's rows in order); the copy engine
//                      zero-fills the part of a box outside the tensor map's bounds and
//                      completes the stage's transaction bytes on its full barrier
//   CpAsyncTileLoader  every producer thread, 16-byte `cp.async.cg` per chunk; consecutive
//                      threads take consecutive chunks of a tile row; chunks past the last row or
//                      column get a smaller source size (zero-fill of the rest), so no byte
//                      outside the matrix is read
#pragma once

#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "barrier_handler.cuh"
#include "cache_hint.cuh"
#include "mbarrier.cuh"

namespace ferrocuda {

/// A row-major matrix view: the kernel parameters every pipeline kernel shares.
/// Pitches count elements; `src_pitch * element size` must be a multiple of 16 bytes and `src`
/// 16-byte aligned (the tensor-map rules; the cp.async path reads 16-byte chunks too).
struct MatrixArgs {
  const void* src;
  void* dst;
  uint32_t rows;
  uint32_t cols;
  uint32_t src_pitch;
  uint32_t dst_pitch;
  /// Nonzero: ops that can (Op::kTmaStore) store their output tiles through the destination
  /// tensor map (tile_store.cuh); zero: consumer threads store with ordinary stores.
  uint32_t tma_store;
};

/// Loads a tile with the tensor copy engine. `map` describes the source matrix with box
/// {kBoxRowBytes / element size, kBoxRows}. Boxes are issued row group by row group (kBoxRows
/// rows each), left to right within a group; each lands at its place in the box-major stage.
/// kHint: the L2 eviction priority of the loads (cache_hint.cuh).
template <uint32_t kRows, uint32_t kRowBytes, uint32_t kBoxRowBytes, uint32_t kBoxRows,
          L2Hint kHint = L2Hint::kNone>
struct TmaTileLoader {
  using Handler = TmaBarrierHandler;
  static constexpr uint32_t kBytes = kRows * kRowBytes;
  static constexpr uint32_t kBoxes = kRowBytes / kBoxRowBytes;
  static_assert(kRows % kBoxRows == 0, "a tile is whole row groups");
  static_assert(kBoxRowBytes % 16 == 0, "TMA boxes are a multiple of 16 bytes wide");
  static_assert(kBoxes * kBoxRowBytes == kRowBytes, "a tile row is whole boxes");

  /// Hints the tensor map into the cache ahead of the first copy.
  __device__ __forceinline__ static void prefetch(const CUtensorMap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
  }

  /// Issued by the one elected producer thread. `row`/`col` are in elements.
  __device__ __forceinline__ static void load(void* dst, const CUtensorMap* map, const MatrixArgs&,
                                              uint32_t row, uint32_t col, uint64_t* full,
                                              uint32_t elem_bytes, uint32_t /*thread*/) {
    const uint32_t box_cols = kBoxRowBytes / elem_bytes;
#pragma unroll
    for (uint32_t g = 0; g < kRows; g += kBoxRows) {
#pragma unroll
      for (uint32_t b = 0; b < kBoxes; ++b) {
        const uint32_t s = smem_addr(dst) + (b * kRows + g) * kBoxRowBytes;
        if constexpr (kHint == L2Hint::kNone) {
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
              " [%0], [%1, {%2, %3}], [%4];" ::"r"(s),
              "l"(map), "r"(col + b * box_cols), "r"(row + g), "r"(smem_addr(full))
              : "memory");
        } else {
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
              ".L2::cache_hint [%0], [%1, {%2, %3}], [%4], %5;" ::"r"(s),
              "l"(map), "r"(col + b * box_cols), "r"(row + g), "r"(smem_addr(full)),
              "l"(l2_policy<kHint>())
              : "memory");
        }
      }
    }
  }
};

/// Loads a tile with 16-byte cp.async copies spread over kThreads producer threads.
/// kUnroll: how many chunks of a lane's loop are unrolled (all of them, kChunks / kThreads, but
/// for ops whose kernels would spill then). kHint: the L2 eviction priority of the loads.
template <uint32_t kRows, uint32_t kRowBytes, uint32_t kBoxRowBytes, uint32_t kThreads,
          uint32_t kUnroll = kRows * kRowBytes / 16 / kThreads, L2Hint kHint = L2Hint::kNone>
struct CpAsyncTileLoader {
  using Handler = CpAsyncBarrierHandler<kThreads>;
  static constexpr uint32_t kBytes = kRows * kRowBytes;
  static constexpr uint32_t kChunksPerRow = kRowBytes / 16;
  static constexpr uint32_t kChunksPerBoxRow = kBoxRowBytes / 16;
  static constexpr uint32_t kChunks = kRows * kChunksPerRow;
  static_assert(kRowBytes % 16 == 0 && kChunks % kThreads == 0, "chunks must split evenly");
  static_assert(kBoxRowBytes % 16 == 0 && kRowBytes % kBoxRowBytes == 0, "whole boxes");

  __device__ __forceinline__ static void prefetch(const CUtensorMap*) {}

  /// Issued by every producer thread (`thread` in 0..kThreads). `row`/`col` are in elements.
  __device__ __forceinline__ static void load(void* dst, const CUtensorMap*, const MatrixArgs& a,
                                              uint32_t row, uint32_t col, uint64_t*,
                                              uint32_t elem_bytes, uint32_t thread) {
    const char* src = static_cast<const char*>(a.src);
    const uint64_t pitch = uint64_t(a.src_pitch) * elem_bytes;
    const uint32_t row_bytes = a.cols * elem_bytes;
    const uint32_t col_byte = col * elem_bytes;
    const uint32_t base = smem_addr(dst);
#pragma unroll(kUnroll)
    for (uint32_t k = 0; k < kChunks / kThreads; ++k) {
      const uint32_t i = k * kThreads + thread;
      const uint32_t tr = i / kChunksPerRow;  // tile row
      const uint32_t tc = i % kChunksPerRow;  // chunk of the tile row
      const uint32_t r = row + tr;
      const uint32_t cb = col_byte + tc * 16;
      // Box-major stage: box tc / kChunksPerBoxRow, its row tr, chunk tc % kChunksPerBoxRow.
      const uint32_t s = ((tc / kChunksPerBoxRow) * kRows + tr) * kBoxRowBytes +
                         (tc % kChunksPerBoxRow) * 16;
      uint32_t valid = 0;
      if (r < a.rows && cb < row_bytes) {
        valid = min(16u, row_bytes - cb);
      }
      // With a source size of 0 nothing is read; any mapped address will do.
      const char* g = valid != 0 ? src + uint64_t(r) * pitch + cb : src;
      if constexpr (kHint == L2Hint::kNone) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(base + s), "l"(g),
                     "r"(valid)
                     : "memory");
      } else {
        asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;" ::"r"(
                         base + s),
                     "l"(g), "r"(valid), "l"(l2_policy<kHint>())
                     : "memory");
      }
    }
  }
};

}  // namespace ferrocuda
