/* Host functions (cuLaunchHostFunc) and the two trampoline kickoffs.
 *
 * Running any of these marks the process `after_hostfunc` (except trampoline_gpuwrite, which runs
 * no host function): once a host function has run, event calls get slower for the rest of the
 * process (bench/README.md, "Process states"). */
#define _GNU_SOURCE
#include "env.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* ---- host_func_latency / host_func_throughput ------------------------------------------------ */

typedef struct {
    volatile uint64_t count;  /* callbacks run so far */
    volatile uint64_t ran_ns; /* now_ns() inside the latest callback */
} hf_state_t;

/* Runs on the driver's callback thread: stamps the time, then publishes the count. */
static void CUDA_CB hf_mark(void *user) {
    hf_state_t *h = user;
    h->ran_ns = now_ns();
    store_release(&h->count, h->count + 1);
}

/* cuLaunchHostFunc enqueue (on an idle stream) -> the callback starts running. */
void bench_host_func_latency(env_t *e) {
    env_reset(e);
    g_state = "after_hostfunc"; /* from the first host function on */
    hf_state_t h = {0, 0};
    samples_t s = samples_new(g_samples);
    for (uint64_t i = 1; i <= g_warmup + g_samples; i++) {
        uint64_t t0 = now_ns();
        CU(cuLaunchHostFunc, e->s, hf_mark, &h);
        wait_geq(&h.count, i, "host_func_latency");
        if (i > g_warmup) {
            samples_push(&s, (double)(load_acquire(&h.ran_ns) - t0));
        }
    }
    report("host_func_latency", "enqueue_to_run", &s, NULL);
    samples_free(&s);
}

static void CUDA_CB hf_count(void *user) {
    volatile uint64_t *count = user;
    store_release(count, *count + 1);
}

/* Batches of HF_BATCH callbacks enqueued back to back; a sample is a batch's enqueue-of-the-first
 * to run-of-the-last time divided by HF_BATCH (per-callback cost); the rate is at the median. */
#define HF_BATCH 1000
#define HF_BATCHES 50

void bench_host_func_throughput(env_t *e) {
    env_reset(e);
    g_state = "after_hostfunc";
    volatile uint64_t count = 0;
    samples_t s = samples_new(HF_BATCHES);
    for (uint64_t b = 0; b < 5 + HF_BATCHES; b++) {
        uint64_t t0 = now_ns();
        for (int j = 0; j < HF_BATCH; j++) {
            CU(cuLaunchHostFunc, e->s, hf_count, (void *)&count);
        }
        uint64_t t1 = wait_geq(&count, (b + 1) * HF_BATCH, "host_func_throughput");
        if (b >= 5) {
            samples_push(&s, (double)(t1 - t0) / HF_BATCH);
        }
    }
    char extra[96];
    double med = samples_median(&s);
    snprintf(extra, sizeof extra, "\"rate\":%.1f,\"rate_unit\":\"callbacks/s\",\"batch\":%d",
             1e9 / med, HF_BATCH);
    report("host_func_throughput", "batch1000", &s, extra);
    samples_free(&s);
}

/* ---- trampolines ----------------------------------------------------------------------------- */
/* One step: [kickoff i] [gate: flag >= i] [ack kernel writes i]. A worker thread spins on the
 * kickoff's ticket and stores flag = ticket as soon as it sees it (the closure a real trampoline
 * would run is empty here). Sample: the host's first enqueue call of the step -> ack seen. Each
 * step starts on an idle stream (the previous step's ack was seen). The gate is the driver's wait
 * (regime `wait`) or the 1-thread polling kernel (regime `poll`). */

typedef struct {
    const volatile uint64_t *ticket; /* what the kickoff writes */
    volatile uint64_t *flag;         /* what the gate waits on */
    volatile uint64_t stop;
} worker_t;

/* Spins (pause between loads, never sleeps: a 20 us sleep costs 70-85 us per step on an H100). */
static void *worker_main(void *arg) {
    worker_t *w = arg;
    uint64_t seen = 0;
    while (!load_acquire(&w->stop)) {
        uint64_t t = load_acquire(w->ticket);
        if (t > seen) {
            seen = t;
            store_release(w->flag, t);
        }
        __builtin_ia32_pause();
    }
    return NULL;
}

/* The host-function kickoff: the callback only publishes the ticket, as MAX's trampoline hands its
 * closure to a worker and returns. The ticket rides in the userData pointer. */
static volatile uint64_t g_hostfunc_ticket;

static void CUDA_CB kick_hostfunc(void *user) {
    store_release(&g_hostfunc_ticket, (uint64_t)(uintptr_t)user);
}

typedef enum { KICK_HOSTFUNC, KICK_GPUWRITE } kick_t;
typedef enum { GATE_WAIT, GATE_POLL } gate_t;

/* Five times the usual count (10,000 steps by default): the host-function
 * kickoff's 0.3-0.5 ms tail needs many samples for a stable p99. */
#define TRAMPOLINE_SAMPLE_FACTOR 5

static void run_trampoline(env_t *e, const char *bench, kick_t kick, gate_t gate) {
    env_reset(e);
    g_hostfunc_ticket = 0;
    worker_t w = {
        .ticket = kick == KICK_HOSTFUNC ? &g_hostfunc_ticket : &e->host[SLOT_KICK],
        .flag = &e->host[SLOT_FLAG],
        .stop = 0,
    };
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker_main, &w) != 0) {
        die("%s: pthread_create failed", bench);
    }
    size_t n = g_samples * TRAMPOLINE_SAMPLE_FACTOR;
    samples_t s = samples_new(n);
    CUdeviceptr flag = slot_dev(e, SLOT_FLAG), ack = slot_dev(e, SLOT_ACK),
                err = slot_dev(e, SLOT_ERR);
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    for (uint64_t i = 1; i <= g_warmup + n; i++) {
        uint64_t t0 = now_ns();
        if (kick == KICK_HOSTFUNC) {
            CU(cuLaunchHostFunc, e->s, kick_hostfunc, (void *)(uintptr_t)i);
        } else {
            CU(cuStreamWriteValue64, e->s, slot_dev(e, SLOT_KICK), i, 0);
        }
        if (gate == GATE_WAIT) {
            CU(cuStreamWaitValue64, e->s, flag, i, CU_STREAM_WAIT_VALUE_GEQ);
        } else {
            void *gate_args[] = {&flag, &i, &timeout, &err};
            launch1(e->poll_gate, 1, e->s, gate_args);
        }
        void *ack_args[] = {&ack, &i};
        launch1(e->ack, 1, e->s, ack_args);
        uint64_t t1 = wait_geq(&e->host[SLOT_ACK], i, bench);
        if (i > g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    store_release(&w.stop, 1);
    pthread_join(thread, NULL);
    env_check_gpu_errors(e, bench);
    report(bench, gate == GATE_WAIT ? "wait" : "poll", &s, NULL);
    samples_free(&s);
}

/* Kickoff by cuLaunchHostFunc (MAX's trampoline). */
void bench_trampoline_hostfunc(env_t *e) {
    g_state = "after_hostfunc";
    run_trampoline(e, "trampoline_hostfunc", KICK_HOSTFUNC, GATE_WAIT);
    run_trampoline(e, "trampoline_hostfunc", KICK_HOSTFUNC, GATE_POLL);
}

/* Kickoff by cuStreamWriteValue64 of i into a mapped slot the worker watches: no host function. */
void bench_trampoline_gpuwrite(env_t *e) {
    run_trampoline(e, "trampoline_gpuwrite", KICK_GPUWRITE, GATE_WAIT);
    run_trampoline(e, "trampoline_gpuwrite", KICK_GPUWRITE, GATE_POLL);
}

/* ---- the canonical loop ---------------------------------------------------------------------- */
/* What ferrocuda's canonical_loop rows run (docs/graph-replay.md), with the driver API alone. Per
 * step: [wait ready == 1] [write ready = 0] [empty kernel] [kickoff], and a spinning thread that
 * stores ready = 1 once it sees the step's kickoff (the empty closure of a trampoline job, run by
 * the thread that watches the kickoffs). Regimes, as ferrocuda's:
 *   stream          the four operations enqueued per step; kickoff = cuStreamWriteValue64 of the
 *                   step into the ticket slot;
 *   graph           a graph of them launched once per step; kickoff = a host node that bumps the
 *                   ticket (MAX's trampoline hands its closure to a thread the same way);
 *   graph_gpuwrite  the same graph; kickoff = the ack_inc kernel writing the replay count into the
 *                   ticket slot.
 * Launches are queued ahead. A sample is the time per step of one round of g_samples steps (five
 * rounds, the first untimed); the extra field is the rate. */

typedef struct {
    const volatile uint64_t *ticket;
    volatile uint64_t *ready;
    volatile uint64_t stop;
} ready_worker_t;

/* The ticket starts at 0 (env_reset zeroes the slots, and the host-node ticket is reset): any
 * other value is a kickoff, also one the GPU wrote before this thread first looked. */
static void *ready_worker_main(void *arg) {
    ready_worker_t *w = arg;
    uint64_t seen = 0;
    while (!load_acquire(&w->stop)) {
        uint64_t t = load_acquire(w->ticket);
        if (t != seen) {
            seen = t;
            store_release(w->ready, 1);
        }
        __builtin_ia32_pause();
    }
    return NULL;
}

static void CUDA_CB kick_hostfunc_bump(void *user) {
    (void)user;
    __atomic_add_fetch(&g_hostfunc_ticket, 1, __ATOMIC_RELEASE);
}

static CUgraphNode add_mem_op(CUgraph g, const CUgraphNode *dep, size_t ndeps, CUcontext ctx,
                              CUstreamBatchMemOpParams *op) {
    CUDA_BATCH_MEM_OP_NODE_PARAMS p = {.ctx = ctx, .count = 1, .paramArray = op, .flags = 0};
    CUgraphNode node;
    CU(cuGraphAddBatchMemOpNode, &node, g, dep, ndeps, &p);
    return node;
}

typedef enum { LOOP_STREAM, LOOP_GRAPH_HOSTFUNC, LOOP_GRAPH_GPUWRITE } loop_t;

static void run_canonical_loop(env_t *e, loop_t kind) {
    const char *regime = kind == LOOP_STREAM ? "stream"
                         : kind == LOOP_GRAPH_HOSTFUNC ? "graph"
                                                       : "graph_gpuwrite";
    env_reset(e);
    g_hostfunc_ticket = 0;
    ready_worker_t w = {
        .ticket = kind == LOOP_GRAPH_HOSTFUNC ? &g_hostfunc_ticket : &e->host[SLOT_KICK],
        .ready = &e->host[SLOT_FLAG],
        .stop = 0,
    };
    store_release(w.ready, 1);
    pthread_t thread;
    if (pthread_create(&thread, NULL, ready_worker_main, &w) != 0) {
        die("canonical_loop: pthread_create failed");
    }
    CUdeviceptr ready = slot_dev(e, SLOT_FLAG), kick = slot_dev(e, SLOT_KICK),
                count = scratch_dev(e, DEV_ACK_COUNT);
    CUgraph graph = NULL;
    CUgraphExec exec = NULL;
    if (kind != LOOP_STREAM) {
        CU(cuGraphCreate, &graph, 0);
        CUstreamBatchMemOpParams wait_op, write_op;
        memset(&wait_op, 0, sizeof wait_op);
        memset(&write_op, 0, sizeof write_op);
        wait_op.waitValue.operation = CU_STREAM_MEM_OP_WAIT_VALUE_64;
        wait_op.waitValue.address = ready;
        wait_op.waitValue.value64 = 1;
        wait_op.waitValue.flags = CU_STREAM_WAIT_VALUE_EQ;
        write_op.writeValue.operation = CU_STREAM_MEM_OP_WRITE_VALUE_64;
        write_op.writeValue.address = ready;
        write_op.writeValue.value64 = 0;
        write_op.writeValue.flags = 0;
        CUgraphNode wn = add_mem_op(graph, NULL, 0, e->ctx, &wait_op);
        CUgraphNode zn = add_mem_op(graph, &wn, 1, e->ctx, &write_op);
        CUgraphNode kn = add_kernel_node(graph, &zn, 1, e->empty_kernel, 1, NULL);
        if (kind == LOOP_GRAPH_HOSTFUNC) {
            CUDA_HOST_NODE_PARAMS hp = {.fn = kick_hostfunc_bump, .userData = NULL};
            CUgraphNode hn;
            CU(cuGraphAddHostNode, &hn, graph, &kn, 1, &hp);
        } else {
            void *args[] = {&count, &kick};
            add_kernel_node(graph, &kn, 1, e->ack_inc, 1, args);
        }
        graph_instantiate(&exec, graph);
    }
    size_t n = g_samples;
    samples_t s = samples_new(4), enq = samples_new(4);
    for (int round = 0; round < 5; round++) {
        uint64_t t0 = now_ns();
        for (uint64_t i = 1; i <= n; i++) {
            if (kind == LOOP_STREAM) {
                CU(cuStreamWaitValue64, e->s, ready, 1, CU_STREAM_WAIT_VALUE_EQ);
                CU(cuStreamWriteValue64, e->s, ready, 0, 0);
                launch1(e->empty_kernel, 1, e->s, NULL);
                CU(cuStreamWriteValue64, e->s, kick, (uint64_t)round * n + i, 0);
            } else {
                CU(cuGraphLaunch, exec, e->s);
            }
        }
        uint64_t t_enq = now_ns();
        env_sync(e);
        wait_geq(w.ready, 1, "canonical_loop");
        if (round > 0) {
            samples_push(&s, (double)(now_ns() - t0) / (double)n);
            samples_push(&enq, (double)(t_enq - t0) / (double)n);
        }
    }
    /* One more round, for the stream form only and not in the samples: what each of the four
     * enqueues costs the host (mean µs per call, a clock read around each). */
    double by_op[4] = {0, 0, 0, 0};
    if (kind == LOOP_STREAM) {
        for (uint64_t i = 1; i <= n; i++) {
            uint64_t t[5];
            t[0] = now_ns();
            CU(cuStreamWaitValue64, e->s, ready, 1, CU_STREAM_WAIT_VALUE_EQ);
            t[1] = now_ns();
            CU(cuStreamWriteValue64, e->s, ready, 0, 0);
            t[2] = now_ns();
            launch1(e->empty_kernel, 1, e->s, NULL);
            t[3] = now_ns();
            CU(cuStreamWriteValue64, e->s, kick, 5 * n + i, 0);
            t[4] = now_ns();
            for (int k = 0; k < 4; k++) {
                by_op[k] += (double)(t[k + 1] - t[k]) / 1e3 / (double)n;
            }
        }
        env_sync(e);
        wait_geq(w.ready, 1, "canonical_loop");
    }
    store_release(&w.stop, 1);
    pthread_join(thread, NULL);
    if (exec != NULL) {
        CU(cuGraphExecDestroy, exec);
        CU(cuGraphDestroy, graph);
    }
    env_check_gpu_errors(e, "canonical_loop");
    /* How long the host took to enqueue a step: close to the time per step, the loop is bound by
     * the enqueue path, not by the round trip. */
    char extra[256];
    int used = snprintf(extra, sizeof extra,
                        "\"rate\":%.1f,\"rate_unit\":\"steps/s\",\"enqueue_us_per_step\":%.2f",
                        1e9 / samples_median(&s), samples_median(&enq) / 1e3);
    if (kind == LOOP_STREAM && used > 0 && (size_t)used < sizeof extra) {
        snprintf(extra + used, sizeof extra - (size_t)used,
                 ",\"enqueue_us_by_op\":[%.3f,%.3f,%.3f,%.3f]", by_op[0], by_op[1], by_op[2],
                 by_op[3]);
    }
    report("canonical_loop", regime, &s, extra);
    samples_free(&s);
    samples_free(&enq);
}

/* The canonical loop: stream, graph with a host-node kickoff, graph with a GPU-write kickoff. */
void bench_canonical_loop(env_t *e) {
    g_state = "after_hostfunc";
    run_canonical_loop(e, LOOP_STREAM);
    run_canonical_loop(e, LOOP_GRAPH_HOSTFUNC);
    run_canonical_loop(e, LOOP_GRAPH_GPUWRITE);
}

/* ---- the device loop ------------------------------------------------------------------------ */
/* What ferrocuda's device_loop rows run (Graph::gated_loop), with the driver API alone: one graph
 * launch runs DEVICE_LOOP_STEPS steps of [kick: ack_inc writes the kick count to a mapped slot]
 * [gate: poll flag >= the count, count the step, end the loop after the last] [consume: empty
 * kernel] [ack: the ack kernel] inside a WHILE conditional node, after a begin kernel that resets
 * the step count and sets the condition. A spinning thread answers each kick by storing the count
 * in the flag (ready_worker_main's job, here with the count as the value). No host API call per
 * step. A sample is the time per step of one launch (five launches, the first untimed). */

#define DEVICE_LOOP_STEPS 20000

typedef struct {
    const volatile uint64_t *ticket;
    volatile uint64_t *flag;
    volatile uint64_t stop;
} count_worker_t;

static void *count_worker_main(void *arg) {
    count_worker_t *w = arg;
    uint64_t seen = 0;
    while (!load_acquire(&w->stop)) {
        uint64_t t = load_acquire(w->ticket);
        if (t != seen) {
            seen = t;
            store_release(w->flag, t);
        }
        __builtin_ia32_pause();
    }
    return NULL;
}

void bench_device_loop(env_t *e) {
    env_reset(e);
    CUfunction begin, gate;
    if (p_cuModuleGetFunction(&begin, e->mod, "loop_begin") != CUDA_SUCCESS ||
        p_cuModuleGetFunction(&gate, e->mod, "loop_gate") != CUDA_SUCCESS) {
        printf("device_loop: skipped, the module has no loop kernels (the fake driver)\n");
        return;
    }
    CUgraph graph;
    CU(cuGraphCreate, &graph, 0);
    CUgraphConditionalHandle handle;
    CUresult r = p_cuGraphConditionalHandleCreate(&handle, graph, e->ctx, 0, 0);
    if (r == CUDA_ERROR_NOT_SUPPORTED) {
        printf("device_loop: skipped, this driver has no conditional nodes\n");
        CU(cuGraphDestroy, graph);
        return;
    }
    cu_check(r, "cuGraphConditionalHandleCreate", __FILE__, __LINE__);
    CUdeviceptr state = scratch_dev(e, DEV_ACK_COUNT), ack = slot_dev(e, SLOT_ACK),
                kick = slot_dev(e, SLOT_KICK), flag = slot_dev(e, SLOT_FLAG),
                err = slot_dev(e, SLOT_ERR);
    uint64_t h = handle, n = DEVICE_LOOP_STEPS, timeout = GPU_POLL_TIMEOUT_NS, one = 1;
    void *begin_args[] = {&state, &h};
    CUgraphNode b = add_kernel_node(graph, NULL, 0, begin, 1, begin_args);
    CUgraphNodeParams p;
    memset(&p, 0, sizeof p);
    p.type = CU_GRAPH_NODE_TYPE_CONDITIONAL;
    p.conditional.handle = handle;
    p.conditional.type = CU_GRAPH_COND_TYPE_WHILE;
    p.conditional.size = 1;
    p.conditional.ctx = e->ctx;
    CUgraphNode w;
    CU(cuGraphAddNode, &w, graph, &b, NULL, 1, &p);
    CUgraph body = p.conditional.phGraph_out[0];
    void *kick_args[] = {&state, &kick};
    CUgraphNode k = add_kernel_node(body, NULL, 0, e->ack_inc, 1, kick_args);
    void *gate_args[] = {&flag, &state, &h, &n, &timeout, &err};
    CUgraphNode g = add_kernel_node(body, &k, 1, gate, 1, gate_args);
    CUgraphNode c = add_kernel_node(body, &g, 1, e->empty_kernel, 1, NULL);
    void *ack_args[] = {&ack, &one};
    add_kernel_node(body, &c, 1, e->ack, 1, ack_args);
    CUgraphExec exec;
    graph_instantiate(&exec, graph);

    count_worker_t cw = {.ticket = &e->host[SLOT_KICK], .flag = &e->host[SLOT_FLAG], .stop = 0};
    pthread_t thread;
    if (pthread_create(&thread, NULL, count_worker_main, &cw) != 0) {
        die("device_loop: pthread_create failed");
    }
    samples_t s = samples_new(4);
    for (int round = 0; round < 5; round++) {
        uint64_t t0 = now_ns();
        CU(cuGraphLaunch, exec, e->s);
        env_sync(e);
        if (round > 0) {
            samples_push(&s, (double)(now_ns() - t0) / (double)n);
        }
    }
    store_release(&cw.stop, 1);
    pthread_join(thread, NULL);
    CU(cuGraphExecDestroy, exec);
    CU(cuGraphDestroy, graph);
    env_check_gpu_errors(e, "device_loop");
    char extra[96];
    snprintf(extra, sizeof extra, "\"rate\":%.1f,\"rate_unit\":\"steps/s\",\"steps_per_launch\":%d",
             1e9 / samples_median(&s), DEVICE_LOOP_STEPS);
    report("device_loop", "while_4_kernels", &s, extra);
    samples_free(&s);
}
