/* The CUDA driver API, loaded at run time.
 *
 * Nothing CUDA is linked: libcuda.so.1 is opened with dlopen, cuGetProcAddress is the only symbol
 * taken with dlsym, and every other entry point comes from cuGetProcAddress with cudaVersion 13000,
 * so the versioned entry point the CUDA 13.0 header maps each name to (the `_v2` ones) is the one
 * called. The program builds on a machine without a GPU or a driver. */
#ifndef RAW_CU_H
#define RAW_CU_H

#include <cuda.h>
#include <stdint.h>

/* Every driver entry point the benchmarks use. X(name): `name` is the base name cuGetProcAddress
 * knows; the header's macro (cuStreamWaitValue64 -> cuStreamWaitValue64_v2) gives the prototype. */
#define CU_FUNCS(X)                                                                                \
    X(cuInit)                                                                                      \
    X(cuDriverGetVersion)                                                                          \
    X(cuGetErrorName)                                                                              \
    X(cuGetErrorString)                                                                            \
    X(cuDeviceGet)                                                                                 \
    X(cuDeviceGetCount)                                                                            \
    X(cuDeviceCanAccessPeer)                                                                       \
    X(cuDeviceGetName)                                                                             \
    X(cuDeviceGetAttribute)                                                                        \
    X(cuDevicePrimaryCtxRetain)                                                                    \
    X(cuCtxSetCurrent)                                                                             \
    X(cuCtxEnablePeerAccess)                                                                       \
    X(cuModuleLoadData)                                                                            \
    X(cuModuleGetFunction)                                                                         \
    X(cuStreamCreate)                                                                              \
    X(cuStreamDestroy)                                                                             \
    X(cuStreamSynchronize)                                                                         \
    X(cuStreamWaitValue64)                                                                         \
    X(cuStreamWriteValue64)                                                                        \
    X(cuStreamWaitEvent)                                                                           \
    X(cuLaunchKernel)                                                                              \
    X(cuLaunchHostFunc)                                                                            \
    X(cuEventCreate)                                                                               \
    X(cuEventDestroy)                                                                              \
    X(cuEventRecord)                                                                               \
    X(cuEventSynchronize)                                                                          \
    X(cuEventQuery)                                                                                \
    X(cuEventElapsedTime)                                                                          \
    X(cuMemAlloc)                                                                                  \
    X(cuMemFree)                                                                                   \
    X(cuMemAllocAsync)                                                                             \
    X(cuMemFreeAsync)                                                                              \
    X(cuMemHostAlloc)                                                                              \
    X(cuMemHostGetDevicePointer)                                                                   \
    X(cuMemFreeHost)                                                                               \
    X(cuMemsetD8Async)                                                                             \
    X(cuMemcpyDtoDAsync)                                                                           \
    X(cuGraphCreate)                                                                               \
    X(cuGraphDestroy)                                                                              \
    X(cuGraphAddKernelNode)                                                                        \
    X(cuGraphAddBatchMemOpNode)                                                                    \
    X(cuGraphAddHostNode)                                                                          \
    X(cuGraphAddNode)                                                                              \
    X(cuGraphConditionalHandleCreate)                                                              \
    X(cuGraphInstantiateWithFlags)                                                                 \
    X(cuUserObjectCreate)                                                                          \
    X(cuGraphRetainUserObject)                                                                     \
    X(cuGraphExecBatchMemOpNodeSetParams)                                                          \
    X(cuGraphExecDestroy)                                                                          \
    X(cuGraphLaunch)

/* p_cuFoo has cuFoo's (versioned) prototype. `##` keeps the base name unexpanded; the plain use of
 * `name` is expanded by the header's macro to the versioned prototype. */
#define CU_DECLARE(name) extern __typeof__(&name) p_##name;
CU_FUNCS(CU_DECLARE)
#undef CU_DECLARE

/* Opens libcuda.so.1 and resolves CU_FUNCS; prints what is missing and exits non-zero if anything is. */
void cu_load(void);

/* Exits with the call's text, file:line and the driver's error name if `r` is not CUDA_SUCCESS. */
void cu_check(CUresult r, const char *call, const char *file, int line);

/* CU(cuStreamSynchronize, s): calls the driver entry point and checks its result. */
#define CU(fn, ...) cu_check(p_##fn(__VA_ARGS__), #fn "(" #__VA_ARGS__ ")", __FILE__, __LINE__)

/* Fails with `what` and exits non-zero. */
_Noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
