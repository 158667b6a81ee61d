"""Benchmark of the mHC CUDA kernels against the eager reference and torch.compile.

One run measures, on the same GPU: the device-to-device copy bandwidth (bytes
read + written), then for each op and size the median time per call of the
CUDA kernels, the eager reference (mhc_export.reference.eager) and torch.compile of
the reference, all as CUDA graph replays over input sets rotated so that the
working set exceeds L2. The floor is the minimum bytes (each input read once,
each output written once) over the measured copy bandwidth. With FlashInfer's
bundle (`.peers/flashinfer`, benchmarks/peers/flashinfer_mhc.py) the MhcPre and MhcPost rows
at n=4 also time FlashInfer 0.7.2's mhc kernels in the same harness, once their
outputs pass the float64 reference: `fi us` (pre: a float32 projection, then
`mhc_pre_big_fuse`; post: `mhc_post`), `x fi` = ours / FlashInfer's (< 1: ours
is faster) and `fi fin us` (pre: `mhc_pre_big_fuse` alone). The MhcPre and MhcHead
rows also time a two-pass torch baseline (benchmarks/peers/torch_twopass.py:
`torch.mm` of the 3-term bf16 split of hc_fn, a float32 norm, then our finish
kernel alone), checked against our outputs first: `tp us` and `x tp` = ours / it.

    python3 benchmarks/bench_kernels.py --json out.json
"""

from __future__ import annotations

import argparse
import math
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from peers import flashinfer_mhc, torch_twopass

from mhc_export import kernels
from mhc_export.core.spec import num_mixes
from mhc_export.reference import eager as reference
from mhc_export.testing.bench import (
    ROTATE_BYTES,
    copy_bandwidth,
    floor_bytes,
    nsets,
    time_calls,
    utc_now,
    write_json,
)

T_LIST = (1, 8, 64, 512, 4096, 16384)
MAIN_SHAPES = ((7168, 4), (4096, 4))
# mHC.cu's table (seed 004): (T, d) at n=4.
SEED_CONFIGS = ((320, 1280), (512, 1920), (1280, 2560), (2560, 1280))


def make_sets(op: str, t: int, n: int, d: int, dtype: torch.dtype, gen: torch.Generator):
    e = torch.tensor([], dtype=dtype).element_size()
    k = n * d
    rows = {"pre": num_mixes(n), "head": n}.get(op, 0)
    set_bytes = t * k * e + rows * k * 4 + (t * d * e if op == "post" else 0)
    sets = []
    for _ in range(nsets(set_bytes)):
        residual = torch.randn(t, n, d, device="cuda", generator=gen).to(dtype)
        if op in ("pre", "head"):
            hc_fn = torch.randn(rows, k, device="cuda", generator=gen) / k**0.5
            hc_scale = 0.5 + torch.rand(3 if op == "pre" else 1, device="cuda", generator=gen)
            hc_base = torch.randn(rows, device="cuda", generator=gen) * 0.5
            sets.append((residual, hc_fn, hc_scale, hc_base))
        elif op == "post":
            x = torch.randn(t, d, device="cuda", generator=gen).to(dtype)
            post_mix = torch.rand(t, n, device="cuda", generator=gen) * 2
            comb = torch.rand(t, n, n, device="cuda", generator=gen)
            sets.append((x, residual, post_mix, comb))
        else:
            sets.append((torch.randn(t, n, n, device="cuda", generator=gen),))
    return sets


IMPLS = {
    "pre": (kernels.pre, reference.mhc_pre),
    "post": (kernels.post, reference.mhc_post),
    "head": (kernels.head, reference.mhc_head),
    "sinkhorn": (kernels.sinkhorn, reference.sinkhorn),
}


def time_peer(fi, op: str, sets: list[tuple], row: dict) -> None:
    """FlashInfer's times for this row, after its outputs on the first input set
    pass the float64 reference's gate; a wrong or failing peer is recorded, not timed."""
    try:
        row["fi_rel_err"] = flashinfer_mhc.check(fi, op, sets[0])
    except AssertionError as exc:
        row["fi_status"] = f"peer wrong: {exc}"
        return
    except Exception as exc:  # FlashInfer refused the call: say why, keep the table
        row["fi_status"] = f"peer failed: {type(exc).__name__}: {exc}"[:300]
        return
    torch.cuda.empty_cache()  # the float64 reference's temporaries
    row["fi_status"] = "ok"
    try:
        variants = flashinfer_mhc.calls(fi, op, sets)
        f_s, row["fi_timing"] = time_calls(variants["fi"])
        row["fi_us"] = f_s * 1e6
        row["x_fi"] = row["kernel_us"] / row["fi_us"]  # ours / peer: < 1 means ours is faster
        if "fi_finish" in variants:
            row["fi_finish_us"] = time_calls(variants["fi_finish"])[0] * 1e6
            row["x_fi_finish"] = row["kernel_us"] / row["fi_finish_us"]
    except Exception as exc:  # keep what was measured and the table
        row["fi_status"] = f"peer failed while timed: {type(exc).__name__}: {exc}"[:300]


def time_twopass(op: str, sets: list[tuple], row: dict) -> None:
    """The two-pass torch baseline's time for this row, after its outputs on the
    first input set agree with ours; a failing baseline is recorded, not timed."""
    try:
        ours = IMPLS[op][0](*sets[0])
        row["tp_rel_err"] = torch_twopass.check(op, sets[0], ours if isinstance(ours, tuple)
                                                else (ours,))
        t_s, row["tp_timing"] = time_calls(torch_twopass.calls(op, sets))
        row["tp_us"] = t_s * 1e6
        row["x_tp"] = row["kernel_us"] / row["tp_us"]
        row["tp_status"] = "ok"
    except AssertionError as exc:
        row["tp_status"] = f"baseline wrong: {exc}"
    except Exception as exc:  # e.g. torch.mm without out_dtype: keep the table
        row["tp_status"] = f"baseline failed: {type(exc).__name__}: {exc}"[:300]
    torch.cuda.empty_cache()


def _peer_cells(r: dict) -> str:
    """The table's FlashInfer columns: times, or why there are none."""
    if r.get("fi_status", "ok") != "ok":
        return f"{r['fi_status'].split(':')[0]:>28s}"
    return (f"{r.get('fi_us', math.nan):9.2f} {r.get('x_fi', math.nan):6.2f} "
            f"{r.get('fi_finish_us', math.nan):11.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=Path("bench_kernels.json"))
    ap.add_argument("--ops", default="pre,post,head,sinkhorn")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--quick", action="store_true", help="T in {1, 4096} only")
    ap.add_argument("--no-eager", action="store_true",
                    help="skip the eager baseline (kernel-only sweeps while iterating)")
    ap.add_argument("--t-list", default="", help="comma-separated T values (default: all)")
    ap.add_argument("--no-twopass", action="store_true",
                    help="skip the two-pass torch baseline (benchmarks/peers/torch_twopass.py)")
    ap.add_argument("--peer", choices=("auto", "flashinfer", "none"), default="auto",
                    help="time FlashInfer 0.7.2's mHC kernels next to ours (pre and post, n=4): "
                         "auto = when its bundle (.peers/flashinfer, or "
                         "$MHC_FLASHINFER_BUNDLE) loads, else say why; flashinfer = exit 2 "
                         "if it does not (benchmarks/peers/flashinfer_mhc.py)")
    args = ap.parse_args()
    if not torch.cuda.is_available() or not kernels.available():
        why = kernels.unavailable_reason() if torch.cuda.is_available() else "no CUDA GPU"
        print(f"needs a CUDA GPU and the built kernel library: {why}")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype = torch.bfloat16
    e = 2
    props = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth()
    print(f"device {props.name}, {props.multi_processor_count} SMs; copy bandwidth "
          f"{bw / 1e12:.3f} TB/s (read+write)", flush=True)
    # Launch floor in the same harness: one and two back-to-back tiny kernels
    # (a 1-element fill) per call, as CUDA graph replays.
    tiny = torch.zeros(1, device="cuda")
    floor1, _ = time_calls([lambda: tiny.zero_()])
    floor2, _ = time_calls([lambda: (tiny.zero_(), tiny.add_(1.0))])
    print(f"launch floor: empty kernel {floor1 * 1e6:.2f} us/call, two kernels "
          f"{floor2 * 1e6:.2f} us/call", flush=True)
    t_list = (1, 4096) if args.quick else T_LIST
    if args.t_list:
        t_list = tuple(int(v) for v in args.t_list.split(","))
    configs = [(t, d, n) for d, n in MAIN_SHAPES for t in t_list]
    configs += [(t, d, 4) for t, d in SEED_CONFIGS]
    ops = args.ops.split(",")

    compile_status: dict[str, str] = {}
    compiled: dict[str, Callable] = {}
    if not args.no_compile:
        import torch._dynamo as dynamo

        dynamo.config.cache_size_limit = 64
        for op in ops:
            compiled[op] = torch.compile(IMPLS[op][1], dynamic=None)
            compile_status[op] = "ok"

    fi, fi_status = None, "not asked (--peer none)"
    if args.peer != "none":
        fi, why = flashinfer_mhc.load()
        if fi is not None and (wrong := flashinfer_mhc.self_check(fi)):
            fi, why = None, f"peer wrong (odd-attribute check against float64): {wrong}"
        fi_status = f"flashinfer {flashinfer_mhc.VERSION}" if fi else f"unavailable: {why}"
        print(f"peer: {fi_status}", flush=True)
        if fi is None and args.peer == "flashinfer":
            return 2
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    results = []
    for op in ops:
        op_configs = configs if op != "sinkhorn" else [(t, 0, 4) for t in t_list]
        for t, d, n in op_configs:
            sets = make_sets(op, t, n, d, dtype, gen)
            ours, ref = IMPLS[op]
            row: dict[str, object] = {"op": op, "T": t, "d": d, "n": n, "dtype": "bfloat16",
                                      "sets": len(sets)}
            fb = floor_bytes(op, t, n, d, e)
            row["floor_bytes"] = fb
            row["floor_us"] = fb / bw * 1e6
            k_s, row["timing"] = time_calls([lambda s=s, f=ours: f(*s) for s in sets])
            row["kernel_us"] = k_s * 1e6
            row["achieved_TBps"] = fb / k_s / 1e12
            row["x_floor"] = k_s * 1e6 / row["floor_us"]
            if args.no_eager:
                r_s, row["eager_timing"] = math.nan, "skipped"
            else:
                r_s, row["eager_timing"] = time_calls([lambda s=s, f=ref: f(*s) for s in sets],
                                                      min_calls=8, replays=7)
            row["eager_us"] = r_s * 1e6
            row["speedup_eager"] = r_s / k_s
            if op in compiled and compile_status[op] == "ok":
                try:
                    c_s, row["compile_timing"] = time_calls(
                        [lambda s=s, f=compiled[op]: f(*s) for s in sets], min_calls=8, replays=7)
                    row["compile_us"] = c_s * 1e6
                    row["speedup_compile"] = c_s / k_s
                except Exception as exc:
                    compile_status[op] = f"failed: {type(exc).__name__}: {exc}"[:500]
                    traceback.print_exc()
            if fi is not None and flashinfer_mhc.supports(op, n, d, dtype):
                time_peer(fi, op, sets, row)
            if op in ("pre", "head") and not args.no_twopass:
                time_twopass(op, sets, row)
            results.append(row)
            print(f"{op:8s} T={t:6d} d={d:5d} n={n} kernel {row['kernel_us']:9.2f} us "
                  f"floor {row['floor_us']:9.2f} us x{row['x_floor']:.2f} "
                  f"eager {row['eager_us']:9.1f} us compile "
                  f"{row.get('compile_us', math.nan):9.1f} us"
                  + (f" fi {_peer_cells(row)}" if "fi_status" in row else "")
                  + (f" tp {row.get('tp_us', math.nan):9.2f} us" if "tp_status" in row else ""),
                  flush=True)
            del sets
            torch.cuda.empty_cache()

    out = {
        "date": utc_now(),
        "device": props.name,
        "sms": props.multi_processor_count,
        "torch": torch.__version__,
        "copy_bandwidth_TBps": bw / 1e12,
        "library": str(kernels.library_path()),
        "compile_status": compile_status,
        "rotate_bytes": ROTATE_BYTES,
        "launch_floor_us": {"one_kernel": floor1 * 1e6, "two_kernels": floor2 * 1e6},
        "peer": fi_status,
        "results": results,
    }
    write_json(args.json, out)
    hdr = (f"{'op':8s} {'T':>6s} {'d':>5s} {'n':>2s} {'kernel us':>10s} {'floor us':>9s} "
           f"{'xfloor':>6s} {'TB/s':>5s} {'eager us':>9s} {'x eager':>8s} {'compile us':>10s} "
           f"{'x comp':>7s} {'fi us':>9s} {'x fi':>6s} {'fi fin us':>11s} {'tp us':>9s} "
           f"{'x tp':>6s}")
    print("\n" + hdr)
    for r in results:
        print(f"{r['op']:8s} {r['T']:6d} {r['d']:5d} {r['n']:2d} {r['kernel_us']:10.2f} "
              f"{r['floor_us']:9.2f} {r['x_floor']:6.2f} {r['achieved_TBps']:5.2f} "
              f"{r['eager_us']:9.1f} {r['speedup_eager']:8.1f} "
              f"{r.get('compile_us', math.nan):10.1f} {r.get('speedup_compile', math.nan):7.1f} "
              f"{_peer_cells(r)} {r.get('tp_us', math.nan):9.2f} {r.get('x_tp', math.nan):6.2f}")
    print(f"compile: {compile_status}; json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
