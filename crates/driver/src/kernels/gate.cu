// The driver crate's own kernels: the polling gate. `cargo xtask ptx` compiles this file to
// gate.ptx (checked in, embedded by the crate), so the crate never needs nvcc.

typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ u64 globaltimer() {
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ u64 load_acquire_sys(const u64* p) {
    u64 v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

// One thread waits until *flag == value (cond 0) or *flag >= value (cond 1), or the flag holds the
// abort value (2^63 - 1, CompletionFlag::ABORTED). With timeout_ns != 0 it gives up after that much GPU time and adds 1 to
// *expired (mapped host memory the crate reads at the next synchronize). Later work on the stream
// starts when the kernel exits. `__nanosleep(32)` between loads keeps the poller light (GPU.md:
// one poller costs ~1% of copy bandwidth).
extern "C" __global__ void ferrocuda_gate_poll(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
                                               u64* expired) {
    const u64 start = globaltimer();
    for (;;) {
        const u64 v = load_acquire_sys(flag);
        // GEQ is cyclic, as the driver's CU_STREAM_WAIT_VALUE_GEQ; 2^63 - 1 is the abort value.
        if ((cond == 0 ? v == value : (long long)(v - value) >= 0) || v == 0x7fffffffffffffffull) {
            return;
        }
        if (timeout_ns != 0 && globaltimer() - start > timeout_ns) {
            atomicAdd_system(expired, 1ull);
            __threadfence_system();
            return;
        }
        __nanosleep(32);
    }
}

// The trampoline's GPU-write kickoff as a graph kernel node: each run bumps a counter in device
// memory and publishes it to a mapped host slot the crate's notifier watches; each new value is
// one run of the node's host closure. The system fence makes everything the graph did before this
// node visible to the closure.
extern "C" __global__ void ferrocuda_kick(u64* counter, u64* slot) {
    const u64 c = *counter + 1;
    *counter = c;
    __threadfence_system();
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(slot), "l"(c) : "memory");
}
