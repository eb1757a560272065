// ferrocuda/tile_store.cuh: TMA stores of an output tile from a pipeline stage.
//
// An op that can store through the copy engine leaves its output tile in the stage it consumed
// (copy: the stage as loaded; transpose: the transposed tile, written back into the same stage
// by the consumer warps), and one consumer thread issues `cp.async.bulk.tensor.2d.global.
// shared::cta.bulk_group` through a tensor map of the destination. The copy engine clips the
// box at the destination's bounds, so edge tiles need no checks, and writes whole rows of the
// box to L2 instead of the 16-byte pieces of the consumer threads' stores.
//
// Ordering (the pipeline's empty barrier carries it):
//  * Before the store reads the stage, every generic-proxy write to it must be fenced for the
//    async proxy: consumers that wrote it call fence_proxy_async_smem() and pass a consumer
//    barrier; a stage filled by cp.async is fenced by the storing thread after its full wait
//    (BarrierHandler::before_async_read).
//  * The stage may be refilled only after the store has read it: the storing thread waits for
//    that (`cp.async.bulk.wait_group.read 0`) before its release-arrive on the empty barrier.
//  * Before the block exits, the storing thread waits for its stores to complete
//    (`cp.async.bulk.wait_group 0`): shared memory must stay valid until they have read it.
#pragma once

#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "cache_hint.cuh"
#include "mbarrier.cuh"

namespace ferrocuda {

/// Stores the box at shared address `src` to the tensor of `map` at coordinates {c0, c1}
/// (innermost first, in elements), with the L2 eviction priority kHint. Issued by one thread;
/// part of the thread's bulk group.
template <L2Hint kHint = L2Hint::kNone>
__device__ __forceinline__ void tma_store_2d(const CUtensorMap* map, const void* src, uint32_t c0,
                                             uint32_t c1) {
  if constexpr (kHint == L2Hint::kNone) {
    asm volatile(
        "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"(map),
        "r"(c0), "r"(c1), "r"(smem_addr(src))
        : "memory");
  } else {
    asm volatile(
        "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group.L2::cache_hint"
        " [%0, {%1, %2}], [%3], %4;" ::"l"(map),
        "r"(c0), "r"(c1), "r"(smem_addr(src)), "l"(l2_policy<kHint>())
        : "memory");
  }
}

/// Closes the thread's current bulk group (the stores issued since the last commit).
__device__ __forceinline__ void bulk_commit_group() {
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

/// Waits until every committed bulk group of this thread has finished reading shared memory.
__device__ __forceinline__ void bulk_wait_read_all() {
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}

/// Waits until every committed bulk group of this thread has completed (writes included).
__device__ __forceinline__ void bulk_wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

/// Barrier of the consumer warps only (named barrier 1; the producer warp never takes part).
__device__ __forceinline__ void consumer_barrier(uint32_t threads) {
  asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory");
}

}  // namespace ferrocuda
