// ferrocuda/transpose.cuh: 2D transpose through the ring pipeline: dst[c][r] = src[r][c].
//
// Tile: kRows rows x kRowBytes bytes, 16 KiB (built in: f32 64 rows x 256 bytes, 64 columns; bf16
// 128 rows x 128 bytes, 64 columns; bench variants 32 and 64 KiB), loaded as boxes 128 bytes wide
// (kRowBytes / 128 of them, box-major in the stage, tile_load.cuh). The stage is then
// kStageBytes / 128 "stage rows" of 128 bytes (128 at 16 KiB), 8 16-byte chunks each: stage row
// v is row v % kRows of box v / kRows. Everything below speaks of stage rows; with one box they
// are the tile's rows. Each lane transposes square blocks of kR x kR elements in registers, kR =
// 16 / element size (f32 4x4, bf16 8x8): it reads kR stage rows of one chunk (kR 16-byte loads)
// and writes kR 16-byte vectors, one into each of kR destination rows.
//
// Lane = 8p + q: q picks the chunk (tile columns q*kR ..), p the block of rows. Warp w owns stage
// rows 32w .. 32w + 31 (at 16 KiB; a quarter of the stage rows in general), in passes of 4 kR
// rows (16 KiB f32: 2 passes of 16 rows, bf16: 1 of 32). Shared memory: the 8 lanes of a quarter
// warp read 8 different chunks of a 128-byte row (one per bank group), so the 16-byte loads are
// conflict-free on the dense layout both loaders write. Global memory: in one store instruction
// the four lanes with the same q write 4 x 16 contiguous bytes of one destination row: 8 rows x
// 64 bytes, full 32-byte sectors (the old mapping wrote 32 rows x 16 bytes per instruction, half
// sectors). A tile's kRows rows fill kRows x element size contiguous bytes (256 for both built-in
// tiles) of each destination row it touches.
//
// TMA store (MatrixArgs::tma_store): the same lanes read the same blocks into registers, the
// consumer warps meet at a barrier, and each lane writes its kR column vectors back into the
// stage, now holding the transposed tile as kBoxes boxes of kSubCols destination rows x 128
// bytes in the 128-byte swizzled layout (16-byte chunk c of box row r at chunk c ^ (r % 8)).
// One thread then stores the boxes through the destination tensor map (SWIZZLE_128B), which
// un-swizzles them. The swizzle and a per-lane order of the kR vectors keep the 16-byte shared
// stores conflict-free: in the step s of lane 8p + q (q = 2a + b) the vector written is column
// j = (s + a) % 4 (f32) or 2((s / 2 + a) % 4) + (s % 2 ^ b) (bf16) of the lane's block, so
// the 8 lanes of a quarter warp (same p, q = 0..7) write 8 different destination rows modulo 8,
// i.e. 8 different chunk positions. A lane picks its vectors without indexing registers at run
// time: it rotates the 4 words of each loaded chunk by a first (selects), after which the word
// index is a compile-time constant again.
#pragma once

#include "tile_kernel.cuh"

namespace ferrocuda {

// The built-in tile (the crate's entry points; `Op::tile` on the host must match: a unit test
// reads these lines). A tile reads kRows-row runs of kRowBytes and writes runs of kRows x element
// size: f32 at 64 x 256 reads and writes 256-byte runs; bf16 at 128 x 128 reads 128-byte runs
// and writes 256-byte ones (bf16 at 64 x 256 would write 128-byte runs).
constexpr uint32_t kTransposeRowsF32 = 64;
constexpr uint32_t kTransposeRowBytesF32 = 256;
constexpr uint32_t kTransposeRowsBf16 = 128;
constexpr uint32_t kTransposeRowBytesBf16 = 128;

/// kLoad, kStore: the L2 priorities of the tile loads and of the stores (cache_hint.cuh).
template <class E, uint32_t kRows, uint32_t kRowBytes, uint32_t kGroupBytes = 4096,
          L2Hint kLoad = L2Hint::kNone, L2Hint kStore = L2Hint::kNone>
struct Transpose {
  using Elem = E;
  static constexpr L2Hint kLoadHint = kLoad;
  using T = typename E::T;
  static constexpr uint32_t kTileRows = kRows;
  static constexpr uint32_t kTileRowBytes = kRowBytes;
  static constexpr uint32_t kBoxRowBytes = 128;
  static constexpr uint32_t kLoadBoxRows = kRows;
  /// Half the producer loop unrolled: fully unrolled, the f32 64 x 256 kernel spilled. (A
  /// partial unroll made the cp.async copy and row sums slower, the transpose not measurably;
  /// docs/kernels.md.) With an L2 hint on the loads, a quarter: at half, ptxas 13.0 put the
  /// cache-policy descriptor of the hinted LDGSTS at an odd uniform register (`desc[UR1]`), and
  /// such a kernel stopped with an illegal instruction on the H200.
  static constexpr uint32_t kCpAsyncUnroll = kLoad == L2Hint::kNone ? 16 : 8;
  static constexpr uint32_t kTileCols = kTileRowBytes / E::kBytes;
  /// Source columns of one load box (one 128-byte stage row).
  static constexpr uint32_t kSubCols = kBoxRowBytes / E::kBytes;
  static constexpr uint32_t kStageRows = kTileRows * (kTileRowBytes / kBoxRowBytes);
  static constexpr uint32_t kR = 16 / E::kBytes;  // block side: elements per 16-byte chunk
  static constexpr uint32_t kRowsPerWarp = kStageRows / kConsumerWarps;
  static constexpr uint32_t kPasses = kRowsPerWarp / (4 * kR);
  static_assert(kBoxRowBytes == 8 * 16, "lane % 8 picks one of 8 chunks of a stage row");
  static constexpr uint32_t kStageBytes = kStageRows * kBoxRowBytes;
  static_assert(kStageBytes == 16384 || kStageBytes == 32768 || kStageBytes == 65536,
                "16 KiB stages (the built-in tiles), 32 or 64 KiB (bench variants)");
  static_assert(kPasses * 4 * kR == kRowsPerWarp, "passes must cover the warp's rows");
  /// 64 KiB stages store from threads only: `stage_out` holds a lane's whole share of the tile
  /// in registers at once (kPasses x kR chunks, 32 of them at 64 KiB), where `consume` holds one
  /// pass's kR. The host refuses TMA stores for them (`Kernels::variant`).
  static constexpr bool kTmaStore = kStageBytes <= 32768;
  /// Passes of `consume` unrolled: all of them, but two at 64 KiB (8 passes for f32, 4 for bf16;
  /// with all 4 unrolled the bf16 TMA kernel spilled, ptxas 13.0).
  static constexpr uint32_t kPassUnroll = kStageBytes <= 32768 ? kPasses : 2;
  /// TMA store boxes: kBoxCols destination columns (128 bytes, the 128-byte swizzle's span) x
  /// kSubCols destination rows; a transposed tile is kBoxes of them. Store box k holds stage
  /// rows k * kBoxCols ..: destination columns from source row row + (k * kBoxCols) % kTileRows,
  /// destination rows from source column col + (k * kBoxCols) / kTileRows * kSubCols.
  static constexpr uint32_t kBoxCols = 128 / E::kBytes;
  static constexpr uint32_t kBoxBytes = kSubCols * 128;
  static constexpr uint32_t kBoxes = kStageRows / kBoxCols;
  static_assert(kBoxBytes % 1024 == 0, "every box starts on a swizzle pattern boundary");
  static_assert(kTileRows % kBoxCols == 0, "a store box lies in one load box");
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
  /// Item order: groups of kGroupBands row bands, walked column tile by column tile and, inside a
  /// column tile, band by band. The items in flight at once (one per block, consecutive) then cover
  /// kGroupBands row bands x (grid / kGroupBands) column tiles: each source row is read in runs of
  /// (grid / kGroupBands) x 128 bytes and each destination row written in runs of kGroupBands x
  /// kTileRows elements = kGroupBytes (default 4 KiB). Row-band-major order (consecutive items
  /// along one band) read whole source rows but wrote only 512 (f32) or 256 (bf16) bytes of each of
  /// up to all destination rows at once: the whole output, spread over every DRAM page and TLB
  /// entry.
  static constexpr uint32_t kGroupBands = kGroupBytes / (kTileRows * E::kBytes);
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
#pragma unroll(kPassUnroll)
    for (uint32_t h = 0; h < kPasses; ++h) {
      const uint32_t rb = warp * kRowsPerWarp + h * 4 * kR + p * kR;  // first stage row of block
      Chunk in[kR];
#pragma unroll
      for (uint32_t i = 0; i < kR; ++i) {
        in[i].v = *reinterpret_cast<const uint4*>(tile + (rb + i) * kBoxRowBytes + q * 16);
      }
      // Destination column of each vector's first element (a source row), and the source
      // column of the block's first column (a destination row).
      // (One box: the stage rows are the tile rows; said so for the compiler, which cannot know
      // that rb < kTileRows.)
      constexpr bool kOneBox = kStageRows == kTileRows;
      const uint32_t r0 = row + (kOneBox ? rb : rb % kTileRows);
      const uint32_t c0 = col + (kOneBox ? 0 : (rb / kTileRows) * kSubCols) + q * kR;
      if (r0 >= a.rows) {
        continue;
      }
      const uint32_t n = min(kR, a.rows - r0);  // valid elements per vector
#pragma unroll
      for (uint32_t j = 0; j < kR; ++j) {
        const uint32_t c = c0 + j;  // destination row
        if (c >= a.cols) {
          break;
        }
        // Compile-time j: the column is computed from registers, one vector live at a time.
        Chunk out;
        out.v = column(in, j);
        T* d = dst + uint64_t(c) * a.dst_pitch + r0;
        if (n == kR) {
          store16<kStore>(d, out.v);
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

  /// w[k] <- w[(k + a) % 4] for a in 0..3, with selects (no run-time register index).
  __device__ static void rotate_words(Chunk& c, uint32_t a) {
    const bool one = (a & 1) != 0;
    const bool two = (a & 2) != 0;
    const uint32_t t0 = one ? c.w[1] : c.w[0];
    const uint32_t t1 = one ? c.w[2] : c.w[1];
    const uint32_t t2 = one ? c.w[3] : c.w[2];
    const uint32_t t3 = one ? c.w[0] : c.w[3];
    c.w[0] = two ? t2 : t0;
    c.w[1] = two ? t3 : t1;
    c.w[2] = two ? t0 : t2;
    c.w[3] = two ? t1 : t3;
  }

  /// Every consumer thread: replaces the stage's source tile by the transposed tile, swizzled
  /// (see the head of this file), and fences its writes for the TMA store.
  __device__ void stage_out(uint8_t* tile, uint32_t warp, uint32_t lane) const {
    const uint32_t p = lane / 8;
    const uint32_t q = lane % 8;
    const uint32_t a = q / 2;
    const uint32_t b = q % 2;
    Chunk in[kPasses][kR];
#pragma unroll
    for (uint32_t h = 0; h < kPasses; ++h) {
      const uint32_t rb = warp * kRowsPerWarp + h * 4 * kR + p * kR;
#pragma unroll
      for (uint32_t i = 0; i < kR; ++i) {
        in[h][i].v = *reinterpret_cast<const uint4*>(tile + (rb + i) * kBoxRowBytes + q * 16);
      }
    }
    // Every consumer has read its part of the source tile before any overwrites it.
    consumer_barrier(kConsumerWarps * 32);
#pragma unroll
    for (uint32_t h = 0; h < kPasses; ++h) {
      const uint32_t rb = warp * kRowsPerWarp + h * 4 * kR + p * kR;  // first destination column
      uint8_t* const box = tile + (rb / kBoxCols) * kBoxBytes;
      const uint32_t chunk = (rb % kBoxCols) / kR;  // the vector's 16-byte chunk in its box row
#pragma unroll
      for (uint32_t i = 0; i < kR; ++i) {
        rotate_words(in[h][i], a);
      }
#pragma unroll
      for (uint32_t s = 0; s < kR; ++s) {
        uint32_t j;  // the column of the block this step writes: destination row q * kR + j
        uint4 v;
        if constexpr (E::kBytes == 4) {
          j = (s + a) % 4;
          v = make_uint4(in[h][0].w[s], in[h][1].w[s], in[h][2].w[s], in[h][3].w[s]);
        } else {
          const uint32_t half = (s % 2) ^ b;
          j = 2 * ((s / 2 + a) % 4) + half;
          const uint32_t sel = half != 0 ? 0x7632 : 0x5410;
          const uint32_t m = s / 2;
          v = make_uint4(__byte_perm(in[h][0].w[m], in[h][1].w[m], sel),
                         __byte_perm(in[h][2].w[m], in[h][3].w[m], sel),
                         __byte_perm(in[h][4].w[m], in[h][5].w[m], sel),
                         __byte_perm(in[h][6].w[m], in[h][7].w[m], sel));
        }
        const uint32_t dr = q * kR + j;
        *reinterpret_cast<uint4*>(box + dr * 128 + ((chunk ^ (dr % 8)) * 16)) = v;
      }
    }
    // The copy engine reads what these generic-proxy stores wrote.
    fence_proxy_async_smem();
    consumer_barrier(kConsumerWarps * 32);
  }

  /// kBoxes boxes: box k holds stage rows k * kBoxCols .. (see kBoxCols).
  __device__ void store_tile(const CUtensorMap* dst_map, const uint8_t* tile, uint32_t row,
                             uint32_t col) const {
#pragma unroll
    for (uint32_t k = 0; k < kBoxes; ++k) {
      const uint32_t v = k * kBoxCols;
      tma_store_2d<kStore>(dst_map, tile + k * kBoxBytes, row + v % kTileRows,
                           col + (v / kTileRows) * kSubCols);
    }
  }
};

}  // namespace ferrocuda


namespace ferrocuda {
/// Transpose at the built-in tile of element type E.
template <class E>
using BuiltinTranspose =
    Transpose<E, E::kBytes == 4 ? kTransposeRowsF32 : kTransposeRowsBf16,
              E::kBytes == 4 ? kTransposeRowBytesF32 : kTransposeRowBytesBf16>;
}  // namespace ferrocuda
