// Kernels of the raw-driver baseline (bench/raw). Built with
//   nvcc -gencode=arch=compute_90a,code=sm_90a --cubin -I ../../crates/kernels/cuda/include \
//        -o bench_kernels.cubin bench_kernels.cu
// and loaded by raw_bench with cuModuleLoadData: no CUDA runtime anywhere in the process (a runtime
// launch would make event calls slower for the rest of the process: bench/README.md).
//
// Slots named `host_*` are 8-byte words of mapped pinned host memory (cuMemHostAlloc with
// DEVICEMAP, device pointer from cuMemHostGetDevicePointer); `dev_*` are device memory. Every
// polling loop has a device-side time limit: when it expires the kernel records the value it was
// waiting for in `host_err` and returns, so a lost signal shows up as an error, not a hung GPU.

typedef unsigned long long u64;

__device__ __forceinline__ u64 globaltimer() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

// System-scope acquire load: sees the host's release store without caching the line in L1.
__device__ __forceinline__ u64 load_acquire_sys(const u64 *p) {
    u64 v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// System-scope release store: everything this thread wrote before is visible to the host first.
__device__ __forceinline__ void store_release_sys(u64 *p, u64 v) {
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

// Polls *flag >= target with __nanosleep(32) between loads (the polling gate). Returns
// false, after recording target in *host_err, if timeout_ns passes first.
__device__ __forceinline__ bool poll_geq(const u64 *flag, u64 target, u64 timeout_ns, u64 *host_err) {
    const u64 start = globaltimer();
    while (load_acquire_sys(flag) < target) {
        if (globaltimer() - start > timeout_ns) {
            store_release_sys(host_err, target);
            return false;
        }
        __nanosleep(32);
    }
    return true;
}

// Does nothing: launch + synchronize cost.
extern "C" __global__ void empty_kernel() {}

// One thread writes `value` to a host slot: the "ack" the host spins on.
extern "C" __global__ void ack(u64 *host_slot, u64 value) { store_release_sys(host_slot, value); }

// For graphs, whose kernel parameters are fixed at instantiation: the value written advances by
// one per replay, counted in device memory (a read of host memory would cost a bus round trip).
extern "C" __global__ void ack_inc(u64 *dev_count, u64 *host_slot) {
    const u64 v = *dev_count + 1;
    *dev_count = v;
    store_release_sys(host_slot, v);
}

// Spins for ns nanoseconds of %globaltimer: a kernel of known duration for elapsed-time accuracy.
extern "C" __global__ void spin_ns(u64 ns) {
    const u64 start = globaltimer();
    while (globaltimer() - start < ns) {
    }
}

// The polling gate: launched as 1 block of 1 thread ahead of the gated kernel in the same stream;
// the gated kernel starts when this one returns.
extern "C" __global__ void poll_gate(const u64 *host_flag, u64 target, u64 timeout_ns, u64 *host_err) {
    poll_geq(host_flag, target, timeout_ns, host_err);
}

// The fused gate: the gated kernel itself waits in its prologue (thread 0 polls, the block syncs),
// then does its work; here the work is the ack.
extern "C" __global__ void fused_gate_ack(const u64 *host_flag, u64 target, u64 *host_slot, u64 value,
                                          u64 timeout_ns, u64 *host_err) {
    __shared__ bool ok;
    if (threadIdx.x == 0) {
        ok = poll_geq(host_flag, target, timeout_ns, host_err);
    }
    __syncthreads();
    if (ok && threadIdx.x == 0) {
        store_release_sys(host_slot, value);
    }
}

// Graph forms of the two gates. The value waited for is an epoch kept in device memory: replay k
// waits for flag >= k (the previous epoch + 1) and stores k, so the graph needs no update between
// replays and a replay whose signal already came (flag >= k) passes at once (the GEQ epoch scheme).
extern "C" __global__ void poll_gate_epoch(const u64 *host_flag, u64 *dev_epoch, u64 timeout_ns,
                                           u64 *host_err) {
    const u64 e = *dev_epoch + 1;
    poll_geq(host_flag, e, timeout_ns, host_err);
    *dev_epoch = e;
}

extern "C" __global__ void fused_gate_ack_epoch(const u64 *host_flag, u64 *dev_epoch, u64 *host_slot,
                                                u64 timeout_ns, u64 *host_err) {
    __shared__ bool ok;
    __shared__ u64 e;
    if (threadIdx.x == 0) {
        e = *dev_epoch + 1;
        ok = poll_geq(host_flag, e, timeout_ns, host_err);
        *dev_epoch = e;
    }
    __syncthreads();
    if (ok && threadIdx.x == 0) {
        store_release_sys(host_slot, e);
    }
}

// ---- not the baseline: ferrocuda's fused gate, for the ferrocuda program's `fused_gate_stream` ----
// The same ack as fused_gate_ack above, but gated by ferrocuda::wait_flag from the header ferrocuda
// users get (crates/kernels/cuda/include/ferrocuda/gate.cuh; xtask passes -I for it), so the
// ferrocuda row measures that header against the hand-written kernel above in the same run.
// Cyclic GEQ, abort value, and on expiry *expired += 1 (the program fails if it is not 0).
#include <ferrocuda/gate.cuh>

extern "C" __global__ void ferrocuda_fused_gate_ack(const u64 *flag, u64 target, u64 *host_slot,
                                                    u64 value, u64 timeout_ns, u64 *expired) {
    if (ferrocuda::wait_flag(flag, target, ferrocuda::Cond::kGeq, timeout_ns, expired) &&
        threadIdx.x == 0) {
        store_release_sys(host_slot, value);
    }
}

// ---- the device loop (bench_host.c's device_loop): a WHILE conditional node ----
// cudaGraphSetConditional resolves at cubin load (this file is a cubin). dev_state[0] is the
// kick count (ack_inc's counter), dev_state[1] the steps of the launch.
extern "C" __global__ void loop_begin(u64 *dev_state, u64 handle) {
    dev_state[1] = 0;
    cudaGraphSetConditional((cudaGraphConditionalHandle)handle, 1);
}

// The step's gate: waits for the host's flag to reach the kick count, counts the step, ends the
// loop after n steps (or on an expired time limit).
extern "C" __global__ void loop_gate(const u64 *host_flag, u64 *dev_state, u64 handle, u64 n,
                                     u64 timeout_ns, u64 *host_err) {
    if (!poll_geq(host_flag, dev_state[0], timeout_ns, host_err)) {
        cudaGraphSetConditional((cudaGraphConditionalHandle)handle, 0);
        return;
    }
    const u64 s = dev_state[1] + 1;
    dev_state[1] = s;
    if (s >= n) cudaGraphSetConditional((cudaGraphConditionalHandle)handle, 0);
}

// ---- the kernels benchmark's variants of ferrocuda-kernels' pipeline kernels ----
#include "kernel_variants.cuh"
