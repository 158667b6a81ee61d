// Status strings, the thread-local error message and the shared argument checks.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "mhc_common.cuh"

#define MHC_KERNELS_VERSION "0.1.0"

namespace mhc {
// Per calling thread, so concurrent callers never read each other's detail.
thread_local char g_message[512] = "";

mhcStatus_t fail(mhcStatus_t status, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_message, sizeof(g_message), fmt, ap);
    va_end(ap);
    return status;
}

mhcStatus_t ok() {
    g_message[0] = '\0';
    return MHC_STATUS_SUCCESS;
}

mhcStatus_t checkLaunch(const char* what) {
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return fail(MHC_STATUS_CUDA_ERROR, "%s failed to launch: %s (%s)", what,
                    cudaGetErrorString(e), cudaGetErrorName(e));
    return ok();
}

// Largest d: keeps every grid dimension of the post kernel within limits.
constexpr int32_t kMaxD = 1 << 24;

mhcStatus_t checkShape(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype) {
    if (dtype != MHC_DTYPE_FLOAT32 && dtype != MHC_DTYPE_FLOAT16 && dtype != MHC_DTYPE_BFLOAT16)
        return fail(MHC_STATUS_INVALID_VALUE,
                    "dtype=%d is not a valid mhcDtype_t (0 float32, 1 float16, 2 bfloat16)",
                    int(dtype));
    if (T < 0) return fail(MHC_STATUS_INVALID_VALUE, "T must be >= 0, got %lld", (long long)T);
    if (T > INT64_C(0x7fffffff))
        return fail(MHC_STATUS_NOT_SUPPORTED, "T=%lld is not supported: at most 2^31-1 tokens",
                    (long long)T);
    if (n < 1)
        return fail(MHC_STATUS_INVALID_VALUE, "n must be >= 1 (streams), got %d", int(n));
    if (n > MHC_MAX_STREAMS)
        return fail(MHC_STATUS_NOT_SUPPORTED, "n=%d is not supported: these kernels take 1 <= n <= %d",
                    int(n), MHC_MAX_STREAMS);
    if (d < 1) return fail(MHC_STATUS_INVALID_VALUE, "d must be >= 1 (hidden size), got %d", int(d));
    if (d % MHC_D_ALIGN != 0)
        return fail(MHC_STATUS_NOT_SUPPORTED,
                    "d=%d is not supported: the kernels need d to be a multiple of %d "
                    "(16-byte vectors)", int(d), MHC_D_ALIGN);
    if (d > kMaxD)
        return fail(MHC_STATUS_NOT_SUPPORTED, "d=%d is not supported: at most %d", int(d), kMaxD);
    return ok();
}

mhcStatus_t checkPtr(const void* p, const char* name, bool vector_aligned) {
    if (p == nullptr) return fail(MHC_STATUS_INVALID_VALUE, "%s is a NULL pointer", name);
    const uintptr_t align = vector_aligned ? 16 : 4;
    if (reinterpret_cast<uintptr_t>(p) % align != 0)
        return fail(MHC_STATUS_INVALID_VALUE, "%s must be %u-byte aligned (got %p)", name,
                    unsigned(align), p);
    return ok();
}

mhcStatus_t checkEps(float v, const char* name) {
    if (!isfinite(v) || v < 0.f)
        return fail(MHC_STATUS_INVALID_VALUE, "attribute %s must be a finite number >= 0, got %g",
                    name, double(v));
    return ok();
}

}  // namespace mhc

extern "C" MHC_API const char* mhcGetStatusString(mhcStatus_t status) {
    switch (status) {
        case MHC_STATUS_SUCCESS: return "MHC_STATUS_SUCCESS";
        case MHC_STATUS_INVALID_VALUE: return "MHC_STATUS_INVALID_VALUE";
        case MHC_STATUS_NOT_SUPPORTED: return "MHC_STATUS_NOT_SUPPORTED";
        case MHC_STATUS_WORKSPACE_TOO_SMALL: return "MHC_STATUS_WORKSPACE_TOO_SMALL";
        case MHC_STATUS_CUDA_ERROR: return "MHC_STATUS_CUDA_ERROR";
    }
    return "MHC_STATUS_UNKNOWN";
}

extern "C" MHC_API const char* mhcGetLastErrorMessage(void) { return mhc::g_message; }

extern "C" MHC_API const char* mhcGetVersion(void) { return MHC_KERNELS_VERSION; }

extern "C" MHC_API mhcStatus_t mhcCheckShape(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype) {
    return mhc::checkShape(T, n, d, dtype);
}
