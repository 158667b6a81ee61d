// The kernels' launch heuristics and environment switches, in one place.
//
// Heuristics: the measured thresholds that pick a kernel path and the prefill
// dispatcher's table. Switches: one function per environment variable (the
// prefill parameters are read together), each reading the environment once per
// process, on first use; unset, the heuristics decide. The switches exist for
// A/B runs, tests and benchmarks (tests/test_kernels*.py, scripts/gpu_*.sh);
// every getenv of the kernel library is envSwitch, here.
#ifndef MHC_SWITCHES_H
#define MHC_SWITCHES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace mhc {

// ---- heuristics: measured thresholds --------------------------------------------

// The streaming kernel (mhc_stream.cuh) takes a call where a CTA's row is at
// least kStreamMinRow. Its per-tile synchronisation (one cluster barrier, four
// CTA barriers) is amortised over a CTA's row of N*ds elements: at d=7168, n=4 (1792) it beats
// the v5 kernel by 24% (pre) and 12% (head); at d=4096 (1024) and below it
// loses (docs/journal/kernels_notes.md, v6).
constexpr int kStreamMinRow = 1536;

// Largest T that takes the decode path (env MHC_DECODE_MAX_T, 0 disables it;
// capped at kDecodeMaxT, which the workspace query covers).
constexpr int64_t kDecodeMaxT = 64;

// The decode mixes kernel prefetches the call's inputs (x, or x and the residual of a
// fused boundary) into L2 before its griddepcontrol.wait only while they are at most
// this many bytes. Measured (issue 23's run 5, H100, bf16, n=4): up to 2.3 MB it
// saves 0.2-1.1 us (T <= 32); with it at 3.3-4.6 MB (MhcPostMix / MhcPostPre at
// T=64) those were 0.6-0.8 us slower than before run 5, without it 0.25-0.35 us: the
// prefetch then only moves DRAM traffic in front of the wait, where it competes with
// the kernel before (docs/journal/v41_kernels.md, "Run 5 outcome").
constexpr int64_t kDecodeInputPrefetchMaxBytes = int64_t(5) << 19;  // 2.5 MiB

// ---- heuristics: the prefill dispatcher's table ------------------------------------
// The prefill dispatcher's one table (issue 22): which large-T path MhcPre,
// MhcPostPre and MhcHead take, per (op family, T, d, n, dtype, device), and the
// parameters of that path. Rows are read top to bottom; the first row whose
// ranges hold the call wins; no row: the paths from before issue 22 (the
// streaming / v5 cluster kernels, else the float32 two-pass kernels).
// Every number here comes from a measurement: docs/journal/prefill_kernels.md.
//
// Paths (mhc_prefill.cuh):
//  * kPfTwoPass: projection on tensor cores (3-term bf16 split of hc_fn, fused
//    sum of squares) over all T into split-K partials, then one finish pass that
//    reads the residual again (from DRAM once T * n * d no longer fits in L2);
//  * kPfChunked: the same two passes chunk by chunk, the projection of chunk c+1
//    and the finish of chunk c in one launch, so the finish reads chunk c from
//    L2; chunk size = l2_frac * the device's L2 (cudaDevAttrL2CacheSize) over the
//    bytes of one token's residual.
// MhcPostPre takes the pre family's row: with `boundary` its projection CTAs also
// apply the post and write residual_out (the same plan as MhcPre's, so MhcPostPre
// stays bit-identical to MhcPost + MhcPre), without it MhcPost then MhcPre run.

enum PrefillFamily { kPfFamPre = 0, kPfFamHead = 1 };
enum PrefillPath { kPfLegacy = 0, kPfTwoPass = 1, kPfChunked = 2 };

struct PrefillRule {
    int family;            // PrefillFamily
    int cc_min;            // compute capability major
    int n_min, n_max;
    int64_t t_min, t_max;  // tokens, inclusive
    int d_min, d_max;
    int path;              // PrefillPath
    int tt;                // tokens per projection CTA (multiple of 16)
    int ft;                // tokens per finish CTA
    int kr;                // kPfChunked: 512-element K slices per projection CTA
    float l2_frac;         // kPfChunked: share of L2 one chunk's residual may fill
    int pdl;               // kPfChunked: 0 plain launches; PDL-chained, the next launch
                           // released by the projection CTAs at exit (1) or once
                           // their last loads are issued (2)
    int hints;             // L2 eviction hints: residual kept for the finish, streams first out
    int boundary;          // MhcPostPre: 1 the fused kernel (post applied by the projection
                           // CTAs), 0 MhcPost then MhcPre on this row
};

// bfloat16 residuals only (the tensor-core projection takes x exactly as bf16).
constexpr PrefillRule kPrefillRules[] = {
    // family    cc  n     T                d            path        tt   ft kr  l2     pdl hints bnd
    {kPfFamPre,  9,  4, 4, 512, INT64_MAX,  2048, 1 << 24, kPfTwoPass, 128, 4, 1,  0.25f, 2,  1,    0},
    {kPfFamHead, 9,  4, 4, 4096, INT64_MAX, 4096, 6143,    kPfTwoPass, 128, 16, 1, 0.25f, 2,  1,    0},
};

// ---- switches ------------------------------------------------------------------------

// The one reader of the process environment in the kernel library.
inline const char* envSwitch(const char* name) { return getenv(name); }
// Whether a switch's value e is exactly the one character c (e.g. "0": off).
inline bool envIs(const char* e, char c) { return e && e[0] == c && e[1] == 0; }

// MHC_STREAM=0 disables the streaming kernel (A/B against the v5 cluster
// kernel), MHC_STREAM=1 takes it wherever it fits (tests), unset: where it
// was measured to win (kStreamMinRow); MHC_STREAM_MIN_T=<T> sets the smallest T.
inline int streamMode() {
    static const int mode = [] {
        const char* e = envSwitch("MHC_STREAM");
        if (envIs(e, '0')) return 0;
        if (envIs(e, '1')) return 1;
        return -1;
    }();
    return mode;
}

// MHC_STREAM_MIN_T=<T>: the smallest T that takes the streaming kernel (default 128).
inline int64_t streamMinT() {
    static const int64_t v = [] {
        const char* e = envSwitch("MHC_STREAM_MIN_T");
        return (e && *e) ? int64_t(atoll(e)) : int64_t(128);
    }();
    return v;
}

// MHC_DECODE_MAX_T: see kDecodeMaxT.
inline int64_t decodeMaxT() {
    static const int64_t v = [] {
        const char* e = envSwitch("MHC_DECODE_MAX_T");
        if (e && *e) {
            const long long x = atoll(e);
            return int64_t(x < 0 ? 0 : (x > kDecodeMaxT ? kDecodeMaxT : x));
        }
        return kDecodeMaxT;
    }();
    return v;
}

// MHC_DECODE_PREFETCH_MAX_BYTES=<bytes>: see kDecodeInputPrefetchMaxBytes (0: never).
inline int64_t decodeInputPrefetchMaxBytes() {
    static const int64_t v = [] {
        const char* e = envSwitch("MHC_DECODE_PREFETCH_MAX_BYTES");
        return (e && *e) ? int64_t(atoll(e)) : kDecodeInputPrefetchMaxBytes;
    }();
    return v;
}

// MHC_DECODE_NO_PDL (set, any value): the decode finish kernel is launched
// without programmatic dependent launch.
inline bool decodeNoPdl() {
    static const bool v = envSwitch("MHC_DECODE_NO_PDL") != nullptr;
    return v;
}

// MHC_SINKHORN_LANES=0: the decode finishes and V4.1's large-T finish run a token's
// Sinkhorn on one thread (combFromMixes), as before issue 23's run 6, instead of on
// N lanes of a warp (combFromMixesLanes; A/B runs; the same bits).
inline bool sinkhornLanes() {
    static const bool on = [] {
        const char* e = envSwitch("MHC_SINKHORN_LANES");
        return !envIs(e, '0');
    }();
    return on;
}

// MHC_PDL_FIRST=0: the first kernel of the decode chain (every op's T <= 64 mixes
// kernel) and the V4.1 stream kernel are launched plainly, as before issue 23's
// run 4, instead of with PDL after an L2 prefetch of hc_fn (A/B runs; the same bits).
// MHC_DECODE_NO_PDL switches it off too.
inline bool pdlFirst() {
    static const bool on = [] {
        const char* e = envSwitch("MHC_PDL_FIRST");
        return !envIs(e, '0') && !decodeNoPdl();
    }();
    return on;
}

// The fused kernel (mhc_fused.cuh). Configuration: TT tokens per cluster,
// cluster size CS. MHC_FUSED=0 disables
// the fused path; MHC_FUSED=<TT>x<CS> forces a configuration and
// MHC_FUSED_MIN_T=<T> the smallest T that takes it (benchmarks of alternatives).
struct FusedCfg {
    int mt, cs;  // mt: tokens per cluster (8, 16, 32)
};
inline FusedCfg fusedEnvCfg() {
    static FusedCfg cfg = [] {
        FusedCfg c{0, 0};
        const char* e = envSwitch("MHC_FUSED");
        if (e && *e) {
            if (envIs(e, '0')) return FusedCfg{-1, -1};
            int mt = 0, cs = 0;
            if (sscanf(e, "%dx%d", &mt, &cs) == 2 && (mt == 8 || mt == 16 || mt == 32) &&
                (cs == 1 || cs == 2 || cs == 4 || cs == 8 || cs == 16))
                c = FusedCfg{mt, cs};
        }
        return c;
    }();
    return cfg;
}

// MHC_FUSED_MIN_T=<T>: the smallest T that takes the fused kernel; unset, the
// measured default below.
inline int64_t fusedMinT(bool head) {
    static const int64_t env = [] {
        const char* e = envSwitch("MHC_FUSED_MIN_T");
        return (e && *e) ? int64_t(atoll(e)) : int64_t(-1);
    }();
    if (env >= 0) return env;
    // Measured (docs/journal/kernels_notes.md, v4): the fused path wins for MhcPre from
    // T ~ 128; for MhcHead (4 rows) it does not beat the two-pass kernels, so
    // the head uses it only when MHC_FUSED_MIN_T asks for it.
    return head ? INT64_MAX : 128;
}

// The prefill dispatcher's switches (mhc_prefill.cuh). MHC_PREFILL: unset or "auto" = the table;
// "legacy" = the paths before issue 22; "twopass" / "chunked" = that path
// wherever it applies (tests, benchmarks). MHC_PREFILL_L2_FRAC, _TT, _FT, _KR,
// _PDL, _HINTS override the row's parameters. MHC_STREAM / MHC_FUSED (set, MHC_PREFILL unset)
// keep their meaning: the legacy paths they select.
struct PfEnv {
    int mode = -1;  // -1 table, else a PrefillPath
    float l2_frac = 0.f;
    int tt = 0, ft = 0, kr = 0, pdl = -1, hints = -1;
};
inline const PfEnv& prefillEnv() {
    static const PfEnv env = [] {
        PfEnv e;
        const char* m = envSwitch("MHC_PREFILL");
        if (m && *m && strcmp(m, "auto") != 0) {
            e.mode = strcmp(m, "twopass") == 0   ? kPfTwoPass
                     : strcmp(m, "chunked") == 0 ? kPfChunked
                                                 : kPfLegacy;
        } else if (envSwitch("MHC_STREAM") || envSwitch("MHC_FUSED")) {
            e.mode = kPfLegacy;
        }
        if (const char* v = envSwitch("MHC_PREFILL_L2_FRAC")) e.l2_frac = float(atof(v));
        if (const char* v = envSwitch("MHC_PREFILL_TT")) e.tt = atoi(v);
        if (const char* v = envSwitch("MHC_PREFILL_FT")) e.ft = atoi(v);
        if (const char* v = envSwitch("MHC_PREFILL_KR")) e.kr = atoi(v);
        if (const char* v = envSwitch("MHC_PREFILL_PDL")) e.pdl = atoi(v);
        if (const char* v = envSwitch("MHC_PREFILL_HINTS")) e.hints = atoi(v);
        return e;
    }();
    return env;
}

// MHC_POST_TOKEN_MAJOR=1: the post kernel's older token-major block order
// (kept for comparison; mhc_post_sinkhorn.cu).
inline bool postTokenMajor() {
    static const bool v = [] {
        const char* e = envSwitch("MHC_POST_TOKEN_MAJOR");
        return e && *e == '1';
    }();
    return v;
}

// MHC_V41_STREAM=0 takes the V4.1 two-pass path instead of the stream kernel
// (A/B and tests).
inline bool v41StreamEnabled() {
    static const bool on = [] {
        const char* e = envSwitch("MHC_V41_STREAM");
        return !envIs(e, '0');
    }();
    return on;
}
// MHC_V41_BALANCE=1: the balanced 1-D item split over every SM instead of the
// (splits x groups) grid (d=5120: 120 of 132 SMs busy), same results bit for bit.
// Measured 3-8% slower at T >= 4096 (docs/journal/v41_kernels.md, run 2): the
// kernel is not limited by the number of SMs pulling memory, so it is opt-in.
inline bool v41Balanced() {
    static const bool on = [] {
        const char* e = envSwitch("MHC_V41_BALANCE");
        return envIs(e, '1');
    }();
    return on;
}
// MHC_V41_GROUPS=<g>: the V4.1 stream kernel's grid takes g token groups
// instead of SMs / splits (at most that many; A/B runs of how many CTAs pull
// memory at once; the same bits).
inline int v41GroupsEnv() {
    static const int g = [] {
        const char* e = envSwitch("MHC_V41_GROUPS");
        const int v = (e && *e) ? atoi(e) : 0;
        return v > 0 ? v : 0;
    }();
    return g;
}
// MHC_V41_FINISH16=1: the V4.1 large-T finish in blocks of 16 tokens with split
// loads in batches of 8 (run 2's) at every T, also where 8 tokens and one batch of
// 32 would fit one wave; the same bits (mhc_v41.cu, v41FinishWideKernel).
inline bool v41Finish16() {
    static const bool on = [] {
        const char* e = envSwitch("MHC_V41_FINISH16");
        return envIs(e, '1');
    }();
    return on;
}
// MHC_V41_STAGES=2..6: the V4.1 stream kernel's pipeline depth (else 0: the
// kernel's own choice; mhc_v41.cu).
inline int v41StagesEnv() {
    static const int s = [] {
        const char* e = envSwitch("MHC_V41_STAGES");
        const int v = (e && *e) ? atoi(e) : 0;
        return v >= 2 && v <= 6 ? v : 0;
    }();
    return s;
}

}  // namespace mhc

#endif  // MHC_SWITCHES_H
