/* raw_bench: the raw CUDA driver API baseline of ferrocuda's benchmarks (bench/README.md).
 *
 *   raw_bench --cubin bench_kernels.cubin [--json FILE] [--samples N] [--warmup N] [--device N]
 *             [--commit STR] [all | BENCH...]
 *
 * Benchmarks run in a fixed order whatever order they are named in, because the process state
 * changes what event calls cost: the event benchmarks run first (state `fresh`), again
 * right after trampoline_gpuwrite (`after_gpuwrite`), again before the first host function
 * (`before_hostfunc`) and again after the host-function benchmarks (`after_hostfunc`), each time
 * only if the benchmarks in between were selected. The two-GPU rows (bench_multi.c) run right
 * after the fresh event rows, before anything else has changed the process state; on a machine
 * with one GPU only their one-GPU rows run. */
#define _GNU_SOURCE
#include "env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    void (*run)(env_t *);
    const char *what;
} bench_t;

/* The events, then the benchmarks in running order. The phase boundaries are marked below. */
static const bench_t EVENTS[] = {
    {"event_record_sync", bench_event_record_sync, "event record + synchronize, idle stream"},
    {"event_query", bench_event_query, "event query of a completed event"},
};
#define N_EVENTS (sizeof EVENTS / sizeof EVENTS[0])

/* Run by bench_multi (they share GPU1's setup); listed here for --list and name checks. */
static void bench_none(env_t *e) { (void)e; }
static const bench_t PHASE_MULTI[] = {
    {"multi_fanout", bench_none,
     "host signal -> gated ack on 1 and on 2 GPUs (driver wait, polling kernel, fused gate)"},
    {"multi_relay", bench_none,
     "host -> GPU0 gate -> event / pinned host / peer write (+ wait or polling) -> GPU1 ack"},
};

static const bench_t PHASE_GPUWRITE[] = {
    {"trampoline_gpuwrite", bench_trampoline_gpuwrite,
     "trampoline step, kickoff = cuStreamWriteValue64 watched by a spinning thread"},
};

static const bench_t PHASE_NO_HOSTFUNC[] = {
    {"launch_sync", bench_launch_sync, "empty kernel launch + cuStreamSynchronize"},
    {"elapsed_time_accuracy", bench_elapsed_time_accuracy,
     "event elapsed time around a %globaltimer spin of 100 us / 1 ms"},
    {"write_value_seen", bench_write_value_seen, "cuStreamWriteValue64 enqueue -> host sees"},
    {"cross_stream_event_wait", bench_cross_stream_event_wait,
     "kernel on A -> event -> B waits -> ack seen"},
    {"signal_wait_ack", bench_signal_wait_ack, "host signal -> cuStreamWaitValue64 -> ack kernel"},
    {"signal_wait_write", bench_signal_wait_write,
     "host signal -> cuStreamWaitValue64 -> cuStreamWriteValue64 ack"},
    {"poll_gate_stream", bench_poll_gate_stream, "host signal -> polling kernel -> ack kernel"},
    {"fused_gate_stream", bench_fused_gate_stream, "host signal -> ack kernel polling in prologue"},
    {"graph_wait_gate", bench_graph_wait_gate, "graph: wait-value mem-op node -> ack kernel node"},
    {"graph_poll_gate", bench_graph_poll_gate, "graph: polling kernel node -> ack kernel node"},
    {"graph_fused_gate", bench_graph_fused_gate, "graph: one kernel node polling, then acking"},
    {"alloc_free_device", bench_alloc_free_device, "cuMemAllocAsync + cuMemFreeAsync, 1 MiB"},
    {"alloc_free_pinned", bench_alloc_free_pinned, "cuMemHostAlloc(8 B) + cuMemFreeHost"},
    {"dtod_bandwidth", bench_dtod_bandwidth, "cuMemcpyDtoDAsync 1 GiB, read+written bytes/s; alone, with 1 and 8 pollers"},
};

static const bench_t PHASE_HOSTFUNC[] = {
    {"host_func_latency", bench_host_func_latency, "cuLaunchHostFunc enqueue -> callback runs"},
    {"host_func_throughput", bench_host_func_throughput, "callbacks/s, batches of 1000"},
    {"trampoline_hostfunc", bench_trampoline_hostfunc,
     "trampoline step, kickoff = cuLaunchHostFunc handing to a spinning thread"},
    {"canonical_loop", bench_canonical_loop,
     "[wait ready == 1] [write 0] [kernel] [kickoff -> thread sets ready = 1] per step: stream, graph"},
    {"device_loop", bench_device_loop,
     "one launch, a WHILE node of [kick] [poll gate] [kernel] [ack] per step, a thread answering kicks"},
};

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static int g_argc;
static char **g_names; /* selected benchmark names (NULL: all) */

static int selected(const char *name) {
    if (g_names == NULL) {
        return 1;
    }
    for (int i = 0; i < g_argc; i++) {
        if (strcmp(g_names[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Runs the selected benchmarks of a phase; returns how many ran. */
static int run_phase(env_t *e, const bench_t *b, size_t n) {
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (selected(b[i].name)) {
            b[i].run(e);
            ran++;
        }
    }
    return ran;
}

static void run_events(env_t *e, const char *state) {
    const char *saved = g_state;
    g_state = state;
    run_phase(e, EVENTS, N_EVENTS);
    g_state = saved;
}

static int known(const char *name) {
    const bench_t *phases[] = {EVENTS, PHASE_MULTI, PHASE_GPUWRITE, PHASE_NO_HOSTFUNC,
                               PHASE_HOSTFUNC};
    size_t lens[] = {N_EVENTS, LEN(PHASE_MULTI), LEN(PHASE_GPUWRITE), LEN(PHASE_NO_HOSTFUNC),
                     LEN(PHASE_HOSTFUNC)};
    for (size_t p = 0; p < LEN(phases); p++) {
        for (size_t i = 0; i < lens[p]; i++) {
            if (strcmp(phases[p][i].name, name) == 0) {
                return 1;
            }
        }
    }
    return 0;
}

static void list(void) {
    const bench_t *phases[] = {EVENTS, PHASE_MULTI, PHASE_GPUWRITE, PHASE_NO_HOSTFUNC,
                               PHASE_HOSTFUNC};
    size_t lens[] = {N_EVENTS, LEN(PHASE_MULTI), LEN(PHASE_GPUWRITE), LEN(PHASE_NO_HOSTFUNC),
                     LEN(PHASE_HOSTFUNC)};
    for (size_t p = 0; p < LEN(phases); p++) {
        for (size_t i = 0; i < lens[p]; i++) {
            printf("  %-24s %s\n", phases[p][i].name, phases[p][i].what);
        }
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: raw_bench --cubin FILE [--json FILE] [--samples N] [--warmup N] "
               "[--device N] [--commit STR] [--list] [all | BENCH...]\n");
}

static size_t parse_count(const char *flag, const char *v) {
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    if (end == v || *end != '\0') {
        die("%s needs a number, got `%s`", flag, v);
    }
    return (size_t)n;
}

int main(int argc, char **argv) {
    const char *cubin = NULL, *json = NULL, *commit = "unknown";
    int device = 0;
    char **names = calloc((size_t)argc, sizeof(char *));
    int n_names = 0, all = 0, ignored = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--list") == 0) {
            list();
            return 0;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            list();
            return 0;
        } else if (a[0] == '-' && next == NULL) {
            usage(stderr);
            die("%s needs a value", a);
        } else if (strcmp(a, "--cubin") == 0) {
            cubin = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = argv[++i];
        } else if (strcmp(a, "--commit") == 0) {
            commit = argv[++i];
        } else if (strcmp(a, "--samples") == 0) {
            g_samples = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--warmup") == 0) {
            g_warmup = parse_count(a, argv[++i]);
        } else if (strcmp(a, "--device") == 0) {
            device = (int)parse_count(a, argv[++i]);
        } else if (a[0] == '-') {
            usage(stderr);
            die("unknown option %s", a);
        } else if (strcmp(a, "all") == 0) {
            all = 1;
        } else if (known(a)) {
            names[n_names++] = argv[i];
        } else {
            /* The bundle passes every program the same names: another program's are skipped. */
            fprintf(stderr, "raw_bench: `%s` is not one of its benchmarks (--list shows them): skipped\n", a);
            ignored++;
        }
    }
    if (!all && n_names == 0 && ignored > 0) {
        return 0; /* none of ours was asked for */
    }
    if (cubin == NULL) {
        usage(stderr);
        die("--cubin is required (the bundle's cubin/bench_kernels.cubin)");
    }
    if (g_samples == 0) {
        die("--samples must be at least 1");
    }
    if (!all && n_names > 0) {
        g_names = names;
        g_argc = n_names;
    }

    cu_load();
    env_t e;
    env_init(&e, device, cubin);
    pin_main_thread();
    report_open(json, e.name, e.driver_version, commit);

    /* 1. Fresh process: nothing but module load and allocation has happened. */
    run_events(&e, "fresh");
    /* 1b. Two GPUs, if there are two. */
    if (selected("multi_fanout") || selected("multi_relay")) {
        bench_multi(&e, cubin, selected("multi_fanout"), selected("multi_relay"));
    }
    /* 2. The GPU-write trampoline, then events again: the target is within 1.1x of fresh. */
    if (run_phase(&e, PHASE_GPUWRITE, LEN(PHASE_GPUWRITE)) > 0) {
        run_events(&e, "after_gpuwrite");
    }
    /* 3. Everything else that runs no host function; events again before the first one. */
    if (run_phase(&e, PHASE_NO_HOSTFUNC, LEN(PHASE_NO_HOSTFUNC)) > 0) {
        run_events(&e, "before_hostfunc");
    }
    /* 4. Host functions; from here on the process is `after_hostfunc`. */
    if (run_phase(&e, PHASE_HOSTFUNC, LEN(PHASE_HOSTFUNC)) > 0) {
        run_events(&e, "after_hostfunc");
    }

    env_destroy(&e);
    report_close();
    free(names);
    /* The primary context is not released: that adds nothing to measure, and would hang if a
     * wait were still pending; it goes with the process. */
    return 0;
}
