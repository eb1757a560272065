// 2D transpose through the ring pipeline: dst[c][r] = src[r][c].
// Tile: 128 rows x 128 bytes (f32: 32 columns, bf16: 64). Lane l reads 32-bit word l of each
// tile row (bank-conflict free on the dense layout TMA writes), i.e. tile column l (f32) or
// the column pair 2l, 2l+1 (bf16), over a 32-byte run of rows (8 f32 or 16 bf16 rows), and
// writes that run as one 32-byte segment (two 16-byte stores) of the destination row.
#include "ferrocuda/tile_kernel.cuh"

namespace ferrocuda {

template <class E>
struct Transpose {
  using Elem = E;
  using T = typename E::T;
  static constexpr uint32_t kTileRows = 128;
  static constexpr uint32_t kTileRowBytes = 128;
  static constexpr uint32_t kTileCols = kTileRowBytes / E::kBytes;
  static constexpr uint32_t kRun = 32 / E::kBytes;  // tile rows per 32-byte destination segment
  static constexpr uint32_t kRunsPerWarp = kTileRows / kRun / kConsumerWarps;
  struct Acc {};

  const MatrixArgs a;
  uint32_t col_tiles;
  __device__ explicit Transpose(const MatrixArgs& args)
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

  /// Writes 8 words (32 bytes) of one destination row: `n` valid elements from `p`.
  __device__ static void store_run(T* p, const uint32_t (&w)[8], uint32_t n) {
    if (n == kRun) {
      reinterpret_cast<uint4*>(p)[0] = make_uint4(w[0], w[1], w[2], w[3]);
      reinterpret_cast<uint4*>(p)[1] = make_uint4(w[4], w[5], w[6], w[7]);
      return;
    }
#pragma unroll
    for (uint32_t k = 0; k < kRun; ++k) {
      if (k < n) {
        if constexpr (E::kBytes == 4) {
          reinterpret_cast<uint32_t*>(p)[k] = w[k];
        } else {
          p[k] = static_cast<T>(w[k / 2] >> (16 * (k % 2)));
        }
      }
    }
  }

  __device__ void consume(const uint8_t* tile, uint32_t row, uint32_t col, uint32_t warp,
                          uint32_t lane, Acc&) const {
    T* dst = static_cast<T*>(a.dst);
#pragma unroll
    for (uint32_t j = 0; j < kRunsPerWarp; ++j) {
      const uint32_t rs = (warp + j * kConsumerWarps) * kRun;  // first tile row of the run
      uint32_t w[kRun];
#pragma unroll
      for (uint32_t i = 0; i < kRun; ++i) {
        w[i] = *reinterpret_cast<const uint32_t*>(tile + (rs + i) * kTileRowBytes + lane * 4);
      }
      if (row + rs >= a.rows) {
        break;
      }
      const uint32_t n = min(kRun, a.rows - (row + rs));
      if constexpr (E::kBytes == 4) {
        const uint32_t c = col + lane;
        if (c < a.cols) {
          store_run(dst + uint64_t(c) * a.dst_pitch + row + rs, w, n);
        }
      } else {
        // Word i holds (column 2l, column 2l+1) of tile row rs+i: split into the two columns.
        uint32_t lo[8], hi[8];
#pragma unroll
        for (uint32_t k = 0; k < 8; ++k) {
          lo[k] = __byte_perm(w[2 * k], w[2 * k + 1], 0x5410);
          hi[k] = __byte_perm(w[2 * k], w[2 * k + 1], 0x7632);
        }
        const uint32_t c = col + 2 * lane;
        if (c < a.cols) {
          store_run(dst + uint64_t(c) * a.dst_pitch + row + rs, lo, n);
        }
        if (c + 1 < a.cols) {
          store_run(dst + uint64_t(c + 1) * a.dst_pitch + row + rs, hi, n);
        }
      }
    }
  }
  __device__ void finish(uint32_t, Acc&, uint32_t, uint32_t) const {}
};

}  // namespace ferrocuda

FERROCUDA_TILE_KERNELS(transpose, ferrocuda::Transpose)
