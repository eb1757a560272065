/* Timing, deadlines, statistics and result output; see util.h. */
#define _GNU_SOURCE
#include "util.h"
#include "cu.h"

#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *g_state = "fresh";
size_t g_samples = 2000;
size_t g_warmup = 200;

static FILE *g_json;

uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void spin_for_ns(uint64_t ns) {
    uint64_t end = now_ns() + ns;
    while (now_ns() < end) {
        __builtin_ia32_pause();
    }
}

uint64_t wait_geq(const volatile uint64_t *p, uint64_t v, const char *what) {
    uint64_t start = 0;
    for (uint32_t i = 0;; i++) {
        if (load_acquire(p) >= v) {
            return now_ns();
        }
        /* Read the clock only every 256 polls: the poll itself is what must be fast. */
        if ((i & 255) == 0) {
            uint64_t t = now_ns();
            if (start == 0) {
                start = t;
            } else if (t - start > DEADLINE_NS) {
                die("%s: waited %.1f s for value >= %llu, last seen %llu", what,
                    (double)(t - start) / 1e9, (unsigned long long)v,
                    (unsigned long long)load_acquire(p));
            }
        }
        __builtin_ia32_pause();
    }
}

uint64_t idle_gap_ns(void) {
    static uint64_t x = 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return 30000 + x % 20001;
}

samples_t samples_new(size_t cap) {
    samples_t s = {malloc(cap * sizeof(double)), 0, cap};
    if (s.ns == NULL) {
        die("out of memory for %zu samples", cap);
    }
    return s;
}

void samples_push(samples_t *s, double ns) {
    if (s->n == s->cap) {
        s->cap *= 2;
        s->ns = realloc(s->ns, s->cap * sizeof(double));
        if (s->ns == NULL) {
            die("out of memory for %zu samples", s->cap);
        }
    }
    s->ns[s->n++] = ns;
}

void samples_free(samples_t *s) {
    free(s->ns);
    s->ns = NULL;
    s->n = s->cap = 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values. */
static double pct(const double *sorted, size_t n, double p) {
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) {
        rank = 1;
    }
    return sorted[rank - 1];
}

double samples_median(samples_t *s) {
    if (s->n == 0) {
        die("median of no samples");
    }
    qsort(s->ns, s->n, sizeof(double), cmp_double);
    return pct(s->ns, s->n, 50);
}

void report(const char *bench, const char *regime, samples_t *s, const char *extra) {
    if (s->n == 0) {
        die("%s/%s: no samples", bench, regime);
    }
    qsort(s->ns, s->n, sizeof(double), cmp_double);
    double p50 = pct(s->ns, s->n, 50) / 1e3, p90 = pct(s->ns, s->n, 90) / 1e3,
           p99 = pct(s->ns, s->n, 99) / 1e3, min = s->ns[0] / 1e3, max = s->ns[s->n - 1] / 1e3;
    printf("%-24s %-16s %-15s %6zu %10.3f %10.3f %10.3f %10.3f %10.3f%s%s\n", bench, regime, g_state,
           s->n, p50, p90, p99, min, max, extra ? "  " : "", extra ? extra : "");
    fflush(stdout);
    if (g_json != NULL) {
        fprintf(g_json,
                "{\"impl\":\"raw\",\"bench\":\"%s\",\"regime\":\"%s\",\"state\":\"%s\","
                "\"p50_us\":%.4f,\"p90_us\":%.4f,\"p99_us\":%.4f,\"min_us\":%.4f,\"max_us\":%.4f,"
                "\"n\":%zu,\"cpu\":%d%s%s}\n",
                bench, regime, g_state, p50, p90, p99, min, max, s->n, sched_getcpu(),
                extra ? "," : "", extra ? extra : "");
        fflush(g_json);
    }
}

/* Writes `s` as a JSON string body (quotes and backslashes escaped, control characters dropped). */
static void json_str(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        if ((unsigned char)*s >= 0x20) {
            fputc(*s, f);
        }
    }
}

void report_open(const char *path, const char *gpu, int driver_version, const char *commit) {
    if (path != NULL) {
        g_json = fopen(path, "a");
        if (g_json == NULL) {
            die("cannot open %s for appending", path);
        }
    }
    /* The kernel module's version line ("NVRM version: ... 580.159 ..."), if readable. */
    char nvrm[256] = "";
    FILE *v = fopen("/proc/driver/nvidia/version", "r");
    if (v != NULL) {
        if (fgets(nvrm, sizeof nvrm, v) == NULL) {
            nvrm[0] = '\0';
        }
        nvrm[strcspn(nvrm, "\n")] = '\0';
        fclose(v);
    }
    printf("GPU: %s, cuDriverGetVersion %d, %s\n", gpu, driver_version, nvrm);
    printf("%-24s %-16s %-15s %6s %10s %10s %10s %10s %10s\n", "bench", "regime", "state", "n",
           "p50_us", "p90_us", "p99_us", "min_us", "max_us");
    if (g_json != NULL) {
        time_t t = time(NULL);
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        fprintf(g_json, "{\"impl\":\"raw\",\"bench\":\"_meta\",\"gpu\":\"");
        json_str(g_json, gpu);
        fprintf(g_json, "\",\"driver_version\":%d,\"nvrm\":\"", driver_version);
        json_str(g_json, nvrm);
        fprintf(g_json, "\",\"commit\":\"");
        json_str(g_json, commit);
        fprintf(g_json, "\",\"date\":\"%s\",\"samples\":%zu,\"warmup\":%zu}\n", when, g_samples,
                g_warmup);
        fflush(g_json);
    }
}

void report_close(void) {
    if (g_json != NULL) {
        fclose(g_json);
        g_json = NULL;
    }
}

void pin_main_thread(void) {
    const char *v = getenv("BENCH_PIN_MAIN_CPU");
    if (v == NULL) {
        return;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(v), &set);
    /* pid 0: the calling thread alone. */
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        die("BENCH_PIN_MAIN_CPU=%s: sched_setaffinity failed", v);
    }
}
