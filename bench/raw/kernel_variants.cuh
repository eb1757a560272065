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
// kbv_plain_copy, a grid-stride copy without shared memory (what an SM copy kernel reaches).
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
