// Tile-shape and item-order variants of ferrocuda-kernels' pipeline kernels, for the kernels
// benchmark's sweeps (bench/rust/src/bin/kernels_bench.rs launches them through
// `ferrocuda_kernels::Kernels::launch_variant`). The same op templates and entry-point macro as
// the crate's cubins; only the template arguments differ. Names:
//   kbv_copy2d_r<rows>x<row bytes>i<rows per TMA load box>_{tma,cpasync}_{f32,bf16}_s<stages>
//   kbv_row_sum_r<rows>x<row bytes>_...
//   kbv_transpose_r<rows>x<row bytes>g<group bytes>_...
// and kbv_plain_copy, a grid-stride copy without shared memory (what an SM copy kernel reaches).
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
