// The gated device loop's kernels: one launch of a graph runs many steps of
// [kick] -> [gate] -> (the user's consume and ack kernels) inside a WHILE conditional node, with no
// host API call per step. `cargo xtask ptx` compiles this file to loop.fatbin (one SASS per
// architecture, checked in): a kernel that sets a conditional handle calls cudaGraphSetConditional,
// which the driver resolves when it loads a cubin but not when it JIT-compiles PTX.
//
// The state is device memory (words in ferrocuda/loop.cuh); only the kick and the end of a launch
// write mapped host memory. Every kernel here runs as one thread.

#include <ferrocuda/gate.cuh>
#include <ferrocuda/loop.cuh>

typedef unsigned long long u64;

namespace {

__device__ __forceinline__ void store_release_sys(u64* p, u64 v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

// Ends the launch with `outcome` (the first reason wins) after the current iteration.
__device__ __forceinline__ void finish(u64* state, u64 condition, u64 outcome) {
  if (state[ferrocuda::kLoopOutcome] == ferrocuda::kLoopRunning) {
    state[ferrocuda::kLoopOutcome] = outcome;
  }
  ferrocuda::set_condition(condition, 0);
}

__device__ __forceinline__ bool stop_requested(const u64* stop) {
  return ferrocuda::gate_load_acquire_sys(stop) != 0;
}

// A relaxed system-scope load: issued before the flag's acquire load, both are in flight at once,
// so watching the stop word does not lengthen the gate's poll.
__device__ __forceinline__ u64 load_relaxed_sys(const u64* p) {
  u64 v;
  asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}

}  // namespace

// Before the WHILE node, once per launch: resets the launch's words and decides whether the loop
// runs at all (steps to run, no stop requested, not aborted).
extern "C" __global__ void ferrocuda_loop_begin(u64* state, u64 condition, u64 max_steps,
                                                const u64* stop, const u64* flag) {
  state[ferrocuda::kLoopSteps] = 0;
  state[ferrocuda::kLoopOutcome] = ferrocuda::kLoopRunning;
  state[ferrocuda::kLoopStart] = ferrocuda::gate_globaltimer();
  state[ferrocuda::kLoopStepOk] = 0;
  if (max_steps == 0) {
    finish(state, condition, ferrocuda::kLoopCompleted);
  } else if (stop_requested(stop)) {
    finish(state, condition, ferrocuda::kLoopStopped);
  } else if (ferrocuda::gate_load_acquire_sys(flag) == ferrocuda::kAborted) {
    finish(state, condition, ferrocuda::kLoopAborted);
  } else {
    ferrocuda::set_condition(condition, 1);
  }
}

// First in the body: the step's kickoff. Bumps the kick count and publishes it to the mapped slot
// the crate's notifier watches; a worker runs the host closure for that step and then stores the
// count in the loop's flag. The release at system scope makes everything the previous steps did
// visible to the closure. It reads no mapped memory: a bus read here would lengthen every step by
// its round trip (the gate's launch waits for this kernel), so the stop word is the gate's.
extern "C" __global__ void ferrocuda_loop_kick(u64* state, u64* slot, const u64* stop,
                                               u64 condition) {
  const u64 c = state[ferrocuda::kLoopKicks] + 1;
  state[ferrocuda::kLoopKicks] = c;
  store_release_sys(slot, c);
}

// After the kick: waits until the host produced this step (flag >= the kick count, cyclically),
// unless the flag is aborted, a stop is requested, or the launch's time limit (limit_ns, 0: none)
// passes; those end the loop, and the step is not counted. The stop word is loaded with the
// first poll's flag load (both in flight at once, so watching it does not lengthen the gate's
// answer) and then every kStopPolls polls: a stop is seen by the next step's gate however soon
// the host answers. Counts the step and ends the loop after `max_steps`. Only the gate writes
// the step's "produced" word that `loop_step_ok` reads.
constexpr unsigned kStopPolls = 32;

extern "C" __global__ void ferrocuda_loop_gate(const u64* flag, u64* state, u64 condition,
                                               u64 max_steps, const u64* stop, u64 limit_ns) {
  const u64 target = state[ferrocuda::kLoopKicks];
  for (unsigned polls = 0;; ++polls) {
    const bool check_stop = polls % kStopPolls == 0;
    // The relaxed load first: the acquire load below would order it after itself.
    const u64 stopped = check_stop ? load_relaxed_sys(stop) : 0;
    const u64 v = ferrocuda::gate_load_acquire_sys(flag);
    if (v == ferrocuda::kAborted) {
      state[ferrocuda::kLoopStepOk] = 0;
      finish(state, condition, ferrocuda::kLoopAborted);
      return;
    }
    if (stopped != 0) {
      state[ferrocuda::kLoopStepOk] = 0;
      finish(state, condition, ferrocuda::kLoopStopped);
      return;
    }
    if (ferrocuda::gate_holds(v, target, ferrocuda::Cond::kGeq)) break;
    if (limit_ns != 0 &&
        ferrocuda::gate_globaltimer() - state[ferrocuda::kLoopStart] > limit_ns) {
      state[ferrocuda::kLoopStepOk] = 0;
      finish(state, condition, ferrocuda::kLoopTimedOut);
      return;
    }
    __nanosleep(ferrocuda::kPollSleepNs);
  }
  state[ferrocuda::kLoopStepOk] = 1;
  const u64 steps = state[ferrocuda::kLoopSteps] + 1;
  state[ferrocuda::kLoopSteps] = steps;
  if (steps >= max_steps) {
    finish(state, condition, ferrocuda::kLoopCompleted);
  } else if (limit_ns != 0 &&
             ferrocuda::gate_globaltimer() - state[ferrocuda::kLoopStart] > limit_ns) {
    finish(state, condition, ferrocuda::kLoopTimedOut);
  }
}

// After the WHILE node, once per launch: publishes the launch's steps and outcome to mapped host
// memory, then the count of ended launches (last, with release: whoever sees the count sees the
// rest). A launch whose condition was cleared by a user kernel ended on the device.
extern "C" __global__ void ferrocuda_loop_end(u64* state, u64* steps_out, u64* outcome_out,
                                              u64* ended_out) {
  u64 outcome = state[ferrocuda::kLoopOutcome];
  if (outcome == ferrocuda::kLoopRunning) outcome = ferrocuda::kLoopEndedOnDevice;
  state[ferrocuda::kLoopOutcome] = outcome;
  const u64 ended = state[ferrocuda::kLoopLaunchesEnded] + 1;
  state[ferrocuda::kLoopLaunchesEnded] = ended;
  store_release_sys(steps_out, state[ferrocuda::kLoopSteps]);
  store_release_sys(outcome_out, outcome);
  store_release_sys(ended_out, ended);
}
