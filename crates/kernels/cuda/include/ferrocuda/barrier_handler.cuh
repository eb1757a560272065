// ferrocuda/barrier_handler.cuh: the BarrierHandler policies.
//
// A pipeline stage is "full" when its tile has landed in shared memory. Who tells the stage's
// full barrier so depends on how the tile was moved, and that is all a BarrierHandler decides
// (MAX's `BarrierHandler` trait, the model of this design):
//
//   prepare_stage(full, bytes)  called by each issuing producer thread before it starts the
//                               stage's copies
//   complete_stage(full)        called by each issuing producer thread after it has started
//                               all of the stage's copies
//   kFullArrivals               arrivals per phase the full barrier is initialised with
//   kSingleIssuer               true when one elected thread issues the stage, false when
//                               every producer thread does
//
// TMA: the copy engine counts the bytes it writes against the barrier's transaction count
// (`mbarrier::complete_tx::bytes`), so the only thing a thread has to do is announce how many
// bytes to expect and arrive once (prepare_stage); afterwards there is nothing left for a
// thread to signal: complete_stage is empty.
//
// cp.async: the copies carry no byte count and the barrier expects no transaction bytes, so
// prepare_stage has nothing to announce; the barrier must instead learn when each producer
// thread's copies have landed. complete_stage uses `cp.async.mbarrier.arrive.noinc`: the
// hardware performs this thread's arrival on the barrier once all cp.async operations the
// thread issued before it have completed. That is MAX's "commit the copies and arrive"
// without a blocking `cp.async.wait_group` in the producer: the producer moves on to the next
// stage at once. `.noinc` means the arrival counts against the count given to
// `mbarrier.init`, so the full barrier expects one arrival per producer thread.
//
// One more question depends on how a stage was filled, and the handler answers it too:
//
//   before_async_read()         called by a consumer thread that has waited for the stage's full
//                               barrier and is about to hand the stage to the async proxy (a TMA
//                               store from it, `cp.async.bulk.tensor ... .global.shared::cta`)
//
// TMA: the copy engine wrote the stage through the async proxy, so the async proxy's read needs
// no proxy fence: nothing. cp.async: the per-thread copies are generic-proxy writes, which the
// async proxy sees only after `fence.proxy.async.shared::cta`; the waiting consumer has observed
// them through the full barrier (acquire), so its fence orders them before the store it issues.
#pragma once

#include <cstdint>

#include "mbarrier.cuh"

namespace ferrocuda {

/// Tiles moved by the tensor copy engine (`cp.async.bulk.tensor`), issued by one thread.
struct TmaBarrierHandler {
  static constexpr uint32_t kFullArrivals = 1;
  static constexpr bool kSingleIssuer = true;

  /// Arrives once and expects `bytes` (the whole box, out-of-bounds fill included).
  __device__ __forceinline__ static void prepare_stage(uint64_t* full, uint32_t bytes) {
    mbarrier_arrive_expect_tx(full, bytes);
  }
  /// Nothing: the copy engine completes the transaction bytes itself.
  __device__ __forceinline__ static void complete_stage(uint64_t*) {}
  /// Nothing: the stage was written through the async proxy already.
  __device__ __forceinline__ static void before_async_read() {}
};

/// Tiles moved by per-thread `cp.async` copies, issued by every one of `kProducerThreads`.
template <uint32_t kProducerThreads>
struct CpAsyncBarrierHandler {
  static constexpr uint32_t kFullArrivals = kProducerThreads;
  static constexpr bool kSingleIssuer = false;

  /// Nothing: cp.async copies carry no transaction count to announce.
  __device__ __forceinline__ static void prepare_stage(uint64_t*, uint32_t) {}
  /// This thread's arrival, performed by the hardware when its earlier cp.async copies land.
  __device__ __forceinline__ static void complete_stage(uint64_t* full) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(full))
                 : "memory");
  }
  /// The copies were generic-proxy writes: fence them for the async proxy's read.
  __device__ __forceinline__ static void before_async_read() { fence_proxy_async_smem(); }
};

}  // namespace ferrocuda
