// The projection shared by MhcPre and MhcHead: for each token, ROWS dot
// products of x (K = n*d elements) with hc_fn rows plus sum(x^2), float32.
// Geometry and workspace: mhc_common.cuh. Every partial is reduced in a fixed
// order (shuffle tree / warps in index order here, splits in the finish
// kernel), so results are bit-identical run to run; no atomics.
#ifndef MHC_MIX_CUH
#define MHC_MIX_CUH

#include "mhc_common.cuh"

namespace mhc {

// Small T: grid (ceil(T / TT), K / (8 * 256)); thread = one 8-element vector
// of K, loops over the TT tokens of its block. hc_fn and x loads are coalesced
// 16-byte accesses; all of a thread's ROWS loads can be in flight at once.
template <typename T, int ROWS>
__global__ void __launch_bounds__(kMixThreads)
    mixSmallKernel(const T* __restrict__ x, const float* __restrict__ fn,
                   float* __restrict__ part, int64_t ntok, int K) {
    constexpr int TT = smallTokens(ROWS);
    constexpr int V = ROWS + 1;
    __shared__ float red[kMixWarps][TT][V];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int64_t t0 = int64_t(blockIdx.x) * TT;
    const int v = blockIdx.y * kSmallVecs + threadIdx.x;
    float acc[TT][V];
    projectSlice<T, ROWS, TT>(x, fn, ntok, K, t0, v, acc);
#pragma unroll
    for (int j = 0; j < TT; ++j)
#pragma unroll
        for (int m = 0; m < V; ++m) {
            float a = acc[j][m];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
            if (lane == 0) red[warp][j][m] = a;
        }
    __syncthreads();
    for (int i = threadIdx.x; i < TT * V; i += kMixThreads) {
        const int j = i / V, m = i % V;
        if (t0 + j >= ntok) continue;
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < kMixWarps; ++w) s += red[w][j][m];
        part[(int64_t(blockIdx.y) * ntok + t0 + j) * V + m] = s;
    }
}

// Large T: grid (ceil(T / 32), splits). Each block stages chunks of KC
// columns of x (32 tokens, converted to float) and of hc_fn in shared memory
// with coalesced 16-byte loads; lane = token, warp w takes columns
// [w*KC/8, (w+1)*KC/8) of the chunk, reading hc_fn as warp-wide broadcasts.
template <typename T, int ROWS>
__global__ void __launch_bounds__(kMixThreads)
    mixLargeKernel(const T* __restrict__ x, const float* __restrict__ fn,
                   float* __restrict__ part, int64_t ntok, int K, int chunks_per_split) {
    constexpr int KC = mixChunk(ROWS);
    constexpr int XS = KC + 4;  // row pad: 16-byte reads by 8 lanes hit distinct banks
    constexpr int KW = KC / kMixWarps;
    __shared__ __align__(16) float xs[kMixTokens][XS];
    __shared__ __align__(16) float hs[ROWS][KC];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int64_t t0 = int64_t(blockIdx.x) * kMixTokens;
    const int nchunks = (K + KC - 1) / KC;
    const int c0 = blockIdx.y * chunks_per_split;
    const int c1 = min(c0 + chunks_per_split, nchunks);

    float acc[ROWS];
#pragma unroll
    for (int m = 0; m < ROWS; ++m) acc[m] = 0.f;
    float ss = 0.f;

    // Chunk c+1 is fetched into registers while chunk c is computed, so the
    // global loads overlap the FMAs instead of stalling behind each barrier.
    constexpr int XV = (kMixTokens * (KC / 8) + kMixThreads - 1) / kMixThreads;
    constexpr int HV = (ROWS * (KC / 4) + kMixThreads - 1) / kMixThreads;
    float xr[XV][8];
    float4 hr[HV];
    auto fetch = [&](int c) {
        const int k0 = c * KC;
        const int klen = min(KC, K - k0);  // a multiple of 8
#pragma unroll
        for (int q = 0; q < XV; ++q) {
            const int i = threadIdx.x + q * kMixThreads;
            const int row = i / (KC / 8), cv = (i % (KC / 8)) * 8;
            if (i < kMixTokens * (KC / 8) && t0 + row < ntok && cv < klen) {
                load8(x + (t0 + row) * K + k0 + cv, xr[q]);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) xr[q][e] = 0.f;
            }
        }
#pragma unroll
        for (int q = 0; q < HV; ++q) {
            const int i = threadIdx.x + q * kMixThreads;
            const int m = i / (KC / 4), cv = (i % (KC / 4)) * 4;
            hr[q] = make_float4(0.f, 0.f, 0.f, 0.f);
            if (i < ROWS * (KC / 4) && cv < klen)
                hr[q] = __ldg(reinterpret_cast<const float4*>(fn + int64_t(m) * K + k0 + cv));
        }
    };
    if (c0 < c1) fetch(c0);
    for (int c = c0; c < c1; ++c) {
        __syncthreads();  // previous chunk fully consumed
#pragma unroll
        for (int q = 0; q < XV; ++q) {
            const int i = threadIdx.x + q * kMixThreads;
            if (i < kMixTokens * (KC / 8)) {
                const int row = i / (KC / 8), cv = (i % (KC / 8)) * 8;
                *reinterpret_cast<float4*>(&xs[row][cv]) =
                    make_float4(xr[q][0], xr[q][1], xr[q][2], xr[q][3]);
                *reinterpret_cast<float4*>(&xs[row][cv + 4]) =
                    make_float4(xr[q][4], xr[q][5], xr[q][6], xr[q][7]);
            }
        }
#pragma unroll
        for (int q = 0; q < HV; ++q) {
            const int i = threadIdx.x + q * kMixThreads;
            if (i < ROWS * (KC / 4)) {
                const int m = i / (KC / 4), cv = (i % (KC / 4)) * 4;
                *reinterpret_cast<float4*>(&hs[m][cv]) = hr[q];
            }
        }
        __syncthreads();
        if (c + 1 < c1) fetch(c + 1);
#pragma unroll
        for (int kk = 0; kk < KW; kk += 4) {
            const int k = warp * KW + kk;
            const float4 xv = *reinterpret_cast<const float4*>(&xs[lane][k]);
            ss = fmaf(xv.x, xv.x, ss);
            ss = fmaf(xv.y, xv.y, ss);
            ss = fmaf(xv.z, xv.z, ss);
            ss = fmaf(xv.w, xv.w, ss);
#pragma unroll
            for (int m = 0; m < ROWS; ++m) {
                const float4 h = *reinterpret_cast<const float4*>(&hs[m][k]);
                float a = acc[m];
                a = fmaf(xv.x, h.x, a);
                a = fmaf(xv.y, h.y, a);
                a = fmaf(xv.z, h.z, a);
                a = fmaf(xv.w, h.w, a);
                acc[m] = a;
            }
        }
    }

    // Warp w adds its partial after warps 0..w-1 (fixed order), reusing hs.
    __syncthreads();
    float* red = &hs[0][0];  // [ROWS + 1][32]
    for (int w = 0; w < kMixWarps; ++w) {
        if (warp == w) {
#pragma unroll
            for (int m = 0; m < ROWS; ++m)
                red[m * 32 + lane] = (w == 0 ? 0.f : red[m * 32 + lane]) + acc[m];
            red[ROWS * 32 + lane] = (w == 0 ? 0.f : red[ROWS * 32 + lane]) + ss;
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < (ROWS + 1) * kMixTokens; i += kMixThreads) {
        const int l = i / (ROWS + 1);
        const int m = i % (ROWS + 1);
        if (t0 + l < ntok) part[(int64_t(blockIdx.y) * ntok + t0 + l) * (ROWS + 1) + m] = red[m * 32 + l];
    }
}

// Launches the mixes kernel for this T; returns the number of splits (the
// finish kernel reduces that many partials) or -1 after recording a failure.
template <typename T, int ROWS>
inline int launchMix(const T* x, const float* fn, float* part, int64_t ntok, int K,
                     cudaStream_t stream) {
    static_assert((ROWS + 1) * kMixTokens <= ROWS * mixChunk(ROWS), "reduction buffer");
    if (ntok <= kSmallT) {
        const int splits = smallSplits(K);
        dim3 grid(unsigned(ceilDiv(ntok, smallTokens(ROWS))), unsigned(splits));
        mixSmallKernel<T, ROWS><<<grid, kMixThreads, 0, stream>>>(x, fn, part, ntok, K);
        return checkLaunch("mhc mixes kernel (small T)") == MHC_STATUS_SUCCESS ? splits : -1;
    }
    const int splits = largeSplits(ntok, K, ROWS);
    const int nchunks = int(ceilDiv(K, mixChunk(ROWS)));
    const int per_split = int(ceilDiv(nchunks, splits));
    dim3 grid(unsigned(largeTiles(ntok)), unsigned(splits));
    mixLargeKernel<T, ROWS><<<grid, kMixThreads, 0, stream>>>(x, fn, part, ntok, K, per_split);
    return checkLaunch("mhc mixes kernel (large T)") == MHC_STATUS_SUCCESS ? splits : -1;
}

}  // namespace mhc

#endif  // MHC_MIX_CUH
