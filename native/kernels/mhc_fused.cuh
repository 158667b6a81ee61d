// One-pass MhcPre / MhcHead for bfloat16 residuals on sm_90+ (thread-block
// clusters). A cluster of CS CTAs owns a tile of TT = 16*MT tokens; CTA rank r
// owns the column slice [r*DS, r*DS + DS) of d for all n streams. Each CTA
// loads its [TT][n][DS] slice of the residual into shared memory once (HBM is
// read exactly once), computes the partial projection on tensor cores
// (mma.sync m16n8k16, x exact in bf16, hc_fn split in registers into three
// bf16 terms hi+mid+lo, so the weights keep ~24 bits: float32-grade mixes) and
// the partial sum of squares, then the CTAs exchange partials through
// distributed shared memory. Every CTA sums the CS partials in rank order
// (identical in all CTAs, bit-identical run to run), computes the gates of its
// tokens, and writes layer_input (or y) for its own column slice from shared
// memory. Rank 0 also writes post_mix and comb_mix (Sinkhorn).
// No workspace, no atomics, one launch.
#ifndef MHC_FUSED_CUH
#define MHC_FUSED_CUH

#include <cooperative_groups.h>
#include <stdlib.h>

#include "mhc_common.cuh"
#include "mhc_switches.h"

namespace mhc {

constexpr int kFusedThreads = 256;
constexpr int kFusedWarps = kFusedThreads / 32;

struct FusedArgs {
    const __nv_bfloat16* x;
    const float* fn;
    const float* hc_scale;
    const float* hc_base;
    __nv_bfloat16* out;  // layer_input or y
    float* post_mix;
    float* comb_mix;
    int64_t ntok;
    int d;
    int ds;        // columns per CTA (multiple of 8)
    int tstride;   // shared-memory elements per token (>= n*ds, padded)
    float rms_eps, pre_eps, sinkhorn_eps, post_mult;  // head: pre_eps = eps
    int sinkhorn_iters;
};

__device__ __forceinline__ uint32_t packBf2(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ float2 unpackBf2(uint32_t u) {
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u));
}

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
        "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// o[e] = sum_i w[i] * x[i * stride + e] for one 8-element bf16 vector of each of
// the N streams held in shared memory (fmaf in stream order, from 0): the
// layer_input / y of the one-pass kernels.
template <int N>
__device__ __forceinline__ void weightedStreams8(const __nv_bfloat16* x, int stride,
                                                 const float* w, float (&o)[8]) {
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const float wi = w[i];
        const uint4 u = *reinterpret_cast<const uint4*>(x + i * stride);
        const uint32_t wv[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float2 p = unpackBf2(wv[e]);
            o[2 * e] = fmaf(wi, p.x, o[2 * e]);
            o[2 * e + 1] = fmaf(wi, p.y, o[2 * e + 1]);
        }
    }
}

// cp.async.wait_group needs an immediate.
__device__ __forceinline__ void waitGroupsLeft(int r) {
    switch (r) {
        case 0: asm volatile("cp.async.wait_group 0;\n" ::: "memory"); break;
        case 1: asm volatile("cp.async.wait_group 1;\n" ::: "memory"); break;
        case 2: asm volatile("cp.async.wait_group 2;\n" ::: "memory"); break;
        case 3: asm volatile("cp.async.wait_group 3;\n" ::: "memory"); break;
        case 4: asm volatile("cp.async.wait_group 4;\n" ::: "memory"); break;
        case 5: asm volatile("cp.async.wait_group 5;\n" ::: "memory"); break;
        case 6: asm volatile("cp.async.wait_group 6;\n" ::: "memory"); break;
        default: asm volatile("cp.async.wait_group 7;\n" ::: "memory"); break;
    }
}

template <int N, bool HEAD>
struct FusedGeom {
    static constexpr int ROWS = HEAD ? N : (2 + N) * N;
    static constexpr int V = ROWS + 1;  // + sum of squares
    static constexpr int NT = (ROWS + 7) / 8;
};

// Shared-memory bytes besides the x tile: local partials, cluster sums, gates.
template <int N, bool HEAD, int TT>
__host__ __device__ constexpr int fusedExtraBytes() {
    return (2 * TT * FusedGeom<N, HEAD>::V + TT * N) * 4;
}

// TT tokens per cluster: 8 (one m16 tile, rows 8..15 zero), 16 or 32.
template <int N, bool HEAD, int TT>
__global__ void __launch_bounds__(kFusedThreads)
    fusedKernel(const FusedArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cg = cooperative_groups;
    using G = FusedGeom<N, HEAD>;
    constexpr int ROWS = G::ROWS, V = G::V, NT = G::NT, MT = (TT + 15) / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    cg::cluster_group cluster = cg::this_cluster();
    const int cs = int(cluster.num_blocks());
    const int rank = int(cluster.block_rank());
    __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(smem);
    float* red = reinterpret_cast<float*>(smem + size_t(TT) * a.tstride * 2);  // [TT][V]
    float* tot = red + TT * V;                                                 // [TT][V]
    float* wts = tot + TT * V;                                                 // [TT][N]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tig = lane & 3;
    const int64_t t0 = int64_t(blockIdx.x / cs) * TT;
    const int d = a.d, ds = a.ds;
    const int64_t K = int64_t(N) * d;
    const int cbeg = rank * ds;
    const int clen = max(0, min(ds, d - cbeg));
    const int cv = clen / 8;   // vectors per stream

    // 1. Residual slice -> shared memory (16-byte cp.async; padding tokens
    // zeroed), one commit group per stream so the projection of stream i
    // overlaps the loads of streams i+1.. .
    for (int i = 0; i < N; ++i) {
        for (int j = tid; j < TT * cv; j += kFusedThreads) {
            const int tt = j / cv, c = (j - tt * cv) * 8;
            __nv_bfloat16* dst = xs + tt * a.tstride + i * ds + c;
            if (t0 + tt < a.ntok) {
                const __nv_bfloat16* src = a.x + (t0 + tt) * K + int64_t(i) * d + cbeg + c;
                const unsigned saddr = unsigned(__cvta_generic_to_shared(dst));
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr), "l"(src));
            } else {
                *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
            }
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    }

    // 2. Partial projection on tensor cores. Thread (g, tig) takes the 8-element
    // vector 4q+tig of K; its two MMA k-steps use elements {0..3} and {4..7}
    // (the same permutation of K for x and hc_fn, so the dot products are exact).
    float acc[MT][NT][4];
    float ss[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        ss[mt][0] = ss[mt][1] = 0.f;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;
    }
    const int gq = (cv + 3) / 4;  // groups of 4 vectors per stream
#pragma unroll 1
    for (int i = 0; i < N; ++i) {
    waitGroupsLeft(N - 1 - i);
    __syncthreads();
    const int qfirst = ((warp - i * gq) % kFusedWarps + kFusedWarps) % kFusedWarps;
    for (int q = qfirst; q < gq; q += kFusedWarps) {
        const int v = q * 4 + tig;
        const bool valid = v < cv;
        const int c = valid ? v * 8 : 0;
        // hc_fn rows (fp32, L2-resident), all loads issued before use.
        float4 f[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int m = nt * 8 + g;
            if (valid && m < ROWS) {
                const float4* p =
                    reinterpret_cast<const float4*>(a.fn + int64_t(m) * K + int64_t(i) * d + cbeg + c);
                f[nt][0] = __ldg(p);
                f[nt][1] = __ldg(p + 1);
            } else {
                f[nt][0] = f[nt][1] = make_float4(0.f, 0.f, 0.f, 0.f);
            }
        }
        uint4 xa[MT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                if (valid && mt * 16 + h * 8 < TT) {
                    xa[mt][h] = *reinterpret_cast<const uint4*>(
                        xs + (mt * 16 + g + h * 8) * a.tstride + i * ds + c);
                } else {
                    xa[mt][h] = make_uint4(0, 0, 0, 0);
                }
                const uint32_t w[4] = {xa[mt][h].x, xa[mt][h].y, xa[mt][h].z, xa[mt][h].w};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float2 p = unpackBf2(w[e]);
                    ss[mt][h] = fmaf(p.x, p.x, ss[mt][h]);
                    ss[mt][h] = fmaf(p.y, p.y, ss[mt][h]);
                }
            }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const float fv[8] = {f[nt][0].x, f[nt][0].y, f[nt][0].z, f[nt][0].w,
                                 f[nt][1].x, f[nt][1].y, f[nt][1].z, f[nt][1].w};
            uint32_t hi[4], mid[4], lo[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float u0 = fv[2 * e], u1 = fv[2 * e + 1];
                hi[e] = packBf2(u0, u1);
                const float2 h = unpackBf2(hi[e]);
                const float r0 = u0 - h.x, r1 = u1 - h.y;
                mid[e] = packBf2(r0, r1);
                const float2 m2 = unpackBf2(mid[e]);
                lo[e] = packBf2(r0 - m2.x, r1 - m2.y);
            }
#pragma unroll
            for (int s = 0; s < 2; ++s)
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    const uint32_t wa[4] = {xa[mt][0].x, xa[mt][0].y, xa[mt][0].z, xa[mt][0].w};
                    const uint32_t wb[4] = {xa[mt][1].x, xa[mt][1].y, xa[mt][1].z, xa[mt][1].w};
                    const uint32_t a0 = wa[2 * s], a1 = wb[2 * s], a2 = wa[2 * s + 1],
                                   a3 = wb[2 * s + 1];
                    mma16816(acc[mt][nt], a0, a1, a2, a3, lo[2 * s], lo[2 * s + 1]);
                    mma16816(acc[mt][nt], a0, a1, a2, a3, mid[2 * s], mid[2 * s + 1]);
                    mma16816(acc[mt][nt], a0, a1, a2, a3, hi[2 * s], hi[2 * s + 1]);
                }
        }
    }
    }
    // Sum of squares over the 4 lanes of a group (fixed butterfly order).
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            ss[mt][h] += __shfl_xor_sync(0xffffffffu, ss[mt][h], 1);
            ss[mt][h] += __shfl_xor_sync(0xffffffffu, ss[mt][h], 2);
        }

    // 3. CTA partial: warps add into red in index order.
    for (int w = 0; w < kFusedWarps; ++w) {
        if (warp == w) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int tok = mt * 16 + g + (e >> 1) * 8;
                        const int m = nt * 8 + tig * 2 + (e & 1);
                        if (m < ROWS && tok < TT) {
                            float* p = red + tok * V + m;
                            *p = (w == 0 ? 0.f : *p) + acc[mt][nt][e];
                        }
                    }
            if (tig == 0) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        if (mt * 16 + h * 8 >= TT) continue;
                        float* p = red + (mt * 16 + g + h * 8) * V + ROWS;
                        *p = (w == 0 ? 0.f : *p) + ss[mt][h];
                    }
            }
        }
        __syncthreads();
    }

    // 4. Cluster sum in rank order (same order in every CTA).
    cluster.sync();
    for (int j = tid; j < TT * V; j += kFusedThreads) {
        float s = 0.f;
        for (int r = 0; r < cs; ++r) s += cluster.map_shared_rank(red, r)[j];
        tot[j] = s;
    }
    cluster.sync();  // no CTA leaves while another still reads its partials

    // 5. Gates (one thread per token).
    if (tid < TT && t0 + tid < a.ntok) {
        const int64_t t = t0 + tid;
        const float* mix = tot + tid * V;
        const float r = 1.0f / sqrtf(mix[ROWS] / float(K) + a.rms_eps);
        const float s0 = a.hc_scale[0];
#pragma unroll
        for (int i = 0; i < N; ++i)
            wts[tid * N + i] = sigmoidf(mix[i] * r * s0 + a.hc_base[i]) + a.pre_eps;
        if constexpr (!HEAD) {
            if (tid % cs == rank) {  // post/comb of this token: spread over the ranks
                const float s1 = a.hc_scale[1], s2 = a.hc_scale[2];
#pragma unroll
                for (int i = 0; i < N; ++i)
                    a.post_mix[t * N + i] =
                        a.post_mult * sigmoidf(mix[N + i] * r * s1 + a.hc_base[N + i]);
                float cm[N][N];
#pragma unroll
                for (int i = 0; i < N; ++i)
#pragma unroll
                    for (int j = 0; j < N; ++j)
                        cm[i][j] = mix[2 * N + i * N + j] * r * s2 + a.hc_base[2 * N + i * N + j];
                sinkhornInPlace<N>(cm, a.sinkhorn_iters, a.sinkhorn_eps);
#pragma unroll
                for (int i = 0; i < N; ++i)
#pragma unroll
                    for (int j = 0; j < N; ++j) a.comb_mix[(t * N + i) * N + j] = cm[i][j];
            }
        }
    }
    __syncthreads();

    // 6. layer_input / y for this CTA's columns, from shared memory.
    for (int j = tid; j < TT * cv; j += kFusedThreads) {
        const int tt = j / cv, c = (j - tt * cv) * 8;
        if (t0 + tt >= a.ntok) break;
        float o[8];
        weightedStreams8<N>(xs + tt * a.tstride + c, ds, wts + tt * N, o);
        store8(a.out + (t0 + tt) * int64_t(d) + cbeg + c, o);
    }
#else
    __trap();
#endif
}

// Its configuration and smallest T (MHC_FUSED, MHC_FUSED_MIN_T): mhc_switches.h.
inline int fusedTstride(int N, int ds) {
    int ts = N * ds;  // elements; make the token stride an odd multiple of 64 bytes
    ts += ((32 - ts % 64) + 64) % 64;
    return ts;
}

// Launches the fused kernel when it applies; returns 1 when launched, 0 when the
// caller must use the two-pass path, -1 after recording a launch failure.
template <int N, bool HEAD, int TT>
inline int launchFusedCfg(FusedArgs args, int cs, cudaStream_t stream) {
    const int d = args.d;
    const int ds = int(ceilDiv(ceilDiv(d, 8), cs)) * 8;
    const int ts = fusedTstride(N, ds);
    const size_t smem = size_t(TT) * ts * 2 + fusedExtraBytes<N, HEAD, TT>();
    if (smem > 200 * 1024) return 0;
    auto kern = fusedKernel<N, HEAD, TT>;
    // Function attributes are per device: remember what each device was given.
    static std::atomic<size_t> smem_set[kMaxCachedDevices] = {};
    static std::atomic<bool> nonportable_set[kMaxCachedDevices] = {};
    const int dev = currentDevice();
    const bool cached = dev >= 0 && dev < kMaxCachedDevices;
    if (!cached || smem > smem_set[dev].load(std::memory_order_relaxed)) {
        if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) !=
            cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (cached) smem_set[dev].store(smem, std::memory_order_relaxed);
    }
    if (cs > 8 && (!cached || !nonportable_set[dev].load(std::memory_order_relaxed))) {
        if (cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
            cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (cached) nonportable_set[dev].store(true, std::memory_order_relaxed);
    }
    args.ds = ds;
    args.tstride = ts;
    const int64_t tiles = ceilDiv(args.ntok, TT);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(tiles * cs));
    cfg.blockDim = dim3(kFusedThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = unsigned(cs);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (streamIsCapturing(stream)) {
        // No second chance inside a capture: ask whether the cluster fits first.
        int clusters = 0;
        if (cudaOccupancyMaxActiveClusters(&clusters, kern, &cfg) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        if (clusters < 1) return 0;
        cudaLaunchKernelEx(&cfg, kern, args);  // a failure is reported by checkLaunch
        return checkLaunch("mhc fused kernel") == MHC_STATUS_SUCCESS ? 1 : -1;
    }
    if (cudaLaunchKernelEx(&cfg, kern, args) != cudaSuccess) {
        cudaGetLastError();  // e.g. no room for the cluster: use the two-pass path
        return 0;
    }
    return checkLaunch("mhc fused kernel") == MHC_STATUS_SUCCESS ? 1 : -1;
}

template <int N, bool HEAD>
inline int launchFused(const FusedArgs& args, cudaStream_t stream) {
    FusedCfg c = fusedEnvCfg();
    if (c.mt < 0 || args.ntok < fusedMinT(HEAD)) return 0;
    if (deviceCcMajor() < 9) return 0;
    if (c.mt == 0) {
        // 16 tokens per cluster; ~512 columns per CTA or fewer (d=7168: 16 CTAs
        // of 448 columns, d=4096: 8 CTAs of 512), measured best of 8/16/32 x 8/16.
        c.mt = 16;
        c.cs = ceilDiv(ceilDiv(args.d, 8), 8) * 8 > 640 ? 16 : 8;
    }
    switch (c.mt) {
        case 8: return launchFusedCfg<N, HEAD, 8>(args, c.cs, stream);
        case 32: return launchFusedCfg<N, HEAD, 32>(args, c.cs, stream);
        default: return launchFusedCfg<N, HEAD, 16>(args, c.cs, stream);
    }
}

}  // namespace mhc

#endif  // MHC_FUSED_CUH
