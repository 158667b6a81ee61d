// MhcPost (out = post * x + comb^T @ residual) and standalone MhcSinkhorn.
#include "mhc_common.cuh"

namespace mhc {
namespace {

constexpr int kPostThreads = 128;
constexpr int kSinkhornThreads = 128;

// grid.x = token, grid.y = chunks of the d/8 vectors; the gates of a token are
// warp-uniform loads, the streams move as 16-byte vectors.
template <typename T, int N>
__global__ void __launch_bounds__(kPostThreads)
    postKernel(const T* __restrict__ x, const T* __restrict__ res,
               const float* __restrict__ post_mix, const float* __restrict__ comb_mix,
               T* __restrict__ out, int d) {
    const int64_t t = blockIdx.x;
    const int dv = d / 8;
    const int v = blockIdx.y * blockDim.x + threadIdx.x;
    if (v >= dv) return;
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
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float a = p[j] * xv[e];
#pragma unroll
            for (int i = 0; i < N; ++i) a = fmaf(c[i][j], rv[i][e], a);
            o[e] = a;
        }
        store8(out + (t * N + j) * int64_t(d) + v * 8, o);
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
        dim3 grid(unsigned(ntok), unsigned((dv + kPostThreads - 1) / kPostThreads));
        postKernel<T, N><<<grid, kPostThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const T*>(residual), post_mix, comb_mix,
            static_cast<T*>(out), d);
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
        switch (dtype) {
            case MHC_DTYPE_BFLOAT16:
                return dispatchPost<__nv_bfloat16>(x, residual, post_mix, comb_mix, out, T, n, d,
                                                   stream);
            case MHC_DTYPE_FLOAT16:
                return dispatchPost<__half>(x, residual, post_mix, comb_mix, out, T, n, d, stream);
            default:
                return dispatchPost<float>(x, residual, post_mix, comb_mix, out, T, n, d, stream);
        }
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
