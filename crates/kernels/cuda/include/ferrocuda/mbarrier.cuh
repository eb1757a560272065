// ferrocuda/mbarrier.cuh: thin wrappers over the PTX `mbarrier` instructions (sm_90).
//
// An mbarrier is a 64-bit object in shared memory that counts arrivals (and, on sm_90, pending
// transaction bytes) for the phase it is in. When the expected arrivals have come and the
// transaction count is back at zero, the phase completes and the barrier flips to the next
// phase. Waiters name the phase they wait for by its parity bit (0 or 1).
//
// Every function takes the barrier by its generic address and converts it to a 32-bit shared
// address once; the `.shared::cta` forms are used throughout (no clusters in ferrocuda's kernels).
#pragma once

#include <cstdint>

namespace ferrocuda {

/// 32-bit shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

/// Initialises `bar` to expect `arrivals` arrivals per phase; the barrier starts in phase 0.
/// One thread initialises; call `mbarrier_init_fence()` and a CTA barrier before any use.
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrivals)
               : "memory");
}

/// Makes barrier initialisation visible to the other threads (release) and to the async proxy:
/// the copy engine (TMA) signals completion on the barrier through the async proxy, which must
/// not observe the object's memory from before `mbarrier.init` (a generic-proxy write).
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/// Arrives on `bar` (release semantics at CTA scope): counts one of the expected arrivals.
__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

/// Arrives on `bar` and adds `bytes` to the transaction count the current phase waits for.
/// The phase cannot complete until asynchronous copies have reported that many bytes
/// (`mbarrier::complete_tx::bytes`).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

/// True once the phase of parity `parity` has completed (acquire semantics at CTA scope).
/// A freshly initialised barrier is in phase 0, so waiting for parity 1 (the phase "before" it)
/// succeeds at once: producers use that to start on empty buffers.
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
      "selp.u32 %0, 1, 0, p;\n\t}"
      : "=r"(done)
      : "r"(smem_addr(bar)), "r"(parity)
      : "memory");
  return done != 0;
}

/// Blocks until the phase of parity `parity` has completed. `try_wait` itself suspends the
/// thread for a hardware-chosen time before it returns false, so the loop does not spin hot.
__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}

/// Invalidates `bar` so its shared memory may be reused for something else. Only once no
/// thread and no asynchronous copy can still touch it.
__device__ __forceinline__ void mbarrier_inval(uint64_t* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];" ::"r"(smem_addr(bar)) : "memory");
}

/// Orders this thread's earlier generic-proxy accesses to shared memory before later
/// async-proxy accesses (TMA loads/stores, wgmma) to it. Needed where shared memory written
/// with ordinary stores is next read or overwritten by the copy engine.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/// One lane of the (fully active) warp returns true: `elect.sync` (sm_90).
__device__ __forceinline__ bool elect_one() {
  uint32_t elected;
  asm volatile(
      "{\n\t.reg .pred p;\n\t"
      "elect.sync _|p, 0xffffffff;\n\t"
      "selp.u32 %0, 1, 0, p;\n\t}"
      : "=r"(elected));
  return elected != 0;
}

}  // namespace ferrocuda
