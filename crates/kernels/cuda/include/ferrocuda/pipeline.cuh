// ferrocuda/pipeline.cuh: an N-stage ring of shared-memory tile buffers between producer
// threads (which start copies into a stage) and consumer warps (which read it), generic over
// the BarrierHandler that says how a stage becomes full.
//
// Each stage has two mbarriers:
//   full[s]   completes when stage s holds its tile (arrivals: Handler::kFullArrivals, plus the
//             transaction bytes TMA announces)
//   empty[s]  completes when every consumer thread is done reading stage s (one arrival per
//             consumer thread)
// Both sides walk the ring with a PipelineState: the stage index and the parity of the phase
// that the k-th use of that stage is (k / kStages mod 2). The consumer waits on full with that
// parity; the producer waits on empty with the opposite parity, which a fresh barrier (phase 0)
// satisfies at once, so the first lap starts without any arrival on empty.
//
// Why every consumer thread arrives on empty (not one lane per warp after __syncwarp): the
// one-lane form is correct under the PTX memory model (bar.warp.sync orders the lanes' reads
// before lane 0's release-arrive), but compute-sanitizer's racecheck does not follow that
// transitive order and reports the other 31 lanes' reads as racing with the producer's next
// cp.async into the stage (docs/kernels.md, "The racecheck report"). A per-thread arrive puts
// each thread's own release between its reads and the reuse, which racecheck does model; it
// costs 32 arrivals per warp and stage instead of one, a handful of shared-memory atomics per
// 16 KiB tile.
//
// Proxy fences: barrier initialisation is a generic-proxy write that the copy engine (async
// proxy) later updates, so init() fences it (mbarrier_init_fence). Consumers here only read
// stages; their reads are ordered before the next copy into the stage by the empty barrier
// (release on arrive, acquire on wait). A consumer that *writes* a stage with ordinary stores
// before the copy engine touches it again must call fence_proxy_async_smem() before
// consumer_release (consumer_release_after_write does both).
#pragma once

#include <cstdint>

#include "barrier_handler.cuh"
#include "mbarrier.cuh"

namespace ferrocuda {

/// Position in the ring: stage index and phase parity of its current use.
template <uint32_t kStages>
struct PipelineState {
  uint32_t index = 0;
  uint32_t phase = 0;

  __device__ __forceinline__ void advance() {
    if (++index == kStages) {
      index = 0;
      phase ^= 1;
    }
  }
};

/// The barriers of a kStages-deep ring. Lives in shared memory; the tile buffers are separate.
template <class Handler, uint32_t kStages>
struct Pipeline {
  static_assert(kStages >= 2, "a ring needs at least two stages to overlap copy and use");
  uint64_t full[kStages];
  uint64_t empty[kStages];

  /// One thread initialises every barrier; all threads must then pass a CTA barrier
  /// (__syncthreads) before touching the pipeline. Every one of `consumer_threads` calls
  /// consumer_release once per tile. `extra_full` more arrivals complete each full phase (a
  /// producer that also publishes a value with the stage arrives for it: dynamic item order).
  __device__ __forceinline__ void init(uint32_t consumer_threads, uint32_t extra_full = 0) {
    for (uint32_t s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], Handler::kFullArrivals + extra_full);
      mbarrier_init(&empty[s], consumer_threads);
    }
    mbarrier_init_fence();
  }

  /// Producer: waits until consumers have released the stage (free on the first lap).
  __device__ __forceinline__ void producer_acquire(const PipelineState<kStages>& st) {
    mbarrier_wait_parity(&empty[st.index], st.phase ^ 1);
  }
  /// Producer: the handler's prepare_stage, before the stage's copies are issued.
  __device__ __forceinline__ void producer_prepare(const PipelineState<kStages>& st,
                                                   uint32_t bytes) {
    Handler::prepare_stage(&full[st.index], bytes);
  }
  /// Producer: the handler's complete_stage, after the stage's copies are issued.
  __device__ __forceinline__ void producer_commit(const PipelineState<kStages>& st) {
    Handler::complete_stage(&full[st.index]);
  }
  /// The barrier the stage's copies complete on (TMA's `mbarrier::complete_tx`).
  __device__ __forceinline__ uint64_t* full_barrier(const PipelineState<kStages>& st) {
    return &full[st.index];
  }

  /// Consumer: waits until the stage holds its tile; its contents are then visible.
  __device__ __forceinline__ void consumer_wait(const PipelineState<kStages>& st) {
    mbarrier_wait_parity(&full[st.index], st.phase);
  }
  /// Consumer (every consumer thread): this thread is done reading the stage. The arrive has
  /// release semantics, so the thread's reads are ordered before the producer's next acquire.
  __device__ __forceinline__ void consumer_release(const PipelineState<kStages>& st) {
    mbarrier_arrive(&empty[st.index]);
  }
  /// Consumer (every consumer thread): as consumer_release, for a thread that wrote the stage
  /// with ordinary stores, so the copy engine's next write into it is ordered after them.
  __device__ __forceinline__ void consumer_release_after_write(const PipelineState<kStages>& st) {
    fence_proxy_async_smem();
    consumer_release(st);
  }

  /// Invalidates every barrier; once, by one thread, after a CTA barrier that follows the last
  /// use of the ring.
  __device__ __forceinline__ void invalidate() {
    for (uint32_t s = 0; s < kStages; ++s) {
      mbarrier_inval(&full[s]);
      mbarrier_inval(&empty[s]);
    }
  }
};

}  // namespace ferrocuda
