/* What every benchmark shares: the device, its primary context, two streams, the kernels, and
 * slots of mapped pinned host memory. */
#ifndef RAW_ENV_H
#define RAW_ENV_H

#include "cu.h"
#include "util.h"

/* Indices of 8-byte slots in env_t.host; each slot sits on its own 128-byte line so the GPU's
 * writes to one never share a line with the host's writes to another. */
enum {
    SLOT_FLAG = 0, /* host -> GPU: the gate's flag (host stores i, the GPU waits for >= i) */
    SLOT_ACK = 16, /* GPU -> host: the ack kernel / write value stores i, the host spins on it */
    SLOT_KICK = 32, /* GPU -> host: the GPU-write trampoline's kickoff ticket */
    SLOT_ERR = 48, /* GPU -> host: a polling kernel's expired time limit (the value it waited for) */
    SLOT_RELAY = 64, /* GPU0 -> GPU1 through pinned host memory (bench_multi.c's host_wait) */
    SLOT_COUNT = 80,
};

/* Indices of 8-byte words in env_t.scratch (device memory): graph epochs and counters. */
enum { DEV_EPOCH = 0, DEV_ACK_COUNT = 16, DEV_WORDS = 32 };

/* Threads of the fused-gate kernels: one polls, the warp waits at __syncthreads, as a real gated
 * kernel's block would. */
#define FUSED_THREADS 32

/* Time limit of every polling kernel (device side); below the host's DEADLINE_NS so the kernel's
 * own error is what gets reported. */
#define GPU_POLL_TIMEOUT_NS (1000ull * 1000 * 1000)

typedef struct {
    CUdevice dev;
    CUcontext ctx;
    CUstream s;  /* the stream every benchmark uses */
    CUstream s2; /* the second stream of cross_stream_event_wait */
    CUmodule mod;
    CUfunction empty_kernel, ack, ack_inc, spin_ns, poll_gate, fused_gate_ack, poll_gate_epoch,
        fused_gate_ack_epoch;
    volatile uint64_t *host; /* SLOT_COUNT slots, cuMemHostAlloc(PORTABLE | DEVICEMAP) */
    CUdeviceptr host_dev;    /* the same memory, as the device sees it */
    CUdeviceptr scratch;     /* DEV_WORDS words of device memory */
    char name[256];
    int driver_version;
} env_t;

/* Initialises the driver, retains device `ordinal`'s primary context, loads the cubin (before any
 * wait can exist: module loads block behind a waiting stream) and allocates the slots. */
void env_init(env_t *e, int ordinal, const char *cubin_path);

/* Makes the env's context current, waits for all work (bounded: nothing is left waiting on a host
 * value between benchmarks), then zeroes the slots and the device scratch, so every benchmark
 * starts counting from 1. */
void env_reset(env_t *e);

/* Frees the slots, the scratch and the streams after a final env_reset (nothing waits then, so
 * cuMemFreeHost cannot block). The module and the primary context go with the process. */
void env_destroy(env_t *e);

/* Fails if a polling kernel recorded an expired time limit. */
void env_check_gpu_errors(env_t *e, const char *bench);

/* Device address of a host slot / a scratch word. */
static inline CUdeviceptr slot_dev(const env_t *e, int slot) {
    return e->host_dev + (CUdeviceptr)slot * sizeof(uint64_t);
}
static inline CUdeviceptr scratch_dev(const env_t *e, int word) {
    return e->scratch + (CUdeviceptr)word * sizeof(uint64_t);
}

/* Launches f as a grid of 1 block of `threads` threads on stream s. */
/* Synchronizes both benchmark streams. */
void env_sync(env_t *e);

/* cuGraphInstantiateWithFlags(exec, graph, 0). With RAW_USER_OBJECT=1 the graph first takes a user
 * object (an empty one, as a library's graph holds what its nodes use): an experiment, does a
 * graph's user object change its launches' latency? */
void graph_instantiate(CUgraphExec *exec, CUgraph graph);
void launch1(CUfunction f, unsigned threads, CUstream s, void **args);
/* Adds a one-block kernel node of `threads` threads (bench_gates.c); `args` are copied. */
CUgraphNode add_kernel_node(CUgraph g, const CUgraphNode *dep, size_t ndeps, CUfunction f,
                            unsigned threads, void **args);

/* The benchmarks, one function each (bench_*.c); `regime` variants are inside. */
void bench_event_record_sync(env_t *e);
void bench_event_query(env_t *e);
void bench_elapsed_time_accuracy(env_t *e);
void bench_launch_sync(env_t *e);
void bench_write_value_seen(env_t *e);
void bench_cross_stream_event_wait(env_t *e);
void bench_alloc_free_device(env_t *e);
void bench_alloc_free_pinned(env_t *e);
void bench_dtod_bandwidth(env_t *e);
void bench_signal_wait_ack(env_t *e);
void bench_signal_wait_write(env_t *e);
void bench_poll_gate_stream(env_t *e);
void bench_fused_gate_stream(env_t *e);
void bench_graph_wait_gate(env_t *e);
void bench_graph_poll_gate(env_t *e);
void bench_graph_fused_gate(env_t *e);
void bench_host_func_latency(env_t *e);
void bench_host_func_throughput(env_t *e);
void bench_trampoline_hostfunc(env_t *e);
void bench_trampoline_gpuwrite(env_t *e);
void bench_canonical_loop(env_t *e);
void bench_device_loop(env_t *e);

/* Several GPUs (bench_multi.c): `e` is GPU0's env; GPU1's is set up from `cubin`. On a machine with
 * one GPU it runs the one-GPU rows (the relays between two streams of GPU 0) and prints a SKIPPED
 * line for the two-GPU rows. */
void bench_multi(env_t *e, const char *cubin, int fanout, int relay);

#endif
