// ferrocuda/copy2d.cuh: 2D tiled copy through the ring pipeline, the bandwidth probe.
//
// Tile: kRows rows x kRowBytes bytes, 16 KiB (built in: 8 rows x 2048 bytes, f32 512 columns,
// bf16 1024), loaded as boxes of 512 bytes per row (tile_load.cuh), box-major in the stage; TMA
// loads are issued as boxes of kIssueRows rows (built in: 1, so the copy engine reads the tile row
// by row, 2 KiB runs in order, as the cp.async producer lanes do).
// TMA store (MatrixArgs::tma_store): the loaded stage is the output tile; one consumer thread
// stores it through the destination tensor map (one store per box, box = the load box) and
// nothing passes through registers. Thread stores: the stage's 32 box rows of 512 bytes are
// dealt to the consumer warps (warp w takes box rows w, w + 4, ...), each lane one 16-byte
// vector per box row: a warp stores 512 contiguous bytes.
#pragma once

#include "tile_kernel.cuh"

namespace ferrocuda {

// The built-in tile (the crate's entry points; `Op::tile` and `Op::load_box_rows` on the host
// must match: a unit test reads these lines).
constexpr uint32_t kCopy2dRowsF32 = 8;
constexpr uint32_t kCopy2dRowBytesF32 = 2048;
constexpr uint32_t kCopy2dRowsBf16 = 8;
constexpr uint32_t kCopy2dRowBytesBf16 = 2048;
constexpr uint32_t kCopy2dLoadBoxRows = 1;

/// kLoad, kStore: the L2 priorities of the tile loads and of the stores (cache_hint.cuh).
template <class E, uint32_t kRows, uint32_t kRowBytes, uint32_t kIssueRows = kRows,
          L2Hint kLoad = L2Hint::kNone, L2Hint kStore = L2Hint::kNone>
struct Copy2d {
  using Elem = E;
  static constexpr L2Hint kLoadHint = kLoad;
  using T = typename E::T;
  static constexpr uint32_t kTileRows = kRows;
  static constexpr uint32_t kTileRowBytes = kRowBytes;
  static constexpr uint32_t kBoxRowBytes = 512;
  static constexpr uint32_t kCpAsyncUnroll = 32;
  static constexpr uint32_t kLoadBoxRows = kIssueRows;
  static constexpr uint32_t kBoxes = kTileRowBytes / kBoxRowBytes;
  static constexpr uint32_t kBoxCols = kBoxRowBytes / E::kBytes;
  static constexpr uint32_t kTileCols = kTileRowBytes / E::kBytes;
  static constexpr uint32_t kVec = 16 / E::kBytes;
  /// Box rows (512 bytes each) of a stage, and how many each consumer warp stores.
  static constexpr uint32_t kBoxRows = kTileRows * kBoxes;
  static constexpr uint32_t kRowsPerWarp = kBoxRows / kConsumerWarps;
  static_assert(kBoxes * kBoxRowBytes == kTileRowBytes, "a tile row is whole boxes");
  // 16 KiB stages built in; the bench's grid experiment also builds 4 and 8 KiB ones.
  static_assert(kBoxRows * kBoxRowBytes == 16384 || kBoxRows * kBoxRowBytes == 8192 ||
                    kBoxRows * kBoxRowBytes == 4096,
                "4, 8 or 16 KiB stages");
  static_assert(kBoxRows % kConsumerWarps == 0, "every consumer warp stores whole box rows");
  static constexpr bool kTmaStore = true;
  struct Acc {};

  const MatrixArgs a;
  uint32_t col_tiles;
  __device__ explicit Copy2d(const MatrixArgs& args)
      : a(args), col_tiles((args.cols + kTileCols - 1) / kTileCols) {}
  __device__ uint32_t num_items() const {
    return ((a.rows + kTileRows - 1) / kTileRows) * col_tiles;
  }
  __device__ uint32_t tiles_per_item() const { return 1; }
  __device__ void origin(uint32_t item, uint32_t, uint32_t& row, uint32_t& col) const {
    row = (item / col_tiles) * kTileRows;
    col = (item % col_tiles) * kTileCols;
  }
  __device__ void begin(Acc&) const {}
  __device__ void consume(const uint8_t* tile, uint32_t row, uint32_t col, uint32_t warp,
                          uint32_t lane, Acc&) const {
    union Vec {
      uint4 v;
      T e[kVec];
    };
    Vec v[kRowsPerWarp];
#pragma unroll
    for (uint32_t j = 0; j < kRowsPerWarp; ++j) {
      v[j].v = *reinterpret_cast<const uint4*>(tile + (warp + j * kConsumerWarps) * kBoxRowBytes +
                                               lane * 16);
    }
    T* dst = static_cast<T*>(a.dst);
#pragma unroll
    for (uint32_t j = 0; j < kRowsPerWarp; ++j) {
      // Box row m of the stage: box m / kTileRows, tile row m % kTileRows.
      const uint32_t m = warp + j * kConsumerWarps;
      const uint32_t r = row + m % kTileRows;
      const uint32_t c = col + (m / kTileRows) * kBoxCols + lane * kVec;
      if (r >= a.rows || c >= a.cols) {
        continue;
      }
      T* p = dst + uint64_t(r) * a.dst_pitch + c;
      if (c + kVec <= a.cols) {
        store16<kStore>(p, v[j].v);
      } else {
#pragma unroll
        for (uint32_t k = 0; k < kVec; ++k) {
          if (c + k < a.cols) {
            p[k] = v[j].e[k];
          }
        }
      }
    }
  }
  __device__ void finish(uint32_t, Acc&, uint32_t, uint32_t) const {}

  /// The stage already holds the output tile.
  __device__ void stage_out(uint8_t*, uint32_t, uint32_t) const {}
  /// The load boxes, each at its own position.
  __device__ void store_tile(const CUtensorMap* dst_map, const uint8_t* tile, uint32_t row,
                             uint32_t col) const {
#pragma unroll
    for (uint32_t b = 0; b < kBoxes; ++b) {
      tma_store_2d<kStore>(dst_map, tile + b * kTileRows * kBoxRowBytes, col + b * kBoxCols,
                           row);
    }
  }
};

}  // namespace ferrocuda


namespace ferrocuda {
/// Copy2d at the built-in tile of element type E.
template <class E>
using BuiltinCopy2d =
    Copy2d<E, E::kBytes == 4 ? kCopy2dRowsF32 : kCopy2dRowsBf16,
           E::kBytes == 4 ? kCopy2dRowBytesF32 : kCopy2dRowBytesBf16, kCopy2dLoadBoxRows>;
}  // namespace ferrocuda
