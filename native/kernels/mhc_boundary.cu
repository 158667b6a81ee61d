// MhcPostPre and MhcPostHead, the fused layer boundaries (contract: shared/spec/mhc_ops.md).
//
// Four implementations, the same results (the pre half reads residual_out
// rounded to the residual dtype, as the contract says):
//  * small T (mhc_decode.cuh, every dtype): the post folded into the decode
//    mixes kernel, PDL-chained to the pre (head) finish kernel: two launches;
//  * the single-pass streaming kernel (mhc_stream.cuh, bf16 on sm_90+): the
//    residual and x are read once, the post update is applied in shared memory
//    and written to residual_out, and the pre (head) half projects those bits
//    without reading them back. It measured slower than the composition at
//    d=7168 (docs/journal/kernels_notes.md, v6), so it runs only under MHC_STREAM=1;
//  * the prefill paths (mhc_prefill.cuh, bf16, where the table picks them):
//    the projection kernel applies the post, writes residual_out and projects
//    the rounded bits; the finish reads residual_out back (from L2 when chunked);
//  * the composition behind one call: MhcPost writes residual_out, then the
//    MhcPre (MhcHead) path reads it back.
#include "mhc_common.cuh"
#include "mhc_decode.cuh"
#include "mhc_prefill.cuh"
#include "mhc_stream.cuh"

using namespace mhc;

namespace {
size_t elemBytes(mhcDtype_t dtype) { return dtype == MHC_DTYPE_FLOAT32 ? 4 : 2; }
size_t aligned(size_t bytes) { return (bytes + 255) & ~size_t(255); }

mhcStatus_t checkBoundaryPtrs(const void* x, const void* residual, const float* post_mix,
                              const float* comb_mix, const float* hc_fn, const float* hc_scale,
                              const float* hc_base) {
    mhcStatus_t st;
    if ((st = checkPtr(x, "x", true)) || (st = checkPtr(residual, "residual", true)) ||
        (st = checkPtr(post_mix, "post_mix", false)) ||
        (st = checkPtr(comb_mix, "comb_mix", false)) || (st = checkPtr(hc_fn, "hc_fn", true)) ||
        (st = checkPtr(hc_scale, "hc_scale", false)) || (st = checkPtr(hc_base, "hc_base", false)))
        return st;
    return MHC_STATUS_SUCCESS;
}

void addPostHalf(StreamArgs& a, const void* x, const float* post_mix, const float* comb_mix,
                 void* residual_out) {
    a.x = static_cast<const __nv_bfloat16*>(x);
    a.post_in = post_mix;
    a.comb_in = comb_mix;
    a.res_out = static_cast<__nv_bfloat16*>(residual_out);
}
}  // namespace

extern "C" MHC_API size_t mhcPostPreWorkspaceSize(int64_t T, int32_t n, int32_t d,
                                                  mhcDtype_t dtype) {
    return mhcPreWorkspaceSize(T, n, d, dtype);
}

extern "C" MHC_API mhcStatus_t mhcPostPre(const void* x, const void* residual,
                                          const float* post_mix, const float* comb_mix,
                                          const float* hc_fn, const float* hc_scale,
                                          const float* hc_base, void* residual_out,
                                          void* layer_input, float* next_post_mix,
                                          float* next_comb_mix, int64_t T, int32_t n, int32_t d,
                                          mhcDtype_t dtype, const mhcPreParams* params,
                                          void* workspace, size_t workspace_size,
                                          cudaStream_t stream) {
    if (residual_out == residual)
        return fail(MHC_STATUS_INVALID_VALUE, "mhcPostPre: residual_out must not alias residual");
    // Every check, before any launch (each path below trusts them).
    mhcStatus_t st = checkShape(T, n, d, dtype);
    if (st != MHC_STATUS_SUCCESS) return st;
    if ((st = checkPreParams(params, "mhcPostPre")) != MHC_STATUS_SUCCESS) return st;
    if (T == 0) return ok();
    if ((st = checkBoundaryPtrs(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base)) ||
        (st = checkPtr(residual_out, "residual_out", true)) ||
        (st = checkPtr(layer_input, "layer_input", true)) ||
        (st = checkPtr(next_post_mix, "next_post_mix", false)) ||
        (st = checkPtr(next_comb_mix, "next_comb_mix", false)))
        return st;
    const size_t need = mhcPreWorkspaceSize(T, n, d, dtype);
    if (workspace_size < need)
        return fail(MHC_STATUS_WORKSPACE_TOO_SMALL,
                    "mhcPostPre: workspace_size=%zu bytes but this call needs %zu "
                    "(mhcPostPreWorkspaceSize)", workspace_size, need);
    if ((st = checkPtr(workspace, "workspace", true))) return st;
    if (takesDecodePath(T, int64_t(n) * d))
        return postPreDecode(DecodePost{x, residual, post_mix, comb_mix, residual_out}, hc_fn,
                             hc_scale, hc_base, layer_input, next_post_mix, next_comb_mix, T, n,
                             d, dtype, *params, workspace, stream);
    if (dtype == MHC_DTYPE_BFLOAT16) {
        // The prefill paths, where MhcPre takes the same plan (prefillRule is
        // MhcPre's): the pre half then equals MhcPre on residual_out bit for bit.
        int launched = 0;
        dispatchN(n, [&](auto nc) {
            constexpr int N = decltype(nc)::value;
            PfArgs a = prefillPreArgs(static_cast<const __nv_bfloat16*>(residual), hc_fn, hc_scale,
                                      hc_base, static_cast<__nv_bfloat16*>(layer_input),
                                      next_post_mix, next_comb_mix, T, n, d, *params, workspace);
            a.x = static_cast<const __nv_bfloat16*>(x);
            a.post_in = post_mix;
            a.comb_in = comb_mix;
            a.res_out = static_cast<__nv_bfloat16*>(residual_out);
            launched = runPrefill<N, false, true>(a, workspace_size, stream);
            return MHC_STATUS_SUCCESS;
        });
        if (launched != 0) return launched > 0 ? ok() : MHC_STATUS_CUDA_ERROR;
    }
    if (dtype == MHC_DTYPE_BFLOAT16) {
        int launched = 0;
        dispatchN(n, [&](auto nc) {
            constexpr int N = decltype(nc)::value;
            StreamArgs a = preStreamArgs(
                static_cast<const __nv_bfloat16*>(residual), hc_fn, hc_scale, hc_base,
                static_cast<__nv_bfloat16*>(layer_input), next_post_mix, next_comb_mix, T, d,
                *params);
            addPostHalf(a, x, post_mix, comb_mix, residual_out);
            launched = launchStream<N, false, true>(a, stream);
            return MHC_STATUS_SUCCESS;
        });
        if (launched != 0) return launched > 0 ? ok() : MHC_STATUS_CUDA_ERROR;
    }
    st = mhcPost(x, residual, post_mix, comb_mix, residual_out, T, n, d, dtype, stream);
    if (st != MHC_STATUS_SUCCESS) return st;
    return mhcPre(residual_out, hc_fn, hc_scale, hc_base, layer_input, next_post_mix,
                  next_comb_mix, T, n, d, dtype, params, workspace, workspace_size, stream);
}

extern "C" MHC_API size_t mhcPostHeadWorkspaceSize(int64_t T, int32_t n, int32_t d,
                                                   mhcDtype_t dtype) {
    if (checkShape(T, n, d, dtype) != MHC_STATUS_SUCCESS) return 0;
    // The post's residual_out lives in the workspace, the head's split-K partials after it.
    return aligned(size_t(T) * size_t(n) * size_t(d) * elemBytes(dtype)) +
           mhcHeadWorkspaceSize(T, n, d, dtype);
}

extern "C" MHC_API mhcStatus_t mhcPostHead(const void* x, const void* residual,
                                           const float* post_mix, const float* comb_mix,
                                           const float* hc_fn, const float* hc_scale,
                                           const float* hc_base, void* y, int64_t T, int32_t n,
                                           int32_t d, mhcDtype_t dtype,
                                           const mhcHeadParams* params, void* workspace,
                                           size_t workspace_size, cudaStream_t stream) {
    mhcStatus_t st = checkShape(T, n, d, dtype);
    if (st != MHC_STATUS_SUCCESS) return st;
    if (T == 0) return ok();
    const size_t stage = aligned(size_t(T) * size_t(n) * size_t(d) * elemBytes(dtype));
    const size_t need = stage + mhcHeadWorkspaceSize(T, n, d, dtype);
    if (workspace_size < need)
        return fail(MHC_STATUS_WORKSPACE_TOO_SMALL,
                    "mhcPostHead: workspace_size=%zu bytes but this call needs %zu "
                    "(mhcPostHeadWorkspaceSize)", workspace_size, need);
    if ((st = checkPtr(workspace, "workspace", true))) return st;
    if ((st = checkHeadParams(params, "mhcPostHead")) != MHC_STATUS_SUCCESS) return st;
    if ((st = checkBoundaryPtrs(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base)) ||
        (st = checkPtr(y, "y", true)))
        return st;
    char* ws = static_cast<char*>(workspace);
    if (takesDecodePath(T, int64_t(n) * d))  // residual_out in the workspace, partials after it
        return postHeadDecode(DecodePost{x, residual, post_mix, comb_mix, ws}, hc_fn, hc_scale,
                              hc_base, y, T, n, d, dtype, *params, ws + stage, stream);
    if (dtype == MHC_DTYPE_BFLOAT16) {
        int launched = 0;
        dispatchN(n, [&](auto nc) {
            constexpr int N = decltype(nc)::value;
            StreamArgs a = headStreamArgs(static_cast<const __nv_bfloat16*>(residual), hc_fn,
                                          hc_scale, hc_base, static_cast<__nv_bfloat16*>(y), T, d,
                                          *params);
            addPostHalf(a, x, post_mix, comb_mix, nullptr);  // residual_out is not an output
            launched = launchStream<N, true, true>(a, stream);
            return MHC_STATUS_SUCCESS;
        });
        if (launched != 0) return launched > 0 ? ok() : MHC_STATUS_CUDA_ERROR;
    }
    st = mhcPost(x, residual, post_mix, comb_mix, ws, T, n, d, dtype, stream);
    if (st != MHC_STATUS_SUCCESS) return st;
    return mhcHead(ws, hc_fn, hc_scale, hc_base, y, T, n, d, dtype, params, ws + stage,
                   workspace_size - stage, stream);
}
