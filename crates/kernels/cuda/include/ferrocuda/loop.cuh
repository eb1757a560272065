// ferrocuda/loop.cuh: kernels inside a loop that stays on the GPU (ferrocuda-graph's conditional
// nodes and its gated device loop).
//
//   #include "ferrocuda/loop.cuh"
//   extern "C" __global__ void consume(unsigned long long condition, const unsigned long long* state,
//                                      const float* in, float* out) {
//     if (!ferrocuda::loop_step_ok(state)) return;  // the step's value was not produced
//     ...
//     if (converged) ferrocuda::end_loop(condition);  // the loop ends after this step
//   }
//
// Rust passes `condition` as a `Condition` (a typed kernel parameter holding the graph's
// conditional handle) and `state` as `DeviceLoop::state()` (a buffer, through the use path).
//
// Semantics:
//  * A WHILE node runs its body again as long as its condition is non-zero when the body ends;
//    an IF node runs its body when the condition is non-zero; a SWITCH node the body whose index
//    equals the condition. `set_condition` may be called by any thread of any kernel of the graph
//    that holds the node; the last store before the node evaluates the condition wins.
//  * The gated device loop sets its condition to 1 at each launch (when it has steps to run) and
//    only ever clears it afterwards: `end_loop` from a user kernel ends the loop after the
//    current step, and the loop reports that it was ended on the device.
//  * Calling these compiles to a call the driver resolves when it loads a cubin; PTX that calls
//    them cannot be loaded by `cuModuleLoadData` alone. Build kernels that use them as cubins
//    (nvcc -cubin or -fatbin, one SASS per architecture).
#pragma once

namespace ferrocuda {

/// Words of the gated device loop's state (device memory, `DeviceLoop::state()` in Rust).
enum LoopWord : unsigned {
  /// Steps whose gate passed in the current launch.
  kLoopSteps = 0,
  /// How the launch ended: a `LoopEnd` value (kLoopRunning while it runs).
  kLoopOutcome = 1,
  /// %globaltimer when the launch began.
  kLoopStart = 2,
  /// Steps kicked off so far, over every launch: the epoch the current step's gate waits for.
  kLoopKicks = 3,
  /// Launches of the loop that ended.
  kLoopLaunchesEnded = 4,
  /// 1 when the current step's value was produced (its gate passed), 0 otherwise.
  kLoopStepOk = 5,
  /// Words in the state.
  kLoopWords = 8,
};

/// How a launch of the gated device loop ended (`LoopEnd` in Rust).
enum LoopEnd : unsigned long long {
  kLoopRunning = 0,
  /// It ran the steps it was built for.
  kLoopCompleted = 1,
  /// The host asked it to stop (`DeviceLoop::stop`).
  kLoopStopped = 2,
  /// A kernel of the body cleared the condition (`end_loop`).
  kLoopEndedOnDevice = 3,
  /// The producer gave up: the step's flag holds the abort value.
  kLoopAborted = 4,
  /// The launch's time limit passed.
  kLoopTimedOut = 5,
};

/// Sets the conditional handle `condition` (a `Condition` passed from Rust) to `value`.
__device__ __forceinline__ void set_condition(unsigned long long condition, unsigned value) {
  cudaGraphSetConditional(static_cast<cudaGraphConditionalHandle>(condition), value);
}

/// Ends the loop whose condition is `condition` after the current iteration.
__device__ __forceinline__ void end_loop(unsigned long long condition) {
  set_condition(condition, 0);
}

/// Whether the gated device loop's current step was produced (its gate passed): false in the step
/// in which the loop ends because it was stopped, aborted or timed out.
__device__ __forceinline__ bool loop_step_ok(const unsigned long long* state) {
  return *reinterpret_cast<const volatile unsigned long long*>(&state[kLoopStepOk]) != 0;
}

}  // namespace ferrocuda
