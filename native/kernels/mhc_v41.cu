// DeepSeek-V4.1's single-pass mHC (contract: shared/spec/mhc_ops.md, "DeepSeek-V4.1"):
// MhcMix, MhcCollapse, MhcPostMix and MhcPostCollapse.
//
// What V4.1 changes for a kernel: the collapse weight (pre_mix) is an input,
// so layer_input[:, c] is final as soon as residual_out[:, :, c] exists, and the
// only state that crosses columns is the M projection sums and the sum of
// squares. Every path below is therefore "one pass + a tiny finish":
//
//  * stream (bf16, n <= 4, T > decodeMaxT(), sm_80+; mhcPostMix's large-T path):
//    a persistent grid, CTA = 256 columns of d (all n streams) x a strided set
//    of 16-token tiles. Each thread cp.asyncs ITS OWN 16-byte vectors of x and
//    the residual (no sharing, so no barrier guards them) STAGES tiles ahead,
//    computes residual_out (MhcPost's operation order: the same bits), rounds
//    it, writes it and layer_input (MhcCollapse's order: the same bits) straight
//    from registers, and feeds the rounded values as the A fragments of a
//    tensor-core projection (mma m16n8k16; hc_fn split once per launch into
//    bf16 hi + lo B fragments that stay in registers). The 8 warps' partials
//    are summed in warp order and written as part[split][t][M + 1]: the only
//    state that leaves the CTA.
//  * decode (T <= decodeMaxT(), every dtype): mhc_decode.cuh's split-K mixes
//    kernel with the post folded in (it writes residual_out), then the finish.
//  * two-pass (everything else): one elementwise kernel writes residual_out and
//    layer_input, then mhc_mix.cuh's FFMA projection reads residual_out back.
// The finish kernel (PDL-chained) sums the split partials of a token in split
// order (sumSplitsBlock) and computes pre / post / comb (Sinkhorn); in the
// decode MhcPostMix it also writes layer_input. MhcMix runs the same
// projection and finish on its input as MhcPostMix on residual_out (the path
// depends only on T, n, d and dtype), so the fused mixes equal the unfused ones
// bit for bit. No atomics; every output element is written by one thread.
#include <stdlib.h>

#include "mhc_common.cuh"
#include "mhc_decode.cuh"
#include "mhc_mix.cuh"
#include "mhc_stream.cuh"
#include "mhc_switches.h"

namespace mhc {
namespace {

// ---- elementwise: MhcCollapse, MhcPostCollapse and the two-pass post -------------

constexpr int kV41EltThreads = 128;

// grid (ceil(d/8 / 128), token blocks): thread = one 16-byte column vector of a
// token. POST: out_j = MhcPost (postVector), rounded to T (written when RES);
// then layer_input / y = sum_i pre_i * value_i, fmaf from 0 in stream order,
// as weightedStreamSum (MhcCollapse) does: the same bits.
template <typename T, int N, bool POST, bool RES>
__global__ void __launch_bounds__(kV41EltThreads)
    collapseKernel(const T* __restrict__ x, const T* __restrict__ res,
                   const float* __restrict__ pre_mix, const float* __restrict__ post_mix,
                   const float* __restrict__ comb_mix, T* __restrict__ res_out,
                   T* __restrict__ out, int64_t ntok, int d) {
    const int v = int(blockIdx.x) * kV41EltThreads + int(threadIdx.x);
    if (v >= d / 8) return;
    for (int64_t t = blockIdx.y; t < ntok; t += gridDim.y) {
        float w[N], rv[N][8];
#pragma unroll
        for (int i = 0; i < N; ++i) w[i] = __ldg(pre_mix + t * N + i);
#pragma unroll
        for (int i = 0; i < N; ++i) load8(res + (t * N + i) * int64_t(d) + v * 8, rv[i]);
        float val[N][8];
        if constexpr (POST) {
            float xv[8];
            load8(x + t * int64_t(d) + v * 8, xv);
#pragma unroll
            for (int j = 0; j < N; ++j) {
                float cj[N];
#pragma unroll
                for (int i = 0; i < N; ++i) cj[i] = __ldg(comb_mix + (t * N + i) * N + j);
                postVector<N>(__ldg(post_mix + t * N + j), cj, xv, rv, val[j]);
                if constexpr (RES) store8(res_out + (t * N + j) * int64_t(d) + v * 8, val[j]);
#pragma unroll
                for (int e = 0; e < 8; ++e) val[j][e] = roundTo<T>(val[j][e]);
            }
        } else {
#pragma unroll
            for (int i = 0; i < N; ++i)
#pragma unroll
                for (int e = 0; e < 8; ++e) val[i][e] = rv[i][e];
        }
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float a = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) a = fmaf(w[i], val[i][e], a);
            o[e] = a;
        }
        store8(out + t * int64_t(d) + v * 8, o);
    }
}

template <typename T, int N, bool POST, bool RES>
mhcStatus_t launchCollapse(const void* x, const void* res, const float* pre_mix,
                           const float* post_mix, const float* comb_mix, void* res_out, void* out,
                           int64_t ntok, int d, cudaStream_t stream) {
    const dim3 grid(unsigned(ceilDiv(d / 8, kV41EltThreads)),
                    unsigned(ntok < 65535 ? ntok : 65535));
    collapseKernel<T, N, POST, RES><<<grid, kV41EltThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(res), pre_mix, post_mix, comb_mix,
        static_cast<T*>(res_out), static_cast<T*>(out), ntok, d);
    return checkLaunch("mhc V4.1 collapse kernel");
}

// ---- finish: split sums -> pre / post / comb (+ the decode collapse) -------------

// 256 threads: sumSplitsBlock's 8 groups of 32 sum the decode path's K/256
// splits (d=5120: 80) in 10 loads per thread, one batch.
constexpr int kV41FinishThreads = 256;

struct FinishArgs {
    const float* part;
    int splits;
    const float* hc_scale;
    const float* hc_base;
    float* pre_mix;
    float* post_mix;
    float* comb_mix;
    int64_t ntok;
    int d;
    mhcPreParams p;
    // Decode MhcPostMix only (null otherwise): layer_input = collapse of
    // residual_out (written by the kernel before) with the input pre weights.
    const void* res_out;
    const float* pre_in;
    void* layer_input;
    bool sinkhorn_lanes;  // the comb's Sinkhorn on lanes (combFromMixesLanes, sinkhornLanes)
};

// grid (T, CB + 1): blocks y < CB write layer_input for 128 column vectors
// each; block CB sums the splits and writes the three mixes of token t.
template <typename T, int N>
__global__ void __launch_bounds__(kV41FinishThreads) v41FinishKernel(const FinishArgs a) {
    constexpr int M = (2 + N) * N, V = M + 1;
    const int64_t t = blockIdx.x;
    if (blockIdx.y + 1 < gridDim.y) {
        const int v = int(blockIdx.y) * kV41FinishThreads + int(threadIdx.x);
        const bool active = v < a.d / 8;
        float w[N];
        if (active) {
#pragma unroll
            for (int i = 0; i < N; ++i) w[i] = __ldg(a.pre_in + t * N + i);
        }
        pdlWaitThenRelease();  // residual_out is the previous kernel's output
        if (!active) return;
        const T* xt = static_cast<const T*>(a.res_out) + t * N * int64_t(a.d) + v * 8;
        float xv[N][8];
#pragma unroll
        for (int i = 0; i < N; ++i) load8(xt + int64_t(i) * a.d, xv[i]);
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < N; ++i) s = fmaf(w[i], xv[i][e], s);
            o[e] = s;
        }
        store8(static_cast<T*>(a.layer_input) + t * int64_t(a.d) + v * 8, o);
        if (t == 0 && blockIdx.y == 0 && threadIdx.x == 0) phaseMark(kPhLiEnd);
        return;
    }
    const bool mark = t == 0 && threadIdx.x == 0;
    if (mark) phaseMark(kPhFinEntry);
    __shared__ float mix[V];
    __shared__ float scratch[kV41FinishThreads];
    __shared__ float base[M];
    // Inputs, complete before the kernel before started (pdlWaitThenRelease's rule):
    // loaded ahead of the wait, so the gates and the Sinkhorn start from shared memory.
    const float s0 = __ldg(a.hc_scale), s1 = __ldg(a.hc_scale + 1), s2 = __ldg(a.hc_scale + 2);
    if (threadIdx.x < M) base[threadIdx.x] = __ldg(a.hc_base + threadIdx.x);
    pdlWaitThenRelease();
    if (mark) phaseMark(kPhFinWaited);
    sumSplitsBlock<V>(a.part, a.splits, a.ntok, t, V, IdentityIdx(), mix, scratch);
    __syncthreads();
    if (mark) phaseMark(kPhFinSummed);
    const float r = 1.0f / sqrtf(mix[M] / (float(N) * float(a.d)) + a.p.rms_eps);
    if (threadIdx.x < N) {
        const int i = threadIdx.x;
        a.pre_mix[t * N + i] = sigmoidf(mix[i] * r * s0 + base[i]) + a.p.pre_eps;
        a.post_mix[t * N + i] = a.p.post_mult * sigmoidf(mix[N + i] * r * s1 + base[N + i]);
    }
    if (mark) phaseMark(kPhFinGated);
    if (decodeComb<N>(a.sinkhorn_lanes, mix, r, s2, base, a.p, a.comb_mix + t * N * N) &&
        t == 0 && threadIdx.x == 32)
        phaseMark(kPhFinDone);
}

// Large T (the stream and two-pass paths): a block per TB tokens. Thread j sums
// value j of the block's [tokens][V] partials over the splits in split order
// (loads issued in batches of KB before the adds: any TB and KB give the same
// bits), then one thread per token computes its gates and a segment of lanes per
// token its Sinkhorn (combFromMixesLanes). ~T / TB blocks of short latency,
// instead of a block and a one-thread Sinkhorn chain per token. Where its blocks
// fit one wave (T <= 8 x SMs), 8 tokens and batches of 32 load every split of
// d <= 8192 at once: one L2 round trip, and the finish is what is left of the call
// after the stream kernel drains. Above that, run 2's 16 tokens and batches of 8
// (40 registers against 206: several blocks per SM). MHC_V41_FINISH16=1 takes
// the 16-token finish everywhere.
template <int N, int TB, int KB>
__global__ void __launch_bounds__(kV41FinishThreads) v41FinishWideKernel(const FinishArgs a) {
    constexpr int M = (2 + N) * N, V = M + 1;
    __shared__ float mix[TB * V];
    const int64_t t0 = int64_t(blockIdx.x) * TB;
    const int ntb = int(a.ntok - t0 < TB ? a.ntok - t0 : TB);
    pdlWaitThenRelease();
    const int64_t sstride = a.ntok * V;  // floats between two splits of one value
    for (int j = threadIdx.x; j < ntb * V; j += kV41FinishThreads) {
        const float* p = a.part + t0 * V + j;
        float s = 0.f;
        for (int k = 0; k < a.splits; k += KB) {
            float v[KB];
#pragma unroll
            for (int q = 0; q < KB; ++q) v[q] = k + q < a.splits ? p[int64_t(k + q) * sstride] : 0.f;
#pragma unroll
            for (int q = 0; q < KB; ++q) s += v[q];  // + 0.0f past the last split: no change
        }
        mix[j] = s;
    }
    __syncthreads();
    const float s0 = a.hc_scale[0], s1 = a.hc_scale[1], s2 = a.hc_scale[2];
    auto rOf = [&](const float* m) {
        return 1.0f / sqrtf(m[M] / (float(N) * float(a.d)) + a.p.rms_eps);
    };
    if (int(threadIdx.x) < ntb) {  // the gates: a thread per token
        const int64_t t = t0 + threadIdx.x;
        const float* m = mix + threadIdx.x * V;
        const float r = rOf(m);
#pragma unroll
        for (int i = 0; i < N; ++i) {
            a.pre_mix[t * N + i] = sigmoidf(m[i] * r * s0 + a.hc_base[i]) + a.p.pre_eps;
            a.post_mix[t * N + i] = a.p.post_mult * sigmoidf(m[N + i] * r * s1 + a.hc_base[N + i]);
        }
        if (!a.sinkhorn_lanes)
            combFromMixes<N>(m, r, s2, a.hc_base, a.p.sinkhorn_iters, a.p.sinkhorn_eps,
                             a.comb_mix + t * N * N);
    }
    // The Sinkhorn: a segment of kSinkhornLanes<N> lanes per token, whole warps (the
    // segments past the block's last token repeat it and store nothing).
    constexpr int SW = kSinkhornLanes<N>, LT = (TB * SW + 31) / 32 * 32;
    if (a.sinkhorn_lanes && int(threadIdx.x) < LT) {
        const int tt = int(threadIdx.x) / SW, tc = tt < ntb ? tt : ntb - 1;
        const float* m = mix + tc * V;
        combFromMixesLanes<N>(m, rOf(m), s2, a.hc_base, a.p.sinkhorn_iters, a.p.sinkhorn_eps,
                              a.comb_mix + (t0 + tc) * N * N, tt < ntb);
    }
}

inline int numSMs();

// PDL launch (the finish's blocks wait in griddepcontrol.wait); a refused
// attribute outside a capture falls back to a plain launch with the same
// results. wide: the large-T finish (no layer_input; its own split order).
template <typename T, int N>
mhcStatus_t launchFinish(const FinishArgs& fa, cudaStream_t stream, bool wide) {
    const int cb = fa.layer_input ? int(ceilDiv(fa.d / 8, kV41FinishThreads)) : 0;
    if (wide && (v41Finish16() || ceilDiv(fa.ntok, 8) > numSMs()))
        launchMaybePdl(v41FinishWideKernel<N, 16, 8>, dim3(unsigned(ceilDiv(fa.ntok, 16))),
                       dim3(kV41FinishThreads), 0, stream, true, fa);
    else if (wide)
        launchMaybePdl(v41FinishWideKernel<N, 8, 32>, dim3(unsigned(ceilDiv(fa.ntok, 8))),
                       dim3(kV41FinishThreads), 0, stream, true, fa);
    else
        launchMaybePdl(v41FinishKernel<T, N>, dim3(unsigned(fa.ntok), unsigned(cb + 1)),
                       dim3(kV41FinishThreads), 0, stream, true, fa);
    return checkLaunch("mhc V4.1 finish kernel");
}

// ---- stream: the single-pass kernel (bf16, n <= 4) -------------------------------

constexpr int kV41Warps = 8;
constexpr int kV41Threads = kV41Warps * 32;
constexpr int kV41Cols = kV41Warps * 32;  // columns of d per CTA: 32 per warp
constexpr int kV41TT = 16;                // tokens per tile: one m16 MMA tile
constexpr int kV41MaxN = 4;               // B fragments: 8 * NT * N registers (96 at n=4)

template <int N, bool POST>
struct V41Geom {
    static constexpr int M = (2 + N) * N, V = M + 1, NT = (M + 7) / 8;
    static constexpr int COEF = 2 * N + N * N;  // pre, post, comb of a token
    // Stride of a token's coefficients: a multiple of 4 floats (16-byte loads) where
    // COEF is (n = 2, 4), else odd; either way the 8 tokens of a warp's rows hit
    // disjoint banks.
    static constexpr int CS = COEF % 4 == 0 ? COEF + 4 : COEF | 1;
    static constexpr int ITEMS = POST ? 2 * (N + 1) : 2 * N;  // 16-byte vectors per thread
    static constexpr size_t DATA = size_t(ITEMS) * kV41Threads * 16;
    static constexpr size_t STAGE = (DATA + (POST ? kV41TT * CS * 4 : 0) + 127) & ~size_t(127);
    static constexpr size_t RED = 2 * size_t(kV41Warps) * kV41TT * V * 4;  // by tile parity
    static size_t smem(int stages) { return STAGE * stages + RED; }
};

struct V41Args {
    const __nv_bfloat16* x;    // POST: [T][d]
    const __nv_bfloat16* res;  // [T][N][d]
    const float* pre_in;       // POST: the collapse weights
    const float* post_in;
    const float* comb_in;
    __nv_bfloat16* res_out;      // POST
    __nv_bfloat16* layer_input;  // POST
    const float* fn;
    float* part;  // [splits][T][M + 1]
    int64_t ntok, tiles;
    int d, groups, stages;
    int splits, balanced;
};

// A token's sum of squares over its N rounded 16-byte vectors, in the stream
// kernel's one order (element pair e outer, stream j inner: the order in which the
// post produces them), for MhcMix's loaded vectors and MhcPostMix's computed ones.
template <int N>
__device__ __forceinline__ void ssAdd(const uint32_t (&w)[N][4], float& ss) {
#pragma unroll
    for (int e = 0; e < 4; ++e)
#pragma unroll
        for (int j = 0; j < N; ++j) {
            const float2 p = unpackBf2(w[j][e]);
            ss = fmaf(p.x, p.x, ss);
            ss = fmaf(p.y, p.y, ss);
        }
}

// grid (splits, groups): CTA (s, g) owns columns [256 s, 256 s + 256) and the
// tiles g, g + groups, ... . Thread (warp w, lane = 4 q + tig) owns column
// vector 256 s + 32 w + 8 tig of tokens q and q + 8 of each tile: the MMA's A
// fragment rows, with K permuted inside each 32-column group the same way for
// A and B (the mhc_fused.cuh layout), so the dot products are exact sums.
template <int N, bool POST>
__global__ void __launch_bounds__(kV41Threads, 1) v41StreamKernel(const V41Args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using G = V41Geom<N, POST>;
    constexpr int M = G::M, V = G::V, NT = G::NT, CS = G::CS, COEF = G::COEF;
    constexpr int TT = kV41TT, W = kV41Warps;
    extern __shared__ __align__(16) unsigned char smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int d = a.d, S = a.stages;
    const int64_t K = int64_t(N) * d;
    // Work items (column split, 16-token tile). Grid mode: CTA (s, g) takes split s,
    // tiles g, g + groups, ... . Balanced mode (1-D grid over every SM): CTA b takes
    // the items [b * total / ctas, (b + 1) * total / ctas) in split-major order, so
    // its split changes at most a few times (the B fragments are reloaded then).
    // Either way each (split, token) partial is computed the same way: same bits.
    int64_t lo = 0;
    int ntiles;
    if (a.balanced) {
        const int64_t total = int64_t(a.splits) * a.tiles;
        lo = int64_t(blockIdx.x) * total / gridDim.x;
        ntiles = int(int64_t(blockIdx.x + 1) * total / gridDim.x - lo);
    } else {
        const int grp = blockIdx.y;
        ntiles = a.tiles > grp ? int((a.tiles - 1 - grp) / a.groups + 1) : 0;
    }
    auto itemOf = [&](int it, int& sp) -> int64_t {  // split and first token of step it
        if (a.balanced) {
            const int64_t i = lo + it;
            sp = int(i / a.tiles);
            return (i - int64_t(sp) * a.tiles) * TT;
        }
        sp = blockIdx.x;
        return (int64_t(blockIdx.y) + int64_t(it) * a.groups) * TT;
    };
    auto colOf = [&](int sp) { return sp * kV41Cols + warp * 32 + tig * 8; };
    float* red = reinterpret_cast<float*>(smem + G::STAGE * S);  // [2][W][TT][V]

    // Resident B fragments: rows nt*8+g of hc_fn at this thread's 8 columns of
    // each stream, split once into bf16 hi + lo (as mhc_stream.cuh's default).
    uint32_t bhi[N][NT][4], blo[N][NT][4];
    int bsplit = -1;
    auto loadB = [&](int sp) {
        const int col = colOf(sp);
#pragma unroll
        for (int j = 0; j < N; ++j)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int m = nt * 8 + g;
                float4 f0 = make_float4(0.f, 0.f, 0.f, 0.f), f1 = f0;
                if (col < d && m < M) {
                    const float4* p = reinterpret_cast<const float4*>(a.fn + int64_t(m) * K +
                                                                      int64_t(j) * d + col);
                    f0 = __ldg(p);
                    f1 = __ldg(p + 1);
                }
                const float fv[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    bhi[j][nt][e] = packBf2(fv[2 * e], fv[2 * e + 1]);
                    const float2 h = unpackBf2(bhi[j][nt][e]);
                    blo[j][nt][e] = packBf2(fv[2 * e] - h.x, fv[2 * e + 1] - h.y);
                }
            }
        bsplit = sp;
    };
    // Launched with PDL (pdlFirst): the first B fragments' hc_fn lines go to L2
    // while the kernel before still runs (a tig-0 lane's 4 lanes read 128 bytes
    // of a row: its first and last element cover the lines), then the wait.
    int sp0 = 0;
    if (ntiles > 0) itemOf(0, sp0);
    if (ntiles > 0 && tig == 0 && colOf(sp0) < d) {
#pragma unroll
        for (int j = 0; j < N; ++j)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
                if (nt * 8 + g < M) {
                    const float* p = a.fn + int64_t(nt * 8 + g) * K + int64_t(j) * d + colOf(sp0);
                    prefetchL2(p);
                    prefetchL2(p + (colOf(sp0) + 31 < d ? 31 : d - 1 - colOf(sp0)));
                }
    }
    pdlWaitThenRelease();

    // Loads of tile `it` into stage s; one commit group per call, even empty.
    auto issue = [&](int it, int s) {
        if (it < ntiles) {
            int sp;
            const int64_t t0 = itemOf(it, sp);
            const int col = colOf(sp);
            const bool cvalid = col < d;
            uint4* st = reinterpret_cast<uint4*>(smem + G::STAGE * s);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int64_t tok = t0 + g + 8 * h;
                if (tok >= a.ntok || !cvalid) continue;
                constexpr int PER = POST ? N + 1 : N;
#pragma unroll
                for (int i = 0; i < N; ++i)
                    cpAsync16(st + (h * PER + i) * kV41Threads + tid,
                              a.res + tok * K + int64_t(i) * d + col);
                if constexpr (POST)
                    cpAsync16(st + (h * PER + N) * kV41Threads + tid, a.x + tok * d + col);
            }
            if constexpr (POST) {
                // Float by float: a warp's copies coalesce into a few lines. Every CTA of a
                // token group copies the same coefficients at about the same time; run 7's
                // 16-byte copies of a token's six rows per thread made d=7168 7% slower on an
                // H100 (issue 23's run 8), likely as ~96 scattered requests per CTA.
                float* coef = reinterpret_cast<float*>(smem + G::STAGE * s + G::DATA);
                for (int j = tid; j < TT * COEF; j += kV41Threads) {
                    const int tt = j / COEF, k = j - tt * COEF;
                    const int64_t t = t0 + tt;
                    if (t >= a.ntok) continue;
                    const float* src = k < N       ? a.pre_in + t * N + k
                                       : k < 2 * N ? a.post_in + t * N + (k - N)
                                                   : a.comb_in + t * N * N + (k - 2 * N);
                    cpAsync4(coef + tt * CS + k, src);
                }
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };

    // Tile it: post, residual_out, layer_input, projection, warp partials.
    auto compute = [&](int it) {
        int sp;
        const int64_t t0 = itemOf(it, sp);
        if (sp != bsplit) loadB(sp);  // CTA-uniform (balanced mode only)
        const int col = colOf(sp);
        const bool cvalid = col < d;
        const unsigned char* st = smem + G::STAGE * (it % S);
        const uint4* data = reinterpret_cast<const uint4*>(st);
        uint32_t A[2][N][4];
        float ss[2] = {0.f, 0.f};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int64_t tok = t0 + g + 8 * h;
            const bool tv = tok < a.ntok && cvalid;
            if constexpr (POST) {
                constexpr int PER = N + 1;
                if (tv) {
                    const float* cfs = reinterpret_cast<const float*>(st + G::DATA) +
                                       (g + 8 * h) * CS;
                    float cf[COEF];  // pre, post, comb of the token, in 16-byte loads where aligned
                    if constexpr (COEF % 4 == 0) {
#pragma unroll
                        for (int q = 0; q < COEF / 4; ++q) {
                            const float4 f = reinterpret_cast<const float4*>(cfs)[q];
                            cf[4 * q] = f.x;
                            cf[4 * q + 1] = f.y;
                            cf[4 * q + 2] = f.z;
                            cf[4 * q + 3] = f.w;
                        }
                    } else {
#pragma unroll
                        for (int k = 0; k < COEF; ++k) cf[k] = cfs[k];
                    }
                    uint32_t rw[N][4], xw[4];
#pragma unroll
                    for (int i = 0; i <= N; ++i) {
                        const uint4 q = data[(h * PER + i) * kV41Threads + tid];  // i == N: x
                        uint32_t* w = i < N ? rw[i] : xw;
                        w[0] = q.x;
                        w[1] = q.y;
                        w[2] = q.z;
                        w[3] = q.w;
                    }
                    // Element pair e outer, output stream j inner: each input value is
                    // unpacked once and used by all N outputs (j outer re-unpacked the
                    // residual and x for every j; issue 23's run 7 measured 1551 -> 1362
                    // instructions per warp and tile with its coefficient copies, since undone).
                    // Every output keeps its operation order: the same bits.
                    float li[8];
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float2 xf = unpackBf2(xw[e]);
                        float2 rf[N];
#pragma unroll
                        for (int i = 0; i < N; ++i) rf[i] = unpackBf2(rw[i][e]);
                        li[2 * e] = li[2 * e + 1] = 0.f;
#pragma unroll
                        for (int j = 0; j < N; ++j) {
                            // postVector's order: p * x, then + comb[i][j] * r_i for i = 0..N-1.
                            const float p = cf[N + j];
                            float o0 = p * xf.x, o1 = p * xf.y;
#pragma unroll
                            for (int i = 0; i < N; ++i) {
                                const float c = cf[2 * N + i * N + j];
                                o0 = fmaf(c, rf[i].x, o0);
                                o1 = fmaf(c, rf[i].y, o1);
                            }
                            A[h][j][e] = packBf2(o0, o1);
                            // MhcCollapse's order on the rounded value: fmaf from 0, streams
                            // in order; the sum of squares in ssAdd's order.
                            const float2 q = unpackBf2(A[h][j][e]);
                            li[2 * e] = fmaf(cf[j], q.x, li[2 * e]);
                            li[2 * e + 1] = fmaf(cf[j], q.y, li[2 * e + 1]);
                            ss[h] = fmaf(q.x, q.x, ss[h]);
                            ss[h] = fmaf(q.y, q.y, ss[h]);
                        }
                    }
#pragma unroll
                    for (int j = 0; j < N; ++j)
                        *reinterpret_cast<uint4*>(a.res_out + tok * K + int64_t(j) * d + col) =
                            make_uint4(A[h][j][0], A[h][j][1], A[h][j][2], A[h][j][3]);
                    store8(a.layer_input + tok * d + col, li);
                } else {
#pragma unroll
                    for (int j = 0; j < N; ++j)
#pragma unroll
                        for (int e = 0; e < 4; ++e) A[h][j][e] = 0u;
                }
            } else {
#pragma unroll
                for (int j = 0; j < N; ++j) {
                    const uint4 q = tv ? data[(h * N + j) * kV41Threads + tid]
                                       : make_uint4(0u, 0u, 0u, 0u);
                    A[h][j][0] = q.x;
                    A[h][j][1] = q.y;
                    A[h][j][2] = q.z;
                    A[h][j][3] = q.w;
                }
                ssAdd<N>(A[h], ss[h]);
            }
        }
        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
        for (int j = 0; j < N; ++j)
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    mma16816(acc[nt], A[0][j][2 * s], A[1][j][2 * s], A[0][j][2 * s + 1],
                             A[1][j][2 * s + 1], blo[j][nt][2 * s], blo[j][nt][2 * s + 1]);
                    mma16816(acc[nt], A[0][j][2 * s], A[1][j][2 * s], A[0][j][2 * s + 1],
                             A[1][j][2 * s + 1], bhi[j][nt][2 * s], bhi[j][nt][2 * s + 1]);
                }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            ss[h] += __shfl_xor_sync(0xffffffffu, ss[h], 1);
            ss[h] += __shfl_xor_sync(0xffffffffu, ss[h], 2);
        }
        float* wp = red + ((it & 1) * W + warp) * TT * V;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int tok = g + (e >> 1) * 8, m = nt * 8 + tig * 2 + (e & 1);
                if (m < M) wp[tok * V + m] = acc[nt][e];
            }
        if (tig == 0) {
            wp[g * V + M] = ss[0];
            wp[(g + 8) * V + M] = ss[1];
        }
    };
    // The CTA's partial of tile it: its warps' partials summed in warp order.
    auto reduce = [&](int it) {
        int split;
        const int64_t t0 = itemOf(it, split);
        const float* rp = red + (it & 1) * W * TT * V;
        for (int j = tid; j < TT * V; j += kV41Threads) {
            const int tt = j / V;
            if (t0 + tt >= a.ntok) continue;
            float v[W];
#pragma unroll
            for (int w = 0; w < W; ++w) v[w] = rp[w * TT * V + j];
            float s = 0.f;
#pragma unroll
            for (int w = 0; w < W; ++w) s += v[w];
            a.part[(int64_t(split) * a.ntok + t0) * V + j] = s;
        }
    };

    // Stages: tiles it+1 .. it+S-1 are in flight while tile it is computed. One
    // CTA barrier per tile: it publishes tile it's coefficients (cp.async by
    // other threads), retires stage (it-1) % S for refilling and hands the
    // partials of tile it-1 (double-buffered by parity) to the reduction.
    // The first tiles' loads go out before the B fragments are read and split: the
    // residual's DRAM traffic starts at once, and hc_fn's L2 lines (prefetched above)
    // arrive while it is in flight.
    for (int s = 0; s + 1 < S; ++s) issue(s, s);
    if (ntiles > 0) loadB(sp0);
    for (int it = 0; it < ntiles; ++it) {
        waitGroupsLeft(S - 2);
        __syncthreads();
        if (it > 0) reduce(it - 1);
        issue(it + S - 1, (it + S - 1) % S);
        compute(it);
    }
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads();
    if (ntiles > 0) reduce(ntiles - 1);
#else
    __trap();
#endif
}

inline int numSMs() {
    static std::atomic<int> cache[kMaxCachedDevices] = {};
    const int dev = currentDevice();
    int v = dev >= 0 && dev < kMaxCachedDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
    if (v == 0) {
        if (dev < 0 || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            cudaGetLastError();
            return 1;
        }
        if (dev < kMaxCachedDevices) cache[dev].store(v, std::memory_order_relaxed);
    }
    return v;
}

inline int smemOptin() {
    static std::atomic<int> cache[kMaxCachedDevices] = {};
    const int dev = currentDevice();
    int v = dev >= 0 && dev < kMaxCachedDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
    if (v == 0) {
        if (dev < 0 ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (dev < kMaxCachedDevices) cache[dev].store(v, std::memory_order_relaxed);
    }
    return v;
}

// The path switches (MHC_V41_STREAM, MHC_V41_BALANCE, MHC_V41_STAGES): mhc_switches.h.
inline int streamSplits(int d) { return int(ceilDiv(d, kV41Cols)); }
inline size_t streamWorkspaceBytes(int64_t T, int n, int d) {
    const size_t b = size_t(streamSplits(d)) * size_t(T) * size_t((2 + n) * n + 1) * 4;
    return (b + 255) & ~size_t(255);
}

enum class MixPath { kDecode, kStream, kTwoPass };

template <typename T>
constexpr mhcDtype_t dtypeOf() {
    return std::is_same<T, __nv_bfloat16>::value ? MHC_DTYPE_BFLOAT16
           : std::is_same<T, __half>::value      ? MHC_DTYPE_FLOAT16
                                                 : MHC_DTYPE_FLOAT32;
}

// The projection path of a call: a function of (T, n, d, dtype) and the device
// only, so that MhcMix and MhcPostMix always agree (bit-identical mixes).
MixPath mixPath(int64_t T, int n, int d, mhcDtype_t dtype) {
    if (takesDecodePath(T, int64_t(n) * d)) return MixPath::kDecode;
    if (dtype == MHC_DTYPE_BFLOAT16 && n <= kV41MaxN && deviceCcMajor() >= 8 &&
        v41StreamEnabled())
        return MixPath::kStream;
    return MixPath::kTwoPass;
}

template <int N, bool POST>
mhcStatus_t launchStream(V41Args a, cudaStream_t stream, bool* fits) {
    using G = V41Geom<N, POST>;
    const int optin = smemOptin();
    int stages = v41StagesEnv();
    if (stages == 0) {
        // 3 (tiles it+1, it+2 in flight): run 9 measured it 1.6-1.9 us faster than 4 at
        // T=512 (the first tiles arrive sooner) and within 1.3% at T >= 4096.
        stages = 3;
        while (stages > 2 && G::smem(stages) > size_t(optin)) --stages;
    }
    const size_t smem = G::smem(stages);
    *fits = smem <= size_t(optin);
    if (!*fits) return MHC_STATUS_SUCCESS;
    auto kern = v41StreamKernel<N, POST>;
    static std::atomic<size_t> smem_set[kMaxCachedDevices] = {};
    const int dev = currentDevice();
    const bool cached = dev >= 0 && dev < kMaxCachedDevices;
    if (!cached || smem > smem_set[dev].load(std::memory_order_relaxed)) {
        if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) !=
            cudaSuccess) {
            cudaGetLastError();
            *fits = false;
            return MHC_STATUS_SUCCESS;
        }
        if (cached) smem_set[dev].store(smem, std::memory_order_relaxed);
    }
    const int splits = streamSplits(a.d);
    a.tiles = ceilDiv(a.ntok, kV41TT);
    a.splits = splits;
    a.stages = stages;
    dim3 grid;
    if (v41Balanced()) {
        const int64_t total = int64_t(splits) * a.tiles;
        a.balanced = 1;
        grid = dim3(unsigned(total < numSMs() ? total : numSMs()));
    } else {
        int64_t groups = v41GroupsEnv() ? v41GroupsEnv() : numSMs() / splits;
        if (groups < 1) groups = 1;
        if (groups > a.tiles) groups = a.tiles;
        if (groups > 65535) groups = 65535;
        a.groups = int(groups);
        a.balanced = 0;
        grid = dim3(unsigned(splits), unsigned(groups));
    }
    launchMaybePdl(kern, grid, dim3(kV41Threads), smem, stream, pdlFirst(), a);
    return checkLaunch("mhc V4.1 stream kernel");
}

// ---- the mixes of one call (MhcMix, or MhcPostMix on residual_out) -------------

struct MixCall {
    const void* x;         // MhcPostMix: sublayer output (null: MhcMix)
    const void* residual;  // MhcMix: the input; MhcPostMix: X_k
    const float* pre_in;   // MhcPostMix
    const float* post_in;
    const float* comb_in;
    void* res_out;  // MhcPostMix
    void* layer_input;
    const float* fn;
    const float* hc_scale;
    const float* hc_base;
    float* pre_mix;
    float* post_mix;
    float* comb_mix;
    int64_t ntok;
    int d;
    mhcPreParams p;
    float* part;
};

template <typename T, int N>
mhcStatus_t runMixes(const MixCall& c, cudaStream_t stream) {
    constexpr int M = (2 + N) * N;
    const bool post = c.x != nullptr;
    const int K = N * c.d;
    FinishArgs fa{c.part, 0, c.hc_scale, c.hc_base, c.pre_mix, c.post_mix, c.comb_mix, c.ntok,
                  c.d, c.p, nullptr, nullptr, nullptr,
                  sinkhornLanes()};
    mhcStatus_t st = MHC_STATUS_SUCCESS;
    MixPath path = mixPath(c.ntok, N, c.d, dtypeOf<T>());
    if (path == MixPath::kStream) {
        if constexpr (std::is_same<T, __nv_bfloat16>::value && N <= kV41MaxN) {
            V41Args a = {};
            a.x = static_cast<const T*>(c.x);
            a.res = static_cast<const T*>(c.residual);
            a.pre_in = c.pre_in;
            a.post_in = c.post_in;
            a.comb_in = c.comb_in;
            a.res_out = static_cast<T*>(c.res_out);
            a.layer_input = static_cast<T*>(c.layer_input);
            a.fn = c.fn;
            a.part = c.part;
            a.ntok = c.ntok;
            a.d = c.d;
            bool fits = false;
            st = post ? launchStream<N, true>(a, stream, &fits)
                      : launchStream<N, false>(a, stream, &fits);
            if (st != MHC_STATUS_SUCCESS) return st;
            if (!fits)
                return fail(MHC_STATUS_NOT_SUPPORTED,
                            "mhc V4.1 stream kernel: not enough shared memory on this device");
            fa.splits = streamSplits(c.d);
            return launchFinish<T, N>(fa, stream, true);
        }
    }
    if (path == MixPath::kDecode) {
        fa.splits = decodeSplits(K);
        if (post) {
            DecodePost dp{c.x, c.residual, c.post_in, c.comb_in, c.res_out};
            st = launchDecodeMixes<T, M, N>(nullptr, c.fn, c.part, c.ntok, K, stream, dp);
            fa.res_out = c.res_out;
            fa.pre_in = c.pre_in;
            fa.layer_input = c.layer_input;
        } else {
            st = launchDecodeMixes<T, M>(static_cast<const T*>(c.residual), c.fn, c.part,
                                         c.ntok, K, stream);
        }
        if (st != MHC_STATUS_SUCCESS) return st;
        return launchFinish<T, N>(fa, stream, false);
    }
    // Two-pass: residual_out and layer_input in one elementwise pass, then the
    // FFMA projection of residual_out.
    const T* src = static_cast<const T*>(c.residual);
    if (post) {
        st = launchCollapse<T, N, true, true>(c.x, c.residual, c.pre_in, c.post_in, c.comb_in,
                                              c.res_out, c.layer_input, c.ntok, c.d, stream);
        if (st != MHC_STATUS_SUCCESS) return st;
        src = static_cast<const T*>(c.res_out);
    }
    const int splits = launchMix<T, M>(src, c.fn, c.part, c.ntok, K, stream);
    if (splits < 0) return MHC_STATUS_CUDA_ERROR;
    fa.splits = splits;
    return launchFinish<T, N>(fa, stream, true);
}

size_t mixWorkspace(int64_t T, int n, int d) {
    const size_t a = smallOrLargeWorkspaceBytes(T, int64_t(n) * d, (2 + n) * n);
    const size_t b = n <= kV41MaxN ? streamWorkspaceBytes(T, n, d) : 0;
    return a > b ? a : b;
}

mhcStatus_t checkWorkspace(void* ws, size_t size, int64_t T, int n, int d, const char* who) {
    const size_t need = mixWorkspace(T, n, d);
    if (size < need)
        return fail(MHC_STATUS_WORKSPACE_TOO_SMALL,
                    "%s: workspace_size=%zu bytes but this call needs %zu (%sWorkspaceSize)", who,
                    size, need, who);
    return checkPtr(ws, "workspace", true);
}

mhcStatus_t runMixCall(const MixCall& c, int n, mhcDtype_t dtype, cudaStream_t stream) {
    return dispatchDtype(dtype, [&](auto type) {
        using T = decltype(type);
        return dispatchN(n, [&](auto nc) { return runMixes<T, decltype(nc)::value>(c, stream); });
    });
}

template <bool POST>
mhcStatus_t runCollapse(const void* x, const void* residual, const float* pre_mix,
                        const float* post_mix, const float* comb_mix, void* out, int64_t T,
                        int n, int d, mhcDtype_t dtype, cudaStream_t stream) {
    return dispatchDtype(dtype, [&](auto type) {
        using T_ = decltype(type);
        return dispatchN(n, [&](auto nc) {
            return launchCollapse<T_, decltype(nc)::value, POST, false>(
                x, residual, pre_mix, post_mix, comb_mix, nullptr, out, T, d, stream);
        });
    });
}

}  // namespace
}  // namespace mhc

using namespace mhc;

extern "C" MHC_API size_t mhcMixWorkspaceSize(int64_t T, int32_t n, int32_t d, mhcDtype_t dtype) {
    if (checkShape(T, n, d, dtype) != MHC_STATUS_SUCCESS) return 0;
    return mixWorkspace(T, n, d);
}

extern "C" MHC_API size_t mhcPostMixWorkspaceSize(int64_t T, int32_t n, int32_t d,
                                                  mhcDtype_t dtype) {
    return mhcMixWorkspaceSize(T, n, d, dtype);
}

extern "C" MHC_API mhcStatus_t mhcMix(const void* residual, const float* hc_fn,
                                      const float* hc_scale, const float* hc_base,
                                      float* pre_mix, float* post_mix, float* comb_mix, int64_t T,
                                      int32_t n, int32_t d, mhcDtype_t dtype,
                                      const mhcPreParams* params, void* workspace,
                                      size_t workspace_size, cudaStream_t stream) {
    try {
        mhcStatus_t st = checkShape(T, n, d, dtype);
        if (st != MHC_STATUS_SUCCESS) return st;
        if ((st = checkPreParams(params, "mhcMix")) != MHC_STATUS_SUCCESS) return st;
        if (T == 0) return ok();
        if ((st = checkPtr(residual, "residual", true)) || (st = checkPtr(hc_fn, "hc_fn", true)) ||
            (st = checkPtr(hc_scale, "hc_scale", false)) ||
            (st = checkPtr(hc_base, "hc_base", false)) ||
            (st = checkPtr(pre_mix, "pre_mix", false)) ||
            (st = checkPtr(post_mix, "post_mix", false)) ||
            (st = checkPtr(comb_mix, "comb_mix", false)) ||
            (st = checkWorkspace(workspace, workspace_size, T, n, d, "mhcMix")))
            return st;
        MixCall c = {};
        c.residual = residual;
        c.fn = hc_fn;
        c.hc_scale = hc_scale;
        c.hc_base = hc_base;
        c.pre_mix = pre_mix;
        c.post_mix = post_mix;
        c.comb_mix = comb_mix;
        c.ntok = T;
        c.d = d;
        c.p = *params;
        c.part = static_cast<float*>(workspace);
        st = runMixCall(c, n, dtype, stream);
        return st == MHC_STATUS_SUCCESS ? ok() : st;
    } catch (...) {
        return fail(MHC_STATUS_CUDA_ERROR, "mhcMix: unexpected internal exception");
    }
}

extern "C" MHC_API mhcStatus_t mhcCollapse(const void* residual, const float* pre_mix,
                                           void* layer_input, int64_t T, int32_t n, int32_t d,
                                           mhcDtype_t dtype, cudaStream_t stream) {
    mhcStatus_t st = checkShape(T, n, d, dtype);
    if (st != MHC_STATUS_SUCCESS) return st;
    if (T == 0) return ok();
    if ((st = checkPtr(residual, "residual", true)) || (st = checkPtr(pre_mix, "pre_mix", false)) ||
        (st = checkPtr(layer_input, "layer_input", true)))
        return st;
    st = runCollapse<false>(nullptr, residual, pre_mix, nullptr, nullptr, layer_input, T, n, d,
                            dtype, stream);
    return st == MHC_STATUS_SUCCESS ? ok() : st;
}

extern "C" MHC_API mhcStatus_t mhcPostCollapse(const void* x, const void* residual,
                                               const float* pre_mix, const float* post_mix,
                                               const float* comb_mix, void* y, int64_t T,
                                               int32_t n, int32_t d, mhcDtype_t dtype,
                                               cudaStream_t stream) {
    mhcStatus_t st = checkShape(T, n, d, dtype);
    if (st != MHC_STATUS_SUCCESS) return st;
    if (T == 0) return ok();
    if ((st = checkPtr(x, "x", true)) || (st = checkPtr(residual, "residual", true)) ||
        (st = checkPtr(pre_mix, "pre_mix", false)) ||
        (st = checkPtr(post_mix, "post_mix", false)) ||
        (st = checkPtr(comb_mix, "comb_mix", false)) || (st = checkPtr(y, "y", true)))
        return st;
    st = runCollapse<true>(x, residual, pre_mix, post_mix, comb_mix, y, T, n, d, dtype, stream);
    return st == MHC_STATUS_SUCCESS ? ok() : st;
}

extern "C" MHC_API mhcStatus_t mhcPostMix(
    const void* x, const void* residual, const float* pre_mix, const float* post_mix,
    const float* comb_mix, const float* hc_fn, const float* hc_scale, const float* hc_base,
    void* residual_out, void* layer_input, float* next_pre_mix, float* next_post_mix,
    float* next_comb_mix, int64_t T, int32_t n, int32_t d, mhcDtype_t dtype,
    const mhcPreParams* params, void* workspace, size_t workspace_size, cudaStream_t stream) {
    try {
        if (residual_out != nullptr && residual_out == residual)
            return fail(MHC_STATUS_INVALID_VALUE, "mhcPostMix: residual_out must not alias residual");
        if (next_pre_mix != nullptr && next_pre_mix == pre_mix)
            return fail(MHC_STATUS_INVALID_VALUE, "mhcPostMix: next_pre_mix must not alias pre_mix");
        mhcStatus_t st = checkShape(T, n, d, dtype);
        if (st != MHC_STATUS_SUCCESS) return st;
        if ((st = checkPreParams(params, "mhcPostMix")) != MHC_STATUS_SUCCESS) return st;
        if (T == 0) return ok();
        if ((st = checkPtr(x, "x", true)) || (st = checkPtr(residual, "residual", true)) ||
            (st = checkPtr(pre_mix, "pre_mix", false)) ||
            (st = checkPtr(post_mix, "post_mix", false)) ||
            (st = checkPtr(comb_mix, "comb_mix", false)) ||
            (st = checkPtr(hc_fn, "hc_fn", true)) ||
            (st = checkPtr(hc_scale, "hc_scale", false)) ||
            (st = checkPtr(hc_base, "hc_base", false)) ||
            (st = checkPtr(residual_out, "residual_out", true)) ||
            (st = checkPtr(layer_input, "layer_input", true)) ||
            (st = checkPtr(next_pre_mix, "next_pre_mix", false)) ||
            (st = checkPtr(next_post_mix, "next_post_mix", false)) ||
            (st = checkPtr(next_comb_mix, "next_comb_mix", false)) ||
            (st = checkWorkspace(workspace, workspace_size, T, n, d, "mhcPostMix")))
            return st;
        MixCall c = {};
        c.x = x;
        c.residual = residual;
        c.pre_in = pre_mix;
        c.post_in = post_mix;
        c.comb_in = comb_mix;
        c.res_out = residual_out;
        c.layer_input = layer_input;
        c.fn = hc_fn;
        c.hc_scale = hc_scale;
        c.hc_base = hc_base;
        c.pre_mix = next_pre_mix;
        c.post_mix = next_post_mix;
        c.comb_mix = next_comb_mix;
        c.ntok = T;
        c.d = d;
        c.p = *params;
        c.part = static_cast<float*>(workspace);
        st = runMixCall(c, n, dtype, stream);
        return st == MHC_STATUS_SUCCESS ? ok() : st;
    } catch (...) {
        return fail(MHC_STATUS_CUDA_ERROR, "mhcPostMix: unexpected internal exception");
    }
}

#ifdef MHC_PHASE_CLOCKS
// Debug builds only (MHC_PHASE_CLOCKS): copies the phase marks of the last V4.1 call
// (mhc_common.cuh, PhaseSlot order) into ns[kPhSlots] and cycles[kPhSlots], then
// clears them (0 = that mark did not run). Synchronises the device.
extern "C" MHC_API int mhcDebugPhaseClocks(unsigned long long* ns, unsigned long long* cycles) {
    using namespace mhc;
    const size_t bytes = sizeof(unsigned long long) * kPhSlots;
    if (cudaDeviceSynchronize() != cudaSuccess ||
        cudaMemcpyFromSymbol(ns, g_phaseNs, bytes) != cudaSuccess ||
        cudaMemcpyFromSymbol(cycles, g_phaseCycles, bytes) != cudaSuccess)
        return -1;
    static const unsigned long long zero[kPhSlots] = {};
    if (cudaMemcpyToSymbol(g_phaseNs, zero, bytes) != cudaSuccess ||
        cudaMemcpyToSymbol(g_phaseCycles, zero, bytes) != cudaSuccess)
        return -1;
    return int(kPhSlots);
}
#endif
