// MhcPre decode path (small T, every dtype): two kernels chained with
// programmatic dependent launch (PDL), no counter, no atomics.
//  * decodeMixKernel: grid (ceil(T / TT), S), 4 warps per CTA, lane = one
//    16-byte vector of K, warp w = rows w, w+4, ...; K is split over
//    S = K/256 CTAs (d=7168: 112, d=4096: 64) so hc_fn streams in over most
//    SMs with every load of a thread in flight at once. Warp shuffle tree, then
//    part[split][token][ROWS + 1] (every element rewritten every call, so an
//    uninitialised workspace is fine). MhcHead's small-T path uses it too.
//    It is itself PDL-launched (pdlFirst): it prefetches its hc_fn lines into L2,
//    waits for the kernel before, then releases the finish.
//  * decodeFinishKernel: grid (T, CB + 1), 256 threads. CTAs y < CB own 2048
//    columns of d: they load their residual vectors (inputs, complete once the
//    mixes kernel has passed its wait and released this one) BEFORE
//    griddepcontrol.wait, so that load overlaps the mixes kernel; then reduce the
//    pre rows + sum of squares over the S splits with the whole block
//    (sumSplitsBlock: a fixed order, the same in every CTA, bit-identical), and
//    write layer_input. CTA y == CB reduces all rows and writes post_mix and
//    comb_mix (the Sinkhorn on N lanes of warp 1: decodeComb).
// The fused boundaries (MhcPostPre / MhcPostHead) at small T run the same two
// kernels with the post folded into the mixes kernel (NP > 0): a thread computes
// its 8 elements of residual_out from x, the n residual streams and the mixes
// (postVector: the MhcPost kernel's arithmetic; one warp per token, handed to
// the other warps in shared memory), writes them, and the projection uses the
// values rounded to T, as the contract says. residual_out is then an output of
// the mixes kernel, so the finish kernel reads it only after
// griddepcontrol.wait. Two launches, PDL-chained, instead of three.
#ifndef MHC_DECODE_CUH
#define MHC_DECODE_CUH

#include <stdlib.h>

#include "mhc_common.cuh"
#include "mhc_switches.h"

namespace mhc {

constexpr int kDecodeFinishThreads = 256;

__device__ __forceinline__ void pdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// The PDL rule of this library: a kernel releases its dependents only after its
// own griddepcontrol.wait (or at its start when it has none). So when a kernel
// starts, everything before its predecessor is complete, and a finish kernel may
// load the call's inputs before its own wait.
__device__ __forceinline__ void pdlWaitThenRelease() {
    pdlWait();
    pdlLaunchDependents();
}
// Fetches p's 128-byte line into L2 without waiting. Safe before
// griddepcontrol.wait even for data the kernel before is still writing: L2 is
// the point of coherence, so the loads after the wait see those writes.
__device__ __forceinline__ void prefetchL2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

constexpr int kDecodeMixWarps = 4;

// The MhcPost folded into the decode mixes kernel (all null: none).
struct DecodePost {
    const void* x;         // sublayer output [T][d]
    const void* residual;  // [T][n][d]
    const float* post_mix;
    const float* comb_mix;
    void* residual_out;  // [T][n][d]: what the projection reads
};

// xv = residual_out[tok][k..k+7] (k = 8 v, NP streams of d), computed from the
// post's inputs and rounded to T; `store`: also written to residual_out.
template <typename T, int NP>
__device__ __forceinline__ void postSlice(const DecodePost& post, int64_t tok, int v, int d,
                                          bool store, float (&xv)[8]) {
    const int k = v * 8, s = k / d, c = k - s * d;
    const float pj = __ldg(post.post_mix + tok * NP + s);
    float cj[NP], xin[8], rv[NP][8];
#pragma unroll
    for (int i = 0; i < NP; ++i) cj[i] = __ldg(post.comb_mix + (tok * NP + i) * NP + s);
    load8(static_cast<const T*>(post.x) + tok * d + c, xin);
    const T* res = static_cast<const T*>(post.residual) + tok * NP * int64_t(d) + c;
#pragma unroll
    for (int i = 0; i < NP; ++i) load8(res + int64_t(i) * d, rv[i]);
    postVector<NP>(pj, cj, xin, rv, xv);
    if (store) store8(static_cast<T*>(post.residual_out) + tok * NP * int64_t(d) + k, xv);
#pragma unroll
    for (int e = 0; e < 8; ++e) xv[e] = roundTo<T>(xv[e]);
}

template <typename T, int ROWS, int TT, int NP>
__global__ void __launch_bounds__(kDecodeMixWarps * 32)
    decodeMixKernel(const T* __restrict__ x, const float* __restrict__ fn,
                    float* __restrict__ part, int64_t ntok, int K, DecodePost post,
                    int64_t prefetch_max_bytes) {
    constexpr int V = ROWS + 1, NW = kDecodeMixWarps, RW = (ROWS + NW - 1) / NW;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t t0 = int64_t(blockIdx.x) * TT;
    const int v = blockIdx.y * 32 + lane;
    const bool mark = blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0;
    if (mark) phaseMark(kPhMixEntry);
    // Launched with PDL (pdlFirst): while the kernel before still runs, pull this
    // CTA's hc_fn rows (the call's largest input) into L2, one prefetch per
    // 128-byte line (4 lanes' 32 bytes), then wait. The finish kernel may launch
    // once every CTA has passed the wait: it loads inputs before its own wait.
    if (v < K / 8 && (lane & 3) == 0) {
#pragma unroll
        for (int r = 0; r < RW; ++r)
            if (w + r * NW < ROWS) prefetchL2(fn + int64_t(w + r * NW) * K + int64_t(v) * 8);
    }
    // The call's own inputs too, warp w for tokens w, w + NW, ... (one prefetch per
    // 128-byte line): cold in a benchmark that rotates them past L2; in a model the
    // kernel before has just written them and they sit in L2 already. A fused
    // boundary's CTA covers stream s = k / d of K: it prefetches residual row s (and
    // x when s == 0), so each line is asked for once, not by all NP streams' CTAs.
    // Only while the inputs are small (prefetch_max_bytes: kDecodeInputPrefetchMaxBytes).
    constexpr int kLaneLine = 128 / (8 * int(sizeof(T)));  // lanes of one 128-byte line
    const int64_t in_bytes = ntok * (NP == 0 ? K : K + K / NP) * int64_t(sizeof(T));
    if (in_bytes <= prefetch_max_bytes && v < K / 8 && lane % kLaneLine == 0) {
        for (int j = w; j < TT && t0 + j < ntok; j += NW) {
            const int64_t tok = t0 + j;
            if constexpr (NP == 0) {
                prefetchL2(x + tok * K + int64_t(v) * 8);
            } else {
                const int d = K / NP, k = v * 8, s = k / d, c = k - s * d;
                if (s == 0) prefetchL2(static_cast<const T*>(post.x) + tok * d + c);
                prefetchL2(static_cast<const T*>(post.residual) + (tok * NP + s) * int64_t(d) + c);
            }
        }
    }
    // A fused boundary's post coefficients (post_mix, comb_mix rows; every CTA reads
    // them first thing after the wait): the first and last line of each token's rows,
    // asked for by the CTAs of split 0 only. In a model the kernel before wrote them.
    // Off with the input prefetch (prefetch_max_bytes == 0).
    if constexpr (NP > 0) {
        if (prefetch_max_bytes > 0 && blockIdx.y == 0 && lane < 4) {
            for (int j = w; j < TT && t0 + j < ntok; j += NW) {
                const int64_t tok = t0 + j;
                const float* row = lane < 2 ? post.comb_mix + tok * NP * NP : post.post_mix + tok * NP;
                const int len = lane < 2 ? NP * NP : NP;
                prefetchL2(row + ((lane & 1) ? len - 1 : 0));
            }
        }
    }
    pdlWaitThenRelease();
    if (mark) phaseMark(kPhMixWaited);
    // Warp w takes rows w, w + NW, ... of the same 32 vectors of K (warp 0 also
    // the sum of squares): all of a thread's hc_fn loads fit in registers and
    // are in flight at once. Each value is the same arithmetic as one thread
    // computing every row (8 FMAs in element order, then the xor tree).
    float acc[TT][RW + 1];
#pragma unroll
    for (int j = 0; j < TT; ++j)
#pragma unroll
        for (int r = 0; r <= RW; ++r) acc[j][r] = 0.f;
    const bool active = v < K / 8;
    float xv[TT][8], h[RW][8];
    auto loadFn = [&]() {
#pragma unroll
        for (int r = 0; r < RW; ++r) {
            const int m = w + r * NW;
            if (m < ROWS) load8(fn + int64_t(m) * K + int64_t(v) * 8, h[r]);
        }
    };
    if constexpr (NP == 0) {
        if (active) {
#pragma unroll
            for (int j = 0; j < TT; ++j) {
                const int64_t tok = t0 + j < ntok ? t0 + j : ntok - 1;
                load8(x + tok * K + int64_t(v) * 8, xv[j]);
            }
            loadFn();
        }
    } else {
        // hc_fn first: the residual_out stores below would otherwise keep the
        // compiler from issuing these loads before them. Then warp w computes
        // the post of tokens w, w + NW, ... (each value once per CTA, all of a
        // warp's loads in flight at once) and hands them over in shared memory.
        __shared__ float sx[TT][8][32];
        if (active) {
            loadFn();
            for (int j = w; j < TT; j += NW) {
                const int64_t tok = t0 + j < ntok ? t0 + j : ntok - 1;
                float o[8];
                postSlice<T, NP>(post, tok, v, K / NP, t0 + j < ntok, o);
#pragma unroll
                for (int e = 0; e < 8; ++e) sx[j][e][lane] = o[e];
            }
        }
        __syncthreads();
        if (mark) phaseMark(kPhMixPosted);
        if (active) {
#pragma unroll
            for (int j = 0; j < TT; ++j)
#pragma unroll
                for (int e = 0; e < 8; ++e) xv[j][e] = sx[j][e][lane];
        }
    }
    if (active) {
#pragma unroll
        for (int j = 0; j < TT; ++j) {
            if (w == 0) {
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[j][RW] = fmaf(xv[j][e], xv[j][e], acc[j][RW]);
            }
#pragma unroll
            for (int r = 0; r < RW; ++r)
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[j][r] = fmaf(xv[j][e], h[r][e], acc[j][r]);
        }
    }
    if (mark) phaseMark(kPhMixFma);  // issued after the FMAs (their results may still be pending)
#pragma unroll
    for (int j = 0; j < TT; ++j)
#pragma unroll
        for (int r = 0; r <= RW; ++r) {
            float a = acc[j][r];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
            // Row w + r*NW (none past ROWS), or the sum of squares (warp 0); V: none.
            const int m = r < RW ? (w + r * NW < ROWS ? w + r * NW : V) : (w == 0 ? ROWS : V);
            if (lane == 0 && m < V && t0 + j < ntok)
                part[(int64_t(blockIdx.y) * ntok + t0 + j) * V + m] = a;
        }
    if (mark) phaseMark(kPhMixEnd);
}

// A decode finish's comb (its gates CTA, every thread calls it): warp 1 runs the
// token's Sinkhorn on N lanes (combFromMixesLanes), or with lanes == false
// (MHC_SINKHORN_LANES=0) thread 32 alone (combFromMixes). The same bits.
// Returns whether this thread took part (thread 32 either way).
template <int N>
__device__ __forceinline__ bool decodeComb(bool lanes, const float* mix, float r, float s2,
                                           const float* base, const mhcPreParams& p,
                                           float* __restrict__ out) {
    if (lanes ? (threadIdx.x >> 5) != 1 : threadIdx.x != 32) return false;
    if (lanes)  // every segment of the warp runs the token; the first one stores
        combFromMixesLanes<N>(mix, r, s2, base, p.sinkhorn_iters, p.sinkhorn_eps, out,
                              (threadIdx.x & 31) < kSinkhornLanes<N>);
    else combFromMixes<N>(mix, r, s2, base, p.sinkhorn_iters, p.sinkhorn_eps, out);
    return true;
}

// Values the layer_input blocks need: the pre rows 0..N-1, then M (sum of squares).
template <int N, int M>
struct PreRowsIdx {
    __device__ int operator()(int i) const { return i < N ? i : M; }
};

template <typename T, int N>
__global__ void __launch_bounds__(kDecodeFinishThreads)
    decodeFinishKernel(const T* __restrict__ x, const float* __restrict__ part, int splits,
                       const float* __restrict__ hc_scale, const float* __restrict__ hc_base,
                       T* __restrict__ layer_input, float* __restrict__ post_mix,
                       float* __restrict__ comb_mix, int64_t ntok, int d, mhcPreParams p,
                       bool x_before_wait, bool sinkhorn_lanes) {
    constexpr int M = (2 + N) * N;
    constexpr int V = M + 1;
    __shared__ float mix[V];
    __shared__ float scratch[kDecodeFinishThreads];
    __shared__ float base[M];
    const int64_t t = blockIdx.x;
    const bool gates = blockIdx.y == gridDim.y - 1;
    // Inputs, complete before the mixes kernel started (pdlWaitThenRelease's rule):
    // loaded ahead of the wait, so the gates and the Sinkhorn start from shared memory.
    const float s0 = __ldg(hc_scale), s1 = __ldg(hc_scale + 1), s2 = __ldg(hc_scale + 2);
    if (threadIdx.x < M) base[threadIdx.x] = __ldg(hc_base + threadIdx.x);
    if (!gates) {
        const int v = blockIdx.y * kDecodeFinishThreads + threadIdx.x;
        const bool active = v < d / 8;
        const T* xt = x + t * N * int64_t(d);
        float xv[N][8];
        auto loadX = [&]() {
#pragma unroll
            for (int i = 0; i < N; ++i) load8(xt + int64_t(i) * d + v * 8, xv[i]);
        };
        // x is an input (prefetched under the mixes kernel) or, behind a fused
        // post, that kernel's output (complete and visible only after the wait).
        if (active && x_before_wait) loadX();
        pdlWaitThenRelease();
        if (active && !x_before_wait) loadX();
        // The pre rows 0..N-1 and the sum of squares (value M).
        sumSplitsBlock<N + 1>(part, splits, ntok, t, V, PreRowsIdx<N, M>(), mix, scratch);
        __syncthreads();
        if (!active) return;
        const float r = 1.0f / sqrtf(mix[N] / (float(N) * float(d)) + p.rms_eps);  // [N]: sum x^2
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] = 0.f;
#pragma unroll
        for (int i = 0; i < N; ++i) {
            const float w = sigmoidf(mix[i] * r * s0 + base[i]) + p.pre_eps;
#pragma unroll
            for (int e = 0; e < 8; ++e) o[e] = fmaf(w, xv[i][e], o[e]);
        }
        store8(layer_input + t * int64_t(d) + v * 8, o);
        return;
    }
    pdlWaitThenRelease();
    sumSplitsBlock<V>(part, splits, ntok, t, V, IdentityIdx(), mix, scratch);
    __syncthreads();
    const float r = 1.0f / sqrtf(mix[M] / (float(N) * float(d)) + p.rms_eps);
    if (threadIdx.x < N) {
        const int i = threadIdx.x;
        post_mix[t * N + i] = p.post_mult * sigmoidf(mix[N + i] * r * s1 + base[N + i]);
    }
    decodeComb<N>(sinkhorn_lanes, mix, r, s2, base, p, comb_mix + t * N * N);
}

// The largest T of the decode path (kDecodeMaxT, MHC_DECODE_MAX_T): mhc_switches.h.
inline int decodeSplits(int64_t K) { return int(ceilDiv(K / 8, 32)); }
inline size_t decodeWorkspaceBytes(int64_t T, int64_t K, int rows) {
    const int64_t t = T < kDecodeMaxT ? T : kDecodeMaxT;
    if (t <= 0) return 0;
    const size_t bytes = size_t(decodeSplits(K)) * size_t(t) * size_t(rows + 1) * sizeof(float);
    return (bytes + 255) & ~size_t(255);
}

// Workspace for any call with up to T tokens of a projection with `rows` rows:
// the decode partials (T <= kDecodeMaxT) or the two-pass partials, whichever is
// larger (both nondecreasing in T).
inline size_t smallOrLargeWorkspaceBytes(int64_t T, int64_t K, int rows) {
    const size_t a = mixWorkspaceBytes(T, K, rows);
    const size_t b = decodeWorkspaceBytes(T, K, rows);
    return a > b ? a : b;
}

template <typename T, int ROWS, int TT, int NP>
inline mhcStatus_t launchDecodeMix(const T* x, const float* fn, float* part, int64_t ntok,
                                   int K, int splits, const DecodePost& post,
                                   cudaStream_t stream) {
    const dim3 grid(unsigned(ceilDiv(ntok, TT)), unsigned(splits));
    launchMaybePdl(decodeMixKernel<T, ROWS, TT, NP>, grid, dim3(kDecodeMixWarps * 32), 0, stream,
                   pdlFirst(), x, fn, part, ntok, K, post, decodeInputPrefetchMaxBytes());
    return checkLaunch("mhc decode mixes kernel");
}

// Mixes of up to kDecodeMaxT tokens into part[split][token][ROWS + 1]
// (splits = decodeSplits(K)) of x, or (NP > 0) of the residual_out of `post`,
// written on the way. Tokens per CTA: each hc_fn vector is reused TT times from
// registers; TT * (ROWS / 4 + 1) accumulators stay in registers.
template <typename T, int ROWS, int NP = 0>
inline mhcStatus_t launchDecodeMixes(const T* x, const float* fn, float* part, int64_t ntok,
                                     int K, cudaStream_t stream, const DecodePost& post = {}) {
    const int splits = decodeSplits(K);
    constexpr bool tt2 = (ROWS + 1) * 2 <= 128, tt4 = (ROWS + 1) * 4 <= 128;
    if constexpr (tt4) {
        if (ntok > 2)
            return launchDecodeMix<T, ROWS, 4, NP>(x, fn, part, ntok, K, splits, post, stream);
        if (ntok == 2)
            return launchDecodeMix<T, ROWS, 2, NP>(x, fn, part, ntok, K, splits, post, stream);
    } else if constexpr (tt2) {
        if (ntok > 1)
            return launchDecodeMix<T, ROWS, 2, NP>(x, fn, part, ntok, K, splits, post, stream);
    }
    return launchDecodeMix<T, ROWS, 1, NP>(x, fn, part, ntok, K, splits, post, stream);
}

// Whether a call with ntok tokens of K = n * d takes the decode kernels.
inline bool takesDecodePath(int64_t ntok, int64_t K) {
    return ntok <= decodeMaxT() && decodeSplits(K) <= 65535;
}

// Returns MHC_STATUS_SUCCESS after launching both kernels. With `post`
// (post.residual non-null) x is post.residual_out, computed by the mixes kernel.
template <typename T, int N>
inline mhcStatus_t runPreDecode(const T* x, const float* hc_fn, const float* hc_scale,
                                const float* hc_base, T* layer_input, float* post_mix,
                                float* comb_mix, int64_t ntok, int d, const mhcPreParams& p,
                                float* part, cudaStream_t stream, const DecodePost& post = {}) {
    constexpr int M = (2 + N) * N;
    const int K = N * d;
    const int splits = decodeSplits(K);
    const bool fused = post.residual != nullptr;
    mhcStatus_t st = fused ? launchDecodeMixes<T, M, N>(nullptr, hc_fn, part, ntok, K, stream, post)
                           : launchDecodeMixes<T, M>(x, hc_fn, part, ntok, K, stream);
    if (st != MHC_STATUS_SUCCESS) return st;
    const int cb = int(ceilDiv(d / 8, kDecodeFinishThreads));
    launchMaybePdl(decodeFinishKernel<T, N>, dim3(unsigned(ntok), unsigned(cb + 1)),
                   dim3(kDecodeFinishThreads), 0, stream, !decodeNoPdl(), x,
                   static_cast<const float*>(part), splits, hc_scale, hc_base, layer_input,
                   post_mix, comb_mix, ntok, d, p, !fused, sinkhornLanes());
    return checkLaunch("mhcPre decode finish kernel");
}

// The fused boundaries at small T (takesDecodePath), after their argument
// checks: the post folded into the decode mixes kernel, then the pre finish
// (mhc_pre.cu) or the head finish (mhc_head.cu) on post.residual_out.
mhcStatus_t postPreDecode(const DecodePost& post, const float* hc_fn, const float* hc_scale,
                          const float* hc_base, void* layer_input, float* post_mix,
                          float* comb_mix, int64_t ntok, int n, int d, mhcDtype_t dtype,
                          const mhcPreParams& p, void* workspace, cudaStream_t stream);
mhcStatus_t postHeadDecode(const DecodePost& post, const float* hc_fn, const float* hc_scale,
                           const float* hc_base, void* y, int64_t ntok, int n, int d,
                           mhcDtype_t dtype, const mhcHeadParams& p, void* workspace,
                           cudaStream_t stream);

}  // namespace mhc

#endif  // MHC_DECODE_CUH
