// ferrocuda/cache_hint.cuh: L2 eviction-priority hints for the pipeline kernels' global accesses.
//
// An access can carry an L2 cache policy (`.L2::cache_hint` with a 64-bit policy made by
// `createpolicy`): the lines it brings into L2, or writes there, get that eviction priority.
// The pipeline ops read each byte once and write each byte once, so whether L2 should drop lines
// early (evict_first) or keep them (evict_last) is a question of how L2 then batches its DRAM
// traffic, which only a measurement answers (docs/kernels.md, "Cache hints"). L2Hint::kNone is
// the plain instruction, without a policy operand.
//
// The forms that take a policy: TMA loads and stores (`cp.async.bulk.tensor ... .L2::cache_hint`),
// cp.async (`cp.async.cg.shared.global.L2::cache_hint`) and thread stores
// (`st.global.L2::cache_hint`).
#pragma once

#include <cstdint>

namespace ferrocuda {

/// The L2 eviction priority of a kernel's loads or stores.
enum class L2Hint : uint32_t {
  /// No policy operand: the plain instruction.
  kNone,
  /// `createpolicy.fractional.L2::evict_first`, fraction 1.
  kEvictFirst,
  /// `createpolicy.fractional.L2::evict_last`, fraction 1.
  kEvictLast,
  /// `createpolicy.fractional.L2::evict_normal`, fraction 1 (a policy operand that asks for the
  /// default priority).
  kEvictNormal,
};

/// The 64-bit cache policy of `kHint` (kHint != kNone).
template <L2Hint kHint>
__device__ __forceinline__ uint64_t l2_policy() {
  static_assert(kHint != L2Hint::kNone, "kNone has no policy operand");
  uint64_t p;
  if constexpr (kHint == L2Hint::kEvictFirst) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  } else if constexpr (kHint == L2Hint::kEvictLast) {
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
  }
  return p;
}

/// A 16-byte global store with the L2 priority `kHint`.
template <L2Hint kHint>
__device__ __forceinline__ void store16(void* p, const uint4& v) {
  if constexpr (kHint == L2Hint::kNone) {
    *reinterpret_cast<uint4*>(p) = v;
  } else {
    asm volatile("st.global.L2::cache_hint.v4.b32 [%0], {%1, %2, %3, %4}, %5;" ::"l"(p),
                 "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "l"(l2_policy<kHint>())
                 : "memory");
  }
}

}  // namespace ferrocuda
