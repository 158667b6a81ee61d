"""Run one mHC kernel call a few times on random inputs, for ncu to profile.

    ncu --launch-skip 2 --launch-count 1 python3 scripts/gpu/profile_kernel.py pre 4096 7168

With --profile-call K only call K runs inside cudaProfilerStart/Stop (ncu
--profile-from-start off: every launch of that one call, e.g. the chunked path's
chunk launches), after writing a 256 MB buffer so that L2 holds nothing of the
inputs; with ncu --cache-control none the counters then give one call's DRAM
and L2 bytes.
"""

from __future__ import annotations

import argparse
import sys

import torch

from mhc_export import kernels
from mhc_export.core.spec import num_mixes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("op", choices=("pre", "head", "post", "post_pre", "post_head", "post_mix",
                                   "mix"))
    ap.add_argument("t", type=int)
    ap.add_argument("d", type=int)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--profile-call", type=int, default=-1,
                    help="run only this call inside cudaProfilerStart/Stop, L2 flushed before")
    args = ap.parse_args()
    t, n, d = args.t, args.n, args.d
    g = torch.Generator(device="cuda").manual_seed(0)
    k = n * d
    rows = n if args.op.endswith("head") else num_mixes(n)
    res = torch.randn(t, n, d, device="cuda", generator=g).bfloat16()
    x = torch.randn(t, d, device="cuda", generator=g).bfloat16()
    post = torch.rand(t, n, device="cuda", generator=g) * 2
    pre = torch.rand(t, n, device="cuda", generator=g)
    comb = torch.rand(t, n, n, device="cuda", generator=g)
    fn = torch.randn(rows, k, device="cuda", generator=g) / k**0.5
    scale = torch.rand(1 if args.op.endswith("head") else 3, device="cuda", generator=g) + 0.5
    base = torch.randn(rows, device="cuda", generator=g) * 0.5
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    for i in range(args.calls):
        if i == args.profile_call:
            flush.fill_(1)
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
        if args.op == "pre":
            kernels.pre(res, fn, scale, base)
        elif args.op == "head":
            kernels.head(res, fn, scale, base)
        elif args.op == "post":
            kernels.post(x, res, post, comb)
        elif args.op == "post_mix":
            kernels.post_mix(x, res, pre, post, comb, fn, scale, base)
        elif args.op == "mix":
            kernels.mix(res, fn, scale, base)
        elif args.op == "post_pre":
            kernels.post_pre(x, res, post, comb, fn, scale, base)
        else:
            kernels.post_head(x, res, post, comb, fn, scale, base)
        if i == args.profile_call:
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
    torch.cuda.synchronize()
    print("ok", args.op, t, n, d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
