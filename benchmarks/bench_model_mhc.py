"""Whole-model mHC time: every mHC kernel one forward pass of a model config runs,
plain (MhcPre / MhcPost per sublayer, MhcHead) against fused (MhcPostPre at
every boundary, MhcPostHead at the end), per decode step and per prefill.

The sublayer bodies (attention, FFN) are not timed: each sublayer's output is a
fixed random [T, d] tensor, so the number is the mHC share of a forward pass.
Each call's inputs are the previous call's outputs where the data flows
(residual_out into the next pre, post_mix / comb_mix from the pre into the
post). Same harness as bench_kernels.py: the whole sequence as one CUDA graph,
input sets rotated past L2, copy bandwidth measured in the same run.

    python3 benchmarks/bench_model_mhc.py --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mhc_export import kernels
from mhc_export.core.spec import num_mixes
from mhc_export.reference import eager as reference
from mhc_export.reference.model import get_config
from mhc_export.testing.bench import (
    copy_bandwidth,
    floor_bytes,
    fused_floor_bytes,
    nsets,
    time_calls,
    write_run,
)


def mhc_calls(sublayers: int, fused: bool) -> list[str]:
    """The mHC ops one forward pass runs, in order."""
    if sublayers < 1:
        raise ValueError(f"sublayers must be >= 1, got {sublayers}")
    if not fused:
        return ["pre", "post"] * sublayers + ["head"]
    return ["pre"] + ["post_pre"] * (sublayers - 1) + ["post_head"]


def sequence_floor_bytes(calls: list[str], t: int, n: int, d: int, e: int) -> int:
    """Fewest bytes of the sequence: each op's own floor (bench_kernels, bench_boundary)."""
    k = n * d
    total = 0
    for op in calls:
        if op == "post_pre":
            total += fused_floor_bytes(t, n, d, e)
        elif op == "post_head":  # x, residual, mixes, hc_fn in; y out
            total += t * d * e + t * k * e + t * (n + n * n) * 4 + n * k * 4 + t * d * e
        else:
            total += floor_bytes(op, t, n, d, e)
    return total


def make_set(sublayers: int, t: int, n: int, d: int, dtype: torch.dtype,
             g: torch.Generator) -> dict:
    k, m = n * d, num_mixes(n)

    def weights(rows: int, scales: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(rows, k, device="cuda", generator=g) / k**0.5,
                0.5 + torch.rand(scales, device="cuda", generator=g),
                torch.randn(rows, device="cuda", generator=g) * 0.5)

    return {
        "x0": torch.randn(t, n, d, device="cuda", generator=g).to(dtype),
        "sub_out": [torch.randn(t, d, device="cuda", generator=g).to(dtype)
                    for _ in range(sublayers)],
        "pre_w": [weights(m, 3) for _ in range(sublayers)],
        "head_w": weights(n, 1),
    }


def run_plain(s: dict) -> torch.Tensor:
    x = s["x0"]
    for w, out in zip(s["pre_w"], s["sub_out"], strict=True):
        _, post, comb = kernels.pre(x, *w)
        x = kernels.post(out, x, post, comb)
    return kernels.head(x, *s["head_w"])


def run_fused(s: dict) -> torch.Tensor:
    _, post, comb = kernels.pre(s["x0"], *s["pre_w"][0])
    x = s["x0"]
    for w, out in zip(s["pre_w"][1:], s["sub_out"][:-1], strict=True):
        x, _, post, comb = kernels.post_pre(out, x, post, comb, *w)
    return kernels.post_head(s["sub_out"][-1], x, post, comb, *s["head_w"])


def run_reference(s: dict) -> torch.Tensor:
    """The plain sequence through mhc_export.reference.eager in float32, the residual
    rounded to the kernels' dtype wherever the kernels store it."""
    dt = s["x0"].dtype
    x = s["x0"].float()
    for w, out in zip(s["pre_w"], s["sub_out"], strict=True):
        _, post, comb = reference.mhc_pre(x, *w)
        x = reference.mhc_post(out.float(), x, post, comb).to(dt).float()
    return reference.mhc_head(x, *s["head_w"])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="v4-pro-layer")
    ap.add_argument("--layers", type=int, default=0, help="override the config's layer count")
    ap.add_argument("--t-list", default="1,8,64,4096",
                    help="tokens per forward pass (decode batches, prefill)")
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    a = ap.parse_args()
    try:
        cfg = get_config(a.config, **({"layers": a.layers} if a.layers else {}))
        t_list = [int(v) for v in a.t_list.split(",")]
    except ValueError as exc:
        print(f"bench_model_mhc: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available() or not kernels.available():
        print("bench_model_mhc: needs a CUDA GPU and the kernel library", file=sys.stderr)
        return 2
    n, d, sub = cfg.streams, cfg.hidden, 2 * cfg.layers
    bw = copy_bandwidth()
    dev = torch.cuda.get_device_name()
    print(f"{dev}, copy bandwidth {bw / 1e12:.2f} TB/s; config {cfg.name}: d={d} n={n} "
          f"layers={cfg.layers} ({sub} sublayers), bf16", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for t in t_list:
        per_set = sub * (2 * t * n * d * 2 + num_mixes(n) * n * d * 4)
        sets = [make_set(sub, t, n, d, torch.bfloat16, g) for _ in range(nsets(per_set))]
        # Correct before timed: fused = plain (the same bits by the contract), and
        # the plain sequence against the float32 reference at the smallest T.
        yp, yf = run_plain(sets[0]), run_fused(sets[0])
        fused_vs_plain = rel_err(yf, yp)
        checked = t == min(t_list)
        ref_err = rel_err(yp, run_reference(sets[0])) if checked else float("nan")
        if not fused_vs_plain <= 1e-2 or (checked and not ref_err <= 1e-2):
            print(f"T={t}: WRONG (fused vs plain {fused_vs_plain:.3g}, plain vs reference "
                  f"{ref_err:.3g}); not timed", file=sys.stderr)
            return 1
        plain, _ = time_calls([lambda s=s: run_plain(s) for s in sets])
        fused, _ = time_calls([lambda s=s: run_fused(s) for s in sets])
        fp = sequence_floor_bytes(mhc_calls(sub, False), t, n, d, 2) / bw
        ff = sequence_floor_bytes(mhc_calls(sub, True), t, n, d, 2) / bw
        row = {"T": t, "plain_us": plain * 1e6, "fused_us": fused * 1e6,
               "plain_over_fused": plain / fused, "plain_floor_us": fp * 1e6,
               "fused_floor_us": ff * 1e6, "plain_x_floor": plain / fp,
               "fused_x_floor": fused / ff, "plain_per_layer_us": plain * 1e6 / cfg.layers,
               "fused_per_layer_us": fused * 1e6 / cfg.layers,
               "fused_vs_plain_rel_err": fused_vs_plain, "plain_vs_reference_rel_err": ref_err}
        rows.append(row)
        print(f"T={t:5d}  plain {row['plain_us']:9.2f} us (x{row['plain_x_floor']:.2f} floor)  "
              f"fused {row['fused_us']:9.2f} us (x{row['fused_x_floor']:.2f} floor)  "
              f"plain/fused {row['plain_over_fused']:.3f}  fused-vs-plain err "
              f"{fused_vs_plain:.1e}", flush=True)
        del sets
        torch.cuda.empty_cache()
    if a.json:
        write_run(a.json, dev, bw, config=cfg.to_dict(), dtype="bfloat16", rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
