// Which access shapes can MhcPostMix's stream kernel reach its floor with? (issue 23)
//
// Copy-only kernels that move MhcPostMix's bytes (read the residual [T][4][d] and x [T][d],
// write residual_out and layer_input, bf16) with no arithmetic, in the stream kernel's
// structure: a persistent grid (column split s, token group g), tiles of TT tokens, STAGES
// tiles of cp.async 16-byte loads in flight into per-thread shared-memory slots, one barrier
// per tile, stores from registers. What varies is what run 8's copy-only switch could not:
//   Q    the CTA's piece of each row: 256 Q columns (512 Q bytes); main's kernel is Q = 1
//   frag which 16-byte vectors a lane owns: the MMA fragment layout (a warp instruction
//        touches 8 rows x 64 bytes, main's kernel) or row (one row's 512 contiguous bytes)
//   TT, S tokens a tile and stages (3 unless named): S - 1 tiles in flight
// beside a grid-stride elementwise kernel and cudaMemcpy of the same bytes. Each is timed as
// back-to-back launches rotating through enough buffer sets to miss L2, median of 9 runs;
// "x" is the time over the floor at the copy bandwidth of a 2 GiB cudaMemcpy (read + write),
// as benchmarks/bench_v41.py counts it.
//
// Build and run (scripts/gpu/run.sh v41 probe): nvcc -O3 -arch=sm_90 -std=c++17
// -I native/kernels -o probe benchmarks/probes/v41_access_probe.cu && ./probe [json path]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "mhc_stream.cuh"  // cpAsync16: the stream kernel's own tile copy

#define CK(x)                                                                        \
    do {                                                                             \
        cudaError_t e_ = (x);                                                        \
        if (e_ != cudaSuccess) {                                                     \
            fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

namespace {
constexpr int kThreads = 256, kN = 4, kRowsPerTok = kN + 1;

struct Args {
    const uint4* x;
    const uint4* res;
    uint4* res_out;
    uint4* li;
    int64_t ntok, tiles;
    int d8, groups;
};

using mhc::cpAsync16;

// Item m of a thread: row r of the tile (token r / 5, stream r % 5, 4 = x) and vector
// column c of the CTA's piece. frag: main's layout (vector 4 warp + tig + 32 q of tokens
// g, g + 8); row: linear (a warp's lanes take one row's consecutive vectors).
template <int Q, int TT, bool ROW>
__device__ __forceinline__ void itemOf(int m, int tid, int& r, int& c) {
    constexpr int VPR = 32 * Q;
    if constexpr (ROW) {
        const int v = tid + m * kThreads;
        r = v / VPR;
        c = v % VPR;
    } else {
        const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, tig = lane & 3;
        const int i = m % kRowsPerTok, h = (m / kRowsPerTok) % (TT / 8), q = m / (kRowsPerTok * (TT / 8));
        r = (g + 8 * h) * kRowsPerTok + i;
        c = warp * 4 + tig + 32 * q;
    }
}

template <int Q, int TT, bool ROW, int S>
__global__ void __launch_bounds__(kThreads, 1) tileCopy(const Args a) {
    constexpr int VPR = 32 * Q, ITEMS = TT * kRowsPerTok * VPR / kThreads;
    static_assert(ITEMS * kThreads == TT * kRowsPerTok * VPR, "tile must split evenly");
    static_assert(ROW || TT % 8 == 0, "the fragment layout takes 8 tokens per lane group");
    extern __shared__ uint4 sm[];
    const int tid = threadIdx.x, grp = blockIdx.y;
    const int c0 = blockIdx.x * VPR;
    const int ntiles = a.tiles > grp ? int((a.tiles - 1 - grp) / a.groups + 1) : 0;
    auto gaddr = [&](int64_t tok, int r, int c) -> int64_t {  // the same for inputs and outputs
        const int i = r % kRowsPerTok;
        return i < kN ? (tok * kN + i) * a.d8 + c0 + c : tok * a.d8 + c0 + c;
    };
    // f(m, offset, residual?) for each of this thread's items m of tile it that exist.
    auto forItems = [&](int it, auto&& f) {
        const int64_t t0 = (int64_t(grp) + int64_t(it) * a.groups) * TT;
#pragma unroll
        for (int m = 0; m < ITEMS; ++m) {
            int r, c;
            itemOf<Q, TT, ROW>(m, tid, r, c);
            const int64_t tok = t0 + r / kRowsPerTok;
            if (tok >= a.ntok || c0 + c >= a.d8) continue;
            f(m, gaddr(tok, r, c), r % kRowsPerTok < kN);
        }
    };
    auto issue = [&](int it, int s) {
        if (it < ntiles)
            forItems(it, [&](int m, int64_t off, bool res) {
                cpAsync16(sm + (int64_t(s) * ITEMS + m) * kThreads + tid, (res ? a.res : a.x) + off);
            });
        asm volatile("cp.async.commit_group;\n" ::: "memory");
    };
    for (int s = 0; s + 1 < S; ++s) issue(s, s);
    for (int it = 0; it < ntiles; ++it) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 2) : "memory");  // tile it landed
        __syncthreads();
        issue(it + S - 1, (it + S - 1) % S);
        const int s = it % S;
        forItems(it, [&](int m, int64_t off, bool res) {
            (res ? a.res_out : a.li)[off] = sm[(int64_t(s) * ITEMS + m) * kThreads + tid];
        });
    }
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

__global__ void __launch_bounds__(kThreads) eltCopy(const Args a) {
    const int64_t nv = a.ntok * a.d8, stride = int64_t(gridDim.x) * kThreads;
    for (int64_t v = int64_t(blockIdx.x) * kThreads + threadIdx.x; v < nv; v += stride) {
        const int64_t tok = v / a.d8, c = v - tok * a.d8;
        uint4 r[kN];
#pragma unroll
        for (int i = 0; i < kN; ++i) r[i] = __ldg(a.res + (tok * kN + i) * a.d8 + c);
        const uint4 xv = __ldg(a.x + v);
#pragma unroll
        for (int i = 0; i < kN; ++i) a.res_out[(tok * kN + i) * a.d8 + c] = r[i];
        a.li[v] = xv;
    }
}

struct Set {
    uint4 *x, *res, *res_out, *li;
};

using Launch = void (*)(const Args&, int sms, cudaStream_t);

template <int Q, int TT, bool ROW, int S>
void launchTile(const Args& a0, int sms, cudaStream_t st) {
    constexpr int VPR = 32 * Q, ITEMS = TT * kRowsPerTok * VPR / kThreads;
    Args a = a0;
    const int splits = (a.d8 + VPR - 1) / VPR;
    a.tiles = (a.ntok + TT - 1) / TT;
    a.groups = int(std::max<int64_t>(1, std::min<int64_t>(sms / splits, a.tiles)));
    const size_t smem = size_t(S) * ITEMS * kThreads * 16;
    static bool attr = false;
    if (!attr) {
        CK(cudaFuncSetAttribute(tileCopy<Q, TT, ROW, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                int(smem)));
        attr = true;
    }
    tileCopy<Q, TT, ROW, S><<<dim3(splits, a.groups), kThreads, smem, st>>>(a);
}

void launchElt(const Args& a, int sms, cudaStream_t st) {
    eltCopy<<<sms * 8, kThreads, 0, st>>>(a);
}

// Every byte of the poisoned outputs holds its input's pattern (0x3c residual, 0x3d x).
bool copiedEverything(const Set& s, size_t rb, size_t xb) {
    std::vector<uint16_t> h(rb / 2);
    CK(cudaMemcpy(h.data(), s.res_out, rb, cudaMemcpyDeviceToHost));
    if (!std::all_of(h.begin(), h.end(), [](uint16_t u) { return u == 0x3c3c; })) return false;
    h.resize(xb / 2);
    CK(cudaMemcpy(h.data(), s.li, xb, cudaMemcpyDeviceToHost));
    return std::all_of(h.begin(), h.end(), [](uint16_t u) { return u == 0x3d3d; });
}

float medianOf(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Median seconds per call: 9 runs of `calls` back-to-back calls rotating through the sets.
template <typename F>
double timeCalls(F&& call, int nsets, int calls) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int k = 0; k < 2 * nsets; ++k) call(k % nsets);
    std::vector<float> ms;
    for (int rep = 0; rep < 9; ++rep) {
        CK(cudaEventRecord(e0));
        for (int k = 0; k < calls; ++k) call(k % nsets);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float t;
        CK(cudaEventElapsedTime(&t, e0, e1));
        ms.push_back(t);
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return medianOf(ms) * 1e-3 / calls;
}
}  // namespace

int main(int argc, char** argv) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const int sms = prop.multiProcessorCount;
    // Copy bandwidth: a 2 GiB device-to-device copy, read + write (mhc_export.testing.bench).
    const size_t cb = size_t(2) << 30;
    void *ca, *cbuf;
    CK(cudaMalloc(&ca, cb));
    CK(cudaMalloc(&cbuf, cb));
    CK(cudaMemset(ca, 1, cb));
    const double copy_s = timeCalls([&](int) { CK(cudaMemcpyAsync(cbuf, ca, cb, cudaMemcpyDeviceToDevice)); }, 1, 5);
    const double bw = 2.0 * cb / copy_s;
    CK(cudaFree(ca));
    CK(cudaFree(cbuf));
    printf("%s, %d SMs, copy bandwidth %.3f TB/s (read+write)\n", prop.name, sms, bw / 1e12);

    struct Variant {
        const char* name;
        Launch fn;
    };
    const Variant variants[] = {
        {"frag Q1 TT16 (main's shape)", launchTile<1, 16, false, 3>},
        {"row  Q1 TT16", launchTile<1, 16, true, 3>},
        {"frag Q2 TT8", launchTile<2, 8, false, 3>},
        {"row  Q2 TT8", launchTile<2, 8, true, 3>},
        {"row  Q4 TT4", launchTile<4, 4, true, 3>},
        {"frag Q1 TT8", launchTile<1, 8, false, 3>},
        // In flight against granularity: 40 KB in 40 KB tiles, 80 KB in 20 KB tiles.
        {"frag Q1 TT16 S2", launchTile<1, 16, false, 2>},
        {"frag Q1 TT8 S5", launchTile<1, 8, false, 5>},
        {"elementwise", launchElt},
    };
    std::string json = "{\"device\": \"" + std::string(prop.name) + "\", \"sms\": " +
                       std::to_string(sms) + ", \"copy_bw\": " + std::to_string(bw) + ", \"rows\": [";
    bool first = true;
    const int ds[] = {5120, 7168};
    const int64_t ts[] = {512, 4096, 16384};
    printf("%-30s %5s %6s %10s %8s %6s\n", "variant", "d", "T", "us", "floor", "x");
    for (int d : ds)
        for (int64_t t : ts) {
            const size_t rb = size_t(t) * kN * d * 2, xb = size_t(t) * d * 2;
            const size_t set_bytes = 2 * (rb + xb);
            const int nsets = int(std::max<size_t>(1, std::min<size_t>(16, ((size_t(256) << 20) + set_bytes - 1) / set_bytes)));
            std::vector<Set> sets(nsets);
            for (auto& s : sets) {
                CK(cudaMalloc(&s.res, rb));
                CK(cudaMalloc(&s.x, xb));
                CK(cudaMalloc(&s.res_out, rb));
                CK(cudaMalloc(&s.li, xb));
                CK(cudaMemset(s.res, 0x3c, rb));
                CK(cudaMemset(s.x, 0x3d, xb));
            }
            const double floor_us = set_bytes / bw * 1e6;
            auto report = [&](const std::string& name, double s) {
                const double us = s * 1e6;
                printf("%-30s %5d %6lld %10.2f %8.2f %6.3f\n", name.c_str(), d, (long long)t, us, floor_us,
                       us / floor_us);
                json += std::string(first ? "" : ", ") + "{\"variant\": \"" + name + "\", \"d\": " +
                        std::to_string(d) + ", \"T\": " + std::to_string(t) + ", \"us\": " +
                        std::to_string(us) + ", \"floor_us\": " + std::to_string(floor_us) +
                        ", \"x_floor\": " + std::to_string(us / floor_us) + "}";
                first = false;
            };
            for (const auto& v : variants) {
                // Poison the outputs, run once, check every byte was copied (a copy kernel
                // that skips rows would look fast); T = 16384 only repeats T = 4096's grid.
                Args a{sets[0].x, sets[0].res, sets[0].res_out, sets[0].li, t, 0, d / 8, 0};
                CK(cudaMemset(sets[0].res_out, 0xff, rb));
                CK(cudaMemset(sets[0].li, 0xff, xb));
                v.fn(a, sms, 0);
                CK(cudaDeviceSynchronize());
                if (t <= 4096 && !copiedEverything(sets[0], rb, xb)) {
                    fprintf(stderr, "WRONG COPY: %s d=%d T=%lld\n", v.name, d, (long long)t);
                    return 1;
                }
                const double s = timeCalls(
                    [&](int k) {
                        Args b{sets[k].x, sets[k].res, sets[k].res_out, sets[k].li, t, 0, d / 8, 0};
                        v.fn(b, sms, 0);
                    },
                    nsets, std::max(24, 2 * nsets));
                report(v.name, s);
            }
            const double s = timeCalls(
                [&](int k) {
                    CK(cudaMemcpyAsync(sets[k].res_out, sets[k].res, rb, cudaMemcpyDeviceToDevice));
                    CK(cudaMemcpyAsync(sets[k].li, sets[k].x, xb, cudaMemcpyDeviceToDevice));
                },
                nsets, std::max(24, 2 * nsets));
            report("cudaMemcpy x2", s);
            for (auto& st : sets) {
                CK(cudaFree(st.res));
                CK(cudaFree(st.x));
                CK(cudaFree(st.res_out));
                CK(cudaFree(st.li));
            }
        }
    json += "]}\n";
    if (argc > 1) {
        FILE* f = fopen(argv[1], "w");
        if (!f) return 1;
        fputs(json.c_str(), f);
        fclose(f);
    }
    return 0;
}
