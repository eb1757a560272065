// Tile-shape and item-order variants of ferrocuda-kernels' pipeline kernels, for the kernels
// benchmark's sweeps (bench/rust/src/bin/kernels_bench.rs launches them through
// `ferrocuda_kernels::Kernels::launch_variant`). The same op templates and entry-point macro as
// the crate's cubins; only the template arguments differ. Names:
//   kbv_copy2d_r<rows>x<row bytes>i<rows per TMA load box>_{tma,cpasync}_{f32,bf16}_s<stages>
//   kbv_row_sum_r<rows>x<row bytes>_...
//   kbv_transpose_r<rows>x<row bytes>g<group bytes>_...
// with, after the shape, h<load><store> for L2 eviction hints on the loads and stores (n none,
// f evict_first, l evict_last; ferrocuda/cache_hint.cuh) and c for a contiguous span of work items
// per block (ferrocuda::ContiguousItems); depths up to 8 stages and 32 KiB transpose stages; and
// kbv_plain_copy, a grid-stride copy without shared memory (what an SM copy kernel reaches);
// placement-only transposes (`place` after the shape: kbv::TileSwap); 64 KiB transpose stages
// (r128x512); the copy with TMA bulk row copies (`bulk` after the shape: kbv::BulkCopy); and
// copies with 4 and 8 KiB stages (r2x2048i1, r4x2048i1: the grid experiment).
#pragma once

#include <ferrocuda/copy2d.cuh>
#include <ferrocuda/row_sum.cuh>
#include <ferrocuda/transpose.cuh>

#define KBV_ALL(name, ALIAS)                                                                \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_f32_s2, kbv_##name##_cpasync_f32_s2,           \
                              ALIAS##_f32, 2)                                                 \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_f32_s3, kbv_##name##_cpasync_f32_s3,           \
                              ALIAS##_f32, 3)                                                 \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_f32_s4, kbv_##name##_cpasync_f32_s4,           \
                              ALIAS##_f32, 4)                                                 \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_bf16_s2, kbv_##name##_cpasync_bf16_s2,         \
                              ALIAS##_bf16, 2)                                                \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_bf16_s3, kbv_##name##_cpasync_bf16_s3,         \
                              ALIAS##_bf16, 3)                                                \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_bf16_s4, kbv_##name##_cpasync_bf16_s4,         \
                              ALIAS##_bf16, 4)

#define KBV_COPY(ROWS, BYTES, ISSUE)                                                        \
  using KbvCopy_##ROWS##x##BYTES##i##ISSUE##_f32 =                                           \
      ferrocuda::Copy2d<ferrocuda::F32, ROWS, BYTES, ISSUE>;                                 \
  using KbvCopy_##ROWS##x##BYTES##i##ISSUE##_bf16 =                                          \
      ferrocuda::Copy2d<ferrocuda::BF16, ROWS, BYTES, ISSUE>;                                \
  KBV_ALL(copy2d_r##ROWS##x##BYTES##i##ISSUE, KbvCopy_##ROWS##x##BYTES##i##ISSUE)
#define KBV_ROW_SUM(ROWS, BYTES)                                                         \
  using KbvRowSum_##ROWS##x##BYTES##_f32 = ferrocuda::RowSum<ferrocuda::F32, ROWS, BYTES>;  \
  using KbvRowSum_##ROWS##x##BYTES##_bf16 = ferrocuda::RowSum<ferrocuda::BF16, ROWS, BYTES>; \
  KBV_ALL(row_sum_r##ROWS##x##BYTES, KbvRowSum_##ROWS##x##BYTES)
#define KBV_TRANSPOSE(ROWS, BYTES, GROUP)                                              \
  using KbvTr_##ROWS##x##BYTES##g##GROUP##_f32 =                                       \
      ferrocuda::Transpose<ferrocuda::F32, ROWS, BYTES, GROUP>;                        \
  using KbvTr_##ROWS##x##BYTES##g##GROUP##_bf16 =                                      \
      ferrocuda::Transpose<ferrocuda::BF16, ROWS, BYTES, GROUP>;                       \
  KBV_ALL(transpose_r##ROWS##x##BYTES##g##GROUP, KbvTr_##ROWS##x##BYTES##g##GROUP)

// The built-in tiles before the sweep (copy 32 x 512 in one box per stage, transpose 128 x 128,
// row sums as built in), and the built-in copy tile issued as whole-tile boxes.
KBV_COPY(32, 512, 32)
KBV_COPY(8, 2048, 8)
KBV_ROW_SUM(32, 512)
KBV_TRANSPOSE(128, 128, 4096)

// ---- The third sweep: L2 eviction hints, deeper rings, contiguous item spans, 32 KiB transpose
// stages. Shapes are the built-in tiles (copy 8 x 2 KiB in 1-row TMA boxes; transpose f32
// 64 x 256, bf16 128 x 128) unless the name says otherwise.

// Both transfers of one alias at S stages: kbv_<name>_{tma,cpasync}_<elem>_s<S>.
#define KBV_PAIR(name, ALIAS, elem, S) \
  FERROCUDA_TILE_ENTRY_POINTS(kbv_##name##_tma_##elem##_s##S, kbv_##name##_cpasync_##elem##_s##S, \
                              ALIAS, S)

namespace kbv {
using ferrocuda::BF16;
using ferrocuda::F32;
constexpr auto N = ferrocuda::L2Hint::kNone;
constexpr auto F = ferrocuda::L2Hint::kEvictFirst;
constexpr auto L = ferrocuda::L2Hint::kEvictLast;
template <class E, ferrocuda::L2Hint kLoad, ferrocuda::L2Hint kStore>
using Copy = ferrocuda::Copy2d<E, 8, 2048, 1, kLoad, kStore>;
// The built-in transpose tiles.
template <class E, ferrocuda::L2Hint kLoad, ferrocuda::L2Hint kStore>
using Tr = ferrocuda::Transpose<E, E::kBytes == 4 ? 64 : 128, E::kBytes == 4 ? 256 : 128, 4096,
                                kLoad, kStore>;
}  // namespace kbv

// Hints on both element types at 4 stages: (load, store) = (f, n), (n, f), (f, f), (f, l), (n, l).
#define KBV_COPY_HINT(ls, LH, SH)                                            \
  using KbvCopyH##ls##_f32 = kbv::Copy<kbv::F32, kbv::LH, kbv::SH>;          \
  using KbvCopyH##ls##_bf16 = kbv::Copy<kbv::BF16, kbv::LH, kbv::SH>;        \
  KBV_PAIR(copy2d_r8x2048i1h##ls, KbvCopyH##ls##_f32, f32, 4)                \
  KBV_PAIR(copy2d_r8x2048i1h##ls, KbvCopyH##ls##_bf16, bf16, 4)
KBV_COPY_HINT(fn, F, N)
KBV_COPY_HINT(nf, N, F)
KBV_COPY_HINT(ff, F, F)
KBV_COPY_HINT(fl, F, L)
KBV_COPY_HINT(nl, N, L)

#define KBV_TR_HINT(ls, LH, SH)                                                         \
  using KbvTrH##ls##_f32 = kbv::Tr<kbv::F32, kbv::LH, kbv::SH>;                         \
  using KbvTrH##ls##_bf16 = kbv::Tr<kbv::BF16, kbv::LH, kbv::SH>;                       \
  KBV_PAIR(transpose_r64x256g4096h##ls, KbvTrH##ls##_f32, f32, 4)                       \
  KBV_PAIR(transpose_r128x128g4096h##ls, KbvTrH##ls##_bf16, bf16, 4)
KBV_TR_HINT(fn, F, N)
KBV_TR_HINT(nf, N, F)
KBV_TR_HINT(ff, F, F)
KBV_TR_HINT(fl, F, L)

// Deeper rings of 16 KiB stages (6: two blocks per SM fit, 8: one) and contiguous item spans.
using KbvCopy_f32 = kbv::Copy<kbv::F32, kbv::N, kbv::N>;
using KbvCopy_bf16 = kbv::Copy<kbv::BF16, kbv::N, kbv::N>;
using KbvTr_f32 = kbv::Tr<kbv::F32, kbv::N, kbv::N>;
using KbvTr_bf16 = kbv::Tr<kbv::BF16, kbv::N, kbv::N>;
KBV_PAIR(copy2d_r8x2048i1, KbvCopy_f32, f32, 6)
KBV_PAIR(copy2d_r8x2048i1, KbvCopy_f32, f32, 8)
KBV_PAIR(copy2d_r8x2048i1, KbvCopy_bf16, bf16, 6)
KBV_PAIR(copy2d_r8x2048i1, KbvCopy_bf16, bf16, 8)
KBV_PAIR(transpose_r64x256g4096, KbvTr_f32, f32, 6)
KBV_PAIR(transpose_r64x256g4096, KbvTr_f32, f32, 8)
KBV_PAIR(transpose_r128x128g4096, KbvTr_bf16, bf16, 6)
KBV_PAIR(transpose_r128x128g4096, KbvTr_bf16, bf16, 8)
using KbvCopyC_f32 = ferrocuda::ContiguousItems<KbvCopy_f32>;
using KbvCopyC_bf16 = ferrocuda::ContiguousItems<KbvCopy_bf16>;
using KbvTrC_f32 = ferrocuda::ContiguousItems<KbvTr_f32>;
using KbvTrC_bf16 = ferrocuda::ContiguousItems<KbvTr_bf16>;
KBV_PAIR(copy2d_r8x2048i1c, KbvCopyC_f32, f32, 4)
KBV_PAIR(copy2d_r8x2048i1c, KbvCopyC_bf16, bf16, 4)
KBV_PAIR(transpose_r64x256g4096c, KbvTrC_f32, f32, 4)
KBV_PAIR(transpose_r128x128g4096c, KbvTrC_bf16, bf16, 4)

// 32 KiB transpose stages, 128 rows x 256 bytes: bf16 reads and writes 256-byte runs (128
// elements of 2 bytes), f32 reads 256 and writes 512. 2, 3, 4 stages (3, 2, 1 blocks per SM).
using KbvTr32_f32 = ferrocuda::Transpose<ferrocuda::F32, 128, 256>;
using KbvTr32_bf16 = ferrocuda::Transpose<ferrocuda::BF16, 128, 256>;
using KbvTr32Hff_bf16 = ferrocuda::Transpose<ferrocuda::BF16, 128, 256, 4096, kbv::F, kbv::F>;
KBV_PAIR(transpose_r128x256g4096, KbvTr32_f32, f32, 2)
KBV_PAIR(transpose_r128x256g4096, KbvTr32_f32, f32, 3)
KBV_PAIR(transpose_r128x256g4096, KbvTr32_f32, f32, 4)
KBV_PAIR(transpose_r128x256g4096, KbvTr32_bf16, bf16, 2)
KBV_PAIR(transpose_r128x256g4096, KbvTr32_bf16, bf16, 3)
KBV_PAIR(transpose_r128x256g4096, KbvTr32_bf16, bf16, 4)
KBV_PAIR(transpose_r128x256g4096hff, KbvTr32Hff_bf16, bf16, 3)

// ---- Placement-only transposes (docs/kernels.md, "Placement-only transposes (the experiment)"):
// the transpose without the transposing, to split what the DRAM address pattern costs from what
// the in-SM work costs. kbv_transpose_r<rows>x<row bytes>g4096place_{tma,cpasync}_<elem>_s<S>,
// square tiles only (f32 64 x 256 B = 64 x 64, bf16 128 x 256 B = 128 x 128), thread stores only.
namespace kbv {
/// `Transpose`'s loads, item order (`origin`), stage layout and destination tiles, but a block
/// swap instead of a transpose: source element (row + i, col + k) of the tile at origin (row, col)
/// goes to destination (col + i, row + k). The lane that loaded chunk q of stage rows
/// rb .. rb + kR - 1 stores each loaded chunk unchanged: in[i] to destination row col + (source
/// row offset of stage row rb + i), column row + (source column offset of chunk q). A tile then
/// writes the same destination 16-byte pieces as the transpose (the square tile covers the same
/// kRows x kRows block of the destination), with the same kR 16-byte stores per lane and pass;
/// only the assignment of pieces to lanes differs: one store instruction writes 4 rows x 128
/// bytes (lanes with the same p share a row) where the transpose writes 8 rows x 64 bytes. No
/// register shuffles, no bounds checks: the host launches it only on matrices whose rows and
/// columns are multiples of the tile side (`Kernels::placement_variant`), and never with TMA
/// stores (kTmaStore is false: a tma_store argument would be ignored).
template <class E, uint32_t kRows, uint32_t kRowBytes>
struct TileSwap : ferrocuda::Transpose<E, kRows, kRowBytes> {
  using Base = ferrocuda::Transpose<E, kRows, kRowBytes>;
  using typename Base::Acc;
  using typename Base::Chunk;
  using T = typename Base::T;
  using Base::Base;
  static constexpr bool kTmaStore = false;
  static constexpr uint32_t kR = Base::kR;
  static_assert(Base::kTileRows == Base::kTileCols, "a block swap needs a square tile");
  static_assert(Base::kTileRows % kR == 0, "a lane's kR stage rows lie in one load box");

  __device__ void consume(const uint8_t* tile, uint32_t row, uint32_t col, uint32_t warp,
                          uint32_t lane, Acc&) const {
    T* dst = static_cast<T*>(this->a.dst);
    const uint32_t pitch = this->a.dst_pitch;
    const uint32_t p = lane / 8;
    const uint32_t q = lane % 8;
#pragma unroll(Base::kPassUnroll)
    for (uint32_t h = 0; h < Base::kPasses; ++h) {
      // The transpose's loads: the same stage rows and chunk.
      const uint32_t rb = warp * Base::kRowsPerWarp + h * 4 * kR + p * kR;
      Chunk in[kR];
#pragma unroll
      for (uint32_t i = 0; i < kR; ++i) {
        in[i].v = *reinterpret_cast<const uint4*>(tile + (rb + i) * Base::kBoxRowBytes + q * 16);
      }
      // Stage row v is row v % kRows of box v / kRows, and box b holds source columns
      // col + b * kSubCols ..: stage row rb + i is source row row + i0 + i, and chunk q of it
      // source columns col + k0 .. col + k0 + kR - 1.
      constexpr bool kOneBox = Base::kStageRows == Base::kTileRows;
      const uint32_t i0 = kOneBox ? rb : rb % Base::kTileRows;
      const uint32_t k0 = (kOneBox ? 0 : (rb / Base::kTileRows) * Base::kSubCols) + q * kR;
      T* const d = dst + uint64_t(col + i0) * pitch + row + k0;
#pragma unroll
      for (uint32_t i = 0; i < kR; ++i) {
        ferrocuda::store16<ferrocuda::L2Hint::kNone>(d + uint64_t(i) * pitch, in[i].v);
      }
    }
  }
};
}  // namespace kbv

using KbvPlace_f32 = kbv::TileSwap<kbv::F32, 64, 256>;
using KbvPlace_bf16 = kbv::TileSwap<kbv::BF16, 128, 256>;
KBV_PAIR(transpose_r64x256g4096place, KbvPlace_f32, f32, 2)
KBV_PAIR(transpose_r64x256g4096place, KbvPlace_f32, f32, 3)
KBV_PAIR(transpose_r64x256g4096place, KbvPlace_f32, f32, 4)
KBV_PAIR(transpose_r128x256g4096place, KbvPlace_bf16, bf16, 2)
KBV_PAIR(transpose_r128x256g4096place, KbvPlace_bf16, bf16, 3)

// ---- 64 KiB transpose stages and TMA bulk copies (docs/kernels.md, "64 KiB transpose stages and
// TMA bulk copies (the experiment)").
//
// 64 KiB transpose stages, 128 rows x 512 B: f32 (128 x 128 elements) reads and writes 512-byte
// runs, bf16 (128 x 256) reads 512 and writes 256. Thread stores only (Transpose::kTmaStore is
// false at 64 KiB); 2 and 3 stages, one block per SM either way. f32 also with 8 and 16 KiB
// destination runs per item group (kGroupBytes), and placement-only (square: kbv::TileSwap).
using KbvTr64_f32 = ferrocuda::Transpose<ferrocuda::F32, 128, 512>;
using KbvTr64_bf16 = ferrocuda::Transpose<ferrocuda::BF16, 128, 512>;
using KbvTr64G8192_f32 = ferrocuda::Transpose<ferrocuda::F32, 128, 512, 8192>;
using KbvTr64G16384_f32 = ferrocuda::Transpose<ferrocuda::F32, 128, 512, 16384>;
using KbvPlace64_f32 = kbv::TileSwap<kbv::F32, 128, 512>;
KBV_PAIR(transpose_r128x512g4096, KbvTr64_f32, f32, 2)
KBV_PAIR(transpose_r128x512g4096, KbvTr64_f32, f32, 3)
KBV_PAIR(transpose_r128x512g4096, KbvTr64_bf16, bf16, 2)
KBV_PAIR(transpose_r128x512g4096, KbvTr64_bf16, bf16, 3)
KBV_PAIR(transpose_r128x512g8192, KbvTr64G8192_f32, f32, 2)
KBV_PAIR(transpose_r128x512g16384, KbvTr64G16384_f32, f32, 2)
KBV_PAIR(transpose_r128x512g4096place, KbvPlace64_f32, f32, 2)
KBV_PAIR(transpose_r128x512g4096place, KbvPlace64_f32, f32, 3)

namespace kbv {
/// The TMA transfer of a tile of kRows rows x kRowBytes bytes as one 1D bulk copy per tile row
/// (`cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes`, no tensor map), into a
/// dense row-major stage (row r at r * kRowBytes). Like the tensor loader it is issued by one
/// thread and completes the stage's bytes on its full barrier (TmaBarrierHandler: the producer
/// expects kBytes). A bulk copy has no bounds: only a tile wholly inside the matrix is loaded so;
/// an edge tile is loaded through the source tensor map as the built-in copy loads it (1-row
/// boxes kBoxRowBytes wide, zero-filled outside the matrix and counted in the bytes), each box at
/// its place in the dense stage. The bulk copies' rules hold: the matrix starts 16-byte aligned,
/// its pitch is a multiple of 16 bytes (MatrixArgs), the tile's first column is a multiple of
/// kRowBytes bytes and kRowBytes a multiple of 16.
template <uint32_t kRows, uint32_t kRowBytes, uint32_t kBoxRowBytes>
struct TmaBulkRowLoader {
  using Handler = ferrocuda::TmaBarrierHandler;
  static constexpr uint32_t kBytes = kRows * kRowBytes;
  static constexpr uint32_t kBoxes = kRowBytes / kBoxRowBytes;
  static_assert(kRowBytes % 16 == 0, "bulk copies move multiples of 16 bytes");
  static_assert(kBoxes * kBoxRowBytes == kRowBytes && kBoxRowBytes % 128 == 0,
                "edge tiles: whole boxes per row, each at a 128-byte aligned place");

  __device__ __forceinline__ static void prefetch(const CUtensorMap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
  }

  __device__ __forceinline__ static void load(void* dst, const CUtensorMap* map,
                                              const ferrocuda::MatrixArgs& a, uint32_t row,
                                              uint32_t col, uint64_t* full, uint32_t elem_bytes,
                                              uint32_t /*thread*/) {
    const uint32_t s = ferrocuda::smem_addr(dst);
    const uint32_t bar = ferrocuda::smem_addr(full);
    const uint32_t tile_cols = kRowBytes / elem_bytes;
    if (row + kRows <= a.rows && col + tile_cols <= a.cols) {
      const uint64_t pitch = uint64_t(a.src_pitch) * elem_bytes;
      const char* g = static_cast<const char*>(a.src) + uint64_t(row) * pitch +
                      uint64_t(col) * elem_bytes;
#pragma unroll
      for (uint32_t r = 0; r < kRows; ++r) {
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes"
            " [%0], [%1], %2, [%3];" ::"r"(s + r * kRowBytes),
            "l"(g + r * pitch), "r"(kRowBytes), "r"(bar)
            : "memory");
      }
    } else {
      const uint32_t box_cols = kBoxRowBytes / elem_bytes;
#pragma unroll
      for (uint32_t r = 0; r < kRows; ++r) {
#pragma unroll
        for (uint32_t b = 0; b < kBoxes; ++b) {
          asm volatile(
              "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
              " [%0], [%1, {%2, %3}], [%4];" ::"r"(s + r * kRowBytes + b * kBoxRowBytes),
              "l"(map), "r"(col + b * box_cols), "r"(row + r), "r"(bar)
              : "memory");
        }
      }
    }
  }
};

/// The built-in copy (8 x 2 KiB) with the TMA transfer as TmaBulkRowLoader: a dense stage (one
/// box kTileRowBytes wide, so the cp.async twin fills it densely too), thread stores only
/// (kTmaStore false; the host refuses TMA stores). Consumer warp w stores 512-byte column segment
/// w of every tile row: 512 contiguous bytes per store instruction, as the built-in copy.
template <class E>
struct BulkCopy : ferrocuda::Copy2d<E, 8, 2048, 1> {
  using Base = ferrocuda::Copy2d<E, 8, 2048, 1>;
  using typename Base::Acc;
  using T = typename Base::T;
  using Base::Base;
  /// The stage layout: one dense box (the loaders' kBoxRowBytes); Base::kBoxRowBytes (512) stays
  /// the width of a segment and of the edge tiles' tensor boxes.
  static constexpr uint32_t kBoxRowBytes = Base::kTileRowBytes;
  static constexpr uint32_t kSegBytes = Base::kBoxRowBytes;
  static constexpr uint32_t kSegs = Base::kTileRowBytes / kSegBytes;
  using TmaLoader = TmaBulkRowLoader<Base::kTileRows, Base::kTileRowBytes, kSegBytes>;
  static constexpr bool kTmaStore = false;
  static_assert(kSegs == ferrocuda::kConsumerWarps, "warp w takes segment w of every row");
  static_assert(kSegBytes == 32 * 16, "a lane stores 16 bytes of a segment");

  __device__ void consume(const uint8_t* tile, uint32_t row, uint32_t col, uint32_t warp,
                          uint32_t lane, Acc&) const {
    constexpr uint32_t kVec = Base::kVec;
    union Vec {
      uint4 v;
      T e[kVec];
    };
    Vec v[Base::kTileRows];
#pragma unroll
    for (uint32_t j = 0; j < Base::kTileRows; ++j) {
      v[j].v = *reinterpret_cast<const uint4*>(tile + j * Base::kTileRowBytes +
                                               warp * kSegBytes + lane * 16);
    }
    T* dst = static_cast<T*>(this->a.dst);
    const uint32_t c = col + warp * (kSegBytes / E::kBytes) + lane * kVec;
#pragma unroll
    for (uint32_t j = 0; j < Base::kTileRows; ++j) {
      const uint32_t r = row + j;
      if (r >= this->a.rows || c >= this->a.cols) {
        continue;
      }
      T* p = dst + uint64_t(r) * this->a.dst_pitch + c;
      if (c + kVec <= this->a.cols) {
        ferrocuda::store16<ferrocuda::L2Hint::kNone>(p, v[j].v);
      } else {
#pragma unroll
        for (uint32_t k = 0; k < kVec; ++k) {
          if (c + k < this->a.cols) {
            p[k] = v[j].e[k];
          }
        }
      }
    }
  }
};
}  // namespace kbv

// kbv_copy2d_r8x2048bulk_{tma,cpasync}_f32_s<S>: the bulk-copy TMA transfer (the cp.async twin is
// the same op with the cp.async loader, into the same dense stage).
using KbvBulk_f32 = kbv::BulkCopy<kbv::F32>;
KBV_PAIR(copy2d_r8x2048bulk, KbvBulk_f32, f32, 3)
KBV_PAIR(copy2d_r8x2048bulk, KbvBulk_f32, f32, 4)

// The grid experiment's smaller copy stages: kbv_copy2d_r<rows>x2048i1_{tma,cpasync}_<elem>_s<S>,
// the built-in copy's 2 KiB rows in 1-row TMA boxes, 8 KiB stages (4 rows) at 4 to 8 stages and
// 4 KiB stages (2 rows) at 6 to 8: the bytes a block has in flight in finer steps than 16 KiB.
using KbvCopy4_f32 = ferrocuda::Copy2d<ferrocuda::F32, 4, 2048, 1>;
using KbvCopy4_bf16 = ferrocuda::Copy2d<ferrocuda::BF16, 4, 2048, 1>;
using KbvCopy2_f32 = ferrocuda::Copy2d<ferrocuda::F32, 2, 2048, 1>;
using KbvCopy2_bf16 = ferrocuda::Copy2d<ferrocuda::BF16, 2, 2048, 1>;
#define KBV_SMALL_COPY(S)                              \
  KBV_PAIR(copy2d_r4x2048i1, KbvCopy4_f32, f32, S)     \
  KBV_PAIR(copy2d_r4x2048i1, KbvCopy4_bf16, bf16, S)
KBV_SMALL_COPY(4)
KBV_SMALL_COPY(5)
KBV_SMALL_COPY(6)
KBV_SMALL_COPY(7)
KBV_SMALL_COPY(8)
KBV_PAIR(copy2d_r2x2048i1, KbvCopy2_f32, f32, 6)
KBV_PAIR(copy2d_r2x2048i1, KbvCopy2_bf16, bf16, 6)
KBV_PAIR(copy2d_r2x2048i1, KbvCopy2_f32, f32, 8)
KBV_PAIR(copy2d_r2x2048i1, KbvCopy2_bf16, bf16, 8)

// A grid-stride copy of n16 16-byte vectors, 4 loads in flight per thread before its stores.
extern "C" __global__ void __launch_bounds__(256) kbv_plain_copy(const uint4 *src, uint4 *dst,
                                                                 unsigned long long n16) {
  const unsigned long long step = blockDim.x;
  unsigned long long i = blockIdx.x * 4ull * step + threadIdx.x;
  const unsigned long long stride = gridDim.x * 4ull * step;
  for (; i + 3 * step < n16; i += stride) {
    const uint4 a = src[i], b = src[i + step], c = src[i + 2 * step], d = src[i + 3 * step];
    dst[i] = a;
    dst[i + step] = b;
    dst[i + 2 * step] = c;
    dst[i + 3 * step] = d;
  }
  for (; i < n16; i += step) {
    dst[i] = src[i];
  }
}
