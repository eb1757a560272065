// Kernels that wait on a completion flag in their prologue (ferrocuda/gate.cuh, the fused gate).
//
// ferrocuda_gated_scale_f32: dst[i] = a * src[i] for i < n, once *flag satisfies cond for value.
// Every block waits on its own (thread 0 polls, the block syncs), then walks a grid-stride loop.
// On abort or an expired time limit the block writes nothing: the data the gate guarded was not
// produced; an expiry adds 1 per block to *expired (see gate.cuh).
#include "ferrocuda/gate.cuh"

extern "C" __global__ void ferrocuda_gated_scale_f32(const unsigned long long* flag,
                                                     unsigned long long value, unsigned cond,
                                                     unsigned long long timeout_ns,
                                                     unsigned long long* expired,
                                                     const float* __restrict__ src,
                                                     float* __restrict__ dst, unsigned n, float a) {
  if (!ferrocuda::wait_flag(flag, value, static_cast<ferrocuda::Cond>(cond), timeout_ns,
                            expired)) {
    return;
  }
  const unsigned stride = gridDim.x * blockDim.x;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = a * src[i];
  }
}
