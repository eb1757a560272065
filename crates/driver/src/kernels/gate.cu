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

constexpr u64 kAborted = 0x7fffffffffffffffull;  // CompletionFlag::ABORTED, 2^63 - 1

// One thread waits until *flag == value (cond 0) or *flag >= value (cond 1), or the flag holds the
// abort value. With timeout_ns != 0 it gives up after that much GPU time and adds 1 to *expired
// (mapped host memory the crate reads at the next synchronize). Returns 0 when the condition held,
// 1 on the abort value, 2 when the time limit expired. `__nanosleep(32)` between loads keeps the
// poller light (GPU.md: one poller costs ~1% of copy bandwidth).
__device__ __forceinline__ u32 gate_wait(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
                                         u64* expired) {
    const u64 start = globaltimer();
    for (;;) {
        const u64 v = load_acquire_sys(flag);
        // GEQ is cyclic, as the driver's CU_STREAM_WAIT_VALUE_GEQ.
        if (cond == 0 ? v == value : (long long)(v - value) >= 0) {
            return v == kAborted && value != kAborted ? 1 : 0;
        }
        if (v == kAborted) {
            return 1;
        }
        if (timeout_ns != 0 && globaltimer() - start > timeout_ns) {
            atomicAdd_system(expired, 1ull);
            __threadfence_system();
            return 2;
        }
        __nanosleep(32);
    }
}

// The polling gate: later work on the stream starts when this one-thread kernel exits, however
// the wait ended.
extern "C" __global__ void ferrocuda_gate_poll(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
                                               u64* expired) {
    gate_wait(flag, value, cond, timeout_ns, expired);
}

// The polling relay: the gate above, then a store of `target_value` to *target (any 8-byte slot
// this device can write: its own memory, a peer's, mapped host memory), so a stream of another
// device gated on *target starts without a second kernel boundary on this one. An abort, and an
// expired time limit, are forwarded as the abort value instead: whoever waits downstream is
// released, and told that what it waited for was not produced. The system fence first makes what
// this stream did before the relay visible to every device and the host, as cuStreamWriteValue64
// does by default.
extern "C" __global__ void ferrocuda_gate_relay(const u64* flag, u64 value, u32 cond,
                                                u64 timeout_ns, u64* expired, u64* target,
                                                u64 target_value) {
    const u32 status = gate_wait(flag, value, cond, timeout_ns, expired);
    const u64 out = status == 0 ? target_value : kAborted;
    __threadfence_system();
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(target), "l"(out) : "memory");
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
