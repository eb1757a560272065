// Test kernels that set conditional handles (ferrocuda/loop.cuh): compiled by `cargo xtask ptx` to
// loop_test_kernels.fatbin (sm_90 SASS), since a PTX module cannot resolve cudaGraphSetConditional.
#include <ferrocuda/loop.cuh>

typedef unsigned long long u64;

// Ends the gated device loop on the device once `at` steps of the launch passed their gate.
extern "C" __global__ void end_loop_at(u64 condition, const u64* state, u64 at) {
    if (state[ferrocuda::kLoopSteps] >= at) ferrocuda::end_loop(condition);
}

// Sets `condition` to `value` (an IF or SWITCH node after this one tests it).
extern "C" __global__ void set_condition_to(u64 condition, unsigned value) {
    ferrocuda::set_condition(condition, value);
}

// Adds `v` to *x: a body that ran leaves its mark.
extern "C" __global__ void add_u64(u64* x, u64 v) { *x += v; }

// A WHILE body's counter: adds 1 to *x and ends the loop once *x reaches `limit`.
extern "C" __global__ void count_to(u64 condition, u64* x, u64 limit) {
    const u64 n = *x + 1;
    *x = n;
    if (n >= limit) ferrocuda::end_loop(condition);
}
