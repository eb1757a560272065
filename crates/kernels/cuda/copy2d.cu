// 2D tiled copy through the ring pipeline: the bandwidth probe.
// Tile: 32 rows x 512 bytes (f32: 128 columns, bf16: 256).
// TMA store (MatrixArgs::tma_store): the loaded stage is the output tile; one consumer thread
// stores it through the destination tensor map (box = the tile) and nothing passes through
// registers. Thread stores: consumer warp w writes rows w, w+4, ..., each lane one 16-byte
// vector per row: a warp stores 512 contiguous bytes.
#include "ferrocuda/tile_kernel.cuh"

namespace ferrocuda {

template <class E>
struct Copy2d {
  using Elem = E;
  using T = typename E::T;
  static constexpr uint32_t kTileRows = 32;
  static constexpr uint32_t kTileRowBytes = 512;
  static constexpr uint32_t kTileCols = kTileRowBytes / E::kBytes;
  static constexpr uint32_t kVec = 16 / E::kBytes;
  static constexpr uint32_t kRowsPerWarp = kTileRows / kConsumerWarps;
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
      v[j].v = *reinterpret_cast<const uint4*>(tile + (warp + j * kConsumerWarps) * kTileRowBytes +
                                               lane * 16);
    }
    const uint32_t c = col + lane * kVec;
    if (c >= a.cols) {
      return;
    }
    T* dst = static_cast<T*>(a.dst);
#pragma unroll
    for (uint32_t j = 0; j < kRowsPerWarp; ++j) {
      const uint32_t r = row + warp + j * kConsumerWarps;
      if (r >= a.rows) {
        break;
      }
      T* p = dst + uint64_t(r) * a.dst_pitch + c;
      if (c + kVec <= a.cols) {
        *reinterpret_cast<uint4*>(p) = v[j].v;
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
  /// One box, the whole tile, at the tile's own position.
  __device__ void store_tile(const CUtensorMap* dst_map, const uint8_t* tile, uint32_t row,
                             uint32_t col) const {
    tma_store_2d(dst_map, tile, col, row);
  }
};

}  // namespace ferrocuda

FERROCUDA_TILE_KERNELS(copy2d, ferrocuda::Copy2d)
