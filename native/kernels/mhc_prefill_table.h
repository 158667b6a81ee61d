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
#ifndef MHC_PREFILL_TABLE_H
#define MHC_PREFILL_TABLE_H

#include <stdint.h>

namespace mhc {

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

}  // namespace mhc

#endif  // MHC_PREFILL_TABLE_H
