// The GPU step of the gated-pipeline demo (demo/src/main.rs). `cargo xtask ptx` compiles this file
// to gated_pipeline.ptx (checked in), which the demo embeds, so building it never needs nvcc.
// `ferrocuda_demo::gpu_element` (demo/src/lib.rs) is the same function on the CPU: keep them equal.

#include <ferrocuda/gate.cuh>  // `cargo xtask ptx` passes -I crates/kernels/cuda/include

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ u64 globaltimer() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// splitmix64's finaliser.
__device__ __forceinline__ u64 mix(u64 x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Step `step`: out[i] = mix(mix(step ^ prev * C) + i) for i < n, where `prev` is the host's value
// the step consumes (mapped pinned memory, written by the host before the stream let this kernel
// start). Then the block spins until `work_ns` of GPU time have passed since it started: the
// stand-in for a real kernel of known length. One block.
__device__ __forceinline__ void produce_body(u64* out, u32 n, u64 step, const volatile u64* prev,
                                             u64 work_ns) {
    u64 start = globaltimer();
    u64 v = *prev;
    u64 seed = mix(step ^ (v * 0xD6E8FEB86659FD93ull));
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) {
        out[i] = mix(seed + i);
    }
    __threadfence_system();
    while (globaltimer() - start < work_ns) {
    }
}

extern "C" __global__ void produce(u64* out, u32 n, u64 step, const volatile u64* prev,
                                   u64 work_ns) {
    produce_body(out, n, step, prev, work_ns);
}

// The `flag+fused` strategy's step: the same work behind a fused gate (ferrocuda/gate.cuh from
// crates/kernels/cuda/include): the block waits in its prologue until *flag >= wait_value (or the
// flag is aborted, or timeout_ns passes: then *expired += 1), so no driver wait sits in the stream.
// On abort or expiry the step writes nothing. `work_ns` is counted from after the gate.
extern "C" __global__ void produce_gated(u64* out, u32 n, u64 step, const volatile u64* prev,
                                         u64 work_ns, const u64* flag, u64 wait_value,
                                         u64 timeout_ns, u64* expired) {
    if (!ferrocuda::wait_flag(flag, wait_value, ferrocuda::Cond::kGeq, timeout_ns, expired)) {
        return;
    }
    produce_body(out, n, step, prev, work_ns);
}

// The `device-loop` strategy's step, the body of ferrocuda-graph's gated device loop (one graph
// launch runs every step in a WHILE node): the step comes from the loop's device state (kicks so
// far, ferrocuda/loop.cuh), so one kernel node produces every step. In iteration i the host job
// kicked off first computed the value of step i - 1; this kernel then produces step i, reading the
// value of step i - depth. Iteration last + 1 only lets the host compute the last value.
#include <ferrocuda/loop.cuh>

extern "C" __global__ void produce_loop(u64* vectors, u32 n, const u64* state,
                                        const volatile u64* values, u64 depth, u64 last,
                                        u64 work_ns) {
    const u64 step = state[ferrocuda::kLoopKicks];
    if (step > last) return;
    const u64 prev = step > depth ? step - depth : 0;
    produce_body(vectors + step * n, n, step, values + prev, work_ns);
}
