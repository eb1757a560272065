// ferrocuda/gate.cuh: the fused gate. A kernel waits for a host-signalled completion flag in its
// own prologue, so its real work starts with no driver wait and no separate polling kernel in
// front of it: sooner after the host's signal than either (docs/hardware-facts.md in the
// repository has the measured figures).
//
//   #include "ferrocuda/gate.cuh"
//   extern "C" __global__ void my_kernel(const unsigned long long* flag, unsigned long long epoch,
//                                        unsigned long long* expired, float* out) {
//     if (!ferrocuda::wait_flag(flag, epoch, ferrocuda::Cond::kGeq, 0, expired)) return;
//     ...  // every thread of the block: the host's data written before the signal is visible
//   }
//
// Rust passes the flag with `LaunchArgs::arg(&flag.as_ref())` (a `CompletionFlagRef` is a kernel
// parameter holding the flag's device address); see crates/kernels/src/launch.rs's
// `Kernels::gated_scale_f32` for a complete launcher and docs/gates.md for the trade-offs.
//
// Semantics (ferrocuda-driver's polling gate and relay, crates/driver/src/kernels/gate.cu, are
// built on wait_flag_thread below, so they are the same):
//  * `Cond::kEqual` passes when *flag == value; `Cond::kGeq` when the flag has reached value,
//    compared cyclically, `(long long)(*flag - value) >= 0`, as the driver's
//    CU_STREAM_WAIT_VALUE_GEQ does (monotonic epochs below 2^63 never miss a signal).
//  * The abort value kAborted (2^63 - 1, `CompletionFlag::ABORTED`) releases every wait, whatever
//    the condition: the kernel must not hang when the producer failed. `wait_flag` then returns
//    false (the data the wait guarded was never produced), unless `value` is kAborted itself.
//    kAborted is reserved: an epoch must never take that value.
//  * `timeout_ns != 0` bounds the wait in %globaltimer nanoseconds, counted from when this block's
//    thread 0 started waiting. On expiry thread 0 adds 1 to `*expired` and the call returns false.
//    With a time limit, every block of the grid that gives up adds its own 1. The add is a
//    device-scope atomicAdd: `*expired` may be mapped host memory (a `CompletionFlag` used as a
//    counter), and CUDA makes a GPU's atomic on mapped host memory atomic among that GPU's threads
//    only; a system-scope one would need CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED, which
//    PCIe hosts lack (compute-sanitizer reports it there as an invalid system-scoped atomic). So:
//    one counter per device, the host only reads it (`CompletionFlag::load`), and the count is
//    complete once the gated kernels have finished (after a synchronize); reset it only when no
//    gate can still add to it.
//
// Cost: the block is resident on its SM for the whole wait (its registers, shared memory and a
// slot of the SM's block limit), thread 0 issues one system-scope load per __nanosleep(32) (each
// waiting block takes a share of copy bandwidth: docs/hardware-facts.md), the other threads
// sleep at the barrier. Every block of the grid waits on its own, so a grid of N resident blocks
// is N pollers. Prefer the driver's wait (DeviceStream::wait_value) for long waits, for many
// waiters, or when the SMs are needed by other work while waiting; prefer the fused gate when the
// wait is short and the gated kernel's start latency matters.
#pragma once

namespace ferrocuda {

/// How `wait_flag` compares the flag with the awaited value (`WaitCondition` in Rust).
enum class Cond : unsigned {
  /// The flag equals the value.
  kEqual = 0,
  /// The flag has reached the value, cyclically: (long long)(flag - value) >= 0.
  kGeq = 1,
};

/// How a wait ended, as seen by every thread of the block.
enum class GateStatus : unsigned {
  /// The flag satisfied the condition.
  kSignalled = 0,
  /// The flag holds kAborted (and `value` is not kAborted itself).
  kAborted = 1,
  /// The time limit passed first; `*expired` was incremented.
  kExpired = 2,
};

/// The value `CompletionFlag::abort` stores: 2^63 - 1 (i64::MAX, so that it passes every cyclic
/// greater-or-equal comparison with an epoch below 2^63).
constexpr unsigned long long kAborted = 0x7fffffffffffffffull;

/// Nanoseconds thread 0 sleeps between two loads of the flag.
constexpr unsigned kPollSleepNs = 32;

/// %globaltimer, in nanoseconds.
__device__ __forceinline__ unsigned long long gate_globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

/// System-scope acquire load: sees the host's release store (and everything the host wrote
/// before it); not served from a stale L1 line.
__device__ __forceinline__ unsigned long long gate_load_acquire_sys(
    const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

/// Whether `v` satisfies `cond` for `value` (no abort handling).
__device__ __forceinline__ bool gate_holds(unsigned long long v, unsigned long long value,
                                           Cond cond) {
  return cond == Cond::kEqual ? v == value : static_cast<long long>(v - value) >= 0;
}

/// One thread's wait: polls until the condition holds, the flag is aborted, or the time limit
/// passes (then bumps *expired). Used by thread 0 of `wait_flag_status`; callable alone from a
/// single thread that needs no block-wide result.
__device__ __forceinline__ GateStatus wait_flag_thread(const unsigned long long* flag,
                                                       unsigned long long value, Cond cond,
                                                       unsigned long long timeout_ns,
                                                       unsigned long long* expired) {
  const unsigned long long start = timeout_ns != 0 ? gate_globaltimer() : 0;
  for (;;) {
    const unsigned long long v = gate_load_acquire_sys(flag);
    // The abort value is checked first: it also passes every cyclic GEQ comparison.
    if (v == kAborted && value != kAborted) return GateStatus::kAborted;
    if (gate_holds(v, value, cond)) return GateStatus::kSignalled;
    if (timeout_ns != 0 && gate_globaltimer() - start > timeout_ns) {
      if (expired != nullptr) atomicAdd(expired, 1ull);  // device scope: see the header comment
      return GateStatus::kExpired;
    }
    __nanosleep(kPollSleepNs);
  }
}

/// The whole block waits until *flag satisfies `cond` for `value`, the flag is aborted, or
/// `timeout_ns` (0: no limit) passes. Thread 0 polls; the others wait at a block barrier. Every
/// thread gets the same status. Must be called by every thread of the block (it contains
/// __syncthreads), at a point where all of them reach it.
///
/// Visibility: thread 0's load is an acquire at system scope, synchronising with the host's release
/// store (`CompletionFlag::signal`); the block barrier then orders the rest of the block after it,
/// so everything the host wrote before signalling is visible to every thread afterwards.
__device__ __forceinline__ GateStatus wait_flag_status(const unsigned long long* flag,
                                                       unsigned long long value, Cond cond,
                                                       unsigned long long timeout_ns,
                                                       unsigned long long* expired) {
  const bool first = threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
  GateStatus s = GateStatus::kSignalled;
  if (first) s = wait_flag_thread(flag, value, cond, timeout_ns, expired);
  // Broadcast without shared memory (so the header needs none and back-to-back calls cannot race
  // on a shared slot): one barrier on the common path, a second only when the wait failed.
  if (!__syncthreads_or(first && s != GateStatus::kSignalled)) return GateStatus::kSignalled;
  return __syncthreads_or(first && s == GateStatus::kExpired) ? GateStatus::kExpired
                                                              : GateStatus::kAborted;
}

/// `wait_flag_status(...) == GateStatus::kSignalled`: true when the block may do the gated work;
/// false when the flag was aborted or the time limit passed (then *expired was incremented).
__device__ __forceinline__ bool wait_flag(const unsigned long long* flag, unsigned long long value,
                                          Cond cond, unsigned long long timeout_ns,
                                          unsigned long long* expired) {
  return wait_flag_status(flag, value, cond, timeout_ns, expired) == GateStatus::kSignalled;
}

}  // namespace ferrocuda
