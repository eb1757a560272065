// Kernels for ferrocuda-driver's GPU tests. `cargo xtask ptx` compiles this file to
// test_kernels.ptx (checked in), which the tests load with Module::from_ptx.

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ u64 globaltimer() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// splitmix64: the function the host and the GPU both compute in the step tests.
__device__ __forceinline__ u64 mix(u64 x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Writes `v` to `out` (device or mapped host memory) and makes it visible to the host.
extern "C" __global__ void ack(u64* out, u64 v) {
    *(volatile u64*)out = v;
    __threadfence_system();
}

// Spins for `ns` nanoseconds of GPU time.
extern "C" __global__ void spin_ns(u64 ns) {
    u64 start = globaltimer();
    while (globaltimer() - start < ns) {
    }
}

// Appends `tag` to an order log: log[atomicAdd(count, 1)] = tag.
extern "C" __global__ void log_tag(u32* log, u32* count, u32 tag) {
    u32 i = atomicAdd(count, 1u);
    log[i] = tag;
    __threadfence_system();
}

// Step check of the trampoline test: the host wrote values[step] = mix(step ^ seed) before it
// signalled; the GPU recomputes it and counts mismatches and checked steps.
extern "C" __global__ void check_step(const u64* values, u64 step, u64 seed, u32* errors, u32* checked) {
    u64 got = ((volatile const u64*)values)[step];
    if (got != mix(step ^ seed)) atomicAdd(errors, 1u);
    atomicAdd(checked, 1u);
}

// x[i] += v for i < n.
extern "C" __global__ void add_u32(u32* x, u32 n, u32 v) {
    u32 i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += v;
}

// One step of the graph tests' canonical loop. st = {previous GPU output, step, errors}. The host
// wrote hv = mix(previous output) before it signalled; the GPU checks it, then produces the next
// output g = mix(hv + step) into mapped memory for the host.
extern "C" __global__ void canon_step(const u64* hv, u64* g_out, u64* st) {
    const u64 h = *(volatile const u64*)hv;
    const u64 step = st[1] + 1;
    if (h != mix(st[0])) st[2] += 1;
    const u64 g = mix(h + step);
    *(volatile u64*)g_out = g;
    __threadfence_system();
    st[0] = g;
    st[1] = step;
}

// A kernel gated in its own prologue (ferrocuda/gate.cuh, the fused gate) on `flag` >= `value`:
// writes `v` to `out` when the wait was signalled, the abort value when it was aborted or expired
// (so a test sees which). 32 threads, as a real gated block.
#include <ferrocuda/gate.cuh>

extern "C" __global__ void gated_ack(const u64* flag, u64 value, u64 timeout_ns, u64* expired,
                                     u64* out, u64 v) {
    const bool ok = ferrocuda::wait_flag(flag, value, ferrocuda::Cond::kGeq, timeout_ns, expired);
    if (threadIdx.x == 0) {
        *(volatile u64*)out = ok ? v : ferrocuda::kAborted;
        __threadfence_system();
    }
}

// A kernel fault: the context gets a sticky error and no later work runs (the fault tests, each in
// a test binary of its own, since the context stays broken for the rest of the process).
extern "C" __global__ void trap_now() { asm volatile("trap;"); }

// One step of the gated device loop's test (ferrocuda/loop.cuh): the host stored hv = mix(step)
// before the step's gate passed; the GPU checks it and answers ack = mix(hv ^ step) in mapped
// memory, which the host checks when it produces the next step. Skips a step that was not
// produced (the loop ended by stop, abort or time limit).
#include <ferrocuda/loop.cuh>

extern "C" __global__ void loop_consume(const u64* state, const u64* hv, u64* ack, u64* errors) {
    if (!ferrocuda::loop_step_ok(state)) return;
    const u64 step = state[ferrocuda::kLoopKicks];
    const u64 h = *(volatile const u64*)hv;
    if (h != mix(step)) errors[0] += 1;
    *(volatile u64*)ack = mix(h ^ step);
    __threadfence_system();
}
