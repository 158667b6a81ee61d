// Internal helpers shared by the mHC kernel sources (not part of the C API).
#ifndef MHC_COMMON_CUH
#define MHC_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <atomic>
#include <type_traits>

#include "mhc_kernels.h"

namespace mhc {

// Error reporting (mhc_api.cu): records a thread-local message and returns `status`.
mhcStatus_t fail(mhcStatus_t status, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
mhcStatus_t ok();
// Converts a pending launch error into MHC_STATUS_CUDA_ERROR naming `what`.
mhcStatus_t checkLaunch(const char* what);

// ---- per-device facts, safe from any thread ------------------------------------
// Caches are keyed by the current device (a process may drive several GPUs and
// execution contexts on several threads); each entry is an atomic, and racing
// threads compute the same value.
constexpr int kMaxCachedDevices = 64;

inline int currentDevice() {
    int dev = 0;
    return cudaGetDevice(&dev) == cudaSuccess ? dev : -1;
}

// Compute-capability major of the current device (0 when it cannot be read).
inline int deviceCcMajor() {
    static std::atomic<int> cache[kMaxCachedDevices] = {};
    const int dev = currentDevice();
    if (dev < 0) return 0;
    int v = dev < kMaxCachedDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
    if (v == 0) {
        if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (dev < kMaxCachedDevices) cache[dev].store(v, std::memory_order_relaxed);
    }
    return v;
}

// True while `stream` is being captured into a CUDA graph. A launch that fails
// inside a capture invalidates it, so launch paths must not try-then-fall-back
// then: they decide beforehand.
inline bool streamIsCapturing(cudaStream_t stream) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &st) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    return st != cudaStreamCaptureStatusNone;
}

// Launches kernel<<<grid, block, smem, stream>>>(args...), with programmatic
// dependent launch (PDL) where `pdl` and the device (sm_90+) allow: the grid may
// start while the kernel before it in the stream is still running, so it must
// griddepcontrol.wait before it reads anything written earlier in the stream.
// A refused attribute outside a capture falls back to a plain launch (the same
// results); inside a capture a failed launch has already invalidated the graph,
// so the error is left for the caller to report with checkLaunch. Returns whether
// the launch was refused PDL and went out plainly (a launcher of several grids
// then launches the rest plainly).
template <typename... KArgs, typename... Args>
inline bool launchMaybePdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                           cudaStream_t stream, bool pdl, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl && deviceCcMajor() >= 9 ? 1 : 0;
    const bool capturing = cfg.numAttrs != 0 && streamIsCapturing(stream);
    if (cudaLaunchKernelEx(&cfg, kernel, args...) == cudaSuccess || cfg.numAttrs == 0 ||
        capturing)
        return false;
    cudaGetLastError();
    cfg.numAttrs = 0;
    cudaLaunchKernelEx(&cfg, kernel, args...);
    return true;
}

// Validation shared by the entry points; each names the offending argument.
mhcStatus_t checkShape(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype);
mhcStatus_t checkPtr(const void* p, const char* name, bool vector_aligned);
mhcStatus_t checkEps(float v, const char* name);
// Attribute checks of MhcPre / MhcHead, shared with the fused boundaries.
mhcStatus_t checkPreParams(const mhcPreParams* params, const char* who);
mhcStatus_t checkHeadParams(const mhcHeadParams* params, const char* who);

// Mixes kernel geometry (mhc_mix.cuh), here so that the workspace query and the
// launch can never disagree. Two kernels:
//  * small T (T <= kSmallT): threads own K (16-byte vectors, coalesced hc_fn
//    and x loads), a block covers kSmallVecs vectors of K for up to
//    smallTokens(ROWS) tokens; K is split over blockIdx.y so even T=1 fills
//    the GPU with loads in flight.
//  * large T: lanes own tokens (32 per block) so each hc_fn element staged in
//    shared memory is reused 32 times; the 8 warps take disjoint K ranges of
//    each staged chunk, and K is split over blockIdx.y until ~kTargetBlocks
//    blocks exist.
// Partials go to part[split][token][ROWS + 1] (last column: sum of squares).
constexpr int kMixWarps = 8;
constexpr int kMixThreads = kMixWarps * 32;
constexpr int kMixTokens = 32;
constexpr int64_t kTargetBlocks = 528;  // 4 per SM on an H100: keeps loads in flight
constexpr int64_t kSmallT = 128;
constexpr int kSmallVecs = kMixThreads;  // one 8-element vector per thread

__host__ __device__ constexpr int smallTokens(int rows) {
    return (96 / (rows + 1)) < 1 ? 1 : ((96 / (rows + 1)) > 8 ? 8 : (96 / (rows + 1)));
}
__host__ __device__ constexpr int mixChunk(int rows) { return rows > 32 ? 64 : 128; }

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int smallSplits(int64_t K) { return int(ceilDiv(K / 8, kSmallVecs)); }
inline int64_t largeTiles(int64_t T) { return ceilDiv(T, kMixTokens); }
inline int largeMaxSplits(int64_t K, int rows) {
    // At least 2 staged chunks per split, so the staging cost is amortised.
    int64_t s = ceilDiv(K, mixChunk(rows)) / 2;
    return s < 1 ? 1 : (s > 1024 ? 1024 : int(s));
}
inline int largeSplits(int64_t T, int64_t K, int rows) {
    int64_t s = kTargetBlocks / largeTiles(T);
    const int smax = largeMaxSplits(K, rows);
    if (s < 1) s = 1;
    return int(s > smax ? smax : s);
}
// Bytes of partials for any call with up to T tokens (nondecreasing in T).
inline size_t mixWorkspaceBytes(int64_t T, int64_t K, int rows) {
    if (T <= 0) return 0;
    const int64_t small = int64_t(smallSplits(K)) * (T < kSmallT ? T : kSmallT);
    // Large kernel: S(t) * t <= min(Smax * t, max(kTargetBlocks * 32, t + 31)).
    int64_t cap = kTargetBlocks * kMixTokens;
    if (T + kMixTokens - 1 > cap) cap = T + kMixTokens - 1;
    int64_t large = int64_t(largeMaxSplits(K, rows)) * T;
    if (large > cap) large = cap;
    const int64_t tok = small > large ? small : large;
    const size_t bytes = size_t(tok) * size_t(rows + 1) * sizeof(float);
    return (bytes + 255) & ~size_t(255);
}

// ---------------------------------------------------------------------------
// 8-element vector access: 16 bytes for bf16/fp16, two 16-byte words for f32.
// ---------------------------------------------------------------------------
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 f = __bfloat1622float2(h[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void load8(const __half* p, float (&v)[8]) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 f = __half22float2(h[i]);
        v[2 * i] = f.x;
        v[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
    float4 a = __ldg(reinterpret_cast<const float4*>(p));
    float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&v)[8]) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void store8(__half* p, const float (&v)[8]) {
    uint4 u;
    __half2* h = reinterpret_cast<__half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ void store8(float* p, const float (&v)[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// The value a store8 of `v` to T leaves in memory, back in float.
template <typename T>
__device__ __forceinline__ float roundTo(float v) {
    if constexpr (std::is_same<T, __nv_bfloat16>::value) return __bfloat162float(__float2bfloat16_rn(v));
    else if constexpr (std::is_same<T, __half>::value) return __half2float(__float2half_rn(v));
    else return v;
}

// MhcPost of one 8-element vector of output stream j: o = pj * x + sum_i cj[i] * r_i
// (cj[i] = comb[i][j]), in this order. The MhcPost kernel and the decode
// boundary both call it: one operation order, the same residual_out bits.
template <int N>
__device__ __forceinline__ void postVector(float pj, const float (&cj)[N], const float (&xv)[8],
                                           const float (&rv)[N][8], float (&o)[8]) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        float a = pj * xv[e];
#pragma unroll
        for (int i = 0; i < N; ++i) a = fmaf(cj[i], rv[i][e], a);
        o[e] = a;
    }
}

// Accurate expf (no fast-math) so the gates match the float32 reference.
__device__ __forceinline__ float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

// Sum of f(B), ..., f(B + L - 1) as a balanced tree: ceil(log2 L) dependent
// adds instead of L - 1 (the Sinkhorn below is one thread's latency chain).
template <int B, int L>
struct PairSum {
    template <class F>
    __device__ __forceinline__ static float of(F f) {
        return PairSum<B, L / 2>::of(f) + PairSum<B + L / 2, L - L / 2>::of(f);
    }
};
template <int B>
struct PairSum<B, 1> {
    template <class F>
    __device__ __forceinline__ static float of(F f) {
        return f(B);
    }
};

// ---- phase clocks (debug builds only: -DMHC_PHASE_CLOCKS, CMake MHC_PHASE_CLOCKS=ON) ----
// Where the time of a decode chain goes inside its kernels: a few threads write
// %globaltimer (ns, comparable across SMs and kernels) and clock64 (SM cycles, exact
// within one CTA) into a per-translation-unit buffer that mhcDebugPhaseClocks
// (mhc_v41.cu) copies out; scripts/gpu/phase_clocks.py prints the phases of the last
// call. The default build compiles every mark to nothing.
enum PhaseSlot {
    kPhMixEntry = 0, kPhMixWaited, kPhMixEnd,                                  // mixes CTA (0, 0)
    kPhFinEntry, kPhFinWaited, kPhFinSummed, kPhFinGated, kPhFinDone,           // finish gates CTA 0
    kPhLiEnd,                                                                   // layer_input CTA (0, 0)
    kPhMixPosted, kPhMixFma,                                                    // mixes CTA (0, 0)
    kPhSlots
};
#ifdef MHC_PHASE_CLOCKS
static __device__ unsigned long long g_phaseNs[kPhSlots], g_phaseCycles[kPhSlots];
__device__ __forceinline__ void phaseMark(int slot) {
    unsigned long long ns;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
    g_phaseNs[slot] = ns;
    g_phaseCycles[slot] = static_cast<unsigned long long>(clock64());
}
#else
__device__ __forceinline__ void phaseMark(int) {}
#endif

// 1 / x as one MUFU.RCP (rcp.approx.ftz.f32). __fdividef(1.0f, x) (div.approx.f32)
// computes the same value for normal |x| <= 2^126, and its handling of the range
// beyond sat on the Sinkhorn's dependent chain of 2 x iters reciprocals (issue 23's
// run 7: MhcPostMix at T=1 0.3 us faster without it). The Sinkhorn's divisors are
// sums of positive terms (plus eps), normal and far inside that range.
__device__ __forceinline__ float rcpApprox(float x) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// V4 Sinkhorn (spec: MhcSinkhorn) on an N x N matrix held in registers. One
// thread runs the whole chain, so latency matters:
//  * After the row softmax (+ eps), K stays fixed and the chain carries only the
//    divisors applied so far: c[i][j] = K[i][j] / (W[i] * Z[j]). Normalising the
//    rows of c is then W[i] <- sum_j K[i][j] / Z[j] + eps * W[i] (the spec's
//    c / (rowsum + eps), multiplied out), and the columns likewise: per
//    half-iteration N dot products and N reciprocals, with no N x N rescale.
//  * Sums are balanced trees (PairSum); reciprocals are one MUFU.RCP each
//    (rcpApprox, about 1 ulp). Both stay far inside the float32 tolerance.
template <int N>
__device__ __forceinline__ void sinkhornInPlace(float (&c)[N][N], int iters, float eps) {
#pragma unroll
    for (int i = 0; i < N; ++i) {
        float mx = c[i][0];
#pragma unroll
        for (int j = 1; j < N; ++j) mx = fmaxf(mx, c[i][j]);
#pragma unroll
        for (int j = 0; j < N; ++j) c[i][j] = expf(c[i][j] - mx);
        const float inv = rcpApprox(PairSum<0, N>::of([&](int j) { return c[i][j]; }));
#pragma unroll
        for (int j = 0; j < N; ++j) c[i][j] = c[i][j] * inv + eps;
    }
    float W[N], x[N], Z[N], y[N];  // row / column divisors and their reciprocals
#pragma unroll
    for (int i = 0; i < N; ++i) W[i] = x[i] = Z[i] = 1.f;
    auto cols = [&]() {
#pragma unroll
        for (int j = 0; j < N; ++j) {
            Z[j] = fmaf(eps, Z[j], PairSum<0, N>::of([&](int i) { return c[i][j] * x[i]; }));
            y[j] = rcpApprox(Z[j]);
        }
    };
    cols();
    for (int it = 1; it < iters; ++it) {
#pragma unroll
        for (int i = 0; i < N; ++i) {
            W[i] = fmaf(eps, W[i], PairSum<0, N>::of([&](int j) { return c[i][j] * y[j]; }));
            x[i] = rcpApprox(W[i]);
        }
        cols();
    }
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < N; ++j) c[i][j] = c[i][j] * x[i] * y[j];
}

// Entry (i, j) of a token's comb logits before the Sinkhorn: mixes[2N:] * r * s2 +
// hc_base[2N:]. One expression for combFromMixes and combFromMixesLanes, whose bits
// must agree.
template <int N>
__device__ __forceinline__ float combLogit(const float* mix, float r, float s2,
                                           const float* hc_base, int i, int j) {
    return mix[2 * N + i * N + j] * r * s2 + hc_base[2 * N + i * N + j];
}

// comb = Sinkhorn(combLogit) for one token, stored row-major to out[N * N].
template <int N>
__device__ __forceinline__ void combFromMixes(const float* mix, float r, float s2,
                                              const float* __restrict__ hc_base, int iters,
                                              float eps, float* __restrict__ out) {
    float c[N][N];
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < N; ++j) c[i][j] = combLogit<N>(mix, r, s2, hc_base, i, j);
    sinkhornInPlace<N>(c, iters, eps);
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < N; ++j) out[i * N + j] = c[i][j];
}

// The lanes that run one token's Sinkhorn in combFromMixesLanes: N rounded up to a
// power of two (shuffle segments).
template <int N>
constexpr int kSinkhornLanes = N <= 1 ? 1 : (N <= 2 ? 2 : (N <= 4 ? 4 : 8));

// combFromMixes on kSinkhornLanes<N> lanes, for the finishes where a token's Sinkhorn
// is on the critical path (issue 23's run 6: one thread's 20 iterations took 2.3 us of a
// 6.8 us MhcPostMix at T=1). Lane k < N of each segment owns row k and column k: a
// half-iteration is one dot product and one reciprocal per lane, then N shuffles that
// give every lane of the segment the others' reciprocals, instead of one thread's N dot
// products and N reciprocals back to back. Each value is computed by the same
// operations on the same operands in the same order as combFromMixes +
// sinkhornInPlace (lane k recomputes column k's softmax entries from row i's max and
// sum, shuffled from lane i): the same bits. Every lane of the warp calls it (full-warp
// shuffles); each segment does its own token (mix, out); lanes k >= N repeat lane N-1
// and only segments with `store` write.
template <int N>
__device__ __forceinline__ void combFromMixesLanes(const float* mix, float r, float s2,
                                                   const float* hc_base, int iters, float eps,
                                                   float* __restrict__ out, bool store) {
    constexpr unsigned kAll = 0xffffffffu;
    constexpr int W = kSinkhornLanes<N>;
    const int seg = int(threadIdx.x) & (W - 1), k = seg < N ? seg : N - 1;
    auto logit = [&](int i, int j) { return combLogit<N>(mix, r, s2, hc_base, i, j); };
    float row[N], col[N];
#pragma unroll
    for (int j = 0; j < N; ++j) row[j] = logit(k, j);
    float mx = row[0];
#pragma unroll
    for (int j = 1; j < N; ++j) mx = fmaxf(mx, row[j]);
#pragma unroll
    for (int j = 0; j < N; ++j) row[j] = expf(row[j] - mx);
    const float inv = rcpApprox(PairSum<0, N>::of([&](int j) { return row[j]; }));
#pragma unroll
    for (int j = 0; j < N; ++j) row[j] = row[j] * inv + eps;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const float mi = __shfl_sync(kAll, mx, i, W), ii = __shfl_sync(kAll, inv, i, W);
        col[i] = expf(logit(i, k) - mi) * ii + eps;
    }
    float x[N], y[N], W_k = 1.f, Z_k = 1.f, xk = 1.f;
#pragma unroll
    for (int i = 0; i < N; ++i) x[i] = 1.f;
    auto cols = [&]() {
        Z_k = fmaf(eps, Z_k, PairSum<0, N>::of([&](int i) { return col[i] * x[i]; }));
        const float yk = rcpApprox(Z_k);
#pragma unroll
        for (int j = 0; j < N; ++j) y[j] = __shfl_sync(kAll, yk, j, W);
    };
    cols();
    for (int it = 1; it < iters; ++it) {
        W_k = fmaf(eps, W_k, PairSum<0, N>::of([&](int j) { return row[j] * y[j]; }));
        xk = rcpApprox(W_k);
#pragma unroll
        for (int i = 0; i < N; ++i) x[i] = __shfl_sync(kAll, xk, i, W);
        cols();
    }
    if (store && seg < N) {
#pragma unroll
        for (int j = 0; j < N; ++j) out[k * N + j] = row[j] * xk * y[j];
    }
}

// One thread's share of the projection: TT tokens from t0 times the 8-element
// column slice v of K. acc[j][m] = x_j . hc_fn[m] over the slice for m < ROWS,
// acc[j][ROWS] = sum of x_j^2 over it. Tokens past ntok read the last token
// (in bounds); the caller drops their results.
template <typename T, int ROWS, int TT>
__device__ __forceinline__ void projectSlice(const T* __restrict__ x, const float* __restrict__ fn,
                                             int64_t ntok, int K, int64_t t0, int v,
                                             float (&acc)[TT][ROWS + 1]) {
#pragma unroll
    for (int j = 0; j < TT; ++j)
#pragma unroll
        for (int m = 0; m <= ROWS; ++m) acc[j][m] = 0.f;
    if (v >= K / 8) return;
    float xv[TT][8];
#pragma unroll
    for (int j = 0; j < TT; ++j) {
        const int64_t tok = t0 + j < ntok ? t0 + j : ntok - 1;
        load8(x + tok * K + int64_t(v) * 8, xv[j]);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j][ROWS] = fmaf(xv[j][e], xv[j][e], acc[j][ROWS]);
    }
    const float* f = fn + int64_t(v) * 8;
#pragma unroll
    for (int m = 0; m < ROWS; ++m) {
        float h[8];
        load8(f + int64_t(m) * K, h);
#pragma unroll
        for (int j = 0; j < TT; ++j)
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[j][m] = fmaf(xv[j][e], h[e], acc[j][m]);
    }
}

// mix[i] = sum over the splits of token t's partial idx(i), for i < NV, by the
// whole block (blockDim.x >= NV, scratch: blockDim.x floats). Thread (i, g)
// sums the splits k = g, g + G, ... in ascending order, sixteen loads in flight
// at a time (one L2 round trip per sixteen, not one per split: at n=4 a
// 256-thread block sums up to 128 splits, d = 8192, in one trip); then thread i
// adds the G group sums in group order. A fixed order (bit-identical run to run;
// the batch size does not change it: s starts at +0.0f and never becomes -0.0f,
// so the +0.0f past the last split leaves it unchanged). The caller synchronises
// before reading mix.
template <int NV, typename Idx>
__device__ __forceinline__ void sumSplitsBlock(const float* __restrict__ part, int splits,
                                               int64_t ntok, int64_t t, int V, Idx idx,
                                               float* mix, float* scratch) {
    constexpr int VP = NV <= 8 ? 8 : (NV <= 16 ? 16 : (NV <= 32 ? 32 : (NV <= 64 ? 64 : 128)));
    const int G = int(blockDim.x) / VP;
    const int i = int(threadIdx.x) % VP, g = int(threadIdx.x) / VP;
    float s = 0.f;
    if (i < NV && g < G) {
        const float* p = part + t * V + idx(i);
        const int64_t step = int64_t(G) * ntok * V;
        constexpr int B = 16;
        for (int k = g; k < splits; k += B * G) {
            float v[B];  // past the last split: +0.0f, which leaves the sum unchanged
#pragma unroll
            for (int j = 0; j < B; ++j)
                v[j] = k + j * G < splits ? p[int64_t(k) * ntok * V + j * step] : 0.f;
#pragma unroll
            for (int j = 0; j < B; ++j) s += v[j];
        }
    }
    scratch[threadIdx.x] = s;
    __syncthreads();
    if (int(threadIdx.x) < NV) {
        float r = 0.f;
        for (int q = 0; q < G; ++q) r += scratch[q * VP + threadIdx.x];
        mix[threadIdx.x] = r;
    }
}

struct IdentityIdx {
    __device__ int operator()(int i) const { return i; }
};

// out[c] = sum_i w[i] * xt[i * d + c] for one token, the block's threads
// striding over the d / 8 16-byte vectors.
template <typename T, int N>
__device__ __forceinline__ void weightedStreamSum(const T* __restrict__ xt, const float (&w)[N],
                                                  T* __restrict__ out, int d) {
    for (int v = threadIdx.x; v < d / 8; v += blockDim.x) {
        float xv[N][8];
#pragma unroll
        for (int i = 0; i < N; ++i) load8(xt + int64_t(i) * d + v * 8, xv[i]);
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float a = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) a = fmaf(w[i], xv[i][e], a);
            o[e] = a;
        }
        store8(out + v * 8, o);
    }
}

// Calls f(T()) with T the element type of dtype (checked before: bf16, fp16, fp32).
template <typename F>
inline mhcStatus_t dispatchDtype(mhcDtype_t dtype, F&& f) {
    switch (dtype) {
        case MHC_DTYPE_BFLOAT16: return f(__nv_bfloat16());
        case MHC_DTYPE_FLOAT16: return f(__half());
        default: return f(float());
    }
}

// Calls f(std::integral_constant<int, N>) for the runtime n in 1..8.
template <typename F>
inline mhcStatus_t dispatchN(int n, F&& f) {
    switch (n) {
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        case 3: return f(std::integral_constant<int, 3>{});
        case 4: return f(std::integral_constant<int, 4>{});
        case 5: return f(std::integral_constant<int, 5>{});
        case 6: return f(std::integral_constant<int, 6>{});
        case 7: return f(std::integral_constant<int, 7>{});
        case 8: return f(std::integral_constant<int, 8>{});
        default: return fail(MHC_STATUS_NOT_SUPPORTED, "n=%d is not supported (1..8)", n);
    }
}

}  // namespace mhc

#endif  // MHC_COMMON_CUH
