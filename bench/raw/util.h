/* Timing, deadlines, statistics and result output shared by every benchmark. */
#ifndef RAW_UTIL_H
#define RAW_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in nanoseconds (vDSO, ~20 ns per call). */
uint64_t now_ns(void);

/* Spins (no sleep: sleeping costs 50+ us of wake-up latency) for `ns` nanoseconds. */
void spin_for_ns(uint64_t ns);

/* How long any single host-side wait may take before the benchmark fails: generous, since the
 * slowest step (a 1 ms spin kernel, a 1 GiB copy) takes a few milliseconds. */
#define DEADLINE_NS (2ull * 1000 * 1000 * 1000)

/* Acquire-loads of 8-byte slots in mapped pinned memory that the GPU (or another thread) writes. */
static inline uint64_t load_acquire(const volatile uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void store_release(volatile uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Spins until *p >= v and returns the time it saw it; after DEADLINE_NS it fails the program,
 * naming `what`, so a lost signal is an error, never a hang. */
uint64_t wait_geq(const volatile uint64_t *p, uint64_t v, const char *what);

/* A 40 +- 10 us pause from a fixed-seed generator: the "idle" regime's gap between enqueueing a
 * wait and signalling it. Jitter keeps the signal from locking onto any periodic driver activity. */
uint64_t idle_gap_ns(void);

/* Samples of one measurement, in nanoseconds. */
typedef struct {
    double *ns;
    size_t n, cap;
} samples_t;

samples_t samples_new(size_t cap);
void samples_push(samples_t *s, double ns);
void samples_free(samples_t *s);
/* Sorts the samples in place and returns their median (nearest rank), in nanoseconds. */
double samples_median(samples_t *s);

/* The process state a row was taken in (event calls get slower once a host function ran):
 * `fresh` until the first host function ran in this process, `after_hostfunc` from then on; event
 * rows are also taken at `after_gpuwrite` (right after the GPU-write trampoline) and
 * `before_hostfunc` (after every other benchmark without host functions). */
extern const char *g_state;

/* One result row: printed to the table and, with --json, appended as one JSON line. `extra` is
 * NULL or more JSON members, e.g. "\"rate\":3.0e3,\"rate_unit\":\"GB/s\"" (no leading comma). */
void report(const char *bench, const char *regime, samples_t *s, const char *extra);

/* Opens the JSON-lines file (append) and writes the header line (GPU, driver, commit). */
void report_open(const char *path, const char *gpu, int driver_version, const char *commit);
/* BENCH_PIN_MAIN_CPU=N: pins the calling thread (only it: the driver's threads keep their CPUs)
 * to CPU N, to measure how the CPU of the thread that launches and spins changes the rows. */
void pin_main_thread(void);
void report_close(void);

/* Sample counts, from the command line. */
extern size_t g_samples; /* timed samples per row (>= 2000 by default) */
extern size_t g_warmup;  /* untimed iterations before them */

#endif
