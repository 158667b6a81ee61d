// MhcPostPre and MhcPostHead, the fused layer boundaries (contract: shared/spec/mhc_ops.md).
//
// This first version composes the existing kernels behind one C call: MhcPost
// writes residual_out, then the MhcPre (MhcHead) path reads it back. Results
// are the composition's bits by construction (the pre half reads residual_out
// rounded to the residual dtype, as the contract says), and the TensorRT
// plugins get one layer per boundary. It does not yet save the residual pass
// a single-pass kernel would (docs/kernels_notes.md).
#include "mhc_common.cuh"

using namespace mhc;

namespace {
size_t elemBytes(mhcDtype_t dtype) { return dtype == MHC_DTYPE_FLOAT32 ? 4 : 2; }
size_t aligned(size_t bytes) { return (bytes + 255) & ~size_t(255); }
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
    mhcStatus_t st = mhcPost(x, residual, post_mix, comb_mix, residual_out, T, n, d, dtype, stream);
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
    char* ws = static_cast<char*>(workspace);
    st = mhcPost(x, residual, post_mix, comb_mix, ws, T, n, d, dtype, stream);
    if (st != MHC_STATUS_SUCCESS) return st;
    return mhcHead(ws, hc_fn, hc_scale, hc_base, y, T, n, d, dtype, params, ws + stage,
                   workspace_size - stage, stream);
}
