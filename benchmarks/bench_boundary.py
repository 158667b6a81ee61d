"""Benchmark of a layer boundary: MhcPostPre vs MhcPost + MhcPre, against the floor.

Same harness as bench_kernels.py (CUDA graph replays, inputs rotated past L2,
copy bandwidth measured in the same run). The fused floor reads x, the
residual, the mixes and hc_fn once and writes residual_out, layer_input and
the next mixes once; the unfused pair also reads the residual it just wrote.

    python3 benchmarks/bench_boundary.py --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mhc_export import kernels
from mhc_export.core.spec import num_mixes
from mhc_export.testing.bench import (
    copy_bandwidth,
    fused_floor_bytes,
    nsets,
    time_calls,
    write_run,
)


def boundary_sets(t: int, n: int, d: int, dtype: torch.dtype, g: torch.Generator):
    k, m = n * d, num_mixes(n)
    e = torch.tensor([], dtype=dtype).element_size()
    sets = []
    for _ in range(nsets(2 * t * k * e + m * k * 4)):
        sets.append((
            torch.randn(t, d, device="cuda", generator=g).to(dtype),
            torch.randn(t, n, d, device="cuda", generator=g).to(dtype),
            torch.rand(t, n, device="cuda", generator=g) * 2,
            torch.rand(t, n, n, device="cuda", generator=g),
            torch.randn(m, k, device="cuda", generator=g) / k**0.5,
            0.5 + torch.rand(3, device="cuda", generator=g),
            torch.randn(m, device="cuda", generator=g) * 0.5,
        ))
    return sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t-list", default="1,8,64,4096", help="token counts (default 1,8,64,4096)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    a = ap.parse_args()
    if not torch.cuda.is_available() or not kernels.available():
        print("bench_boundary: needs a CUDA GPU and the kernel library", file=sys.stderr)
        return 2
    bw = copy_bandwidth()
    dev = torch.cuda.get_device_name()
    print(f"{dev}, copy bandwidth {bw / 1e12:.2f} TB/s, bf16, n=4", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for d in (7168, 4096):
        for t in (int(x) for x in a.t_list.split(",")):
            sets = boundary_sets(t, 4, d, torch.bfloat16, g)
            fused, _ = time_calls([lambda s=s: kernels.post_pre(*s) for s in sets])
            plain, _ = time_calls([lambda s=s: kernels.pre(kernels.post(*s[:4]), *s[4:])
                                   for s in sets])
            floor = fused_floor_bytes(t, 4, d, 2) / bw
            row = {"d": d, "T": t, "fused_us": fused * 1e6, "post_plus_pre_us": plain * 1e6,
                   "floor_us": floor * 1e6, "fused_x_floor": fused / floor,
                   "plain_over_fused": plain / fused}
            rows.append(row)
            print(f"d={d:5d} T={t:5d}  MhcPostPre {row['fused_us']:9.2f} us  MhcPost+MhcPre "
                  f"{row['post_plus_pre_us']:9.2f} us  floor {row['floor_us']:8.2f} us  "
                  f"x{row['fused_x_floor']:.2f} floor", flush=True)
            del sets
            torch.cuda.empty_cache()
    if a.json:
        write_run(a.json, dev, bw, dtype="bfloat16", n=4, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
