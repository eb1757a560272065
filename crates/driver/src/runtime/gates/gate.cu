// The driver crate's own kernels: the polling gate, the polling relay and the GPU-write kickoff.
// `cargo xtask ptx` compiles this file to gate.ptx (checked in, embedded by the crate), so the
// crate never needs nvcc. The wait itself is the fused gate's (ferrocuda/gate.cuh of the kernels
// crate; xtask passes -I for it), so the three gate forms share one definition of the conditions,
// the abort value and the time limit.

#include <ferrocuda/gate.cuh>

typedef unsigned long long u64;
typedef unsigned int u32;

// The polling gate: later work on the stream starts when this one-thread kernel exits, however
// the wait ended.
extern "C" __global__ void ferrocuda_gate_poll(const u64* flag, u64 value, u32 cond, u64 timeout_ns,
                                               u64* expired) {
    ferrocuda::wait_flag_thread(flag, value, static_cast<ferrocuda::Cond>(cond), timeout_ns,
                                expired);
}

// The polling relay: the gate above, then a store of `target_value` to *target (any 8-byte slot
// this device can write: its own memory, a peer's, mapped host memory), so a stream of another
// device gated on *target starts without a second kernel boundary on this one. An abort, and an
// expired time limit, are forwarded as the abort value instead: whoever waits downstream is
// released, and told that what it waited for was not produced. The store is a release at system
// scope: what this stream did before the relay is visible to every device and the host that sees
// the value, as after cuStreamWriteValue64's default fence. (The release compiles to one
// MEMBAR.ALL.SYS; a __threadfence_system() before it added a second system barrier, MEMBAR.SC.SYS,
// which the release already implies for this pattern, and cost the relay about a third of a
// microsecond: docs/hardware-facts.md.)
extern "C" __global__ void ferrocuda_gate_relay(const u64* flag, u64 value, u32 cond,
                                                u64 timeout_ns, u64* expired, u64* target,
                                                u64 target_value) {
    const ferrocuda::GateStatus status = ferrocuda::wait_flag_thread(
        flag, value, static_cast<ferrocuda::Cond>(cond), timeout_ns, expired);
    const u64 out = status == ferrocuda::GateStatus::kSignalled ? target_value : ferrocuda::kAborted;
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(target), "l"(out) : "memory");
}

// The trampoline's GPU-write kickoff as a graph kernel node: each run bumps a counter in device
// memory and publishes it to a mapped host slot the crate's notifier watches; each new value is
// one run of the node's host closure. The release at system scope makes everything the graph did
// before this node visible to the closure (as in the relay above, no separate fence).
extern "C" __global__ void ferrocuda_kick(u64* counter, u64* slot) {
    const u64 c = *counter + 1;
    *counter = c;
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(slot), "l"(c) : "memory");
}
