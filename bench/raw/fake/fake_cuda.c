/* A fake libcuda.so.1 for smoke-testing raw_bench on a machine without a GPU.
 *
 * It implements, on host threads, just the driver entry points raw_bench resolves, with the
 * semantics the benchmarks rely on: each stream is a thread running its queue in order; waits
 * spin on host memory (GEQ); "kernels" are the ones of bench_kernels.cu, emulated by name; events
 * complete in stream order; graphs replay their nodes in insertion order. Device memory is host
 * memory. The timings it produces mean nothing; what it proves is that every benchmark's protocol
 * terminates, its waits are signalled, its deadlines and error checks hold, and the JSON is
 * written, and that nothing calls cuMemFree, cuMemFreeHost or cuModuleLoadData while a stream
 * waits on a value (the real driver blocks there, GPU.md). FAKE_CUDA_DEVICES=2 makes two devices
 * (sharing the host's memory, peers) for the two-GPU rows. Build: cc -shared -fPIC -pthread -I<cuda include> fake_cuda.c -o libcuda.so.1 */
#define _GNU_SOURCE
#include <cuda.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#undef cuGetProcAddress

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ld(const void *p) { return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE); }
static void st(void *p, uint64_t v) { __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE); }

/* ---- kernels, by name ---- */
enum { K_EMPTY, K_ACK, K_ACK_INC, K_SPIN, K_POLL, K_FUSED, K_POLL_EPOCH, K_FUSED_EPOCH, K_N };
static const struct {
    const char *name;
    int nargs;
} KERNELS[K_N] = {{"empty_kernel", 0}, {"ack", 2},           {"ack_inc", 2},
                  {"spin_ns", 1},      {"poll_gate", 4},     {"fused_gate_ack", 6},
                  {"poll_gate_epoch", 4}, {"fused_gate_ack_epoch", 5}};
struct CUfunc_st {
    int id;
};
static struct CUfunc_st FUNCS[K_N] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};

static long g_drop_ack;
__attribute__((constructor)) static void fake_init(void) {
    const char *d = getenv("FAKE_DROP_ACK");
    g_drop_ack = d ? atol(d) : 0;
}

static void *P(uint64_t v) { return (void *)(uintptr_t)v; }

/* Polls *flag >= target with a timeout; on timeout records target in *err. */
static int poll_geq(uint64_t flag, uint64_t target, uint64_t timeout, uint64_t err) {
    uint64_t start = now_ns();
    while (ld(P(flag)) < target) {
        if (now_ns() - start > timeout) {
            st(P(err), target);
            return 0;
        }
        __builtin_ia32_pause();
    }
    return 1;
}

static void run_kernel(int id, const uint64_t *a) {
    switch (id) {
    case K_EMPTY: break;
    case K_ACK:
        /* FAKE_DROP_ACK=N: the N-th ack is lost, to check that raw_bench's deadlines fire. */
        if (g_drop_ack != 0 && --g_drop_ack == 0) break;
        st(P(a[0]), a[1]);
        break;
    case K_ACK_INC: {
        uint64_t v = ld(P(a[0])) + 1;
        st(P(a[0]), v);
        st(P(a[1]), v);
        break;
    }
    case K_SPIN: {
        uint64_t s = now_ns();
        while (now_ns() - s < a[0]) {
        }
        break;
    }
    case K_POLL: poll_geq(a[0], a[1], a[2], a[3]); break;
    case K_FUSED:
        if (poll_geq(a[0], a[1], a[4], a[5])) st(P(a[2]), a[3]);
        break;
    case K_POLL_EPOCH: {
        uint64_t e = ld(P(a[1])) + 1;
        poll_geq(a[0], e, a[2], a[3]);
        st(P(a[1]), e);
        break;
    }
    case K_FUSED_EPOCH: {
        uint64_t e = ld(P(a[1])) + 1;
        int ok = poll_geq(a[0], e, a[3], a[4]);
        st(P(a[1]), e);
        if (ok) st(P(a[2]), e);
        break;
    }
    }
}

/* ---- events ---- */
struct CUevent_st {
    uint64_t recorded;  /* records enqueued */
    uint64_t completed; /* records executed */
    uint64_t t_ns;      /* time of the latest completed record */
};

/* ---- streams ---- */
enum { OP_WAIT, OP_WRITE, OP_KERNEL, OP_HOSTFN, OP_RECORD, OP_WAIT_EVENT };
typedef struct op {
    int kind;
    uint64_t a[8];
    CUhostFn fn;
    void *data;
    struct CUevent_st *ev;
    struct op *next;
} op_t;

struct CUstream_st {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    op_t *head, *tail;
    uint64_t enqueued, done;
    pthread_t thread;
    int dead;
};

static void exec_op(op_t *o) {
    switch (o->kind) {
    case OP_WAIT:
        while (ld(P(o->a[0])) < o->a[1]) __builtin_ia32_pause();
        break;
    case OP_WRITE: st(P(o->a[0]), o->a[1]); break;
    case OP_KERNEL: run_kernel((int)o->a[7], o->a); break;
    case OP_HOSTFN: o->fn(o->data); break;
    case OP_RECORD:
        o->ev->t_ns = now_ns();
        st(&o->ev->completed, o->a[0]);
        break;
    case OP_WAIT_EVENT:
        while (ld(&o->ev->completed) < o->a[0]) __builtin_ia32_pause();
        break;
    }
}

static void *stream_main(void *arg) {
    struct CUstream_st *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->head == NULL && !s->dead) pthread_cond_wait(&s->cv, &s->mu);
        if (s->head == NULL) break;
        op_t *o = s->head;
        pthread_mutex_unlock(&s->mu);
        exec_op(o);
        pthread_mutex_lock(&s->mu);
        s->head = o->next;
        if (s->head == NULL) s->tail = NULL;
        st(&s->done, ld(&s->done) + 1);
        free(o);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

#define MAX_STREAMS 64 /* streams are never reclaimed by the fake */
static struct CUstream_st *g_streams[MAX_STREAMS];
static int g_nstreams;

static void push(struct CUstream_st *s, op_t o) {
    if (s == NULL) { fprintf(stderr, "fake_cuda: null stream\n"); exit(3); }
    op_t *n = malloc(sizeof *n);
    *n = o;
    n->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->tail) s->tail->next = n; else s->head = n;
    s->tail = n;
    s->enqueued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void stream_sync(struct CUstream_st *s) {
    pthread_mutex_lock(&s->mu);
    uint64_t target = s->enqueued;
    pthread_mutex_unlock(&s->mu);
    while (ld(&s->done) < target) __builtin_ia32_pause();
}

/* The real driver's cuMemFree, cuMemFreeHost, cuModuleLoad* and cuModuleUnload do not return
 * while any stream waits on an unsatisfied value (GPU.md); called from the thread that would
 * signal, that is a deadlock. The fake fails loudly instead, so the smoke test catches it. */
static void check_no_pending_wait(const char *call) {
    for (int i = 0; i < g_nstreams; i++) {
        struct CUstream_st *s = g_streams[i];
        pthread_mutex_lock(&s->mu);
        for (op_t *o = s->head; o != NULL; o = o->next) {
            if (o->kind == OP_WAIT && ld(P(o->a[0])) < o->a[1]) {
                fprintf(stderr, "fake_cuda: %s while a stream waits for a value: the real driver "
                                "would block here until the wait passes\n", call);
                exit(4);
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
}

/* ---- entry points ---- */
static CUresult f_cuInit(unsigned f) { (void)f; return CUDA_SUCCESS; }
static CUresult f_cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
static CUresult f_cuGetErrorName(CUresult r, const char **s) { (void)r; *s = "FAKE_ERROR"; return CUDA_SUCCESS; }
static CUresult f_cuGetErrorString(CUresult r, const char **s) { (void)r; *s = "fake"; return CUDA_SUCCESS; }
/* One device, or FAKE_CUDA_DEVICES of them (sharing the host's memory; every pair is peers). */
static int device_count(void) {
    const char *e = getenv("FAKE_CUDA_DEVICES");
    int n = e ? atoi(e) : 1;
    return n < 1 ? 1 : n;
}
static CUresult f_cuDeviceGetCount(int *n) { *n = device_count(); return CUDA_SUCCESS; }
static CUresult f_cuDeviceGet(CUdevice *d, int o) { *d = o; return o >= 0 && o < device_count() ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }
static CUresult f_cuDeviceCanAccessPeer(int *can, CUdevice d, CUdevice peer) { *can = d != peer; return CUDA_SUCCESS; }
static CUresult f_cuCtxEnablePeerAccess(CUcontext peer, unsigned f) { (void)peer; return f == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }
static CUresult f_cuDeviceGetName(char *n, int len, CUdevice d) { (void)d; snprintf(n, (size_t)len, "Fake GPU (fake_cuda.c)"); return CUDA_SUCCESS; }
static CUresult f_cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d) { (void)a; (void)d; *v = 1; return CUDA_SUCCESS; }
static CUresult f_cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { *c = (CUcontext)(uintptr_t)(0x1000 + 0x100 * (uintptr_t)d); return CUDA_SUCCESS; }
static CUresult f_cuCtxSetCurrent(CUcontext c) { (void)c; return CUDA_SUCCESS; }
static CUresult f_cuCtxSynchronize(void) { for (int i = 0; i < g_nstreams; i++) stream_sync(g_streams[i]); return CUDA_SUCCESS; }
static CUresult f_cuModuleLoadData(CUmodule *m, const void *img) { (void)img; check_no_pending_wait("cuModuleLoadData"); *m = (CUmodule)(uintptr_t)0x2000; return CUDA_SUCCESS; }
static CUresult f_cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    (void)m;
    for (int i = 0; i < K_N; i++) if (strcmp(KERNELS[i].name, name) == 0) { *f = &FUNCS[i]; return CUDA_SUCCESS; }
    return CUDA_ERROR_NOT_FOUND;
}
static CUresult f_cuStreamCreate(CUstream *ps, unsigned flags) {
    (void)flags;
    if (g_nstreams == MAX_STREAMS) return CUDA_ERROR_OUT_OF_MEMORY;
    struct CUstream_st *s = calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_create(&s->thread, NULL, stream_main, s);
    g_streams[g_nstreams++] = s;
    *ps = s;
    return CUDA_SUCCESS;
}
static CUresult f_cuStreamDestroy(CUstream s) { (void)s; return CUDA_SUCCESS; }
static CUresult f_cuStreamSynchronize(CUstream s) { stream_sync(s); return CUDA_SUCCESS; }
static CUresult f_cuStreamWaitValue64(CUstream s, CUdeviceptr a, cuuint64_t v, unsigned f) {
    if (f != CU_STREAM_WAIT_VALUE_GEQ) return CUDA_ERROR_NOT_SUPPORTED;
    push(s, (op_t){.kind = OP_WAIT, .a = {a, v}});
    return CUDA_SUCCESS;
}
static CUresult f_cuStreamWriteValue64(CUstream s, CUdeviceptr a, cuuint64_t v, unsigned f) {
    (void)f;
    push(s, (op_t){.kind = OP_WRITE, .a = {a, v}});
    return CUDA_SUCCESS;
}
static CUresult f_cuStreamWaitEvent(CUstream s, CUevent e, unsigned f) {
    (void)f;
    push(s, (op_t){.kind = OP_WAIT_EVENT, .ev = e, .a = {e->recorded}});
    return CUDA_SUCCESS;
}
static op_t kernel_op(CUfunction f, void **args) {
    op_t o = {.kind = OP_KERNEL};
    for (int i = 0; i < KERNELS[f->id].nargs; i++) memcpy(&o.a[i], args[i], 8);
    o.a[7] = (uint64_t)f->id;
    return o;
}
static CUresult f_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned sh, CUstream s, void **args, void **extra) {
    (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)sh; (void)extra;
    if (KERNELS[f->id].nargs > 0 && args == NULL) return CUDA_ERROR_INVALID_VALUE;
    push(s, kernel_op(f, args));
    return CUDA_SUCCESS;
}
static CUresult f_cuLaunchHostFunc(CUstream s, CUhostFn fn, void *d) {
    push(s, (op_t){.kind = OP_HOSTFN, .fn = fn, .data = d});
    return CUDA_SUCCESS;
}
static CUresult f_cuEventCreate(CUevent *e, unsigned f) { (void)f; *e = calloc(1, sizeof **e); return CUDA_SUCCESS; }
static CUresult f_cuEventDestroy(CUevent e) { free(e); return CUDA_SUCCESS; }
static CUresult f_cuEventRecord(CUevent e, CUstream s) {
    e->recorded++;
    push(s, (op_t){.kind = OP_RECORD, .ev = e, .a = {e->recorded}});
    return CUDA_SUCCESS;
}
static CUresult f_cuEventSynchronize(CUevent e) { while (ld(&e->completed) < e->recorded) __builtin_ia32_pause(); return CUDA_SUCCESS; }
static CUresult f_cuEventQuery(CUevent e) { return ld(&e->completed) < e->recorded ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS; }
static CUresult f_cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
    if (ld(&a->completed) < a->recorded || ld(&b->completed) < b->recorded) return CUDA_ERROR_NOT_READY;
    *ms = (float)((double)(b->t_ns - a->t_ns) / 1e6);
    return CUDA_SUCCESS;
}
/* Capped at 1 MiB: the fake copy and large memsets never touch memory (the 1 GiB copy buffers). */
static CUresult f_cuMemAlloc(CUdeviceptr *p, size_t n) { *p = (CUdeviceptr)(uintptr_t)calloc(1, n < (1u << 20) ? n : (1u << 20)); return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
static CUresult f_cuMemFree(CUdeviceptr p) { check_no_pending_wait("cuMemFree"); free(P(p)); return CUDA_SUCCESS; }
static CUresult f_cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { (void)s; return f_cuMemAlloc(p, n); }
static CUresult f_cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; free(P(p)); return CUDA_SUCCESS; }
static CUresult f_cuMemHostAlloc(void **p, size_t n, unsigned f) { (void)f; *p = calloc(1, n); return CUDA_SUCCESS; }
static CUresult f_cuMemHostGetDevicePointer(CUdeviceptr *d, void *p, unsigned f) { (void)f; *d = (CUdeviceptr)(uintptr_t)p; return CUDA_SUCCESS; }
static CUresult f_cuMemFreeHost(void *p) { check_no_pending_wait("cuMemFreeHost"); free(p); return CUDA_SUCCESS; }
/* Memsets smaller than 4 KiB (the scratch words) are done, in stream order only after a sync. */
static CUresult f_cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s) {
    stream_sync(s);
    if (n <= 4096) memset(P(p), v, n);
    return CUDA_SUCCESS;
}
static CUresult f_cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st_) { (void)d; (void)s; (void)n; (void)st_; return CUDA_SUCCESS; }

/* ---- graphs: nodes kept in insertion order (raw_bench adds them in dependency order) ---- */
typedef struct { op_t op; } node_t;
struct CUgraph_st { node_t nodes[8]; int n; };
struct CUgraphExec_st { node_t nodes[8]; int n; };
struct CUgraphNode_st { int index; };
static struct CUgraphNode_st NODE_IDS[8] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};

static CUresult f_cuGraphCreate(CUgraph *g, unsigned f) { (void)f; *g = calloc(1, sizeof **g); return CUDA_SUCCESS; }
static CUresult f_cuGraphDestroy(CUgraph g) { free(g); return CUDA_SUCCESS; }
static CUresult f_cuGraphAddKernelNode(CUgraphNode *n, CUgraph g, const CUgraphNode *d, size_t nd, const CUDA_KERNEL_NODE_PARAMS *p) {
    (void)d; (void)nd;
    g->nodes[g->n].op = kernel_op(p->func, p->kernelParams);
    *n = &NODE_IDS[g->n++];
    return CUDA_SUCCESS;
}
static CUresult f_cuGraphAddBatchMemOpNode(CUgraphNode *n, CUgraph g, const CUgraphNode *d, size_t nd, const CUDA_BATCH_MEM_OP_NODE_PARAMS *p) {
    (void)d; (void)nd;
    if (p->count != 1 || p->paramArray[0].operation != CU_STREAM_MEM_OP_WAIT_VALUE_64) return CUDA_ERROR_NOT_SUPPORTED;
    g->nodes[g->n].op = (op_t){.kind = OP_WAIT, .a = {p->paramArray[0].waitValue.address, p->paramArray[0].waitValue.value64}};
    *n = &NODE_IDS[g->n++];
    return CUDA_SUCCESS;
}
static CUresult f_cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long f) {
    (void)f;
    *e = calloc(1, sizeof **e);
    memcpy((*e)->nodes, g->nodes, sizeof g->nodes);
    (*e)->n = g->n;
    return CUDA_SUCCESS;
}
static CUresult f_cuGraphExecBatchMemOpNodeSetParams(CUgraphExec e, CUgraphNode n, const CUDA_BATCH_MEM_OP_NODE_PARAMS *p) {
    if (e->nodes[n->index].op.kind != OP_WAIT) return CUDA_ERROR_INVALID_VALUE;
    e->nodes[n->index].op.a[0] = p->paramArray[0].waitValue.address;
    e->nodes[n->index].op.a[1] = p->paramArray[0].waitValue.value64;
    return CUDA_SUCCESS;
}
static CUresult f_cuGraphExecDestroy(CUgraphExec e) { free(e); return CUDA_SUCCESS; }
static CUresult f_cuGraphLaunch(CUgraphExec e, CUstream s) { for (int i = 0; i < e->n; i++) push(s, e->nodes[i].op); return CUDA_SUCCESS; }

#define ENTRY(name) {#name, (void *)f_##name}
static const struct { const char *name; void *fn; } TABLE[] = {
    ENTRY(cuInit), ENTRY(cuDriverGetVersion), ENTRY(cuGetErrorName), ENTRY(cuGetErrorString),
    ENTRY(cuDeviceGet), ENTRY(cuDeviceGetCount), ENTRY(cuDeviceCanAccessPeer), ENTRY(cuCtxEnablePeerAccess),
    ENTRY(cuDeviceGetName), ENTRY(cuDeviceGetAttribute), ENTRY(cuDevicePrimaryCtxRetain),
    ENTRY(cuCtxSetCurrent), ENTRY(cuCtxSynchronize), ENTRY(cuModuleLoadData), ENTRY(cuModuleGetFunction),
    ENTRY(cuStreamCreate), ENTRY(cuStreamDestroy), ENTRY(cuStreamSynchronize), ENTRY(cuStreamWaitValue64),
    ENTRY(cuStreamWriteValue64), ENTRY(cuStreamWaitEvent), ENTRY(cuLaunchKernel), ENTRY(cuLaunchHostFunc),
    ENTRY(cuEventCreate), ENTRY(cuEventDestroy), ENTRY(cuEventRecord), ENTRY(cuEventSynchronize),
    ENTRY(cuEventQuery), ENTRY(cuEventElapsedTime), ENTRY(cuMemAlloc), ENTRY(cuMemFree),
    ENTRY(cuMemAllocAsync), ENTRY(cuMemFreeAsync), ENTRY(cuMemHostAlloc), ENTRY(cuMemHostGetDevicePointer),
    ENTRY(cuMemFreeHost), ENTRY(cuMemsetD8Async), ENTRY(cuMemcpyDtoDAsync), ENTRY(cuGraphCreate),
    ENTRY(cuGraphDestroy), ENTRY(cuGraphAddKernelNode), ENTRY(cuGraphAddBatchMemOpNode),
    ENTRY(cuGraphInstantiateWithFlags), ENTRY(cuGraphExecBatchMemOpNodeSetParams), ENTRY(cuGraphExecDestroy),
    ENTRY(cuGraphLaunch),
};

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *status) {
    (void)version; (void)flags;
    for (size_t i = 0; i < sizeof TABLE / sizeof TABLE[0]; i++) {
        if (strcmp(TABLE[i].name, symbol) == 0) {
            *pfn = TABLE[i].fn;
            if (status) *status = CU_GET_PROC_ADDRESS_SUCCESS;
            return CUDA_SUCCESS;
        }
    }
    *pfn = NULL;
    if (status) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return CUDA_ERROR_NOT_FOUND;
}
