/* Several GPUs of one host: the raw driver API baseline of multi_bench's fan-out and
 * relay rows, under the same names (bench multi_fanout / multi_relay, regime = the row). The
 * fan-out runs on GPU 0 alone and on every GPU (N of them: regime <gate>_Ngpu, as multi_bench
 * names it); the relays run GPU0 -> GPU1.
 *
 * Every row has the shape of the gate benchmarks' idle regime (bench_gates.c): step i is enqueued
 * on the GPUs' streams, the host pauses 30-50 us (every GPU reaches its gate and waits), stores
 * flag = i (release) and spins until the last ack >= i. The sample is that store -> the last ack
 * seen. GPU g acks into its own env's SLOT_ACK (mapped pinned memory of the host).
 *
 * On a machine with one GPU, "GPU1" is a second env on GPU 0 (its own streams, module and slots in
 * the same primary context): the _1gpu fan-out rows run, the relay rows run between two streams of
 * GPU 0 under the names <chain>_1gpu, and the two-GPU rows are reported skipped. */
#include "env.h"

#include <stdio.h>
#include <string.h>

/* GPUs used at most (the first MAX_GPUS of a larger machine). */
#define MAX_GPUS 16

typedef struct {
    int ngpu;                      /* GPUs measured: the fan-out's N */
    int nenv;                      /* envs: ngpu, or 2 on one GPU (the second on GPU 0) */
    env_t g[MAX_GPUS];             /* env k is on GPU k, or on GPU 0 when k >= ngpu */
    CUdeviceptr flag_on[MAX_GPUS]; /* the host flag (g[0]'s SLOT_FLAG) as env g addresses it */
    CUdeviceptr mid_on[2];  /* g[0]'s SLOT_RELAY (the pinned relay slot) as GPU0/GPU1 address it */
    CUdeviceptr ack_on[MAX_GPUS];  /* env g's own ack slot */
    CUdeviceptr err_on[MAX_GPUS];  /* env g's own SLOT_ERR */
    CUdeviceptr peer;              /* 8 bytes of GPU1's memory (cuMemAlloc), written by GPU0 */
    CUevent ev;                    /* recorded on GPU0's stream */
} multi_t;

static CUdeviceptr mapped_on(const multi_t *m, int gpu, volatile uint64_t *host) {
    /* Portable mapped memory has a device address in every context; with unified addressing it
     * is the host address, but ask the driver as a program must. */
    CUdeviceptr d = 0;
    CU(cuCtxSetCurrent, m->g[gpu].ctx);
    CU(cuMemHostGetDevicePointer, &d, (void *)host, 0);
    return d;
}

static void reset(multi_t *m) {
    for (int g = m->nenv - 1; g >= 2; g--) {
        env_reset(&m->g[g]);
    }
    env_reset(&m->g[1]); /* leaves GPU1's context current: the memset below needs it */
    CU(cuMemsetD8Async, m->peer, 0, 8, m->g[1].s);
    CU(cuStreamSynchronize, m->g[1].s);
    env_reset(&m->g[0]);
}

static void check(multi_t *m, const char *bench) {
    for (int g = 0; g < m->nenv; g++) {
        env_check_gpu_errors(&m->g[g], bench);
    }
}

static void ack(multi_t *m, int gpu, uint64_t i) {
    void *args[] = {&m->ack_on[gpu], &i};
    launch1(m->g[gpu].ack, 1, m->g[gpu].s, args);
}

static void driver_wait(multi_t *m, int gpu, CUdeviceptr flag, uint64_t i) {
    CU(cuStreamWaitValue64, m->g[gpu].s, flag, i, CU_STREAM_WAIT_VALUE_GEQ);
}

static void poll_gate(multi_t *m, int gpu, CUdeviceptr flag, uint64_t i) {
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    void *args[] = {&flag, &i, &timeout, &m->err_on[gpu]};
    launch1(m->g[gpu].poll_gate, 1, m->g[gpu].s, args);
}

/* fused_gate_ack: waits for *flag >= i in its prologue, then stores i to `slot` (an ack slot, or
 * GPU1's memory: then it is GPU0's polling relay). */
static void fused(multi_t *m, int gpu, CUdeviceptr flag, uint64_t i, CUdeviceptr slot) {
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    void *args[] = {&flag, &i, &slot, &i, &timeout, &m->err_on[gpu]};
    launch1(m->g[gpu].fused_gate_ack, FUSED_THREADS, m->g[gpu].s, args);
}

enum fan { FAN_WAIT, FAN_POLL, FAN_FUSED };

static void fanout_row(multi_t *m, int n, enum fan how, const char *regime) {
    reset(m);
    volatile uint64_t *flag = &m->g[0].host[SLOT_FLAG];
    samples_t s = samples_new(g_samples);
    for (uint64_t i = 1; i <= g_warmup + g_samples; i++) {
        for (int g = 0; g < n; g++) {
            switch (how) {
            case FAN_WAIT:
                driver_wait(m, g, m->flag_on[g], i);
                ack(m, g, i);
                break;
            case FAN_POLL:
                poll_gate(m, g, m->flag_on[g], i);
                ack(m, g, i);
                break;
            case FAN_FUSED: fused(m, g, m->flag_on[g], i, m->ack_on[g]); break;
            }
        }
        spin_for_ns(idle_gap_ns());
        uint64_t t0 = now_ns(), last = t0;
        store_release(flag, i);
        for (int g = 0; g < n; g++) {
            uint64_t t = wait_geq(&m->g[g].host[SLOT_ACK], i, "multi_fanout");
            last = t > last ? t : last;
        }
        if (i > g_warmup) {
            samples_push(&s, (double)(last - t0));
        }
    }
    check(m, "multi_fanout");
    report("multi_fanout", regime, &s, NULL);
    samples_free(&s);
}

enum chain { EVENT, HOST_WAIT, PEER_WAIT, PEER_POLL, PEER_POLL_ALL, RELAY_POLL, RELAY_FUSED };

/* host -> GPU0 gate -> relay -> GPU1 ack. */
static void relay_row(multi_t *m, enum chain how, const char *regime) {
    reset(m);
    volatile uint64_t *flag = &m->g[0].host[SLOT_FLAG];
    samples_t s = samples_new(g_samples);
    for (uint64_t i = 1; i <= g_warmup + g_samples; i++) {
        switch (how) {
        case EVENT:
            driver_wait(m, 0, m->flag_on[0], i);
            CU(cuEventRecord, m->ev, m->g[0].s);
            CU(cuStreamWaitEvent, m->g[1].s, m->ev, 0);
            ack(m, 1, i);
            break;
        case HOST_WAIT:
        case PEER_WAIT: {
            /* The relay slot: pinned host memory, or GPU1's own memory written over the link. */
            CUdeviceptr w = how == HOST_WAIT ? m->mid_on[0] : m->peer;
            CUdeviceptr r = how == HOST_WAIT ? m->mid_on[1] : m->peer;
            driver_wait(m, 0, m->flag_on[0], i);
            CU(cuStreamWriteValue64, m->g[0].s, w, i, 0);
            driver_wait(m, 1, r, i);
            ack(m, 1, i);
            break;
        }
        case PEER_POLL:
        case PEER_POLL_ALL:
            if (how == PEER_POLL_ALL) {
                poll_gate(m, 0, m->flag_on[0], i);
            } else {
                driver_wait(m, 0, m->flag_on[0], i);
            }
            CU(cuStreamWriteValue64, m->g[0].s, m->peer, i, 0);
            poll_gate(m, 1, m->peer, i);
            ack(m, 1, i);
            break;
        case RELAY_POLL:
            fused(m, 0, m->flag_on[0], i, m->peer);
            poll_gate(m, 1, m->peer, i);
            ack(m, 1, i);
            break;
        case RELAY_FUSED:
            fused(m, 0, m->flag_on[0], i, m->peer);
            fused(m, 1, m->peer, i, m->ack_on[1]);
            break;
        }
        spin_for_ns(idle_gap_ns());
        uint64_t t0 = now_ns();
        store_release(flag, i);
        uint64_t t1 = wait_geq(&m->g[1].host[SLOT_ACK], i, "multi_relay");
        if (i > g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    check(m, "multi_relay");
    report("multi_relay", regime, &s, NULL);
    samples_free(&s);
}

void bench_multi(env_t *e0, const char *cubin, int fanout, int relay) {
    int count = 0;
    CU(cuDeviceGetCount, &count);
    int two = count >= 2;
    if (!two) {
        printf("multi: SKIPPED: the two-GPU rows need 2 GPUs (this machine has %d); one-GPU rows "
               "only\n",
               count);
    }
    if (count > MAX_GPUS) {
        printf("multi: %d GPUs; the fan-out rows use the first %d\n", count, MAX_GPUS);
    }
    static multi_t m; /* MAX_GPUS envs: off the stack */
    memset(&m, 0, sizeof m);
    m.ngpu = count > MAX_GPUS ? MAX_GPUS : count;
    m.nenv = two ? m.ngpu : 2;
    m.g[0] = *e0;
    /* Module loads, allocations and peer access before any wait exists (a module load blocks
     * behind a pending wait). */
    for (int g = 1; g < m.nenv; g++) {
        env_init(&m.g[g], g < m.ngpu ? g : 0, cubin);
    }
    /* Every pair both ways, as multi_bench does (the relays need 0 <-> 1). */
    for (int a = 0; two && a < m.ngpu; a++) {
        for (int b = 0; b < m.ngpu; b++) {
            if (a == b) {
                continue;
            }
            int can = 0;
            CU(cuDeviceCanAccessPeer, &can, m.g[a].dev, m.g[b].dev);
            if (!can) {
                die("GPU %d cannot access GPU %d's memory (peer access)", a, b);
            }
            CU(cuCtxSetCurrent, m.g[a].ctx);
            CUresult r = p_cuCtxEnablePeerAccess(m.g[b].ctx, 0);
            if (r != CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED) {
                cu_check(r, "cuCtxEnablePeerAccess", __FILE__, __LINE__);
            }
        }
    }
    for (int g = 0; g < m.nenv; g++) {
        m.flag_on[g] = mapped_on(&m, g, &m.g[0].host[SLOT_FLAG]);
        m.ack_on[g] = slot_dev(&m.g[g], SLOT_ACK);
        m.err_on[g] = slot_dev(&m.g[g], SLOT_ERR);
    }
    for (int g = 0; g < 2; g++) {
        m.mid_on[g] = mapped_on(&m, g, &m.g[0].host[SLOT_RELAY]);
    }
    CU(cuCtxSetCurrent, m.g[1].ctx);
    CU(cuMemAlloc, &m.peer, 128);
    CU(cuCtxSetCurrent, m.g[0].ctx);
    CU(cuEventCreate, &m.ev, CU_EVENT_DISABLE_TIMING);

    if (fanout) {
        static const struct {
            enum fan how;
            const char *name;
        } rows[] = {{FAN_WAIT, "wait"}, {FAN_POLL, "poll"}, {FAN_FUSED, "fused"}};
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            char name[64];
            snprintf(name, sizeof name, "%s_1gpu", rows[r].name);
            fanout_row(&m, 1, rows[r].how, name);
            if (two) {
                snprintf(name, sizeof name, "%s_%dgpu", rows[r].name, m.ngpu);
                fanout_row(&m, m.ngpu, rows[r].how, name);
            }
        }
    }
    if (relay) {
        static const struct {
            enum chain how;
            const char *name;
        } rows[] = {{EVENT, "event"},         {HOST_WAIT, "host_wait"},
                    {PEER_WAIT, "peer_wait"}, {PEER_POLL, "peer_poll"},
                    {PEER_POLL_ALL, "peer_poll_all"}, {RELAY_POLL, "relay_poll"},
                    {RELAY_FUSED, "relay_fused"}};
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
            char name[64];
            snprintf(name, sizeof name, "%s%s", rows[r].name, two ? "" : "_1gpu");
            relay_row(&m, rows[r].how, name);
        }
    }
    /* Nothing waits any more (every row ended with its last ack seen): freeing cannot block. */
    reset(&m);
    CU(cuEventDestroy, m.ev);
    CU(cuCtxSetCurrent, m.g[1].ctx);
    CU(cuMemFree, m.peer);
    for (int g = 1; g < m.nenv; g++) {
        env_destroy(&m.g[g]);
    }
    CU(cuCtxSetCurrent, m.g[0].ctx);
}
