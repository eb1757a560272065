/* Host signal -> gate -> ack: how fast a host store releases GPU work, per gate mechanism, in a
 * stream and in a graph.
 *
 * Every gate benchmark has the same shape. Step i is: [gate: wait until flag >= i] [ack: write i to
 * a host slot]. The sample is the time from the host's release store of flag = i to the host seeing
 * ack >= i. Two regimes (the driver's wait answers much faster when it was reached a moment ago
 * than when it has been waiting a while: about 4.3 us against 9.3 us on an H100):
 *   idle: step i is enqueued alone, the host pauses 30-50 us (the GPU reaches the gate and waits),
 *         then signals.
 *   b2b:  QUEUE_AHEAD steps are enqueued ahead; the host signals step i, sees its ack, enqueues
 *         step i + QUEUE_AHEAD and signals step i + 1 at once. */
#include "env.h"

#include <string.h>

/* How many gated steps b2b keeps enqueued. Bounded so the stream's queue never fills: a full queue
 * makes an enqueue block, and the blocked thread is the one that must signal. */
#define QUEUE_AHEAD 16

typedef void (*enqueue_fn)(env_t *e, void *ctx, uint64_t i);

static void run_gate(env_t *e, const char *bench, enqueue_fn enqueue, void *ctx) {
    volatile uint64_t *flag = &e->host[SLOT_FLAG];
    const volatile uint64_t *ack = &e->host[SLOT_ACK];
    const uint64_t total = g_warmup + g_samples;

    env_reset(e);
    samples_t s = samples_new(g_samples);
    for (uint64_t i = 1; i <= total; i++) {
        enqueue(e, ctx, i);
        spin_for_ns(idle_gap_ns());
        uint64_t t0 = now_ns();
        store_release(flag, i);
        uint64_t t1 = wait_geq(ack, i, bench);
        if (i > g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    env_check_gpu_errors(e, bench);
    report(bench, "idle", &s, NULL);

    env_reset(e);
    s.n = 0;
    for (uint64_t i = 1; i <= QUEUE_AHEAD && i <= total; i++) {
        enqueue(e, ctx, i);
    }
    for (uint64_t i = 1; i <= total; i++) {
        uint64_t t0 = now_ns();
        store_release(flag, i);
        uint64_t t1 = wait_geq(ack, i, bench);
        if (i > g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
        if (i + QUEUE_AHEAD <= total) {
            enqueue(e, ctx, i + QUEUE_AHEAD);
        }
    }
    env_check_gpu_errors(e, bench);
    report(bench, "b2b", &s, NULL);
    samples_free(&s);
}

/* ---- stream gates ---------------------------------------------------------------------------- */

static void enqueue_ack(env_t *e, uint64_t i) {
    CUdeviceptr slot = slot_dev(e, SLOT_ACK);
    void *args[] = {&slot, &i};
    launch1(e->ack, 1, e->s, args);
}

static void enqueue_driver_wait(env_t *e, uint64_t i) {
    /* GEQ on a monotonically increasing value: a wait enqueued after its signal passes at once. */
    CU(cuStreamWaitValue64, e->s, slot_dev(e, SLOT_FLAG), i, CU_STREAM_WAIT_VALUE_GEQ);
}

static void enqueue_poll_gate(env_t *e, uint64_t i) {
    CUdeviceptr flag = slot_dev(e, SLOT_FLAG), err = slot_dev(e, SLOT_ERR);
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    void *args[] = {&flag, &i, &timeout, &err};
    launch1(e->poll_gate, 1, e->s, args);
}

static void step_wait_ack(env_t *e, void *ctx, uint64_t i) {
    (void)ctx;
    enqueue_driver_wait(e, i);
    enqueue_ack(e, i);
}

static void step_wait_write(env_t *e, void *ctx, uint64_t i) {
    (void)ctx;
    enqueue_driver_wait(e, i);
    CU(cuStreamWriteValue64, e->s, slot_dev(e, SLOT_ACK), i, 0);
}

static void step_poll_ack(env_t *e, void *ctx, uint64_t i) {
    (void)ctx;
    enqueue_poll_gate(e, i);
    enqueue_ack(e, i);
}

static void step_fused(env_t *e, void *ctx, uint64_t i) {
    (void)ctx;
    CUdeviceptr flag = slot_dev(e, SLOT_FLAG), ack = slot_dev(e, SLOT_ACK),
                err = slot_dev(e, SLOT_ERR);
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    void *args[] = {&flag, &i, &ack, &i, &timeout, &err};
    launch1(e->fused_gate_ack, FUSED_THREADS, e->s, args);
}

/* cuStreamWaitValue64 (GEQ i) -> 1-thread ack kernel. */
void bench_signal_wait_ack(env_t *e) { run_gate(e, "signal_wait_ack", step_wait_ack, NULL); }

/* cuStreamWaitValue64 (GEQ i) -> cuStreamWriteValue64 of i to the host slot (no kernel). */
void bench_signal_wait_write(env_t *e) { run_gate(e, "signal_wait_write", step_wait_write, NULL); }

/* 1-thread kernel polling the flag (__nanosleep(32) between loads) -> ack kernel. */
void bench_poll_gate_stream(env_t *e) { run_gate(e, "poll_gate_stream", step_poll_ack, NULL); }

/* The ack kernel polls the flag itself in its prologue. */
void bench_fused_gate_stream(env_t *e) { run_gate(e, "fused_gate_stream", step_fused, NULL); }

/* ---- graph gates ----------------------------------------------------------------------------- */

typedef struct {
    CUgraph graph;
    CUgraphExec exec;
    CUgraphNode wait_node; /* graph_wait_gate only */
    CUstreamBatchMemOpParams op;
    CUDA_BATCH_MEM_OP_NODE_PARAMS op_params;
} graph_gate_t;

CUgraphNode add_kernel_node(CUgraph g, const CUgraphNode *dep, size_t ndeps, CUfunction f,
                                   unsigned threads, void **args) {
    CUDA_KERNEL_NODE_PARAMS p;
    memset(&p, 0, sizeof p);
    p.func = f;
    p.gridDimX = p.gridDimY = p.gridDimZ = 1;
    p.blockDimX = threads;
    p.blockDimY = p.blockDimZ = 1;
    p.kernelParams = args; /* copied by the driver when the node is added */
    CUgraphNode node;
    CU(cuGraphAddKernelNode, &node, g, dep, ndeps, &p);
    return node;
}

/* Replay i of graph_wait_gate: the wait node's value is set to i before the launch (the update
 * affects later launches only, so replays already enqueued keep their own values). */
static void step_graph_wait(env_t *e, void *ctx, uint64_t i) {
    graph_gate_t *g = ctx;
    g->op.waitValue.value64 = i;
    CU(cuGraphExecBatchMemOpNodeSetParams, g->exec, g->wait_node, &g->op_params);
    CU(cuGraphLaunch, g->exec, e->s);
}

/* Replay i of the polling graphs: nothing to update, the kernels count epochs in device memory. */
static void step_graph_replay(env_t *e, void *ctx, uint64_t i) {
    (void)i;
    graph_gate_t *g = ctx;
    CU(cuGraphLaunch, g->exec, e->s);
}

static void graph_gate_finish(graph_gate_t *g, env_t *e, const char *bench, enqueue_fn step) {
    graph_instantiate(&g->exec, g->graph);
    run_gate(e, bench, step, g);
    env_sync(e);
    CU(cuGraphExecDestroy, g->exec);
    CU(cuGraphDestroy, g->graph);
}

/* Graph: batch mem-op node (wait flag >= i, updated per replay with
 * cuGraphExecBatchMemOpNodeSetParams) -> kernel node (ack_inc: writes the replay count). */
void bench_graph_wait_gate(env_t *e) {
    graph_gate_t g;
    memset(&g, 0, sizeof g);
    CU(cuGraphCreate, &g.graph, 0);
    g.op.waitValue.operation = CU_STREAM_MEM_OP_WAIT_VALUE_64;
    g.op.waitValue.address = slot_dev(e, SLOT_FLAG);
    g.op.waitValue.value64 = 0;
    g.op.waitValue.flags = CU_STREAM_WAIT_VALUE_GEQ;
    g.op_params.ctx = e->ctx;
    g.op_params.count = 1;
    g.op_params.paramArray = &g.op;
    g.op_params.flags = 0;
    CU(cuGraphAddBatchMemOpNode, &g.wait_node, g.graph, NULL, 0, &g.op_params);
    CUdeviceptr count = scratch_dev(e, DEV_ACK_COUNT), ack = slot_dev(e, SLOT_ACK);
    void *args[] = {&count, &ack};
    add_kernel_node(g.graph, &g.wait_node, 1, e->ack_inc, 1, args);
    graph_gate_finish(&g, e, "graph_wait_gate", step_graph_wait);
}

/* Graph: polling kernel node (waits flag >= its epoch + 1) -> kernel node (ack_inc). */
void bench_graph_poll_gate(env_t *e) {
    graph_gate_t g;
    memset(&g, 0, sizeof g);
    CU(cuGraphCreate, &g.graph, 0);
    CUdeviceptr flag = slot_dev(e, SLOT_FLAG), epoch = scratch_dev(e, DEV_EPOCH),
                err = slot_dev(e, SLOT_ERR), count = scratch_dev(e, DEV_ACK_COUNT),
                ack = slot_dev(e, SLOT_ACK);
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    void *poll_args[] = {&flag, &epoch, &timeout, &err};
    CUgraphNode poll = add_kernel_node(g.graph, NULL, 0, e->poll_gate_epoch, 1, poll_args);
    void *ack_args[] = {&count, &ack};
    add_kernel_node(g.graph, &poll, 1, e->ack_inc, 1, ack_args);
    graph_gate_finish(&g, e, "graph_poll_gate", step_graph_replay);
}

/* Graph: one kernel node that polls its epoch in its prologue and then acks. */
void bench_graph_fused_gate(env_t *e) {
    graph_gate_t g;
    memset(&g, 0, sizeof g);
    CU(cuGraphCreate, &g.graph, 0);
    CUdeviceptr flag = slot_dev(e, SLOT_FLAG), epoch = scratch_dev(e, DEV_EPOCH),
                ack = slot_dev(e, SLOT_ACK), err = slot_dev(e, SLOT_ERR);
    uint64_t timeout = GPU_POLL_TIMEOUT_NS;
    void *args[] = {&flag, &epoch, &ack, &timeout, &err};
    add_kernel_node(g.graph, NULL, 0, e->fused_gate_ack_epoch, FUSED_THREADS, args);
    graph_gate_finish(&g, e, "graph_fused_gate", step_graph_replay);
}
