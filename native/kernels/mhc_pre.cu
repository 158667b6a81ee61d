// MhcPre: projection (mhc_mix.cuh), then per token the finish (rms scale,
// gates, Sinkhorn) and layer_input = sum_i pre_i * x_i.
#include "mhc_decode.cuh"
#include "mhc_fused.cuh"
#include "mhc_mix.cuh"
#include "mhc_prefill.cuh"
#include "mhc_stream.cuh"

namespace mhc {
namespace {

constexpr int kFinishThreads = 128;

template <typename T, int N>
__global__ void __launch_bounds__(kFinishThreads)
    preFinishKernel(const T* __restrict__ x, const float* __restrict__ part, int splits,
                    const float* __restrict__ hc_scale, const float* __restrict__ hc_base,
                    T* __restrict__ layer_input, float* __restrict__ post_mix,
                    float* __restrict__ comb_mix, int64_t ntok, int d, mhcPreParams p) {
    constexpr int M = (2 + N) * N;
    __shared__ float mix[M + 1];
    __shared__ float pre_w[N];
    const int64_t t = blockIdx.x;
    __shared__ float scratch[kFinishThreads];
    sumSplitsBlock<M + 1>(part, splits, ntok, t, M + 1, IdentityIdx(), mix, scratch);
    __syncthreads();
    if (threadIdx.x == 0) {
        const float K = float(N) * float(d);
        const float r = 1.0f / sqrtf(mix[M] / K + p.rms_eps);
        const float s0 = hc_scale[0], s1 = hc_scale[1], s2 = hc_scale[2];
#pragma unroll
        for (int i = 0; i < N; ++i) {
            pre_w[i] = sigmoidf(mix[i] * r * s0 + hc_base[i]) + p.pre_eps;
            post_mix[t * N + i] = p.post_mult * sigmoidf(mix[N + i] * r * s1 + hc_base[N + i]);
        }
        combFromMixes<N>(mix, r, s2, hc_base, p.sinkhorn_iters, p.sinkhorn_eps,
                         comb_mix + t * N * N);
    }
    __syncthreads();
    float w[N];
#pragma unroll
    for (int i = 0; i < N; ++i) w[i] = pre_w[i];
    weightedStreamSum<T, N>(x + t * N * int64_t(d), w, layer_input + t * int64_t(d), d);
}

template <typename T, int N>
mhcStatus_t runPre(const void* residual, const float* hc_fn, const float* hc_scale,
                   const float* hc_base, void* layer_input, float* post_mix, float* comb_mix,
                   int64_t ntok, int d, const mhcPreParams& p, void* workspace,
                   size_t workspace_size, cudaStream_t stream) {
    constexpr int M = (2 + N) * N;
    const int K = N * d;
    float* part = static_cast<float*>(workspace);
    const T* x = static_cast<const T*>(residual);
    if (takesDecodePath(ntok, K))
        return runPreDecode<T, N>(x, hc_fn, hc_scale, hc_base, static_cast<T*>(layer_input),
                                  post_mix, comb_mix, ntok, d, p, part, stream);
    if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        const int pf = runPrefill<N, false, false>(
            prefillPreArgs(x, hc_fn, hc_scale, hc_base, static_cast<T*>(layer_input), post_mix,
                           comb_mix, ntok, N, d, p, workspace),
            workspace_size, stream);
        if (pf != 0) return pf > 0 ? MHC_STATUS_SUCCESS : MHC_STATUS_CUDA_ERROR;
        const int sk = launchStream<N, false, false>(
            preStreamArgs(x, hc_fn, hc_scale, hc_base, static_cast<T*>(layer_input), post_mix,
                          comb_mix, ntok, d, p),
            stream);
        if (sk != 0) return sk > 0 ? MHC_STATUS_SUCCESS : MHC_STATUS_CUDA_ERROR;
        FusedArgs fa{x, hc_fn, hc_scale, hc_base, static_cast<T*>(layer_input), post_mix, comb_mix,
                     ntok, d, 0, 0, p.rms_eps, p.pre_eps, p.sinkhorn_eps, p.post_mult,
                     p.sinkhorn_iters};
        const int f = launchFused<N, false>(fa, stream);
        if (f != 0) return f > 0 ? MHC_STATUS_SUCCESS : MHC_STATUS_CUDA_ERROR;
    }
    const int splits = launchMix<T, M>(x, hc_fn, part, ntok, K, stream);
    if (splits < 0) return MHC_STATUS_CUDA_ERROR;
    preFinishKernel<T, N><<<unsigned(ntok), kFinishThreads, 0, stream>>>(
        x, part, splits, hc_scale, hc_base, static_cast<T*>(layer_input), post_mix, comb_mix,
        ntok, d, p);
    return checkLaunch("mhcPre finish kernel");
}

template <typename T>
mhcStatus_t dispatchPre(const void* residual, const float* hc_fn, const float* hc_scale,
                        const float* hc_base, void* layer_input, float* post_mix,
                        float* comb_mix, int64_t ntok, int n, int d, const mhcPreParams& p,
                        void* workspace, size_t workspace_size, cudaStream_t stream) {
    return dispatchN(n, [&](auto nc) {
        return runPre<T, decltype(nc)::value>(residual, hc_fn, hc_scale, hc_base, layer_input,
                                              post_mix, comb_mix, ntok, d, p, workspace,
                                              workspace_size, stream);
    });
}

inline size_t preWorkspaceBytes(int64_t T, int n, int d, mhcDtype_t dtype) {
    const size_t a = smallOrLargeWorkspaceBytes(T, int64_t(n) * d, (2 + n) * n);
    const size_t b = prefillWorkspaceBytes(T, n, d, dtype, false);
    return a > b ? a : b;
}

}  // namespace

mhcStatus_t postPreDecode(const DecodePost& post, const float* hc_fn, const float* hc_scale,
                          const float* hc_base, void* layer_input, float* post_mix,
                          float* comb_mix, int64_t ntok, int n, int d, mhcDtype_t dtype,
                          const mhcPreParams& p, void* workspace, cudaStream_t stream) {
    return dispatchDtype(dtype, [&](auto type) {
        using T = decltype(type);
        return dispatchN(n, [&](auto nc) {
            return runPreDecode<T, decltype(nc)::value>(
                static_cast<const T*>(post.residual_out), hc_fn, hc_scale, hc_base,
                static_cast<T*>(layer_input), post_mix, comb_mix, ntok, d, p,
                static_cast<float*>(workspace), stream, post);
        });
    });
}

mhcStatus_t checkPreParams(const mhcPreParams* params, const char* who) {
    if (params == nullptr) return fail(MHC_STATUS_INVALID_VALUE, "%s: params is NULL", who);
    mhcStatus_t st;
    if ((st = checkEps(params->rms_eps, "rms_eps")) != MHC_STATUS_SUCCESS) return st;
    if ((st = checkEps(params->pre_eps, "pre_eps")) != MHC_STATUS_SUCCESS) return st;
    if ((st = checkEps(params->sinkhorn_eps, "sinkhorn_eps")) != MHC_STATUS_SUCCESS) return st;
    if (!(params->post_mult > 0.f) || !isfinite(params->post_mult))
        return fail(MHC_STATUS_INVALID_VALUE,
                    "attribute post_mult must be a finite number > 0, got %g",
                    double(params->post_mult));
    if (params->sinkhorn_iters < 1)
        return fail(MHC_STATUS_INVALID_VALUE, "attribute sinkhorn_iters must be >= 1, got %d",
                    int(params->sinkhorn_iters));
    return MHC_STATUS_SUCCESS;
}

}  // namespace mhc

using namespace mhc;

extern "C" MHC_API size_t mhcPreWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype) {
    if (checkShape(T, n, d, dtype) != MHC_STATUS_SUCCESS) return 0;
    return preWorkspaceBytes(T, n, d, dtype);
}

extern "C" MHC_API mhcStatus_t mhcPre(const void* residual, const float* hc_fn,
                                      const float* hc_scale, const float* hc_base,
                                      void* layer_input, float* post_mix, float* comb_mix,
                                      int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                                      const mhcPreParams* params, void* workspace,
                                      size_t workspace_size, cudaStream_t stream) {
    try {
        mhcStatus_t st = checkShape(T, n, d, dtype);
        if (st != MHC_STATUS_SUCCESS) return st;
        if ((st = checkPreParams(params, "mhcPre")) != MHC_STATUS_SUCCESS) return st;
        if (T == 0) return ok();
        if ((st = checkPtr(residual, "residual", true)) ||
            (st = checkPtr(hc_fn, "hc_fn", true)) || (st = checkPtr(hc_scale, "hc_scale", false)) ||
            (st = checkPtr(hc_base, "hc_base", false)) ||
            (st = checkPtr(layer_input, "layer_input", true)) ||
            (st = checkPtr(post_mix, "post_mix", false)) ||
            (st = checkPtr(comb_mix, "comb_mix", false)))
            return st;
        const size_t need = preWorkspaceBytes(T, n, d, dtype);
        if (workspace_size < need)
            return fail(MHC_STATUS_WORKSPACE_TOO_SMALL,
                        "mhcPre: workspace_size=%zu bytes but this call needs %zu "
                        "(mhcPreWorkspaceSize)", workspace_size, need);
        if ((st = checkPtr(workspace, "workspace", true))) return st;
        return dispatchDtype(dtype, [&](auto type) {
            return dispatchPre<decltype(type)>(residual, hc_fn, hc_scale, hc_base, layer_input,
                                               post_mix, comb_mix, T, n, d, *params, workspace,
                                               workspace_size, stream);
        });
    } catch (...) {
        return fail(MHC_STATUS_CUDA_ERROR, "mhcPre: unexpected internal exception");
    }
}

extern "C" MHC_API mhcStatus_t mhcPreFinish(const void* residual, const float* mixes,
                                            const float* hc_scale, const float* hc_base,
                                            void* layer_input, float* post_mix, float* comb_mix,
                                            int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                                            const mhcPreParams* params, cudaStream_t stream) {
    mhcStatus_t st = checkShape(T, n, d, dtype);
    if (st != MHC_STATUS_SUCCESS) return st;
    if ((st = checkPreParams(params, "mhcPreFinish")) != MHC_STATUS_SUCCESS) return st;
    if (T == 0) return ok();
    if ((st = checkPtr(residual, "residual", true)) || (st = checkPtr(mixes, "mixes", false)) ||
        (st = checkPtr(hc_scale, "hc_scale", false)) ||
        (st = checkPtr(hc_base, "hc_base", false)) ||
        (st = checkPtr(layer_input, "layer_input", true)) ||
        (st = checkPtr(post_mix, "post_mix", false)) ||
        (st = checkPtr(comb_mix, "comb_mix", false)))
        return st;
    return dispatchDtype(dtype, [&](auto type) {
        using T_ = decltype(type);
        return dispatchN(n, [&](auto nc) {
            // The two-pass finish kernel with one split: mixes are its partials.
            preFinishKernel<T_, decltype(nc)::value><<<unsigned(T), kFinishThreads, 0, stream>>>(
                static_cast<const T_*>(residual), mixes, 1, hc_scale, hc_base,
                static_cast<T_*>(layer_input), post_mix, comb_mix, T, d, *params);
            return checkLaunch("mhcPreFinish kernel");
        });
    });
}
