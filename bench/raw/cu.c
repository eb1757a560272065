/* Run-time loading of the CUDA driver; see cu.h. */
#include "cu.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define CU_DEFINE(name) __typeof__(&name) p_##name;
CU_FUNCS(CU_DEFINE)
#undef CU_DEFINE

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("raw_bench: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    /* exit, not abort: the process's exit returns even while a stream waits on a value nobody
     * will signal, so a failed benchmark never leaves a hung process behind. */
    exit(1);
}

void cu_check(CUresult r, const char *call, const char *file, int line) {
    if (r == CUDA_SUCCESS) {
        return;
    }
    const char *name = "?";
    const char *msg = "?";
    if (p_cuGetErrorName == NULL || p_cuGetErrorName(r, &name) != CUDA_SUCCESS) {
        name = "unknown CUresult";
    }
    if (p_cuGetErrorString == NULL || p_cuGetErrorString(r, &msg) != CUDA_SUCCESS) {
        msg = "";
    }
    die("%s:%d: %s failed: %s (%d) %s", file, line, call, name, (int)r, msg);
}

void cu_load(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        die("cannot load the CUDA driver (libcuda.so.1): %s", dlerror());
    }
    /* The header maps cuGetProcAddress to cuGetProcAddress_v2 (the one with a symbolStatus
     * out-parameter); take that exact symbol so the prototype matches. */
    __typeof__(&cuGetProcAddress) get_proc = NULL;
    *(void **)&get_proc = dlsym(lib, "cuGetProcAddress_v2");
    if (get_proc == NULL) {
        die("libcuda.so.1 has no cuGetProcAddress_v2 (driver older than CUDA 12.0?)");
    }
    /* LEGACY_STREAM: stream 0 means the legacy default stream, as in a program built without
     * per-thread default streams. (The benchmarks use their own streams throughout.) */
    int missing = 0;
#define CU_RESOLVE(name)                                                                           \
    do {                                                                                           \
        CUdriverProcAddressQueryResult status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;             \
        CUresult r = get_proc(#name, (void **)&p_##name, 13000, CU_GET_PROC_ADDRESS_LEGACY_STREAM,  \
                              &status);                                                            \
        if (r != CUDA_SUCCESS || status != CU_GET_PROC_ADDRESS_SUCCESS || p_##name == NULL) {      \
            fprintf(stderr, "raw_bench: driver entry point %s not found (CUresult %d, status %d)\n", \
                    #name, (int)r, (int)status);                                                   \
            p_##name = NULL;                                                                       \
            missing++;                                                                             \
        }                                                                                          \
    } while (0);
    CU_FUNCS(CU_RESOLVE)
#undef CU_RESOLVE
    if (missing != 0) {
        die("%d driver entry point(s) missing: this needs a driver for CUDA 13.0 or newer", missing);
    }
}
