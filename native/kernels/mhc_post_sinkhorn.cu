// MhcPost (out = post * x + comb^T @ residual) and standalone MhcSinkhorn.
#include <stdlib.h>

#include "mhc_common.cuh"
#include "mhc_switches.h"

namespace mhc {
namespace {

constexpr int kPostThreads = 128;
constexpr int kSinkhornThreads = 128;

// Most token blocks of the post kernel (grid.y <= 65535).
constexpr int64_t kPostTokenBlocks = 65535;

// grid.x = chunks of the d/8 vectors, grid.y = token blocks walking the tokens
// blockIdx.y, blockIdx.y + gridDim.y, ...: consecutive blocks (x fastest) read
// adjacent chunks of one token, as FlashInfer's post kernel orders them, not
// the same chunk of consecutive tokens (env MHC_POST_TOKEN_MAJOR=1: that older
// order, kept for comparison). The gates of a token are warp-uniform loads,
// the streams 16-byte vectors.
template <typename T, int N>
__global__ void __launch_bounds__(kPostThreads)
    postKernel(const T* __restrict__ x, const T* __restrict__ res,
               const float* __restrict__ post_mix, const float* __restrict__ comb_mix,
               T* __restrict__ out, int64_t ntok, int d, bool token_major) {
    const unsigned chunk = token_major ? blockIdx.y : blockIdx.x;
    const int64_t first = token_major ? blockIdx.x : blockIdx.y;
    const int64_t step = token_major ? gridDim.x : gridDim.y;
    const int dv = d / 8;
    const int v = int(chunk) * blockDim.x + threadIdx.x;
    if (v >= dv) return;
    for (int64_t t = first; t < ntok; t += step) {
        float p[N], c[N][N];
#pragma unroll
        for (int j = 0; j < N; ++j) p[j] = __ldg(post_mix + t * N + j);
#pragma unroll
        for (int i = 0; i < N; ++i)
#pragma unroll
            for (int j = 0; j < N; ++j) c[i][j] = __ldg(comb_mix + (t * N + i) * N + j);
        float xv[8];
        load8(x + t * int64_t(d) + v * 8, xv);
        float rv[N][8];
#pragma unroll
        for (int i = 0; i < N; ++i) load8(res + (t * N + i) * int64_t(d) + v * 8, rv[i]);
#pragma unroll
        for (int j = 0; j < N; ++j) {
            float cj[N], o[8];
#pragma unroll
            for (int i = 0; i < N; ++i) cj[i] = c[i][j];
            postVector<N>(p[j], cj, xv, rv, o);
            store8(out + (t * N + j) * int64_t(d) + v * 8, o);
        }
    }
}

template <int N>
__global__ void __launch_bounds__(kSinkhornThreads)
    sinkhornKernel(const float* __restrict__ logits, float* __restrict__ comb, int64_t ntok,
                   int iters, float eps) {
    const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (t >= ntok) return;
    float c[N][N];
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < N; ++j) c[i][j] = logits[(t * N + i) * N + j];
    sinkhornInPlace<N>(c, iters, eps);
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < N; ++j) comb[(t * N + i) * N + j] = c[i][j];
}

template <typename T>
mhcStatus_t dispatchPost(const void* x, const void* residual, const float* post_mix,
                         const float* comb_mix, void* out, int64_t ntok, int n, int d,
                         cudaStream_t stream) {
    return dispatchN(n, [&](auto nc) {
        constexpr int N = decltype(nc)::value;
        const int dv = d / 8;
        const unsigned chunks = unsigned((dv + kPostThreads - 1) / kPostThreads);
        const bool token_major = postTokenMajor();
        const unsigned blocks = unsigned(ntok < kPostTokenBlocks ? ntok : kPostTokenBlocks);
        const dim3 grid = token_major ? dim3(unsigned(ntok), chunks) : dim3(chunks, blocks);
        postKernel<T, N><<<grid, kPostThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const T*>(residual), post_mix, comb_mix,
            static_cast<T*>(out), ntok, d, token_major);
        return checkLaunch("mhcPost kernel");
    });
}

}  // namespace
}  // namespace mhc

using namespace mhc;

extern "C" MHC_API mhcStatus_t mhcPost(const void* x, const void* residual, const float* post_mix,
                                       const float* comb_mix, void* out, int64_t T, int32_t n,
                                       int32_t d, mhcDtype_t dtype, cudaStream_t stream) {
    try {
        mhcStatus_t st = checkShape(T, n, d, dtype);
        if (st != MHC_STATUS_SUCCESS) return st;
        if (T == 0) return ok();
        if ((st = checkPtr(x, "x", true)) || (st = checkPtr(residual, "residual", true)) ||
            (st = checkPtr(post_mix, "post_mix", false)) ||
            (st = checkPtr(comb_mix, "comb_mix", false)) || (st = checkPtr(out, "out", true)))
            return st;
        return dispatchDtype(dtype, [&](auto type) {
            return dispatchPost<decltype(type)>(x, residual, post_mix, comb_mix, out, T, n, d,
                                                stream);
        });
    } catch (...) {
        return fail(MHC_STATUS_CUDA_ERROR, "mhcPost: unexpected internal exception");
    }
}

extern "C" MHC_API mhcStatus_t mhcSinkhorn(const float* logits, float* comb, int64_t T, int32_t n,
                                           int32_t iters, float eps, cudaStream_t stream) {
    try {
        if (T < 0) return fail(MHC_STATUS_INVALID_VALUE, "T must be >= 0, got %lld", (long long)T);
        if (T > INT64_C(0x7fffffff) * kSinkhornThreads)
            return fail(MHC_STATUS_NOT_SUPPORTED, "T=%lld is too large", (long long)T);
        if (n < 1 || n > MHC_MAX_STREAMS)
            return fail(n < 1 ? MHC_STATUS_INVALID_VALUE : MHC_STATUS_NOT_SUPPORTED,
                        "n=%d is out of range: these kernels take 1 <= n <= %d", int(n),
                        MHC_MAX_STREAMS);
        if (iters < 1)
            return fail(MHC_STATUS_INVALID_VALUE, "attribute iters must be >= 1, got %d",
                        int(iters));
        mhcStatus_t st = checkEps(eps, "eps");
        if (st != MHC_STATUS_SUCCESS) return st;
        if (T == 0) return ok();
        if ((st = checkPtr(logits, "logits", false)) || (st = checkPtr(comb, "comb", false)))
            return st;
        return dispatchN(n, [&](auto nc) {
            constexpr int N = decltype(nc)::value;
            const unsigned blocks = unsigned((T + kSinkhornThreads - 1) / kSinkhornThreads);
            sinkhornKernel<N><<<blocks, kSinkhornThreads, 0, stream>>>(logits, comb, T, iters, eps);
            return checkLaunch("mhcSinkhorn kernel");
        });
    } catch (...) {
        return fail(MHC_STATUS_CUDA_ERROR, "mhcSinkhorn: unexpected internal exception");
    }
}
