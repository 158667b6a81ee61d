// Host API of the mHC CUDA kernels (contract: shared/spec/mhc_ops.md).
//
// Plain C so that the TensorRT plugins, the ctypes binding and any other
// caller can use it without TensorRT or PyTorch. All pointers are device
// pointers to contiguous row-major tensors. Functions never throw: they return
// a status, and mhcGetLastErrorMessage() gives the detail for the calling
// thread. Launches are asynchronous on `stream`.
#ifndef MHC_KERNELS_H
#define MHC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#if defined(_WIN32)
#define MHC_API __declspec(dllexport)
#else
#define MHC_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

// Residual dtype (the dtype of residual, x, layer_input, out, y). Mixes,
// weights and logits are always float32.
typedef enum mhcDtype {
    MHC_DTYPE_FLOAT32 = 0,
    MHC_DTYPE_FLOAT16 = 1,
    MHC_DTYPE_BFLOAT16 = 2,
} mhcDtype_t;

typedef enum mhcStatus {
    MHC_STATUS_SUCCESS = 0,
    MHC_STATUS_INVALID_VALUE = 1,   // a size, pointer or attribute is out of range
    MHC_STATUS_NOT_SUPPORTED = 2,   // valid per the spec but not by these kernels (e.g. d % 8)
    MHC_STATUS_WORKSPACE_TOO_SMALL = 3,
    MHC_STATUS_CUDA_ERROR = 4,      // a CUDA call or launch failed
} mhcStatus_t;

// Kernel limits: 1 <= n <= MHC_MAX_STREAMS, d a positive multiple of MHC_D_ALIGN.
#define MHC_MAX_STREAMS 8
#define MHC_D_ALIGN 8

typedef struct mhcPreParams {
    float rms_eps;       // default 1e-6
    float pre_eps;       // default 1e-6
    float sinkhorn_eps;  // default 1e-6
    float post_mult;     // default 2.0
    int32_t sinkhorn_iters;  // default 20, >= 1
} mhcPreParams;

typedef struct mhcHeadParams {
    float rms_eps;  // default 1e-6
    float eps;      // default 1e-6
} mhcHeadParams;

MHC_API const char* mhcGetStatusString(mhcStatus_t status);
// Detail of the last failure on this thread ("" if none).
MHC_API const char* mhcGetLastErrorMessage(void);
// Library version, e.g. "0.1.0".
MHC_API const char* mhcGetVersion(void);

// Checks (T, n, d, dtype) against the kernels' limits without launching.
MHC_API mhcStatus_t mhcCheckShape(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);

// Workspace bytes for a call with up to T tokens (an upper bound that holds for
// any smaller T, so a TensorRT plugin can size it from the profile's max T).
MHC_API size_t mhcPreWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);
MHC_API size_t mhcHeadWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);

// MhcPre: residual [T, n, d] -> layer_input [T, d], post_mix [T, n], comb_mix [T, n, n].
// hc_fn [(2+n)*n, n*d], hc_scale [3], hc_base [(2+n)*n], all float32.
MHC_API mhcStatus_t mhcPre(const void* residual, const float* hc_fn, const float* hc_scale,
                           const float* hc_base, void* layer_input, float* post_mix,
                           float* comb_mix, int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                           const mhcPreParams* params, void* workspace, size_t workspace_size,
                           cudaStream_t stream);

// MhcSinkhorn: logits [T, n, n] float32 -> comb [T, n, n] float32.
MHC_API mhcStatus_t mhcSinkhorn(const float* logits, float* comb, int64_t T, int32_t n,
                                int32_t iters, float eps, cudaStream_t stream);

// MhcPost: out[t, j, c] = post_mix[t, j] * x[t, c] + sum_i comb_mix[t, i, j] * residual[t, i, c].
MHC_API mhcStatus_t mhcPost(const void* x, const void* residual, const float* post_mix,
                            const float* comb_mix, void* out, int64_t T, int32_t n, int32_t d,
                            mhcDtype_t dtype, cudaStream_t stream);

// MhcHead: residual [T, n, d] -> y [T, d]; hc_fn [n, n*d], hc_scale [1], hc_base [n].
MHC_API mhcStatus_t mhcHead(const void* residual, const float* hc_fn, const float* hc_scale,
                            const float* hc_base, void* y, int64_t T, int32_t n, int32_t d,
                            mhcDtype_t dtype, const mhcHeadParams* params, void* workspace,
                            size_t workspace_size, cudaStream_t stream);

// The finish passes alone, for baselines that compute the projection elsewhere
// (benchmarks): mixes [T][rows + 1] float32 = (hc_fn @ x, sum(x^2)) per token,
// rows = (2+n)*n (pre) or n (head); the rest as mhcPre / mhcHead.
MHC_API mhcStatus_t mhcPreFinish(const void* residual, const float* mixes, const float* hc_scale,
                                 const float* hc_base, void* layer_input, float* post_mix,
                                 float* comb_mix, int64_t T, int32_t n, int32_t d,
                                 mhcDtype_t dtype, const mhcPreParams* params,
                                 cudaStream_t stream);
MHC_API mhcStatus_t mhcHeadFinish(const void* residual, const float* mixes, const float* hc_scale,
                                  const float* hc_base, void* y, int64_t T, int32_t n, int32_t d,
                                  mhcDtype_t dtype, const mhcHeadParams* params,
                                  cudaStream_t stream);

// MhcPostPre, a layer boundary: residual_out = MhcPost(x, residual, post_mix, comb_mix), then
// MhcPre(residual_out, hc_fn, hc_scale, hc_base) -> layer_input, next_post_mix, next_comb_mix.
// residual_out must not alias residual.
MHC_API size_t mhcPostPreWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);
MHC_API mhcStatus_t mhcPostPre(const void* x, const void* residual, const float* post_mix,
                               const float* comb_mix, const float* hc_fn, const float* hc_scale,
                               const float* hc_base, void* residual_out, void* layer_input,
                               float* next_post_mix, float* next_comb_mix, int64_t T, int32_t n,
                               int32_t d, mhcDtype_t dtype, const mhcPreParams* params,
                               void* workspace, size_t workspace_size, cudaStream_t stream);

// MhcPostHead, the last boundary: y = MhcHead(MhcPost(x, residual, post_mix, comb_mix), ...).
MHC_API size_t mhcPostHeadWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);
MHC_API mhcStatus_t mhcPostHead(const void* x, const void* residual, const float* post_mix,
                                const float* comb_mix, const float* hc_fn, const float* hc_scale,
                                const float* hc_base, void* y, int64_t T, int32_t n, int32_t d,
                                mhcDtype_t dtype, const mhcHeadParams* params, void* workspace,
                                size_t workspace_size, cudaStream_t stream);

// ---- DeepSeek-V4.1, single-pass mHC (mhc_v41.cu; spec "DeepSeek-V4.1") ----------
// Mixes are float32: pre_mix / post_mix [T, n], comb_mix [T, n, n]. params are
// MhcPre's attributes (mhcPreParams; V4.1-Flash passes rms_eps = 1e-20).

// MhcMix: residual [T, n, d] -> pre_mix, post_mix, comb_mix (no collapse).
MHC_API size_t mhcMixWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);
MHC_API mhcStatus_t mhcMix(const void* residual, const float* hc_fn, const float* hc_scale,
                           const float* hc_base, float* pre_mix, float* post_mix,
                           float* comb_mix, int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                           const mhcPreParams* params, void* workspace, size_t workspace_size,
                           cudaStream_t stream);

// MhcCollapse: layer_input[t, c] = sum_i pre_mix[t, i] * residual[t, i, c] (float32, cast once).
MHC_API mhcStatus_t mhcCollapse(const void* residual, const float* pre_mix, void* layer_input,
                                int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                                cudaStream_t stream);

// MhcPostMix, a V4.1 boundary: residual_out = MhcPost(x, residual, post_mix, comb_mix),
// layer_input = MhcCollapse(residual_out, pre_mix), next_* = MhcMix(residual_out, hc_*).
// residual_out must not alias residual, next_pre_mix not pre_mix.
MHC_API size_t mhcPostMixWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);
MHC_API mhcStatus_t mhcPostMix(const void* x, const void* residual, const float* pre_mix,
                               const float* post_mix, const float* comb_mix, const float* hc_fn,
                               const float* hc_scale, const float* hc_base, void* residual_out,
                               void* layer_input, float* next_pre_mix, float* next_post_mix,
                               float* next_comb_mix, int64_t T, int32_t n, int32_t d,
                               mhcDtype_t dtype, const mhcPreParams* params, void* workspace,
                               size_t workspace_size, cudaStream_t stream);

// MhcPostCollapse, the last V4.1 boundary: y = MhcCollapse(MhcPost(x, residual, post_mix,
// comb_mix), pre_mix). No workspace.
MHC_API mhcStatus_t mhcPostCollapse(const void* x, const void* residual, const float* pre_mix,
                                    const float* post_mix, const float* comb_mix, void* y,
                                    int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
                                    cudaStream_t stream);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // MHC_KERNELS_H
