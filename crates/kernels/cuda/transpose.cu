// 2D transpose through the ring pipeline: dst[c][r] = src[r][c].
//
// Tile: 128 rows x 128 bytes (f32: 32 columns, bf16: 64), 8 16-byte chunks per row. Each lane
// transposes square blocks of kR x kR elements in registers, kR = 16 / element size (f32 4x4,
// bf16 8x8): it reads kR tile rows of one chunk (kR 16-byte loads) and writes kR 16-byte
// vectors, one into each of kR destination rows.
//
// Lane = 8p + q: q picks the chunk (tile columns q*kR ..), p the block of rows. Warp w owns tile
// rows 32w .. 32w + 31, in 32 / (4 kR) passes of 4 kR rows (f32: 2 passes of 16 rows, bf16: 1
// of 32). Shared memory: the 8 lanes of a quarter warp read 8 different chunks of a 128-byte row
// (one per bank group), so the 16-byte loads are conflict-free on the dense layout both loaders
// write. Global memory: in one store instruction the four lanes with the same q write 4 x 16
// contiguous bytes of one destination row: 8 rows x 64 bytes, full 32-byte sectors (the old
// mapping wrote 32 rows x 16 bytes per instruction, half sectors). A tile's 128 rows fill
// 512 contiguous bytes (f32; 256 for bf16) of each destination row it touches.
#include "ferrocuda/tile_kernel.cuh"

namespace ferrocuda {

template <class E>
struct Transpose {
  using Elem = E;
  using T = typename E::T;
  static constexpr uint32_t kTileRows = 128;
  static constexpr uint32_t kTileRowBytes = 128;
  static constexpr uint32_t kTileCols = kTileRowBytes / E::kBytes;
  static constexpr uint32_t kR = 16 / E::kBytes;  // block side: elements per 16-byte chunk
  static constexpr uint32_t kRowsPerWarp = kTileRows / kConsumerWarps;
  static constexpr uint32_t kPasses = kRowsPerWarp / (4 * kR);
  static_assert(kTileRowBytes == 8 * 16, "lane % 8 picks one of 8 chunks of a tile row");
  static_assert(kPasses * 4 * kR == kRowsPerWarp, "passes must cover the warp's rows");
  struct Acc {};

  union Chunk {
    uint4 v;
    uint32_t w[4];
    T e[kR];
  };

  const MatrixArgs a;
  uint32_t col_tiles;
  __device__ explicit Transpose(const MatrixArgs& args)
      : a(args), col_tiles((args.cols + kTileCols - 1) / kTileCols) {}
  __device__ uint32_t num_items() const {
    return ((a.rows + kTileRows - 1) / kTileRows) * col_tiles;
  }
  __device__ uint32_t tiles_per_item() const { return 1; }
  /// Item order: groups of kGroupBands row bands, walked column tile by column tile and, inside
  /// a column tile, band by band. The items in flight at once (one per block, consecutive) then
  /// cover kGroupBands row bands x (grid / kGroupBands) column tiles: each source row is read in
  /// runs of (grid / kGroupBands) x 128 bytes and each destination row written in runs of
  /// kGroupBands x kTileRows elements = 4 KiB. Row-band-major order (consecutive items along one
  /// band) read whole source rows but wrote only 512 (f32) or 256 (bf16) bytes of each of up to
  /// all destination rows at once: the whole output, spread over every DRAM page and TLB entry.
  static constexpr uint32_t kGroupBands = 4096 / (kTileRows * E::kBytes);
  __device__ void origin(uint32_t item, uint32_t, uint32_t& row, uint32_t& col) const {
    const uint32_t row_tiles = (a.rows + kTileRows - 1) / kTileRows;
    const uint32_t group = item / (kGroupBands * col_tiles);
    const uint32_t first_band = group * kGroupBands;
    const uint32_t bands = min(kGroupBands, row_tiles - first_band);  // fewer in the last group
    const uint32_t i = item - group * kGroupBands * col_tiles;
    row = (first_band + i % bands) * kTileRows;
    col = (i / bands) * kTileCols;
  }
  __device__ void begin(Acc&) const {}

  /// Column j of the kR x kR block whose rows are in[0..kR), as one vector.
  __device__ static uint4 column(const Chunk (&in)[kR], uint32_t j) {
    if constexpr (E::kBytes == 4) {
      return make_uint4(in[0].w[j], in[1].w[j], in[2].w[j], in[3].w[j]);
    } else {
      // Word m = (row 2m, row 2m + 1) of column j; column j is half j % 2 of word j / 2.
      const uint32_t sel = (j % 2 == 0) ? 0x5410 : 0x7632;
      return make_uint4(__byte_perm(in[0].w[j / 2], in[1].w[j / 2], sel),
                        __byte_perm(in[2].w[j / 2], in[3].w[j / 2], sel),
                        __byte_perm(in[4].w[j / 2], in[5].w[j / 2], sel),
                        __byte_perm(in[6].w[j / 2], in[7].w[j / 2], sel));
    }
  }

  __device__ void consume(const uint8_t* tile, uint32_t row, uint32_t col, uint32_t warp,
                          uint32_t lane, Acc&) const {
    T* dst = static_cast<T*>(a.dst);
    const uint32_t p = lane / 8;
    const uint32_t q = lane % 8;
#pragma unroll
    for (uint32_t h = 0; h < kPasses; ++h) {
      const uint32_t rb = warp * kRowsPerWarp + h * 4 * kR + p * kR;  // first tile row of block
      Chunk in[kR];
#pragma unroll
      for (uint32_t i = 0; i < kR; ++i) {
        in[i].v = *reinterpret_cast<const uint4*>(tile + (rb + i) * kTileRowBytes + q * 16);
      }
      const uint32_t r0 = row + rb;  // destination column of each vector's first element
      if (r0 >= a.rows) {
        continue;
      }
      const uint32_t n = min(kR, a.rows - r0);  // valid elements per vector
#pragma unroll
      for (uint32_t j = 0; j < kR; ++j) {
        const uint32_t c = col + q * kR + j;  // destination row
        if (c >= a.cols) {
          break;
        }
        // Compile-time j: the column is computed from registers, one vector live at a time.
        Chunk out;
        out.v = column(in, j);
        T* d = dst + uint64_t(c) * a.dst_pitch + r0;
        if (n == kR) {
          *reinterpret_cast<uint4*>(d) = out.v;
        } else {
#pragma unroll
          for (uint32_t k = 0; k < kR; ++k) {
            if (k < n) {
              d[k] = out.e[k];
            }
          }
        }
      }
    }
  }
  __device__ void finish(uint32_t, Acc&, uint32_t, uint32_t) const {}
};

}  // namespace ferrocuda

FERROCUDA_TILE_KERNELS(transpose, ferrocuda::Transpose)
