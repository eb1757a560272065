/* Shared setup; see env.h. */
#define _GNU_SOURCE
#include "env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a whole file (the cubin) into memory. */
static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        die("cannot open cubin %s", path);
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        die("cannot seek in %s", path);
    }
    long n = ftell(f);
    if (n <= 0) {
        die("%s is empty or unreadable", path);
    }
    rewind(f);
    void *buf = malloc((size_t)n);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        die("cannot read %s", path);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

void env_init(env_t *e, int ordinal, const char *cubin_path) {
    memset(e, 0, sizeof *e);
    CU(cuInit, 0);
    CU(cuDriverGetVersion, &e->driver_version);
    CU(cuDeviceGet, &e->dev, ordinal);
    CU(cuDeviceGetName, e->name, (int)sizeof e->name, e->dev);
    int mem_ops = 0;
    CU(cuDeviceGetAttribute, &mem_ops, CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS, e->dev);
    if (!mem_ops) {
        die("%s does not support 64-bit stream memory operations (cuStreamWaitValue64)", e->name);
    }
    CU(cuDevicePrimaryCtxRetain, &e->ctx, e->dev);
    CU(cuCtxSetCurrent, e->ctx);

    size_t len = 0;
    void *image = read_file(cubin_path, &len);
    CU(cuModuleLoadData, &e->mod, image);
    free(image);
#define GET(name) CU(cuModuleGetFunction, &e->name, e->mod, #name)
    GET(empty_kernel);
    GET(ack);
    GET(ack_inc);
    GET(spin_ns);
    GET(poll_gate);
    GET(fused_gate_ack);
    GET(poll_gate_epoch);
    GET(fused_gate_ack_epoch);
#undef GET

    /* Non-blocking: no implicit synchronisation with the legacy default stream. */
    CU(cuStreamCreate, &e->s, CU_STREAM_NON_BLOCKING);
    CU(cuStreamCreate, &e->s2, CU_STREAM_NON_BLOCKING);
    /* RAW_EXTRA_STREAMS=N: N more streams that stay idle, as a library's internal ones (an
     * experiment: does a context's stream count change how its host-value waits behave?). */
    const char *extra = getenv("RAW_EXTRA_STREAMS");
    for (int i = 0; extra != NULL && i < atoi(extra) && i < 16; i++) {
        CUstream idle;
        CU(cuStreamCreate, &idle, CU_STREAM_NON_BLOCKING);
    }

    void *host = NULL;
    CU(cuMemHostAlloc, &host, SLOT_COUNT * sizeof(uint64_t),
       CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP);
    e->host = host;
    CU(cuMemHostGetDevicePointer, &e->host_dev, host, 0);
    /* RAW_POOL_SCRATCH=1: the scratch comes from the stream-ordered pool, as the Rust programs'
     * (an experiment: does the pool's existence change what event calls cost?). */
    if (getenv("RAW_POOL_SCRATCH") != NULL) {
        CU(cuMemAllocAsync, &e->scratch, DEV_WORDS * sizeof(uint64_t), e->s);
        CU(cuStreamSynchronize, e->s);
    } else {
        CU(cuMemAlloc, &e->scratch, DEV_WORDS * sizeof(uint64_t));
    }
    env_reset(e);
}

void env_sync(env_t *e) {
    CU(cuStreamSynchronize, e->s);
    CU(cuStreamSynchronize, e->s2);
}

void env_reset(env_t *e) {
    /* Every benchmark ends with its last wait satisfied, so this returns promptly. Streams, not
     * cuCtxSynchronize: cuGetProcAddress(13000) resolves that name to a _v2 with another signature. */
    CU(cuCtxSetCurrent, e->ctx);
    env_sync(e);
    for (int i = 0; i < SLOT_COUNT; i++) {
        store_release(&e->host[i], 0);
    }
    /* A memset last on each stream: a kernel last on any stream of the context makes event calls
     * cost ~1.2 us more (docs/benchmarks.md), and cross_stream_event_wait ends with one on s2. */
    CU(cuMemsetD8Async, e->scratch, 0, DEV_WORDS * sizeof(uint64_t), e->s2);
    CU(cuStreamSynchronize, e->s2);
    CU(cuMemsetD8Async, e->scratch, 0, DEV_WORDS * sizeof(uint64_t), e->s);
    CU(cuStreamSynchronize, e->s);
}

void env_destroy(env_t *e) {
    env_reset(e);
    CU(cuMemFreeHost, (void *)e->host);
    CU(cuMemFree, e->scratch);
    CU(cuStreamDestroy, e->s);
    CU(cuStreamDestroy, e->s2);
}

void env_check_gpu_errors(env_t *e, const char *bench) {
    uint64_t err = load_acquire(&e->host[SLOT_ERR]);
    if (err != 0) {
        die("%s: a polling kernel's %.1f s time limit expired waiting for flag >= %llu", bench,
            (double)GPU_POLL_TIMEOUT_NS / 1e9, (unsigned long long)err);
    }
}

void launch1(CUfunction f, unsigned threads, CUstream s, void **args) {
    CU(cuLaunchKernel, f, 1, 1, 1, threads, 1, 1, 0, s, args, NULL);
}

static void CUDA_CB drop_nothing(void *p) { (void)p; }

void graph_instantiate(CUgraphExec *exec, CUgraph graph) {
    if (getenv("RAW_USER_OBJECT") != NULL) {
        CUuserObject o;
        CU(cuUserObjectCreate, &o, NULL, drop_nothing, 1, CU_USER_OBJECT_NO_DESTRUCTOR_SYNC);
        CU(cuGraphRetainUserObject, graph, o, 1, CU_GRAPH_USER_OBJECT_MOVE);
    }
    CU(cuGraphInstantiateWithFlags, exec, graph, 0);
}
