// Prefill MhcPre / MhcHead / MhcPostPre for bfloat16 residuals (issue 22,
// docs/journal/prefill_kernels.md): a projection pass on tensor cores and a
// finish pass, over all T at once (two-pass) or chunk by chunk (chunked), so
// that the finish of a chunk reads its residual from L2 instead of DRAM.
//
// One kernel, two roles per CTA, chosen by blockIdx.x:
//  * finish (blockIdx.x < nf): ft tokens of chunk `fchunk`: the split partials
//    summed in split order, rms scale, gates, Sinkhorn (one lane per token of
//    the last warp), layer_input / y = sum_i w_i * residual_i (residual_out for
//    the boundary, written by the projection of the launch before);
//  * projection (the rest): tt tokens x kr slices of K of chunk `pchunk`. A
//    slice is 512 elements of K: columns [r*CW, r*CW + CW) of every stream
//    (CW = 512 / n), so that the boundary (POST) can apply the post update to
//    the n streams of a column in shared memory, write residual_out and project
//    the rounded bits. Warp w owns 64 elements of the slice; its hc_fn fragments
//    (split into three bf16 terms hi + mid + lo, ~24 bits, in registers) meet 16
//    tokens at a time staged by cp.async (a few stages deep); the sum of squares
//    comes from the same A fragments. Warps' partials are summed in warp order,
//    slices in slice order: partials [split][token][rows + 1] in the workspace.
// The chunked path launches [P(0)], [P(1) F(0)], ..., [F(C-1)]: the projection
// of chunk c+1 and the finish of chunk c run side by side, the finish reading
// chunk c from L2 soon after the projection brought it in. Launches after the
// first are PDL-chained: finish CTAs wait for the launch before (griddepcontrol)
// and then release the next launch, whose projection CTAs start as soon as this
// launch's projection CTAs have exited. Partials are triple buffered by chunk:
// a launch starts only after the launch two before it completed (the finish
// CTAs of the launch before waited for it), so a buffer is never overwritten
// while read. No atomics: every sum has a fixed order (bit-identical run to run).
#ifndef MHC_PREFILL_CUH
#define MHC_PREFILL_CUH

#include <stdlib.h>
#include <string.h>

#include "mhc_decode.cuh"
#include "mhc_fused.cuh"
#include "mhc_switches.h"

namespace mhc {

constexpr int kPfWarps = 8;
constexpr int kPfThreads = kPfWarps * 32;
constexpr int kPfSlice = 512;            // K elements per slice: 8 warps x 64
constexpr int kPfStride = kPfSlice + 8;  // smem row: 1040 B, ldmatrix rows on distinct banks
constexpr int kPfTok = 16;               // tokens per stage: one m16 MMA tile

template <int N, bool HEAD>
struct PfGeom {
    static constexpr int ROWS = HEAD ? N : (2 + N) * N;
    static constexpr int V = ROWS + 1;  // + sum of squares
    static constexpr int NT = (ROWS + 7) / 8;
    static constexpr int CW = kPfSlice / N;  // columns of each stream in a slice
    static constexpr int COEF = N + N * N;   // POST: post_mix and comb_mix of a token
    // A warp's 64 elements lie in one stream; 3 terms x NT x 4 k-steps x 2
    // registers of B fragments (<= 72) leave room under 128 registers.
    static constexpr bool OK = kPfSlice % N == 0 && CW % 64 == 0 && NT <= 3;
};

struct PfArgs {
    const __nv_bfloat16* res;  // residual [T][N][d]
    const __nv_bfloat16* x;    // POST: sublayer output [T][d]
    const float* post_in;      // POST: post_mix [T][N]
    const float* comb_in;      // POST: comb_mix [T][N][N]
    __nv_bfloat16* res_out;    // POST: residual_out [T][N][d]
    const float* fn;
    const float* hc_scale;
    const float* hc_base;
    __nv_bfloat16* out;  // layer_input or y
    float* post_mix;
    float* comb_mix;
    float* part;        // workspace: nbuf buffers of [splits][ct][V]
    int64_t ntok;
    int64_t ct;         // tokens per chunk (a multiple of 16 and of ft)
    int64_t part_buf;   // floats per partial buffer
    int d;
    int slices;         // K / kPfSlice
    int tt, kr, splits, ft, nbuf, stages;
    int pdl;            // 2: projection CTAs release the next launch once their loads are out
    int hints;          // L2 eviction hints (pfPolicy)
    float rms_eps, pre_eps, sinkhorn_eps, post_mult;  // head: pre_eps = eps
    int sinkhorn_iters;
};

// Shared memory of a projection CTA (the finish role uses its first bytes).
template <int N, bool HEAD, bool POST>
struct PfSmem {
    size_t res_bytes, x_bytes, stage_bytes, redw, pc, total;
    __host__ __device__ PfSmem(int stages, int tt) {
        using G = PfGeom<N, HEAD>;
        res_bytes = size_t(kPfTok) * kPfStride * 2;
        x_bytes = POST ? size_t(kPfTok) * (G::CW + 8) * 2 : 0;
        const size_t coef = POST ? size_t(kPfTok) * G::COEF * 4 : 0;
        stage_bytes = (res_bytes + x_bytes + coef + 127) & ~size_t(127);
        redw = stage_bytes * stages;
        pc = redw + size_t(2) * kPfWarps * kPfTok * G::V * 4;
        total = pc + size_t(tt) * G::V * 4;
    }
};

// 16-byte / 4-byte async copies; an invalid source fills zeros (src-size 0).
__device__ __forceinline__ void pfCopy16(void* dst, const void* src, bool valid) {
    const unsigned s = unsigned(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
// L2 eviction hints (a.hints): the projection's residual loads evict_last, so a
// chunk waits in L2 for its finish; the finish's residual loads and its output
// stores evict_first (their last use), so they leave before the waiting chunk.
__device__ __forceinline__ uint64_t pfPolicy(bool last) {
    uint64_t p;
    if (last) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(p));
    else asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ void pfCopy16Hint(void* dst, const void* src, bool valid, uint64_t pol) {
    const unsigned s = unsigned(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(s),
                 "l"(src), "r"(valid ? 16 : 0), "l"(pol)
                 : "memory");
}
__device__ __forceinline__ uint4 pfLoadHint(const void* p, uint64_t pol) {
    uint4 u;
    asm volatile("ld.global.cg.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;\n"
                 : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w)
                 : "l"(p), "l"(pol));
    return u;
}
__device__ __forceinline__ void pfStoreHint(void* p, const uint4& u, uint64_t pol) {
    asm volatile("st.global.L2::cache_hint.v4.u32 [%0], {%1,%2,%3,%4}, %5;\n" ::"l"(p), "r"(u.x),
                 "r"(u.y), "r"(u.z), "r"(u.w), "l"(pol)
                 : "memory");
}

__device__ __forceinline__ void pfCopy4(void* dst, const void* src, bool valid) {
    const unsigned s = unsigned(__cvta_generic_to_shared(dst));
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src),
                 "r"(valid ? 4 : 0)
                 : "memory");
}
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* p) {
    const unsigned s = unsigned(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
}
// mma16816 without `volatile`: the compiler may interleave independent MMAs and
// the loads around them (a pure function of its operands).
__device__ __forceinline__ void pfMma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                      uint32_t a3, uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void unpack8(const uint4& u, float (&v)[8]) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const float2 f = unpackBf2(w[e]);
        v[2 * e] = f.x;
        v[2 * e + 1] = f.y;
    }
}

// ---- Projection role -------------------------------------------------------------

template <int N, bool HEAD, bool POST>
__device__ __forceinline__ void pfProject(const PfArgs& a, int chunk, int pb,
                                          unsigned char* smem) {
    using G = PfGeom<N, HEAD>;
    constexpr int ROWS = G::ROWS, V = G::V, NT = G::NT, CW = G::CW, COEF = G::COEF;
    const PfSmem<N, HEAD, POST> lay(a.stages, a.tt);
    float* redw = reinterpret_cast<float*>(smem + lay.redw);  // [2][warps][16][V]
    float* pc = reinterpret_cast<float*>(smem + lay.pc);      // [tt][V]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int64_t K = int64_t(N) * a.d;
    const int64_t cbeg = int64_t(chunk) * a.ct;
    const int64_t cend = cbeg + a.ct < a.ntok ? cbeg + a.ct : a.ntok;
    const int tiles = int((cend - cbeg + a.tt - 1) / a.tt);
    const int tile = pb % tiles, split = pb / tiles;
    const int64_t t0 = cbeg + int64_t(tile) * a.tt;
    const int ntt = int(cend - t0 < a.tt ? cend - t0 : a.tt);
    const int mtiles = (ntt + kPfTok - 1) / kPfTok;
    const int s0 = split * a.kr;
    const int ns = a.slices - s0 < a.kr ? a.slices - s0 : a.kr;
    const int Q = ns * mtiles, S = a.stages;

    const uint64_t keep = a.hints ? pfPolicy(true) : 0;
    // Stage q: tokens t0 + (q % mtiles) * 16 .. +15 of slice s0 + q / mtiles.
    auto issue = [&](int q) {
        if (q < Q) {
            const int r = s0 + q / mtiles;
            const int64_t tb = t0 + int64_t(q % mtiles) * kPfTok;
            unsigned char* st = smem + lay.stage_bytes * (q % S);
            __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(st);
            constexpr int VPR = kPfSlice / 8;
            for (int j = tid; j < kPfTok * VPR; j += kPfThreads) {
                const int row = j / VPR, e = (j % VPR) * 8;
                const int i = e / CW, c = e % CW;
                const bool ok = tb + row < cend;
                const __nv_bfloat16* src =
                    a.res + (ok ? (tb + row) * K + int64_t(i) * a.d + int64_t(r) * CW + c : 0);
                if (a.hints) pfCopy16Hint(xs + row * kPfStride + e, src, ok, keep);
                else pfCopy16(xs + row * kPfStride + e, src, ok);
            }
            if constexpr (POST) {
                __nv_bfloat16* xx = reinterpret_cast<__nv_bfloat16*>(st + lay.res_bytes);
                constexpr int XV = CW / 8;
                for (int j = tid; j < kPfTok * XV; j += kPfThreads) {
                    const int row = j / XV, c = (j % XV) * 8;
                    const bool ok = tb + row < cend;
                    pfCopy16(xx + row * (CW + 8) + c,
                             a.x + (ok ? (tb + row) * a.d + int64_t(r) * CW + c : 0), ok);
                }
                float* coef = reinterpret_cast<float*>(st + lay.res_bytes + lay.x_bytes);
                for (int j = tid; j < kPfTok * COEF; j += kPfThreads) {
                    const int row = j / COEF, k = j % COEF;
                    const bool ok = tb + row < cend;
                    const float* src = !ok     ? a.post_in
                                       : k < N ? a.post_in + (tb + row) * N + k
                                               : a.comb_in + (tb + row) * N * N + (k - N);
                    pfCopy4(coef + j, src, ok);
                }
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };

    // B fragments of slice r: thread (g, tig) of warp w holds, for k-step ks and
    // n-tile nt, hc_fn[nt*8 + g][K of slice element 64w + 16ks + {2tig, 2tig+1}]
    // (h = 0) and {8 + 2tig, 9 + 2tig} (h = 1), as hi / mid / lo bf16 pairs.
    uint32_t bhi[4][NT][2], bmid[4][NT][2], blo[4][NT][2];
    auto loadB = [&](int r) {
        const int kb = warp * 64;
        const int64_t col = int64_t(kb / CW) * a.d + int64_t(r) * CW + (kb % CW) + 2 * tig;
#pragma unroll
        for (int ks = 0; ks < 4; ++ks)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int m = nt * 8 + g;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float2 f = make_float2(0.f, 0.f);
                    if (m < ROWS)
                        f = __ldg(reinterpret_cast<const float2*>(a.fn + int64_t(m) * K + col +
                                                                  ks * 16 + h * 8));
                    const uint32_t hi = packBf2(f.x, f.y);
                    const float2 hf = unpackBf2(hi);
                    const float r0 = f.x - hf.x, r1 = f.y - hf.y;
                    const uint32_t mid = packBf2(r0, r1);
                    const float2 mf = unpackBf2(mid);
                    bhi[ks][nt][h] = hi;
                    bmid[ks][nt][h] = mid;
                    blo[ks][nt][h] = packBf2(r0 - mf.x, r1 - mf.y);
                }
            }
    };

    // POST: residual_out of stage q, as the MhcPost kernel computes it (postVector's
    // operation order per element: the same bits), written to global memory and,
    // rounded, over the stage. Two columns at a time, so that the B fragments
    // stay in registers (eight at a time spilled them).
    auto postStage = [&](int q) {
        if constexpr (POST) {
            const int r = s0 + q / mtiles;
            const int64_t tb = t0 + int64_t(q % mtiles) * kPfTok;
            unsigned char* st = smem + lay.stage_bytes * (q % S);
            __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(st);
            const __nv_bfloat16* xx = reinterpret_cast<const __nv_bfloat16*>(st + lay.res_bytes);
            const float* coef = reinterpret_cast<const float*>(st + lay.res_bytes + lay.x_bytes);
            constexpr int XV = CW / 2;
            for (int j = tid; j < kPfTok * XV; j += kPfThreads) {
                const int row = j / XV, c = (j % XV) * 2;
                if (tb + row >= cend) continue;
                const float* cf = coef + row * COEF;
                float2 rv[N];
#pragma unroll
                for (int i = 0; i < N; ++i)
                    rv[i] = unpackBf2(*reinterpret_cast<const uint32_t*>(xs + row * kPfStride + i * CW + c));
                const float2 xv = unpackBf2(*reinterpret_cast<const uint32_t*>(xx + row * (CW + 8) + c));
                __nv_bfloat16* dst = a.res_out + (tb + row) * K + int64_t(r) * CW + c;
#pragma unroll
                for (int jo = 0; jo < N; ++jo) {
                    const float pj = cf[jo];
                    float o0 = pj * xv.x, o1 = pj * xv.y;
#pragma unroll
                    for (int i = 0; i < N; ++i) {
                        const float cij = cf[N + i * N + jo];
                        o0 = fmaf(cij, rv[i].x, o0);
                        o1 = fmaf(cij, rv[i].y, o1);
                    }
                    const uint32_t u = packBf2(o0, o1);
                    *reinterpret_cast<uint32_t*>(dst + int64_t(jo) * a.d) = u;
                    *reinterpret_cast<uint32_t*>(xs + row * kPfStride + jo * CW + c) = u;
                }
            }
        }
    };

    // Tensor-core partial projection of stage q by this warp into redw[q & 1][warp].
    auto mmaStage = [&](int q) {
        const __nv_bfloat16* xs =
            reinterpret_cast<const __nv_bfloat16*>(smem + lay.stage_bytes * (q % S));
        const __nv_bfloat16* arow = xs + (lane & 15) * kPfStride + warp * 64 + (lane >> 4) * 8;
        float acc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
        float ss0 = 0.f, ss1 = 0.f;  // tokens g and g + 8
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
            uint32_t af[4];
            ldmatrixX4(af, arow + ks * 16);
            const float2 p0 = unpackBf2(af[0]), p1 = unpackBf2(af[1]), p2 = unpackBf2(af[2]),
                         p3 = unpackBf2(af[3]);
            ss0 = fmaf(p0.x, p0.x, ss0);
            ss0 = fmaf(p0.y, p0.y, ss0);
            ss0 = fmaf(p2.x, p2.x, ss0);
            ss0 = fmaf(p2.y, p2.y, ss0);
            ss1 = fmaf(p1.x, p1.x, ss1);
            ss1 = fmaf(p1.y, p1.y, ss1);
            ss1 = fmaf(p3.x, p3.x, ss1);
            ss1 = fmaf(p3.y, p3.y, ss1);
            // Term-major: consecutive MMAs go to different accumulators, so they
            // overlap instead of waiting on each other's results.
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
                pfMma(acc[nt], af[0], af[1], af[2], af[3], blo[ks][nt][0], blo[ks][nt][1]);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
                pfMma(acc[nt], af[0], af[1], af[2], af[3], bmid[ks][nt][0], bmid[ks][nt][1]);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
                pfMma(acc[nt], af[0], af[1], af[2], af[3], bhi[ks][nt][0], bhi[ks][nt][1]);
        }
        ss0 += __shfl_xor_sync(0xffffffffu, ss0, 1);
        ss0 += __shfl_xor_sync(0xffffffffu, ss0, 2);
        ss1 += __shfl_xor_sync(0xffffffffu, ss1, 1);
        ss1 += __shfl_xor_sync(0xffffffffu, ss1, 2);
        float* w = redw + ((q & 1) * kPfWarps + warp) * kPfTok * V;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int tok = g + (e >> 1) * 8, m = nt * 8 + tig * 2 + (e & 1);
                if (m < ROWS) w[tok * V + m] = acc[nt][e];
            }
        if (tig == 0) {
            w[g * V + ROWS] = ss0;
            w[(g + 8) * V + ROWS] = ss1;
        }
    };

    // The warps' partials of stage q, summed in warp order, into the CTA's
    // partial (slices added in slice order).
    auto reduce = [&](int q) {
        const float* w = redw + (q & 1) * kPfWarps * kPfTok * V;
        float* o = pc + (q % mtiles) * kPfTok * V;
        const bool first = q < mtiles;
        for (int j = tid; j < kPfTok * V; j += kPfThreads) {
            float v[kPfWarps];
#pragma unroll
            for (int k = 0; k < kPfWarps; ++k) v[k] = w[k * kPfTok * V + j];
            float s = 0.f;
#pragma unroll
            for (int k = 0; k < kPfWarps; ++k) s += v[k];
            o[j] = first ? s : o[j] + s;
        }
    };

    for (int s = 0; s < S - 1; ++s) issue(s);
    for (int q = 0; q < Q; ++q) {
        if (q % mtiles == 0) loadB(s0 + q / mtiles);
        waitGroupsLeft(S - 2);  // stage q has landed (this thread's copies)
        __syncthreads();        // ... everyone's; stage q-1 and redw[(q+1) & 1] are free
        issue(q + S - 1);
        // pdl == 2: every load of this CTA is in flight; let the next launch's
        // CTAs take the SM slots of this launch's tail (PDL's condition needs
        // every CTA of this launch; the finish CTAs have passed their wait).
        if (a.pdl == 2 && q == (Q > S ? Q - S : 0)) pdlLaunchDependents();
        if constexpr (POST) {
            postStage(q);
            __syncthreads();
        }
        if (q > 0) reduce(q - 1);
        mmaStage(q);
    }
    __syncthreads();
    if (Q > 0) reduce(Q - 1);
    __syncthreads();
    float* part = a.part + int64_t(chunk % a.nbuf) * a.part_buf +
                  (int64_t(split) * a.ct + (t0 - cbeg)) * V;
    for (int j = tid; j < ntt * V; j += kPfThreads) part[j] = pc[j];
}

// ---- Finish role -----------------------------------------------------------------

// Residual vectors of the finish loop in flight per thread (16 16-byte loads:
// 4 vectors of 4 streams): one L2 round trip per few vectors, not per vector.
constexpr int pfFinUnroll(int n) { return n <= 4 ? 4 : 2; }

template <int N, bool HEAD, bool POST>
__device__ __forceinline__ void pfFinish(const PfArgs& a, int chunk, int fb, unsigned char* smem) {
    using G = PfGeom<N, HEAD>;
    constexpr int ROWS = G::ROWS, V = G::V, U = pfFinUnroll(N);
    const int ft = a.ft, tid = threadIdx.x;
    float* mix = reinterpret_cast<float*>(smem);  // [ft][V]
    float* wts = mix + ft * V;                    // [ft][N]
    float* scratch = wts + ft * N;                // [kPfThreads]
    const int64_t cbeg = int64_t(chunk) * a.ct;
    const int64_t cend = cbeg + a.ct < a.ntok ? cbeg + a.ct : a.ntok;
    const int64_t t0 = cbeg + int64_t(fb) * ft;
    const int nft = int(cend - t0 < ft ? cend - t0 : ft);
    // MhcPre: the last warp computes post_mix and the Sinkhorn comb_mix (one lane
    // per token) while the other warps write layer_input.
    const int workers = HEAD ? kPfThreads : kPfThreads - 32;
    // POST: residual_out was written by the launch before (complete and visible
    // after griddepcontrol.wait); every source is read through L2.
    const __nv_bfloat16* src = POST ? a.res_out : a.res;
    const int vecs = a.d / 8, total = nft * vecs;
    uint4 u[U][N];
    const uint64_t drop = a.hints ? pfPolicy(false) : 0;
    auto load = [&](int vb) {
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int v = vb + k * workers;
            if (v < total) {
                const int j = v / vecs, c = (v - j * vecs) * 8;
                const __nv_bfloat16* xt = src + (t0 + j) * int64_t(N) * a.d + c;
#pragma unroll
                for (int ii = 0; ii < N; ++ii)
                    u[k][ii] = a.hints ? pfLoadHint(xt + int64_t(ii) * a.d, drop)
                                       : __ldcg(reinterpret_cast<const uint4*>(xt + int64_t(ii) * a.d));
            }
        }
    };
    if (tid < workers) load(tid);  // in flight during the split sums below

    // The ft tokens' values are contiguous in each split: value i (< ft * V) is
    // summed by group grp over the splits grp, grp + G2, ... in ascending order,
    // 16 L2 loads in flight; then the groups in group order.
    const float* part = a.part + int64_t(chunk % a.nbuf) * a.part_buf + (t0 - cbeg) * V;
    const int nv = ft * V;
    int vp = 32;
    while (vp < nv) vp <<= 1;
    const int G2 = kPfThreads / vp, i = tid % vp, grp = tid / vp;
    float s = 0.f;
    if (i < nv) {
        const int64_t step = a.ct * V;
        for (int k = grp; k < a.splits; k += 16 * G2) {
            float v[16];
#pragma unroll
            for (int j = 0; j < 16; ++j)
                v[j] = k + j * G2 < a.splits ? __ldcg(part + int64_t(k + j * G2) * step + i) : 0.f;
#pragma unroll
            for (int j = 0; j < 16; ++j) s += v[j];
        }
    }
    scratch[tid] = s;
    __syncthreads();
    if (tid < nv) {
        float r = 0.f;
        for (int q = 0; q < G2; ++q) r += scratch[q * vp + tid];
        mix[tid] = r;
    }
    __syncthreads();
    const float Kf = float(N) * float(a.d);
    if (tid < nft * N) {
        const int j = tid / N, ii = tid % N;
        const float* m = mix + j * V;
        const float rr = 1.0f / sqrtf(m[ROWS] / Kf + a.rms_eps);
        wts[tid] = sigmoidf(m[ii] * rr * a.hc_scale[0] + a.hc_base[ii]) + a.pre_eps;
    }
    __syncthreads();
    if constexpr (!HEAD) {
        if (tid >= workers) {
            const int j = tid - workers;
            if (j < nft) {
                const int64_t t = t0 + j;
                const float* m = mix + j * V;
                const float rr = 1.0f / sqrtf(m[ROWS] / Kf + a.rms_eps);
                const float s1 = a.hc_scale[1], s2 = a.hc_scale[2];
#pragma unroll
                for (int ii = 0; ii < N; ++ii)
                    a.post_mix[t * N + ii] =
                        a.post_mult * sigmoidf(m[N + ii] * rr * s1 + a.hc_base[N + ii]);
                combFromMixes<N>(m, rr, s2, a.hc_base, a.sinkhorn_iters, a.sinkhorn_eps,
                                 a.comb_mix + t * N * N);
            }
            return;
        }
    }
    for (int vb = tid; vb < total; vb += U * workers) {
        if (vb != tid) load(vb);
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int v = vb + k * workers;
            if (v >= total) break;
            const int j = v / vecs, c = (v - j * vecs) * 8;
            float o[8];
#pragma unroll
            for (int e = 0; e < 8; ++e) o[e] = 0.f;
#pragma unroll
            for (int ii = 0; ii < N; ++ii) {
                float xv[8];
                unpack8(u[k][ii], xv);
                const float w = wts[j * N + ii];
#pragma unroll
                for (int e = 0; e < 8; ++e) o[e] = fmaf(w, xv[e], o[e]);
            }
            __nv_bfloat16* dst = a.out + (t0 + j) * int64_t(a.d) + c;
            if (a.hints) {
                uint4 w;
                w.x = packBf2(o[0], o[1]);
                w.y = packBf2(o[2], o[3]);
                w.z = packBf2(o[4], o[5]);
                w.w = packBf2(o[6], o[7]);
                pfStoreHint(dst, w, drop);
            } else {
                store8(dst, o);
            }
        }
    }
}

template <int N, bool HEAD, bool POST>
__global__ void __launch_bounds__(kPfThreads, 2)
    prefillKernel(const PfArgs a, int pchunk, int fchunk, int nf) {
    extern __shared__ __align__(128) unsigned char smem[];
    if (int(blockIdx.x) < nf) {
        // The projection of this chunk ran in the launch before: wait for it
        // (and, transitively, every launch before), then let the next launch go.
        pdlWait();
        pdlLaunchDependents();
        pfFinish<N, HEAD, POST>(a, fchunk, int(blockIdx.x), smem);
    } else {
        pfProject<N, HEAD, POST>(a, pchunk, int(blockIdx.x) - nf, smem);
    }
}

// ---- Host side -------------------------------------------------------------------

struct PfPlan {
    int path = kPfLegacy;
    int tt = 128, ft = 4, kr = 1, splits = 1, nbuf = 1, stages = 4, pdl = 0, hints = 0;
    int64_t ct = 0, chunks = 0;
    size_t smem = 0, ws = 0;
};

inline int deviceAttr(cudaDeviceAttr attr, std::atomic<int>* cache) {
    const int dev = currentDevice();
    if (dev < 0) return 0;
    int v = dev < kMaxCachedDevices ? cache[dev].load(std::memory_order_relaxed) : 0;
    if (v == 0) {
        if (cudaDeviceGetAttribute(&v, attr, dev) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (dev < kMaxCachedDevices) cache[dev].store(v, std::memory_order_relaxed);
    }
    return v;
}
inline int64_t deviceL2Bytes() {
    static std::atomic<int> cache[kMaxCachedDevices] = {};
    return deviceAttr(cudaDevAttrL2CacheSize, cache);
}
inline int deviceSMs() {
    static std::atomic<int> cache[kMaxCachedDevices] = {};
    return deviceAttr(cudaDevAttrMultiProcessorCount, cache);
}

// Its switches (MHC_PREFILL, MHC_PREFILL_*) and its table: mhc_switches.h.
inline int64_t roundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The table's row for this call, or a default row when a path is forced.
inline bool prefillRule(int family, int n, int64_t T, int d, PrefillRule& out) {
    const PfEnv& env = prefillEnv();
    if (env.mode == kPfLegacy) return false;
    const int cc = deviceCcMajor();
    bool found = false;
    for (const PrefillRule& r : kPrefillRules) {
        if (r.family == family && cc >= r.cc_min && n >= r.n_min && n <= r.n_max &&
            T >= r.t_min && T <= r.t_max && d >= r.d_min && d <= r.d_max) {
            out = r;
            found = true;
            break;
        }
    }
    if (env.mode < 0 && !found) return false;
    if (!found) out = PrefillRule{family, 8, n, n, 1, INT64_MAX, 8, 1 << 24, env.mode, 128,
                                  family == kPfFamHead ? 16 : 4, 1, 0.25f, 2, 1, 1};
    if (env.mode >= 0) out.path = env.mode;
    if (env.l2_frac > 0.f) out.l2_frac = env.l2_frac;
    if (env.tt >= 16 && env.tt % 16 == 0) out.tt = env.tt;
    if (env.ft > 0) out.ft = env.ft;
    if (env.kr > 0) out.kr = env.kr;
    if (env.pdl >= 0) out.pdl = env.pdl;
    if (env.hints >= 0) out.hints = env.hints;
    return out.path != kPfLegacy;
}

// Partial-buffer geometry of a call (T tokens); false where the path does not apply.
template <int N, bool HEAD, bool POST>
inline bool prefillPlan(int64_t T, int d, const PrefillRule& r, PfPlan& p) {
    using G = PfGeom<N, HEAD>;
    if constexpr (!G::OK) {
        return false;
    } else {
        if (T < 1 || d % G::CW != 0 || r.ft < 1 || r.ft * G::V > kPfThreads) return false;
        const int slices = N * d / kPfSlice;
        p.path = r.path;
        p.tt = r.tt;
        p.ft = r.ft;
        p.pdl = r.pdl;
        p.hints = r.hints;
        p.stages = POST ? 3 : 4;
        int64_t unit = 16;  // chunks and finish groups: a multiple of 16 and of ft
        while (unit % r.ft != 0) unit += 16;
        if (r.path == kPfChunked) {
            const int64_t per_tok = int64_t(N) * d * 2;
            int64_t cmax = int64_t(double(deviceL2Bytes()) * r.l2_frac / double(per_tok));
            cmax = cmax / unit * unit;
            if (cmax < unit) cmax = unit;
            p.chunks = (T + cmax - 1) / cmax;
            p.ct = roundUp((T + p.chunks - 1) / p.chunks, unit);
            p.kr = r.kr < 1 ? 1 : (r.kr > slices ? slices : r.kr);
            p.splits = (slices + p.kr - 1) / p.kr;
            p.nbuf = p.chunks < 3 ? int(p.chunks) : 3;
        } else {
            p.chunks = 1;
            p.ct = roundUp(T, unit);
            const int64_t tiles = (T + p.tt - 1) / p.tt;
            int64_t s = int64_t(2) * deviceSMs() / tiles;
            s = s < 1 ? 1 : (s > slices ? slices : s);
            p.kr = int((slices + s - 1) / s);
            p.splits = (slices + p.kr - 1) / p.kr;
            p.nbuf = 1;
        }
        p.smem = PfSmem<N, HEAD, POST>(p.stages, p.tt).total;
        p.ws = size_t(p.nbuf) * size_t(p.splits) * size_t(p.ct) * G::V * sizeof(float);
        return true;
    }
}

// Workspace bytes that cover the prefill paths of any call with up to T tokens
// (0 where they never apply): the larger of the two paths' bounds. A plan that
// needs more (a forced l2_frac > 0.5, tt > 512, an ft that does not divide 16)
// falls back to the legacy paths.
template <int N, bool HEAD>
inline size_t prefillWorkspaceBound(int64_t T, int d) {
    using G = PfGeom<N, HEAD>;
    if constexpr (!G::OK) {
        return 0;
    } else {
        if (T < 1 || d % G::CW != 0) return 0;
        const int64_t slices = N * int64_t(d) / kPfSlice;
        const int64_t t16 = roundUp(T, 16) + 16;
        // Chunked: 3 buffers of slices x (at most a chunk, or T) tokens; the chunk
        // is at most half the L2 at any l2_frac <= 0.5.
        int64_t cmax = deviceL2Bytes() / (int64_t(N) * d * 2 * 2) + 64;
        const int64_t chunked = 3 * slices * (t16 < cmax ? t16 : cmax);
        // Two-pass: splits <= 2 * SMs / tiles, so splits x tokens <= 2 * SMs * (tt + 16).
        const int64_t cap = int64_t(2) * deviceSMs() * (512 + 16);
        int64_t two = slices * t16 < cap ? slices * t16 : cap;
        if (two < t16) two = t16;
        const int64_t tok = chunked > two ? chunked : two;
        return size_t(tok) * G::V * sizeof(float) + 256;
    }
}

template <int N, bool HEAD, bool POST>
inline int launchPrefill(PfArgs a, const PfPlan& p, cudaStream_t stream) {
    auto kern = prefillKernel<N, HEAD, POST>;
    static std::atomic<size_t> smem_set[kMaxCachedDevices] = {};
    const int dev = currentDevice();
    const bool cached = dev >= 0 && dev < kMaxCachedDevices;
    if (!cached || p.smem > smem_set[dev].load(std::memory_order_relaxed)) {
        // The largest shared-memory carveout: two ~105 KB CTAs per SM (the driver's
        // default carveout may leave room for one).
        if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(p.smem)) != cudaSuccess ||
            cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout,
                                 int(cudaSharedmemCarveoutMaxShared)) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (cached) smem_set[dev].store(p.smem, std::memory_order_relaxed);
    }
    a.ct = p.ct;
    a.tt = p.tt;
    a.kr = p.kr;
    a.splits = p.splits;
    a.ft = p.ft;
    a.nbuf = p.nbuf;
    a.stages = p.stages;
    a.pdl = p.pdl;
    a.hints = p.hints;
    a.part_buf = int64_t(p.splits) * p.ct * PfGeom<N, HEAD>::V;
    bool pdl = p.pdl != 0;
    for (int64_t c = -1; c < p.chunks; ++c) {
        const int64_t pch = c + 1 < p.chunks ? c + 1 : -1;
        int64_t np = 0, nf = 0;
        if (pch >= 0) {
            const int64_t len = (a.ntok - pch * p.ct) < p.ct ? a.ntok - pch * p.ct : p.ct;
            np = (len + p.tt - 1) / p.tt * p.splits;
        }
        if (c >= 0) {
            const int64_t len = (a.ntok - c * p.ct) < p.ct ? a.ntok - c * p.ct : p.ct;
            nf = (len + p.ft - 1) / p.ft;
        }
        // The first grid is a plain launch; PDL refused outside a capture: plain
        // launches from here on (the same results).
        if (launchMaybePdl(kern, dim3(unsigned(np + nf)), dim3(kPfThreads), p.smem, stream,
                           c >= 0 && pdl, a, int(pch), int(c), int(nf)))
            pdl = false;
        if (cudaPeekAtLastError() != cudaSuccess) {
            checkLaunch("mhc prefill kernel");
            return -1;
        }
    }
    return checkLaunch("mhc prefill kernel") == MHC_STATUS_SUCCESS ? 1 : -1;
}

// Launches the prefill path when the table (or MHC_PREFILL) picks one for this
// call and the workspace holds its partials: 1 launched, 0 the caller takes
// another path, -1 after recording a launch failure.
template <int N, bool HEAD, bool POST>
inline int runPrefill(const PfArgs& a, size_t workspace_size, cudaStream_t stream) {
    if constexpr (!PfGeom<N, HEAD>::OK) {
        return 0;
    } else {
        PrefillRule rule;
        if (!prefillRule(HEAD ? kPfFamHead : kPfFamPre, N, a.ntok, a.d, rule)) return 0;
        // The fused boundary where the row measured it faster (or a path is forced).
        if (POST && !rule.boundary && prefillEnv().mode < 0) return 0;
        PfPlan p;
        if (!prefillPlan<N, HEAD, POST>(a.ntok, a.d, rule, p) || p.ws > workspace_size) return 0;
        return launchPrefill<N, HEAD, POST>(a, p, stream);
    }
}

inline size_t prefillWorkspaceBytes(int64_t T, int n, int d, mhcDtype_t dtype, bool head) {
    if (dtype != MHC_DTYPE_BFLOAT16) return 0;
    switch (n) {
        case 1: return head ? prefillWorkspaceBound<1, true>(T, d) : prefillWorkspaceBound<1, false>(T, d);
        case 2: return head ? prefillWorkspaceBound<2, true>(T, d) : prefillWorkspaceBound<2, false>(T, d);
        case 4: return head ? prefillWorkspaceBound<4, true>(T, d) : prefillWorkspaceBound<4, false>(T, d);
        case 8: return head ? prefillWorkspaceBound<8, true>(T, d) : 0;
        default: return 0;
    }
}

inline PfArgs prefillHeadArgs(const __nv_bfloat16* res, const float* fn, const float* hc_scale,
                              const float* hc_base, __nv_bfloat16* y, int64_t ntok, int n, int d,
                              const mhcHeadParams& p, void* workspace) {
    PfArgs a = {};
    a.res = res;
    a.fn = fn;
    a.hc_scale = hc_scale;
    a.hc_base = hc_base;
    a.out = y;
    a.part = static_cast<float*>(workspace);
    a.ntok = ntok;
    a.d = d;
    a.slices = int(int64_t(n) * d / kPfSlice);
    a.rms_eps = p.rms_eps;
    a.pre_eps = p.eps;
    return a;
}
inline PfArgs prefillPreArgs(const __nv_bfloat16* res, const float* fn, const float* hc_scale,
                             const float* hc_base, __nv_bfloat16* layer_input, float* post_mix,
                             float* comb_mix, int64_t ntok, int n, int d, const mhcPreParams& p,
                             void* workspace) {
    PfArgs a = prefillHeadArgs(res, fn, hc_scale, hc_base, layer_input, ntok, n, d,
                               mhcHeadParams{p.rms_eps, p.pre_eps}, workspace);
    a.post_mix = post_mix;
    a.comb_mix = comb_mix;
    a.sinkhorn_eps = p.sinkhorn_eps;
    a.post_mult = p.post_mult;
    a.sinkhorn_iters = p.sinkhorn_iters;
    return a;
}

}  // namespace mhc

#endif  // MHC_PREFILL_CUH
