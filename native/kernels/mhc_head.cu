// MhcHead: projection with n rows (small T: the decode mixes kernel of
// mhc_decode.cuh over most SMs; large T: mhc_stream.cuh / mhc_fused.cuh /
// mhc_mix.cuh), then y = sum_i w_i * x_i.
#include "mhc_decode.cuh"
#include "mhc_fused.cuh"
#include "mhc_mix.cuh"
#include "mhc_prefill.cuh"
#include "mhc_stream.cuh"

namespace mhc {
namespace {

constexpr int kFinishThreads = 128;

// grid (T, CB): block y of token t takes the 16-byte column vectors
// y*kFinishThreads + threadIdx.x + k*CB*kFinishThreads. Small T uses one vector
// per thread (CB = d / 8 / kFinishThreads, rounded up): it is loaded before the
// splits are reduced, one round trip for both. Large T uses CB = 1 (many
// blocks hide the latency; the splits are reduced once per token). Every block
// of a token reduces the same splits in the same order: the same gates.
template <typename T, int N>
__global__ void __launch_bounds__(kFinishThreads)
    headFinishKernel(const T* __restrict__ x, const float* __restrict__ part, int splits,
                     const float* __restrict__ hc_scale, const float* __restrict__ hc_base,
                     T* __restrict__ y, int64_t ntok, int d, mhcHeadParams p) {
    __shared__ float mix[N + 1];
    __shared__ float scratch[kFinishThreads];
    const int64_t t = blockIdx.x;
    const T* xt = x + t * N * int64_t(d);
    const int stride = int(gridDim.y) * kFinishThreads;
    int v = blockIdx.y * kFinishThreads + threadIdx.x;
    float xv[N][8];
    if (v < d / 8) {
#pragma unroll
        for (int i = 0; i < N; ++i) load8(xt + int64_t(i) * d + v * 8, xv[i]);
    }
    sumSplitsBlock<N + 1>(part, splits, ntok, t, N + 1, IdentityIdx(), mix, scratch);
    __syncthreads();
    const float r = 1.0f / sqrtf(mix[N] / (float(N) * float(d)) + p.rms_eps);
    const float s0 = hc_scale[0];
    float w[N];
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = sigmoidf(mix[i] * r * s0 + hc_base[i]) + p.eps;
    for (; v < d / 8; v += stride) {
        if (v != int(blockIdx.y) * kFinishThreads + int(threadIdx.x)) {
#pragma unroll
            for (int i = 0; i < N; ++i) load8(xt + int64_t(i) * d + v * 8, xv[i]);
        }
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = 0.f;
#pragma unroll
        for (int i = 0; i < N; ++i)
#pragma unroll
            for (int e = 0; e < 8; ++e) o[e] = fmaf(w[i], xv[i][e], o[e]);
        store8(y + t * int64_t(d) + v * 8, o);
    }
}

template <typename T, int N>
mhcStatus_t launchHeadFinish(const T* x, const float* part, int splits, const float* hc_scale,
                             const float* hc_base, void* y, int64_t ntok, int d,
                             const mhcHeadParams& p, cudaStream_t stream) {
    const bool small = ntok <= decodeMaxT();
    const dim3 grid(unsigned(ntok), small ? unsigned(ceilDiv(d / 8, kFinishThreads)) : 1u);
    headFinishKernel<T, N><<<grid, kFinishThreads, 0, stream>>>(
        x, part, splits, hc_scale, hc_base, static_cast<T*>(y), ntok, d, p);
    return checkLaunch("mhcHead finish kernel");
}

template <typename T, int N>
mhcStatus_t runHead(const void* residual, const float* hc_fn, const float* hc_scale,
                    const float* hc_base, void* y, int64_t ntok, int d, const mhcHeadParams& p,
                    void* workspace, size_t workspace_size, cudaStream_t stream) {
    const T* x = static_cast<const T*>(residual);
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        if (!takesDecodePath(ntok, int64_t(N) * d)) {
            const int pf = runPrefill<N, true, false>(
                prefillHeadArgs(x, hc_fn, hc_scale, hc_base, static_cast<T*>(y), ntok, N, d, p,
                                workspace),
                workspace_size, stream);
            if (pf != 0) return pf > 0 ? MHC_STATUS_SUCCESS : MHC_STATUS_CUDA_ERROR;
        }
        const int sk = launchStream<N, true, false>(
            headStreamArgs(x, hc_fn, hc_scale, hc_base, static_cast<T*>(y), ntok, d, p), stream);
        if (sk != 0) return sk > 0 ? MHC_STATUS_SUCCESS : MHC_STATUS_CUDA_ERROR;
        FusedArgs fa{x, hc_fn, hc_scale, hc_base, static_cast<T*>(y), nullptr, nullptr,
                     ntok, d, 0, 0, p.rms_eps, p.eps, 0.f, 0.f, 0};
        const int f = launchFused<N, true>(fa, stream);
        if (f != 0) return f > 0 ? MHC_STATUS_SUCCESS : MHC_STATUS_CUDA_ERROR;
    }
    float* part = static_cast<float*>(workspace);
    int splits;
    if (takesDecodePath(ntok, int64_t(N) * d)) {
        if (launchDecodeMixes<T, N>(x, hc_fn, part, ntok, N * d, stream) != MHC_STATUS_SUCCESS)
            return MHC_STATUS_CUDA_ERROR;
        splits = decodeSplits(int64_t(N) * d);
    } else {
        splits = launchMix<T, N>(x, hc_fn, part, ntok, N * d, stream);
    }
    if (splits < 0) return MHC_STATUS_CUDA_ERROR;
    return launchHeadFinish<T, N>(x, part, splits, hc_scale, hc_base, y, ntok, d, p, stream);
}

inline size_t headWorkspaceBytes(int64_t T, int n, int d, mhcDtype_t dtype) {
    const size_t a = smallOrLargeWorkspaceBytes(T, int64_t(n) * d, n);
    const size_t b = prefillWorkspaceBytes(T, n, d, dtype, true);
    return a > b ? a : b;
}

template <typename T>
mhcStatus_t dispatchHead(const void* residual, const float* hc_fn, const float* hc_scale,
                         const float* hc_base, void* y, int64_t ntok, int n, int d,
                         const mhcHeadParams& p, void* workspace, size_t workspace_size,
                         cudaStream_t stream) {
    return dispatchN(n, [&](auto nc) {
        return runHead<T, decltype(nc)::value>(residual, hc_fn, hc_scale, hc_base, y, ntok, d, p,
                                               workspace, workspace_size, stream);
    });
}

}  // namespace

mhcStatus_t postHeadDecode(const DecodePost& post, const float* hc_fn, const float* hc_scale,
                           const float* hc_base, void* y, int64_t ntok, int n, int d,
                           mhcDtype_t dtype, const mhcHeadParams& p, void* workspace,
                           cudaStream_t stream) {
    return dispatchDtype(dtype, [&](auto type) {
        using T = decltype(type);
        return dispatchN(n, [&](auto nc) {
            constexpr int N = decltype(nc)::value;
            float* part = static_cast<float*>(workspace);
            mhcStatus_t st = launchDecodeMixes<T, N, N>(nullptr, hc_fn, part, ntok, N * d,
                                                          stream, post);
            if (st != MHC_STATUS_SUCCESS) return st;
            return launchHeadFinish<T, N>(static_cast<const T*>(post.residual_out), part,
                                          decodeSplits(int64_t(N) * d), hc_scale, hc_base, y,
                                          ntok, d, p, stream);
        });
    });
}

mhcStatus_t checkHeadParams(const mhcHeadParams* params, const char* who) {
    if (params == nullptr) return fail(MHC_STATUS_INVALID_VALUE, "%s: params is NULL", who);
    mhcStatus_t st;
    if ((st = checkEps(params->rms_eps, "rms_eps")) != MHC_STATUS_SUCCESS) return st;
    return checkEps(params->eps, "eps");
}

}  // namespace mhc

using namespace mhc;

extern "C" MHC_API size_t mhcHeadWorkspaceSize(int64_t T, int32_t n, int32_t d,
                                               mhcDtype_t dtype) {
    if (checkShape(T, n, d, dtype) != MHC_STATUS_SUCCESS) return 0;
    return headWorkspaceBytes(T, n, d, dtype);
}

extern "C" MHC_API mhcStatus_t mhcHead(const void* residual, const float* hc_fn,
                                       const float* hc_scale, const float* hc_base, void* y,
                                       int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                                       const mhcHeadParams* params, void* workspace,
                                       size_t workspace_size, cudaStream_t stream) {
    try {
        mhcStatus_t st = checkShape(T, n, d, dtype);
        if (st != MHC_STATUS_SUCCESS) return st;
        if ((st = checkHeadParams(params, "mhcHead")) != MHC_STATUS_SUCCESS) return st;
        if (T == 0) return ok();
        if ((st = checkPtr(residual, "residual", true)) ||
            (st = checkPtr(hc_fn, "hc_fn", true)) || (st = checkPtr(hc_scale, "hc_scale", false)) ||
            (st = checkPtr(hc_base, "hc_base", false)) || (st = checkPtr(y, "y", true)))
            return st;
        const size_t need = headWorkspaceBytes(T, n, d, dtype);
        if (workspace_size < need)
            return fail(MHC_STATUS_WORKSPACE_TOO_SMALL,
                        "mhcHead: workspace_size=%zu bytes but this call needs %zu "
                        "(mhcHeadWorkspaceSize)", workspace_size, need);
        if ((st = checkPtr(workspace, "workspace", true))) return st;
        return dispatchDtype(dtype, [&](auto type) {
            return dispatchHead<decltype(type)>(residual, hc_fn, hc_scale, hc_base, y, T, n, d,
                                                *params, workspace, workspace_size, stream);
        });
    } catch (...) {
        return fail(MHC_STATUS_CUDA_ERROR, "mhcHead: unexpected internal exception");
    }
}

extern "C" MHC_API mhcStatus_t mhcHeadFinish(const void* residual, const float* mixes,
                                             const float* hc_scale, const float* hc_base, void* y,
                                             int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                                             const mhcHeadParams* params, cudaStream_t stream) {
    mhcStatus_t st = checkShape(T, n, d, dtype);
    if (st != MHC_STATUS_SUCCESS) return st;
    if ((st = checkHeadParams(params, "mhcHeadFinish")) != MHC_STATUS_SUCCESS) return st;
    if (T == 0) return ok();
    if ((st = checkPtr(residual, "residual", true)) || (st = checkPtr(mixes, "mixes", false)) ||
        (st = checkPtr(hc_scale, "hc_scale", false)) ||
        (st = checkPtr(hc_base, "hc_base", false)) || (st = checkPtr(y, "y", true)))
        return st;
    return dispatchDtype(dtype, [&](auto type) {
        using T_ = decltype(type);
        return dispatchN(n, [&](auto nc) {
            return launchHeadFinish<T_, decltype(nc)::value>(static_cast<const T_*>(residual),
                                                             mixes, 1, hc_scale, hc_base, y, T,
                                                             d, *params, stream);
        });
    });
}
