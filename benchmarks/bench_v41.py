"""Benchmark of DeepSeek-V4.1's boundary kernels against their memory floor, with V4's
MhcPostPre measured in the same run.

Same harness as bench_kernels.py (CUDA graph replays, input sets rotated past L2,
the copy bandwidth measured in the same run). Rows, bf16, n=4, per d and T:
MhcPostMix (the single-pass V4.1 boundary), the unfused V4.1 composition of our
kernels (MhcPost, MhcMix, MhcCollapse), V4's MhcPostPre, MhcPostCollapse and
MhcMix alone. Floors (spec "Memory floor of the fused boundary"): per token,
MhcPostMix reads and writes (n+1)*d*b + 4*M bytes, MhcPostPre (n+1)*d*b +
4*(n+n^2) (one pass; 143,520 B at n=4 d=7168 with the re-read it needs without
holding the row), MhcPostCollapse reads (n+1)*d*b + 4*M and writes d*b; hc_fn
(M*K*4) once per call.

    python3 benchmarks/bench_v41.py --json out.json [--t-list 1,512,4096]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mhc_export import kernels
from mhc_export.core.spec import num_mixes
from mhc_export.testing.bench import copy_bandwidth, nsets, time_calls, write_run

T_LIST = (1, 8, 64, 512, 4096, 16384)
D_LIST = (5120, 7168)
# The targets for MhcPostMix (H100, bf16, n=4): ratio to the floor, or us at T=1.
TARGETS = {"x_floor_T>=4096": 1.15, "x_floor_T=512": 1.3, "us_T=1": 6.0}


def v41_sets(t: int, n: int, d: int, g: torch.Generator) -> list[list[torch.Tensor]]:
    """x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base (bf16)."""
    k, m = n * d, num_mixes(n)
    sets = []
    for _ in range(nsets(2 * t * (k + d) * 2 + m * k * 4)):
        comb = torch.rand(t, n, n, device="cuda", generator=g)
        sets.append([
            torch.randn(t, d, device="cuda", generator=g).to(torch.bfloat16),
            torch.randn(t, n, d, device="cuda", generator=g).to(torch.bfloat16),
            torch.rand(t, n, device="cuda", generator=g),
            torch.rand(t, n, device="cuda", generator=g) * 2,
            comb / comb.sum(1, keepdim=True),
            torch.randn(m, k, device="cuda", generator=g) / k**0.5,
            0.5 + torch.rand(3, device="cuda", generator=g),
            torch.randn(m, device="cuda", generator=g) * 0.5,
        ])
    return sets


def floors(t: int, n: int, d: int, b: int = 2) -> dict[str, int]:
    """Bytes per call: the spec's memory-floor table plus hc_fn once."""
    m, k = num_mixes(n), n * d
    fn = m * k * 4
    one = (n + 1) * d * b
    return {
        "post_mix": 2 * t * (one + 4 * m) + fn,
        "post_pre": 2 * t * (one + 4 * (n + n * n)) + fn,
        "post_collapse": t * (one + 4 * m + d * b),
        "mix": t * (k * b + 4 * m) + fn,
    }


def bench_row(t: int, d: int, n: int, bw: float, g: torch.Generator) -> dict:
    sets = v41_sets(t, n, d, g)
    calls = {
        "post_mix": [lambda s=s: kernels.post_mix(*s) for s in sets],
        "unfused_v41": [lambda s=s: (lambda r: (kernels.mix(r, *s[5:]),
                                                kernels.collapse(r, s[2])))(
            kernels.post(s[0], s[1], s[3], s[4])) for s in sets],
        "post_pre_v4": [lambda s=s: kernels.post_pre(s[0], s[1], s[3], s[4], *s[5:])
                        for s in sets],
        "post_collapse": [lambda s=s: kernels.post_collapse(*s[:5]) for s in sets],
        "mix": [lambda s=s: kernels.mix(s[1], *s[5:]) for s in sets],
    }
    fl = floors(t, n, d)
    row: dict = {"T": t, "d": d, "n": n}
    for name, c in calls.items():
        sec, method = time_calls(c)
        row[f"{name}_us"] = sec * 1e6
        row["timing"] = method
    for name in ("post_mix", "post_collapse", "mix"):
        row[f"{name}_floor_us"] = fl[name] / bw * 1e6
        row[f"{name}_x_floor"] = row[f"{name}_us"] / row[f"{name}_floor_us"]
    row["post_pre_v4_floor_us"] = fl["post_pre"] / bw * 1e6
    row["post_pre_v4_x_floor"] = row["post_pre_v4_us"] / row["post_pre_v4_floor_us"]
    row["v4_over_v41"] = row["post_pre_v4_us"] / row["post_mix_us"]
    del sets
    torch.cuda.empty_cache()
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t-list", default=",".join(map(str, T_LIST)))
    ap.add_argument("--d-list", default=",".join(map(str, D_LIST)))
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    a = ap.parse_args()
    if not torch.cuda.is_available() or not kernels.available():
        why = kernels.unavailable_reason() if torch.cuda.is_available() else "no CUDA GPU"
        print(f"bench_v41: needs a CUDA GPU and the kernel library: {why}", file=sys.stderr)
        return 2
    bw = copy_bandwidth()
    dev = torch.cuda.get_device_name()
    print(f"{dev}, copy bandwidth {bw / 1e12:.3f} TB/s (read+write), bf16, n=4", flush=True)
    print(f"{'d':>5s} {'T':>6s} | {'PostMix':>9s} {'floor':>8s} {'x':>5s} | {'unfused':>9s} | "
          f"{'V4 PostPre':>10s} {'x':>5s} | {'PostColl':>9s} {'x':>5s} | {'Mix':>9s} {'x':>5s}",
          flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for d in (int(x) for x in a.d_list.split(",")):
        for t in (int(x) for x in a.t_list.split(",")):
            r = bench_row(t, d, 4, bw, g)
            rows.append(r)
            print(f"{d:5d} {t:6d} | {r['post_mix_us']:9.2f} {r['post_mix_floor_us']:8.2f} "
                  f"{r['post_mix_x_floor']:5.2f} | {r['unfused_v41_us']:9.2f} | "
                  f"{r['post_pre_v4_us']:10.2f} {r['post_pre_v4_x_floor']:5.2f} | "
                  f"{r['post_collapse_us']:9.2f} {r['post_collapse_x_floor']:5.2f} | "
                  f"{r['mix_us']:9.2f} {r['mix_x_floor']:5.2f}", flush=True)
    if a.json:
        write_run(a.json, dev, bw, dtype="bfloat16", n=4, targets=TARGETS, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
