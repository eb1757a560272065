// ferrocuda/row_sum.cuh: row sums through the ring pipeline: dst[r] = sum over c of src[r][c],
// accumulated in f32, written as f32. A work item is a band of kRows rows (built in: 32); its
// column tiles (kRows rows x kRowBytes bytes, 16 KiB, loaded as 512-byte-wide boxes, box-major
// in the stage) stream through the ring. Consumer warp w owns rows w, w+4, ...: each lane keeps
// one f32 partial sum per owned row over its 16-byte column slices, and the warp reduces them
// with shuffles when the band is done. Zero-filled columns past the end add nothing.
#pragma once

#include "tile_kernel.cuh"

namespace ferrocuda {

// The built-in tile (the crate's entry points; `Op::tile` on the host must match: a unit test
// reads these lines).
constexpr uint32_t kRowSumRowsF32 = 32;
constexpr uint32_t kRowSumRowBytesF32 = 512;
constexpr uint32_t kRowSumRowsBf16 = 32;
constexpr uint32_t kRowSumRowBytesBf16 = 512;

template <class E, uint32_t kRows, uint32_t kRowBytes>
struct RowSum {
  using Elem = E;
  static constexpr uint32_t kTileRows = kRows;
  static constexpr uint32_t kTileRowBytes = kRowBytes;
  static constexpr uint32_t kBoxRowBytes = 512;
  static constexpr uint32_t kCpAsyncUnroll = 32;
  static constexpr uint32_t kLoadBoxRows = kRows;
  static constexpr uint32_t kTileCols = kTileRowBytes / E::kBytes;
  /// Rows of the band each consumer warp owns.
  static constexpr uint32_t kRowsPerWarp = kTileRows / kConsumerWarps;
  /// Box rows (512 bytes each) of a stage each consumer warp reads: warp w reads box rows
  /// w, w + 4, ..., which all belong to its own rows.
  static constexpr uint32_t kReadsPerWarp = kTileRows * (kTileRowBytes / kBoxRowBytes) /
                                            kConsumerWarps;
  static_assert(kTileRows % kConsumerWarps == 0, "every warp owns whole rows");
  static_assert(kTileRowBytes % kBoxRowBytes == 0, "a tile row is whole boxes");
  /// One f32 per row: the consumer threads store the sums.
  static constexpr bool kTmaStore = false;
  struct Acc {
    float s[kRowsPerWarp];
  };

  const MatrixArgs a;
  __device__ explicit RowSum(const MatrixArgs& args) : a(args) {}
  __device__ uint32_t num_items() const { return (a.rows + kTileRows - 1) / kTileRows; }
  __device__ uint32_t tiles_per_item() const { return (a.cols + kTileCols - 1) / kTileCols; }
  __device__ void origin(uint32_t item, uint32_t t, uint32_t& row, uint32_t& col) const {
    row = item * kTileRows;
    col = t * kTileCols;
  }
  __device__ void begin(Acc& acc) const {
#pragma unroll
    for (uint32_t j = 0; j < kRowsPerWarp; ++j) {
      acc.s[j] = 0.0f;
    }
  }
  __device__ static float sum16(const uint4& v) {
    if constexpr (E::kBytes == 4) {
      return (__uint_as_float(v.x) + __uint_as_float(v.y)) +
             (__uint_as_float(v.z) + __uint_as_float(v.w));
    } else {
      // bf16 -> f32 is the high half of the f32 bit pattern.
      auto pair = [](uint32_t w) {
        return __uint_as_float(w << 16) + __uint_as_float(w & 0xffff0000u);
      };
      return (pair(v.x) + pair(v.y)) + (pair(v.z) + pair(v.w));
    }
  }
  __device__ void consume(const uint8_t* tile, uint32_t, uint32_t, uint32_t warp, uint32_t lane,
                          Acc& acc) const {
#pragma unroll
    for (uint32_t j = 0; j < kReadsPerWarp; ++j) {
      // Box row m = warp + 4j is tile row m % kTileRows = warp + 4 (j % kRowsPerWarp).
      const uint4 v = *reinterpret_cast<const uint4*>(
          tile + (warp + j * kConsumerWarps) * kBoxRowBytes + lane * 16);
      acc.s[j % kRowsPerWarp] += sum16(v);
    }
  }
  __device__ void finish(uint32_t item, Acc& acc, uint32_t warp, uint32_t lane) const {
    float* dst = static_cast<float*>(a.dst);
#pragma unroll
    for (uint32_t j = 0; j < kRowsPerWarp; ++j) {
      float s = acc.s[j];
#pragma unroll
      for (uint32_t off = 16; off > 0; off /= 2) {
        s += __shfl_xor_sync(0xffffffffu, s, off);
      }
      const uint32_t r = item * kTileRows + warp + j * kConsumerWarps;
      if (lane == 0 && r < a.rows) {
        dst[r] = s;
      }
    }
  }
};

}  // namespace ferrocuda


namespace ferrocuda {
/// RowSum at the built-in tile of element type E.
template <class E>
using BuiltinRowSum = RowSum<E, E::kBytes == 4 ? kRowSumRowsF32 : kRowSumRowsBf16,
                             E::kBytes == 4 ? kRowSumRowBytesF32 : kRowSumRowBytesBf16>;
}  // namespace ferrocuda
