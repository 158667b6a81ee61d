// Persistent one-pass MhcPre / MhcHead, and the single-pass fused boundaries
// MhcPostPre / MhcPostHead, for bfloat16 residuals on sm_90+ (issue 10/11 design,
// docs/journal/kernels_notes.md "v6: the streaming cluster kernel").
//
// A cluster of CS CTAs (one per SM) loops over 16-token tiles. CTA rank r owns
// the column slice [r*ds, r*ds + ds) of d for all N streams, so its share of the
// K = N*d projection is fixed for the whole launch: each thread splits its part
// of hc_fn into bf16 hi + lo (+ mid) MMA B fragments ONCE, at kernel start, and
// keeps them in registers (the v5 kernel re-read and re-split hc_fn from L2 for
// every tile: that split was most of its instructions, and the re-read moved
// more bytes through L2 than the residual moved through HBM).
//
// Per tile, in one CTA (W MMA warps + for MhcPre one epilogue warp):
//   * the residual slice arrives by cp.async, S stages deep (tiles it+1..it+S-1
//     are in flight while tile it is computed);
//   * POST (fused boundary): the post update is applied in shared memory, the
//     updated residual is rounded to bf16 there (the bits the unfused pair would
//     read back) and written to residual_out;
//   * tensor-core partial projection + sum of squares, summed over warps in
//     index order, then over the cluster's ranks in rank order through
//     distributed shared memory (the same order in every CTA: bit-identical run
//     to run, no atomics), one cluster barrier per tile (partials are double
//     buffered by tile parity);
//   * pre gates and layer_input (or y) for this CTA's columns from shared memory;
//   * the epilogue warp computes post_mix and the Sinkhorn comb_mix of this
//     rank's tokens while the MMA warps go on with the next tile.
#ifndef MHC_STREAM_CUH
#define MHC_STREAM_CUH

#include <cooperative_groups.h>
#include <stdlib.h>

#include "mhc_fused.cuh"
#include "mhc_switches.h"

// Terms of the bf16 split of hc_fn: 2 (hi + lo, ~16 significant bits, the
// default) or 3 (hi + mid + lo, ~24 bits). Build with -DMHC_STREAM_TERMS=3 to
// compare (docs/journal/kernels_notes.md).
#ifndef MHC_STREAM_TERMS
#define MHC_STREAM_TERMS 2
#endif

namespace mhc {

constexpr int kStreamTerms = MHC_STREAM_TERMS;
static_assert(kStreamTerms == 2 || kStreamTerms == 3, "MHC_STREAM_TERMS is 2 or 3");
constexpr int kStreamTT = 16;        // tokens per tile: one m16 MMA tile
constexpr int kStreamMaxStages = 3;
constexpr int kStreamBRegs = 96;     // register budget for the resident B fragments
constexpr size_t kStreamSmemMax = 227 * 1024;

// MMA warps: 16 warps in all, so that each of the SM's four register banks
// (16K registers) holds 4 warps of 128 registers; 17 warps would cap every
// thread at 96 (5 warps on one bank), too few for the resident B fragments.
__host__ __device__ constexpr int streamWarps(bool head) { return head ? 16 : 15; }
template <int N, bool HEAD>
__host__ __device__ constexpr int streamBRegs(int gw) {
    return FusedGeom<N, HEAD>::NT * 4 * kStreamTerms * gw;
}

struct StreamArgs {
    const __nv_bfloat16* res;   // residual [T][N][d]
    const __nv_bfloat16* x;     // POST: sublayer output [T][d]
    const float* post_in;       // POST: post_mix [T][N]
    const float* comb_in;       // POST: comb_mix [T][N][N]
    __nv_bfloat16* res_out;     // POST: residual_out [T][N][d] (null: not wanted, MhcPostHead)
    const float* fn;
    const float* hc_scale;
    const float* hc_base;
    __nv_bfloat16* out;  // layer_input or y
    float* post_mix;
    float* comb_mix;
    int64_t ntok;
    int64_t tiles;
    int d;
    int ds;        // columns per CTA (multiple of 8)
    int groups;    // 32-element K groups in a CTA's row
    int tstride;   // shared elements per token of the residual stage (>= 32 * groups)
    int xstride;   // POST: shared elements per token of the x stage
    int stages;
    float rms_eps, pre_eps, sinkhorn_eps, post_mult;  // head: pre_eps = eps
    int sinkhorn_iters;
};

// Shared-memory layout, identical in every CTA (remote reads use the offsets).
template <int N, bool HEAD, bool POST>
struct StreamSmem {
    static constexpr int V = FusedGeom<N, HEAD>::V;
    static constexpr int COEF = N + N * N;
    size_t stage_bytes, res_bytes, x_bytes, wpart, red, wts, epi, total;
    __host__ __device__ StreamSmem(int tstride, int xstride, int stages, int warps) {
        res_bytes = size_t(kStreamTT) * tstride * 2;
        x_bytes = POST ? size_t(kStreamTT) * xstride * 2 : 0;
        const size_t coef = POST ? size_t(kStreamTT) * COEF * 4 : 0;
        stage_bytes = (res_bytes + x_bytes + coef + 127) & ~size_t(127);
        wpart = stage_bytes * stages;
        red = wpart + size_t(warps) * kStreamTT * V * 4;
        wts = red + 3 * size_t(kStreamTT) * V * 4;
        epi = wts + size_t(kStreamTT) * N * 4;
        total = epi + (HEAD ? 0 : size_t(kStreamTT) * V * 4);
    }
};

// The release half of the MMA warps' arrival: after a CTA barrier, one thread
// fences at cluster scope (cumulative over the writes the barrier ordered
// before it) and every thread arrives relaxed, so that 480 threads do not each
// wait for their own outstanding global stores (MEMBAR.ALL.GPU per thread).
__device__ __forceinline__ void clusterArriveRelaxed() {
    asm volatile("barrier.cluster.arrive.relaxed;\n" ::: "memory");
}
__device__ __forceinline__ void fenceCluster() {
    asm volatile("fence.acq_rel.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void clusterWait() {
    asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");
}
// Barrier 1: the MMA warps only (the epilogue warp runs its own schedule).
__device__ __forceinline__ void mmaBarrier(int threads) {
    asm volatile("bar.sync 1, %0;\n" ::"r"(threads) : "memory");
}
__device__ __forceinline__ void cpAsync16(void* dst, const void* src) {
    const unsigned s = unsigned(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
}
__device__ __forceinline__ void cpAsync4(void* dst, const void* src) {
    const unsigned s = unsigned(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(src));
}

constexpr int kStreamMaxCluster = 16;

// Sum over the cluster's ranks, in rank order, of the float at `p` (a local
// shared address, the same offset in every CTA). All the remote loads are
// issued before the first add: one distributed-shared-memory latency, not cs.
// (A template: cluster_group exists only where clusters do, sm_90+.)
template <class Cluster>
__device__ __forceinline__ float sumRanks(Cluster& cluster, const float* p, int cs) {
    float v[kStreamMaxCluster];
#pragma unroll
    for (int r = 0; r < kStreamMaxCluster; ++r)
        v[r] = r < cs ? *cluster.map_shared_rank(p, r) : 0.f;
    float s = 0.f;
#pragma unroll
    for (int r = 0; r < kStreamMaxCluster; ++r)
        if (r < cs) s += v[r];
    return s;
}

template <int N, bool HEAD, bool POST, int GW>
__global__ void __launch_bounds__(512, 1)
    streamKernel(const StreamArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    using G = FusedGeom<N, HEAD>;
    using L = StreamSmem<N, HEAD, POST>;
    constexpr int ROWS = G::ROWS, V = G::V, NT = G::NT, TT = kStreamTT;
    constexpr int W = streamWarps(HEAD), MT = W * 32;
    constexpr int COEF = L::COEF;
    extern __shared__ __align__(16) unsigned char smem[];
    cg::cluster_group cluster = cg::this_cluster();
    const int cs = int(cluster.num_blocks());
    const int rank = int(cluster.block_rank());
    const L lay(a.tstride, a.xstride, a.stages, W);
    float* wpart = reinterpret_cast<float*>(smem + lay.wpart);  // [W][TT][V]
    float* red = reinterpret_cast<float*>(smem + lay.red);      // [3][TT][V]
    float* wts = reinterpret_cast<float*>(smem + lay.wts);      // [TT][N]
    float* epi = reinterpret_cast<float*>(smem + lay.epi);      // [TT][V]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int d = a.d, ds = a.ds, S = a.stages;
    const int64_t K = int64_t(N) * d;
    const int cbeg = rank * ds;
    const int clen = max(0, min(ds, d - cbeg));
    const int cid = int(blockIdx.x) / cs, ncl = int(gridDim.x) / cs;
    const int ntiles = a.tiles > cid ? int((a.tiles - 1 - cid) / ncl + 1) : 0;

    // Columns past clen and row padding are never loaded: zero them once, so
    // that zero B fragments never meet NaN bit patterns left in shared memory.
    for (size_t o = size_t(tid) * 16; o < lay.wpart; o += size_t(blockDim.x) * 16)
        *reinterpret_cast<uint4*>(smem + o) = make_uint4(0, 0, 0, 0);
    __syncthreads();

    if (warp == W) {
        // ---- Epilogue warp (MhcPre): post_mix and comb_mix of this rank's tokens.
        if constexpr (!HEAD) {
            clusterArriveRelaxed();
            for (int it = 0; it < ntiles; ++it) {
                const int64_t t0 = (int64_t(cid) + int64_t(it) * ncl) * TT;
                const float* rp = red + (it % 3) * TT * V;
                clusterWait();  // the partials of tile it are complete in every CTA
                for (int tt = rank; tt < TT; tt += cs)
                    for (int m = lane; m < V; m += 32)
                        epi[tt * V + m] = sumRanks(cluster, rp + tt * V + m, cs);
                __syncwarp();
                clusterArriveRelaxed();  // done reading tile it's partials (values consumed)
                const int tt = rank + lane * cs;
                if (tt < TT && t0 + tt < a.ntok) {
                    const int64_t t = t0 + tt;
                    const float* mix = epi + tt * V;
                    const float r = 1.0f / sqrtf(mix[ROWS] / float(K) + a.rms_eps);
                    const float s1 = a.hc_scale[1], s2 = a.hc_scale[2];
#pragma unroll
                    for (int i = 0; i < N; ++i)
                        a.post_mix[t * N + i] =
                            a.post_mult * sigmoidf(mix[N + i] * r * s1 + a.hc_base[N + i]);
                    combFromMixes<N>(mix, r, s2, a.hc_base, a.sinkhorn_iters, a.sinkhorn_eps,
                                     a.comb_mix + t * N * N);
                }
                __syncwarp();
            }
            clusterWait();
        }
        return;
    }

    // ---- MMA warps. Resident B fragments: thread (g, tig) of warp w holds, for
    // group q = w*GW + gi, the 8 hc_fn values of rows nt*8+g at the K vector
    // 4q+tig of this CTA's row; its two MMA k-steps use elements {0..3} and
    // {4..7} of that vector (the same permutation of K as the x fragments).
    uint32_t bhi[GW][NT][4], blo[GW][NT][4];
#if MHC_STREAM_TERMS == 3
    uint32_t bmid[GW][NT][4];
#endif
    const int rowvecs = ds / 8;
#pragma unroll
    for (int gi = 0; gi < GW; ++gi) {
        const int vec = 4 * (warp * GW + gi) + tig;
        const int i = vec / rowvecs, c = (vec - i * rowvecs) * 8;
        const bool valid = warp * GW + gi < a.groups && i < N && c < clen;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int m = nt * 8 + g;
            float4 f0 = make_float4(0.f, 0.f, 0.f, 0.f), f1 = f0;
            if (valid && m < ROWS) {
                const float4* p = reinterpret_cast<const float4*>(a.fn + int64_t(m) * K +
                                                                  int64_t(i) * d + cbeg + c);
                f0 = __ldg(p);
                f1 = __ldg(p + 1);
            }
            const float fv[8] = {f0.x, f0.y, f0.z, f0.w, f1.x, f1.y, f1.z, f1.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float u0 = fv[2 * e], u1 = fv[2 * e + 1];
                bhi[gi][nt][e] = packBf2(u0, u1);
                const float2 h = unpackBf2(bhi[gi][nt][e]);
                const float r0 = u0 - h.x, r1 = u1 - h.y;
#if MHC_STREAM_TERMS == 3
                bmid[gi][nt][e] = packBf2(r0, r1);
                const float2 m2 = unpackBf2(bmid[gi][nt][e]);
                blo[gi][nt][e] = packBf2(r0 - m2.x, r1 - m2.y);
#else
                blo[gi][nt][e] = packBf2(r0, r1);
#endif
            }
        }
    }

    // Loads of one tile into stage s (a commit group even when empty, so that
    // the group count stays uniform).
    auto issue = [&](int it, int s) {
        if (it < ntiles) {
            const int64_t t0 = (int64_t(cid) + int64_t(it) * ncl) * TT;
            unsigned char* st = smem + lay.stage_bytes * s;
            __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(st);
            // A warp per (token, stream) row, lanes along the row: no division.
            for (int row = warp; row < TT * N; row += W) {
                const int tt = row / N, i = row - tt * N;  // N is a constant
                if (t0 + tt >= a.ntok) break;
                const __nv_bfloat16* src = a.res + (t0 + tt) * K + int64_t(i) * d + cbeg;
                __nv_bfloat16* dst = xs + tt * a.tstride + i * ds;
                for (int c = lane * 8; c < clen; c += 256) cpAsync16(dst + c, src + c);
            }
            if constexpr (POST) {
                __nv_bfloat16* xx = reinterpret_cast<__nv_bfloat16*>(st + lay.res_bytes);
                for (int tt = warp; tt < TT && t0 + tt < a.ntok; tt += W)
                    for (int c = lane * 8; c < clen; c += 256)
                        cpAsync16(xx + tt * a.xstride + c, a.x + (t0 + tt) * d + cbeg + c);
                float* coef = reinterpret_cast<float*>(st + lay.res_bytes + lay.x_bytes);
                for (int j = tid; j < TT * COEF; j += MT) {
                    const int tt = j / COEF, k = j - tt * COEF;
                    if (t0 + tt < a.ntok)
                        cpAsync4(coef + j, k < N ? a.post_in + (t0 + tt) * N + k
                                                 : a.comb_in + (t0 + tt) * N * N + (k - N));
                }
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };
    // Schedule (3-way buffered partials): the projection of tile it+1 runs
    // while the cluster barrier of tile it completes; then the gates and the
    // output of tile it, and its stage is refilled with tile it+S.
    for (int s = 0; s < S; ++s) issue(s, s);
    const float s0 = a.hc_scale[0];
    auto project = [&](int it) {  // stage ready, post half, projection, CTA partial
        const int64_t t0 = (int64_t(cid) + int64_t(it) * ncl) * TT;
        unsigned char* st = smem + lay.stage_bytes * (it % S);
        __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(st);
        // Committed groups: S, plus one per finished tile (it - 1 of them).
        const int pending = it == 0 ? S - 1 : S - 2;
        if (pending >= 2) asm volatile("cp.async.wait_group 2;\n" ::: "memory");
        else if (pending == 1) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        else asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        mmaBarrier(MT);
        if constexpr (POST) {
            // residual_out = post * x + comb^T residual, as the MhcPost kernel
            // computes it (same operation order: the same bits), rounded to bf16
            // in place: the projection below reads exactly those bits.
            const __nv_bfloat16* xx = reinterpret_cast<const __nv_bfloat16*>(st + lay.res_bytes);
            const float* coef = reinterpret_cast<const float*>(st + lay.res_bytes + lay.x_bytes);
            for (int j = warp; j < TT * ((clen + 255) / 256); j += W) {
                const int tt = j % TT, c = (j / TT) * 256 + lane * 8;
                if (t0 + tt >= a.ntok || c >= clen) continue;
                const float* cf = coef + tt * COEF;
                uint4 rv[N];
#pragma unroll
                for (int i = 0; i < N; ++i)
                    rv[i] = *reinterpret_cast<const uint4*>(xs + tt * a.tstride + i * ds + c);
                const uint4 xv = *reinterpret_cast<const uint4*>(xx + tt * a.xstride + c);
                __nv_bfloat16* dst = a.res_out + (a.res_out ? (t0 + tt) * K + cbeg + c : 0);
#pragma unroll
                for (int jo = 0; jo < N; ++jo) {
                    const float p = cf[jo];
                    uint32_t ow[4];
                    const uint32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float2 xf = unpackBf2(xw[e]);
                        float o0 = p * xf.x, o1 = p * xf.y;
#pragma unroll
                        for (int i = 0; i < N; ++i) {
                            const uint32_t rw[4] = {rv[i].x, rv[i].y, rv[i].z, rv[i].w};
                            const float2 rf = unpackBf2(rw[e]);
                            const float cij = cf[N + i * N + jo];
                            o0 = fmaf(cij, rf.x, o0);
                            o1 = fmaf(cij, rf.y, o1);
                        }
                        ow[e] = packBf2(o0, o1);
                    }
                    const uint4 o = make_uint4(ow[0], ow[1], ow[2], ow[3]);
                    if (a.res_out) *reinterpret_cast<uint4*>(dst + int64_t(jo) * d) = o;
                    // Written back after every stream's inputs were read (rv holds them).
                    *reinterpret_cast<uint4*>(xs + tt * a.tstride + jo * ds + c) = o;
                }
            }
            mmaBarrier(MT);
        }

        // Partial projection on tensor cores.
        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
        float ss0 = 0.f, ss1 = 0.f;
#pragma unroll
        for (int gi = 0; gi < GW; ++gi) {
            if (warp * GW + gi >= a.groups) continue;  // warp-uniform
            const int vec = 4 * (warp * GW + gi) + tig;
            const uint4 xa0 = *reinterpret_cast<const uint4*>(xs + g * a.tstride + vec * 8);
            const uint4 xa1 = *reinterpret_cast<const uint4*>(xs + (g + 8) * a.tstride + vec * 8);
            const uint32_t wa[4] = {xa0.x, xa0.y, xa0.z, xa0.w};
            const uint32_t wb[4] = {xa1.x, xa1.y, xa1.z, xa1.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float2 p = unpackBf2(wa[e]), q = unpackBf2(wb[e]);
                ss0 = fmaf(p.x, p.x, ss0);
                ss0 = fmaf(p.y, p.y, ss0);
                ss1 = fmaf(q.x, q.x, ss1);
                ss1 = fmaf(q.y, q.y, ss1);
            }
#pragma unroll
            for (int s = 0; s < 2; ++s) {
                const uint32_t a0 = wa[2 * s], a1 = wb[2 * s], a2 = wa[2 * s + 1],
                               a3 = wb[2 * s + 1];
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    mma16816(acc[nt], a0, a1, a2, a3, blo[gi][nt][2 * s], blo[gi][nt][2 * s + 1]);
#if MHC_STREAM_TERMS == 3
                    mma16816(acc[nt], a0, a1, a2, a3, bmid[gi][nt][2 * s],
                             bmid[gi][nt][2 * s + 1]);
#endif
                    mma16816(acc[nt], a0, a1, a2, a3, bhi[gi][nt][2 * s], bhi[gi][nt][2 * s + 1]);
                }
            }
        }
        ss0 += __shfl_xor_sync(0xffffffffu, ss0, 1);
        ss0 += __shfl_xor_sync(0xffffffffu, ss0, 2);
        ss1 += __shfl_xor_sync(0xffffffffu, ss1, 1);
        ss1 += __shfl_xor_sync(0xffffffffu, ss1, 2);
        float* wp = wpart + warp * TT * V;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int tok = g + (e >> 1) * 8, m = nt * 8 + tig * 2 + (e & 1);
                if (m < ROWS) wp[tok * V + m] = acc[nt][e];
            }
        if (tig == 0) {
            wp[g * V + ROWS] = ss0;
            wp[(g + 8) * V + ROWS] = ss1;
        }
        mmaBarrier(MT);

        // CTA partial: the warps' partials summed in index order.
        float* rp = red + (it % 3) * TT * V;
        for (int j = tid; j < TT * V; j += MT) {
            float v[W];
#pragma unroll
            for (int w = 0; w < W; ++w) v[w] = wpart[w * TT * V + j];
            float s = 0.f;
#pragma unroll
            for (int w = 0; w < W; ++w) s += v[w];
            rp[j] = s;
        }
    };
    auto finish = [&](int it) {  // gates and layer_input / y of tile it
        const int64_t t0 = (int64_t(cid) + int64_t(it) * ncl) * TT;
        const __nv_bfloat16* xs =
            reinterpret_cast<const __nv_bfloat16*>(smem + lay.stage_bytes * (it % S));
        // Pre gates of the tile's tokens: ranks summed in rank order.
        const float* rp = red + (it % 3) * TT * V;
        if (tid < TT * N) {
            const int tt = tid / N, i = tid - tt * N;
            const float s = sumRanks(cluster, rp + tt * V + i, cs);
            const float sq = sumRanks(cluster, rp + tt * V + ROWS, cs);
            const float rr = 1.0f / sqrtf(sq / float(K) + a.rms_eps);
            wts[tid] = sigmoidf(s * rr * s0 + a.hc_base[i]) + a.pre_eps;
        }
        mmaBarrier(MT);

        // layer_input / y for this CTA's columns.
        for (int j = warp; j < TT * ((clen + 255) / 256); j += W) {
            const int tt = j % TT, c = (j / TT) * 256 + lane * 8;
            if (t0 + tt >= a.ntok || c >= clen) continue;
            float o[8];
            weightedStreams8<N>(xs + tt * a.tstride + c, ds, wts + tt * N, o);
            store8(a.out + (t0 + tt) * int64_t(d) + cbeg + c, o);
        }
    };
    project(0);
    mmaBarrier(MT);
    if (tid == 0) fenceCluster();
    clusterArriveRelaxed();
    for (int it = 0; it < ntiles; ++it) {
        if (it + 1 < ntiles) project(it + 1);
        clusterWait();  // every CTA's partials of tile it are written
        finish(it);
        mmaBarrier(MT);  // stage it % S fully read; tile it+1's partials written
        issue(it + S, it % S);
        if (tid == 0) fenceCluster();
        clusterArriveRelaxed();  // done reading tile it's partials, tile it+1's are out
    }
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    clusterWait();  // no CTA leaves while another may still read its partials
#else
    __trap();
#endif
}

// ---- Host side -----------------------------------------------------------------
// When the streaming kernel runs (kStreamMinRow, MHC_STREAM, MHC_STREAM_MIN_T):
// mhc_switches.h.

struct StreamPlan {
    int cs, ds, groups, gw, tstride, xstride, stages;
    size_t smem;
};

// Cluster size 16 (one CTA per SM: 8 clusters on an H100), columns per CTA a
// multiple of 8, the fewest K groups per warp that cover a CTA's row within the
// register budget, and 3 stages where shared memory allows (2 otherwise).
template <int N, bool HEAD, bool POST>
inline bool streamPlan(int d, StreamPlan& p) {
    p.cs = kStreamMaxCluster;
    p.ds = int(ceilDiv(ceilDiv(d, 8), p.cs)) * 8;
    p.groups = int(ceilDiv(int64_t(N) * p.ds, 32));
    p.gw = 0;
    for (int gw = 1; gw <= 4; ++gw) {
        if (streamBRegs<N, HEAD>(gw) > kStreamBRegs) break;
        if (p.groups <= streamWarps(HEAD) * gw) {
            p.gw = gw;
            break;
        }
    }
    if (p.gw == 0) return false;
    p.tstride = fusedTstride(1, p.groups * 32);
    p.xstride = fusedTstride(1, p.ds);
    for (p.stages = kStreamMaxStages; p.stages >= 2; --p.stages) {
        StreamSmem<N, HEAD, POST> lay(p.tstride, p.xstride, p.stages, streamWarps(HEAD));
        p.smem = lay.total;
        if (p.smem <= kStreamSmemMax) return true;
    }
    return false;
}

template <int N, bool HEAD, bool POST, int GW>
inline int launchStreamGw(StreamArgs a, const StreamPlan& p, cudaStream_t stream) {
    if constexpr (streamBRegs<N, HEAD>(GW) > kStreamBRegs) {
        return 0;
    } else {
        auto kern = streamKernel<N, HEAD, POST, GW>;
        constexpr int threads = 512;  // MMA warps + the epilogue warp (MhcPre)
        static std::atomic<size_t> smem_set[kMaxCachedDevices] = {};
        static std::atomic<int> clusters_fit[kMaxCachedDevices] = {};  // 0: unknown
        const int dev = currentDevice();
        const bool cached = dev >= 0 && dev < kMaxCachedDevices;
        if (!cached || p.smem > smem_set[dev].load(std::memory_order_relaxed)) {
            if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     int(kStreamSmemMax)) != cudaSuccess ||
                cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
                    cudaSuccess) {
                cudaGetLastError();
                return 0;
            }
            if (cached) smem_set[dev].store(kStreamSmemMax, std::memory_order_relaxed);
        }
        a.ds = p.ds;
        a.groups = p.groups;
        a.tstride = p.tstride;
        a.xstride = p.xstride;
        a.stages = p.stages;
        a.tiles = ceilDiv(a.ntok, kStreamTT);
        cudaLaunchConfig_t cfg = {};
        cfg.blockDim = dim3(threads);
        cfg.dynamicSmemBytes = p.smem;
        cfg.stream = stream;
        cudaLaunchAttribute attr[1];
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = unsigned(p.cs);
        attr[0].val.clusterDim.y = 1;
        attr[0].val.clusterDim.z = 1;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        // Persistent grid: as many clusters as fit at once (asked once per
        // device; a kernel that does not fit takes the v5 path).
        int fit = cached ? clusters_fit[dev].load(std::memory_order_relaxed) : 0;
        if (fit == 0) {
            cfg.gridDim = dim3(unsigned(p.cs));
            cudaLaunchConfig_t q = cfg;
            q.dynamicSmemBytes = kStreamSmemMax;  // the most any call asks for
            if (cudaOccupancyMaxActiveClusters(&fit, kern, &q) != cudaSuccess) {
                cudaGetLastError();
                fit = -1;
            }
            if (fit == 0) fit = -1;
            if (cached) clusters_fit[dev].store(fit, std::memory_order_relaxed);
        }
        if (fit < 0) return 0;
        const int64_t ncl = a.tiles < fit ? a.tiles : fit;
        cfg.gridDim = dim3(unsigned(ncl * p.cs));
        cudaLaunchKernelEx(&cfg, kern, a);
        return checkLaunch("mhc streaming cluster kernel") == MHC_STATUS_SUCCESS ? 1 : -1;
    }
}

// Arguments of the plain ops (no post half; the boundary adds x, the mixes and
// residual_out). The head is the pre without post/comb: its eps is the gates' eps.
inline StreamArgs headStreamArgs(const __nv_bfloat16* res, const float* fn, const float* hc_scale,
                                 const float* hc_base, __nv_bfloat16* y, int64_t ntok, int d,
                                 const mhcHeadParams& p) {
    StreamArgs a = {};
    a.res = res;
    a.fn = fn;
    a.hc_scale = hc_scale;
    a.hc_base = hc_base;
    a.out = y;
    a.ntok = ntok;
    a.d = d;
    a.rms_eps = p.rms_eps;
    a.pre_eps = p.eps;
    return a;
}
inline StreamArgs preStreamArgs(const __nv_bfloat16* res, const float* fn, const float* hc_scale,
                                const float* hc_base, __nv_bfloat16* layer_input,
                                float* post_mix, float* comb_mix, int64_t ntok, int d,
                                const mhcPreParams& p) {
    StreamArgs a = headStreamArgs(res, fn, hc_scale, hc_base, layer_input, ntok, d,
                                  mhcHeadParams{p.rms_eps, p.pre_eps});
    a.post_mix = post_mix;
    a.comb_mix = comb_mix;
    a.sinkhorn_eps = p.sinkhorn_eps;
    a.post_mult = p.post_mult;
    a.sinkhorn_iters = p.sinkhorn_iters;
    return a;
}

// Launches the streaming kernel when it applies: 1 launched, 0 the caller uses
// another path, -1 after recording a launch failure.
template <int N, bool HEAD, bool POST>
inline int launchStream(const StreamArgs& a, cudaStream_t stream) {
    const int mode = streamMode();
    if (mode == 0 || a.ntok < streamMinT() || deviceCcMajor() < 9) return 0;
    StreamPlan p;
    if (!streamPlan<N, HEAD, POST>(a.d, p)) return 0;
    if (mode < 0 && N * p.ds < kStreamMinRow) return 0;
    // The single-pass boundary (POST) fits only 2 stages at d=7168 and measured
    // slower than MhcPost + the streaming MhcPre there (468 vs 451 us at
    // T=4096, docs/journal/kernels_notes.md v6): it runs only when forced.
    if (mode < 0 && POST) return 0;
    switch (p.gw) {
        case 1: return launchStreamGw<N, HEAD, POST, 1>(a, p, stream);
        case 2: return launchStreamGw<N, HEAD, POST, 2>(a, p, stream);
        case 3: return launchStreamGw<N, HEAD, POST, 3>(a, p, stream);
        default: return launchStreamGw<N, HEAD, POST, 4>(a, p, stream);
    }
}

}  // namespace mhc

#endif  // MHC_STREAM_CUH
