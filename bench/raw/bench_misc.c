/* Events, launches, GPU writes seen by the host, cross-stream waits, allocation and copy bandwidth. */
#define _GNU_SOURCE
#include "env.h"

#include <stdio.h>

/* ---- events ---------------------------------------------------------------------------------- */
/* Events as MAX's DeviceEvent makes them by default (enable_timing=False). The stream is idle, so
 * these time the calls themselves. They are taken in several process states (main.c): after a
 * host function ran, record + synchronize goes 0.6 -> 1.8 us and query 0.3 -> 1.5 us (H100). */

/* cuEventRecord + cuEventSynchronize on an idle stream. */
void bench_event_record_sync(env_t *e) {
    env_reset(e);
    CUevent ev;
    CU(cuEventCreate, &ev, CU_EVENT_DISABLE_TIMING);
    samples_t s = samples_new(g_samples);
    for (size_t i = 0; i < g_warmup + g_samples; i++) {
        uint64_t t0 = now_ns();
        CU(cuEventRecord, ev, e->s);
        CU(cuEventSynchronize, ev);
        uint64_t t1 = now_ns();
        if (i >= g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    report("event_record_sync", "idle_stream", &s, NULL);
    samples_free(&s);
    CU(cuEventDestroy, ev);
}

/* cuEventQuery of an event that has completed (returns CUDA_SUCCESS). */
void bench_event_query(env_t *e) {
    env_reset(e);
    CUevent ev;
    CU(cuEventCreate, &ev, CU_EVENT_DISABLE_TIMING);
    CU(cuEventRecord, ev, e->s);
    CU(cuEventSynchronize, ev);
    samples_t s = samples_new(g_samples);
    for (size_t i = 0; i < g_warmup + g_samples; i++) {
        uint64_t t0 = now_ns();
        CU(cuEventQuery, ev);
        uint64_t t1 = now_ns();
        if (i >= g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    report("event_query", "completed", &s, NULL);
    samples_free(&s);
    CU(cuEventDestroy, ev);
}

/* cuEventElapsedTime around a kernel that spins a known time on %globaltimer. The row's times are
 * the elapsed times (the ratio to raw stays meaningful); `requested_us` says what was asked. */
void bench_elapsed_time_accuracy(env_t *e) {
    static const struct {
        const char *regime;
        uint64_t ns;
    } cases[] = {{"100us", 100000}, {"1ms", 1000000}};
    env_reset(e);
    CUevent start, end;
    CU(cuEventCreate, &start, CU_EVENT_DEFAULT);
    CU(cuEventCreate, &end, CU_EVENT_DEFAULT);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint64_t ns = cases[c].ns;
        samples_t s = samples_new(g_samples);
        for (size_t i = 0; i < g_warmup + g_samples; i++) {
            void *args[] = {&ns};
            CU(cuEventRecord, start, e->s);
            launch1(e->spin_ns, 1, e->s, args);
            CU(cuEventRecord, end, e->s);
            CU(cuEventSynchronize, end);
            float ms = 0;
            CU(cuEventElapsedTime, &ms, start, end);
            if (i >= g_warmup) {
                samples_push(&s, (double)ms * 1e6);
            }
        }
        char extra[64];
        snprintf(extra, sizeof extra, "\"requested_us\":%.1f", (double)ns / 1e3);
        report("elapsed_time_accuracy", cases[c].regime, &s, extra);
        samples_free(&s);
    }
    CU(cuEventDestroy, start);
    CU(cuEventDestroy, end);
}

/* ---- launches and GPU -> host ------------------------------------------------------------------ */

/* Empty 1-thread kernel launch + cuStreamSynchronize. */
void bench_launch_sync(env_t *e) {
    env_reset(e);
    samples_t s = samples_new(g_samples);
    for (size_t i = 0; i < g_warmup + g_samples; i++) {
        uint64_t t0 = now_ns();
        launch1(e->empty_kernel, 1, e->s, NULL);
        CU(cuStreamSynchronize, e->s);
        uint64_t t1 = now_ns();
        if (i >= g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    report("launch_sync", "empty_kernel", &s, NULL);
    samples_free(&s);
}

/* cuStreamWriteValue64 of i to a mapped host slot, from the enqueue call to the host seeing i. */
void bench_write_value_seen(env_t *e) {
    env_reset(e);
    samples_t s = samples_new(g_samples);
    for (uint64_t i = 1; i <= g_warmup + g_samples; i++) {
        uint64_t t0 = now_ns();
        CU(cuStreamWriteValue64, e->s, slot_dev(e, SLOT_ACK), i, 0);
        uint64_t t1 = wait_geq(&e->host[SLOT_ACK], i, "write_value_seen");
        if (i > g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    report("write_value_seen", "idle_stream", &s, NULL);
    samples_free(&s);
}

/* Stream A: empty kernel, event record; stream B: cuStreamWaitEvent, ack kernel. From the first
 * enqueue to the host seeing the ack. */
void bench_cross_stream_event_wait(env_t *e) {
    env_reset(e);
    CUevent ev;
    CU(cuEventCreate, &ev, CU_EVENT_DISABLE_TIMING);
    CUdeviceptr ack = slot_dev(e, SLOT_ACK);
    samples_t s = samples_new(g_samples);
    for (uint64_t i = 1; i <= g_warmup + g_samples; i++) {
        void *args[] = {&ack, &i};
        uint64_t t0 = now_ns();
        launch1(e->empty_kernel, 1, e->s, NULL);
        CU(cuEventRecord, ev, e->s);
        CU(cuStreamWaitEvent, e->s2, ev, 0);
        launch1(e->ack, 1, e->s2, args);
        uint64_t t1 = wait_geq(&e->host[SLOT_ACK], i, "cross_stream_event_wait");
        if (i > g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    report("cross_stream_event_wait", "kernel_event_ack", &s, NULL);
    samples_free(&s);
    env_sync(e);
    CU(cuEventDestroy, ev);
}

/* ---- allocation ------------------------------------------------------------------------------ */

#define DEVICE_ALLOC_BYTES (1u << 20)

/* cuMemAllocAsync + cuMemFreeAsync of 1 MiB on the stream (the device's default pool, default
 * release threshold), timed as a pair of host calls. Every 256 pairs the stream is synchronised
 * outside the timing, so the queue stays short. */
void bench_alloc_free_device(env_t *e) {
    env_reset(e);
    samples_t s = samples_new(g_samples);
    for (size_t i = 0; i < g_warmup + g_samples; i++) {
        CUdeviceptr p = 0;
        uint64_t t0 = now_ns();
        CU(cuMemAllocAsync, &p, DEVICE_ALLOC_BYTES, e->s);
        CU(cuMemFreeAsync, p, e->s);
        uint64_t t1 = now_ns();
        if (i >= g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
        if (i % 256 == 255) {
            CU(cuStreamSynchronize, e->s);
        }
    }
    report("alloc_free_device", "async_1MiB", &s, NULL);
    samples_free(&s);
}

/* cuMemHostAlloc(8 bytes, PORTABLE | DEVICEMAP) + cuMemFreeHost: what a completion flag costs
 * when it is not pooled. No wait is pending (cuMemFreeHost would block behind it). */
void bench_alloc_free_pinned(env_t *e) {
    env_reset(e);
    samples_t s = samples_new(g_samples);
    for (size_t i = 0; i < g_warmup + g_samples; i++) {
        void *p = NULL;
        uint64_t t0 = now_ns();
        CU(cuMemHostAlloc, &p, 8, CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP);
        CU(cuMemFreeHost, p);
        uint64_t t1 = now_ns();
        if (i >= g_warmup) {
            samples_push(&s, (double)(t1 - t0));
        }
    }
    report("alloc_free_pinned", "flag_8B", &s, NULL);
    samples_free(&s);
}

/* ---- copy bandwidth -------------------------------------------------------------------------- */

#define DTOD_BYTES (1ull << 30)
#define DTOD_WARMUP 5
#define DTOD_SAMPLES 50
#define MAX_POLLERS 8

/* One row of dtod_bandwidth: `pollers` polling gates (1 block of 1 thread each, on streams of their
 * own) wait on the flag while the copies run, which is what a polling gate costs the rest of the
 * GPU (measured on an H100: one poller -1 %, eight -5 %). They are released and drained before
 * returning. */
static void dtod_row(env_t *e, CUdeviceptr dst, CUdeviceptr src, const char *regime, int pollers) {
    env_reset(e);
    CUstream ps[MAX_POLLERS];
    CUdeviceptr flag = slot_dev(e, SLOT_FLAG), err = slot_dev(e, SLOT_ERR);
    uint64_t one = 1, timeout = GPU_POLL_TIMEOUT_NS;
    for (int k = 0; k < pollers; k++) {
        CU(cuStreamCreate, &ps[k], CU_STREAM_NON_BLOCKING);
        void *args[] = {&flag, &one, &timeout, &err};
        launch1(e->poll_gate, 1, ps[k], args);
    }
    spin_for_ns(100000); /* let the pollers become resident before the first copy */
    CUevent start, end;
    CU(cuEventCreate, &start, CU_EVENT_DEFAULT);
    CU(cuEventCreate, &end, CU_EVENT_DEFAULT);
    samples_t s = samples_new(DTOD_SAMPLES);
    for (int i = 0; i < DTOD_WARMUP + DTOD_SAMPLES; i++) {
        CU(cuEventRecord, start, e->s);
        CU(cuMemcpyDtoDAsync, dst, src, DTOD_BYTES, e->s);
        CU(cuEventRecord, end, e->s);
        CU(cuEventSynchronize, end);
        float ms = 0;
        CU(cuEventElapsedTime, &ms, start, end);
        if (i >= DTOD_WARMUP) {
            samples_push(&s, (double)ms * 1e6);
        }
    }
    store_release(&e->host[SLOT_FLAG], 1);
    for (int k = 0; k < pollers; k++) {
        CU(cuStreamSynchronize, ps[k]);
        CU(cuStreamDestroy, ps[k]);
    }
    env_check_gpu_errors(e, "dtod_bandwidth");
    char extra[128];
    double med = samples_median(&s);
    snprintf(extra, sizeof extra, "\"rate\":%.1f,\"rate_unit\":\"GB/s\",\"bytes\":%llu",
             2.0 * (double)DTOD_BYTES / med, (unsigned long long)DTOD_BYTES);
    report("dtod_bandwidth", regime, &s, extra);
    samples_free(&s);
    CU(cuEventDestroy, start);
    CU(cuEventDestroy, end);
}

/* cuMemcpyDtoDAsync of 1 GiB between two device buffers, timed with events: 50 copies after 5
 * warm-up. Rate counts bytes read plus written (2 GiB per copy) over the median copy time. Rows:
 * alone, and with 1 and 8 polling gates waiting meanwhile. */
void bench_dtod_bandwidth(env_t *e) {
    env_reset(e);
    CUdeviceptr src, dst;
    CU(cuMemAlloc, &src, DTOD_BYTES);
    CU(cuMemAlloc, &dst, DTOD_BYTES);
    CU(cuMemsetD8Async, src, 1, DTOD_BYTES, e->s);
    CU(cuMemsetD8Async, dst, 0, DTOD_BYTES, e->s);
    dtod_row(e, dst, src, "1GiB", 0);
    dtod_row(e, dst, src, "1GiB_1poller", 1);
    dtod_row(e, dst, src, "1GiB_8pollers", MAX_POLLERS);
    CU(cuMemFree, src);
    CU(cuMemFree, dst);
}
