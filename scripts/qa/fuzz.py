"""Fuzz every backend of the V4 and V4.1 mHC ops against the independent float64 reference.

    python scripts/qa/fuzz.py --count 1000 --seed 1 [--json out.json]            # CPU backends
    python scripts/qa/fuzz.py --count 1000 --seed 2 --gpu [--harness-every 4]     # + GPU backends

Each configuration draws an op (V4's MhcPre, MhcSinkhorn, MhcPost, MhcHead and
V4.1's MhcMix, MhcCollapse, MhcPostMix, MhcPostCollapse), T, n in 1..8, d (any
on CPU, including odd and non-multiples of 8; multiples of 8 on the GPU, which
the kernels need), the residual dtype and every attribute across its valid
range (iters 1 and 100, eps 0, post_mult from 0.1 to 10, logits up to |1e4|;
V4.1's rms_eps down to V4.1-Flash's 1e-20; the given pre_mix of a collapse a
real pre in [pre_eps, 1 + pre_eps]), then runs:

  eager     mhc_export.reference.eager (the eager PyTorch ops)
  ops       torch.ops.mhc.* (the custom ops the exporter traces)
  ort       the single-op ONNX model in ONNX Runtime (CPU)
  onnxref   the same model in onnx.reference.ReferenceEvaluator
  kernels   the CUDA kernels (--gpu)
  plugin    the TensorRT plugin through mhc_plugin_harness (--gpu, every k-th config)

and compares each output with mhc_export/testing/f64.py (max |err| / max |ref|)
against the tolerance of its dtype (float32 1e-4, float16 4e-3, bfloat16 2e-2).
A configuration whose float64 reference is itself non-finite (eps 0 with a
column of exp() underflowing to 0: 0/0) is counted as degenerate and skipped.
Prints a table of counts and worst errors per backend; exit 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from mhc_export.core.spec import (
    ALL_OPS,
    MAX_STREAMS,
    OPS,
    V41_FLASH_RMS_EPS,
    V41_OPS,
    num_mixes,
)
from mhc_export.export.single_op import SingleOp, build_single_op_model
from mhc_export.reference import eager as reference
from mhc_export.reference import ops
from mhc_export.testing.f64 import (
    collapse_f64,
    head_f64,
    mix_f64,
    post_collapse_f64,
    post_f64,
    post_mix_f64,
    pre_f64,
    sinkhorn_f64,
)
from mhc_export.validation.report import tolerance_for

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FUZZED_OPS = (*OPS, *V41_OPS)
# Outputs in the residual dtype; every other output is a float32 gate (mix).
RESIDUAL_OUTPUTS = frozenset({"layer_input", "out", "y", "residual_out"})
# Ops whose outputs pass through the gates' sigmoid/Sinkhorn (see tolerance()).
GATED_OPS = frozenset({"pre", "sinkhorn", "head", "mix", "post_mix"})


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _eps(rng: np.random.Generator, hi: float = 0.1, lo: float = 1e-9) -> float:
    return 0.0 if rng.random() < 0.15 else _log_uniform(rng, lo, hi)


def _iters(rng: np.random.Generator) -> int:
    r = rng.random()
    return 1 if r < 0.1 else 100 if r < 0.2 else int(rng.integers(1, 101))


def _pre_attrs(rng: np.random.Generator, rms_lo: float = 1e-9) -> dict:
    """MhcPre's attributes (MhcMix and MhcPostMix take the same ones)."""
    return {"rms_eps": _eps(rng, 1.0, rms_lo), "pre_eps": _eps(rng),
            "sinkhorn_eps": _eps(rng), "post_mult": _log_uniform(rng, 0.1, 10.0),
            "sinkhorn_iters": _iters(rng)}


def _v41_rms_eps(rng: np.random.Generator) -> float:
    """V4.1's rms_eps: V4.1-Flash's own 1e-20 one time in five, else down to it."""
    return V41_FLASH_RMS_EPS if rng.random() < 0.2 else _eps(rng, 1.0, V41_FLASH_RMS_EPS)


def draw(rng: np.random.Generator, gpu: bool) -> dict:
    op = str(rng.choice(list(FUZZED_OPS)))
    n = int(rng.integers(1, MAX_STREAMS + 1))
    if gpu:
        d = 7168 if rng.random() < 0.05 else 8 * int(rng.integers(1, 129))
        t = int(rng.choice([1, 2, 3, 8, 17, 64, 65, 129, 300, 1024]))
    else:
        d = int(rng.integers(1, 301))
        t = int(rng.integers(1, 65))
    dtype = torch.float32 if op == "sinkhorn" else DTYPES[int(rng.integers(0, 3))]
    attrs = {
        "pre": lambda: _pre_attrs(rng),
        "sinkhorn": lambda: {"iters": _iters(rng), "eps": _eps(rng)},
        "post": lambda: {},
        "head": lambda: {"rms_eps": _eps(rng, 1.0), "eps": _eps(rng)},
        "mix": lambda: {**_pre_attrs(rng), "rms_eps": _v41_rms_eps(rng)},
        "collapse": lambda: {},
        "post_mix": lambda: {**_pre_attrs(rng), "rms_eps": _v41_rms_eps(rng)},
        "post_collapse": lambda: {},
    }[op]()
    # The pre a collapse is given: a real one, sigmoid + pre_eps, so in [pre_eps, 1 + pre_eps]
    # (MhcPostMix's is the previous site's, made with the same pre_eps as its own).
    pre_eps = attrs["pre_eps"] if "pre_eps" in attrs else _eps(rng)
    # Logit scale: how far the mixes (or Sinkhorn logits) swing, up to |1e4|. With a
    # Sinkhorn eps of 0 it stays <= 10: beyond, float32 exp() underflows whole columns
    # to 0 and the column quotient is 0/0, undefined in float32 (float64 still copes).
    eps0 = attrs.get("sinkhorn_eps", attrs.get("eps")) == 0.0 and op in (
        "pre", "sinkhorn", "mix", "post_mix")
    scale = _log_uniform(rng, 1e-2, 10.0 if eps0 else 1e4)
    res_scale = _log_uniform(rng, 1e-3, 1e2 if dtype == torch.float16 else 1e3)
    return {"op": op, "n": n, "d": d, "t": t, "dtype": dtype, "attrs": attrs, "scale": scale,
            "res_scale": res_scale, "pre_eps": pre_eps, "seed": int(rng.integers(0, 2**31))}


def make_inputs(c: dict) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(c["seed"])
    t, n, d, dtype = c["t"], c["n"], c["d"], c["dtype"]

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    if c["op"] == "sinkhorn":
        return {"logits": randn(t, n, n) * c["scale"]}
    rows, scales = (n, 1) if c["op"] == "head" else (num_mixes(n), 3)
    # hc_scale multiplies the (unit-RMS) mixes: it sets the logit scale.
    values = {"x": (randn(t, d) * c["res_scale"]).to(dtype),
              "residual": (randn(t, n, d) * c["res_scale"]).to(dtype),
              "pre_mix": torch.rand(t, n, generator=g) + c["pre_eps"],
              "post_mix": 2.0 * torch.rand(t, n, generator=g),
              "comb_mix": sinkhorn_f64(randn(t, n, n) * 2.0).float(),
              "hc_fn": randn(rows, n * d, scale=(n * d) ** -0.5),
              "hc_scale": c["scale"] * (0.5 + torch.rand(scales, generator=g)),
              "hc_base": randn(rows, scale=0.5)}
    return {k: values[k] for k in ALL_OPS[c["op"]].inputs}


def expected(c: dict, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    a, v = c["attrs"], list(x.values())
    if c["op"] == "pre":
        li, post, comb, _ = pre_f64(*v, **a)
        return {"layer_input": li, "post_mix": post, "comb_mix": comb}
    if c["op"] == "sinkhorn":
        return {"comb": sinkhorn_f64(x["logits"], a["iters"], a["eps"])}
    if c["op"] == "post":
        return {"out": post_f64(*v)}
    if c["op"] == "head":
        return {"y": head_f64(*v, **a)}
    fn = {"mix": mix_f64, "collapse": collapse_f64, "post_mix": post_mix_f64,
          "post_collapse": post_collapse_f64}[c["op"]]
    return _named(c, fn(*v, **a))


def conditioned(c: dict, x: dict[str, torch.Tensor], ref: dict[str, torch.Tensor],
                got: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MhcPostMix's next mixes read residual_out rounded to the residual dtype (the
    spec's rounding point 1). The float64 reference rounds its float64 sum, a backend
    its float32 sum: now and then one element lands one ulp apart (within residual_out's
    own tolerance), and through the 1/sqrt(mean x^2) and the gates that ulp moves the
    float32 mixes by up to ~1e-4 (seed 21: one float16 element of 8960, 1.2e-4). So the
    mixes are checked against float64 MhcMix of the backend's own residual_out (itself
    checked against the reference): ~4e-7 there."""
    if c["op"] != "post_mix":
        return ref
    rounded = got["residual_out"].detach().cpu()
    if rounded.shape != ref["residual_out"].shape:
        return ref
    w = (x["hc_fn"], x["hc_scale"], x["hc_base"])
    mixes = mix_f64(rounded.to(c["dtype"]), *w, **c["attrs"])
    return {**ref, **dict(zip(("next_pre_mix", "next_post_mix", "next_comb_mix"), mixes,
                              strict=True))}


def _named(c: dict, out) -> dict[str, torch.Tensor]:
    out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return dict(zip(ALL_OPS[c["op"]].outputs, out, strict=True))


def run_eager(c, x):
    a, v = c["attrs"], list(x.values())
    fn = {"pre": reference.mhc_pre, "sinkhorn": reference.sinkhorn, "post": reference.mhc_post,
          "head": reference.mhc_head, "mix": reference.mhc_mix,
          "collapse": reference.mhc_collapse, "post_mix": reference.mhc_post_mix,
          "post_collapse": reference.mhc_post_collapse}[c["op"]]
    if c["op"] == "sinkhorn":
        return _named(c, fn(x["logits"], a["iters"], a["eps"]))
    return _named(c, fn(*v, **a))


def run_ops(c, x):
    a, v = c["attrs"], list(x.values())
    if c["op"] == "pre":
        return _named(c, ops.pre(*v, a["rms_eps"], a["pre_eps"], a["sinkhorn_eps"],
                                 a["post_mult"], a["sinkhorn_iters"]))
    if c["op"] == "sinkhorn":
        return _named(c, ops.sinkhorn(x["logits"], a["iters"], a["eps"]))
    if c["op"] == "post":
        return _named(c, ops.post(*v))
    if c["op"] == "head":
        return _named(c, ops.head(*v, a["rms_eps"], a["eps"]))
    # V4.1: torch.ops.mhc.<op>, the attributes positional in the contract's order.
    order = [x.name for x in ALL_OPS[c["op"]].attributes]
    return _named(c, getattr(torch.ops.mhc, c["op"])(*v, *(a[k] for k in order)))


def _np(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def run_ort(c, x, model):
    from mhc_export.validation import ort_runner

    sess = ort_runner.session(model.SerializeToString(), "CPUExecutionProvider")
    return ort_runner.run(sess, x)


def run_onnxref(c, x, model):
    from onnx.reference import ReferenceEvaluator

    with np.errstate(over="ignore", invalid="ignore"):  # sigmoid of |logits| ~ 1e4 saturates
        outs = ReferenceEvaluator(model).run(None, {k: _np(v) for k, v in x.items()})
    return _named(c, tuple(torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outs))


def run_kernels(c, x):
    from mhc_export import kernels

    a = c["attrs"]
    xs = {k: v.cuda() for k, v in x.items()}
    # mhc_export.kernels names each op as the spec does (V4.1's through _ops_v41.py).
    out = getattr(kernels, c["op"])(*xs.values(), **a)
    return {k: v.cpu() for k, v in _named(c, out).items()}


def run_plugin(c, x, harness: tuple[Path, Path], tmp: Path):
    exe, lib = harness
    for k, v in x.items():
        (v.contiguous().view(torch.int16) if v.dtype == torch.bfloat16 else v.contiguous()
         ).numpy().tofile(tmp / f"T{c['t']}.{k}.bin")
    kinds = {a.name: a.kind for a in ALL_OPS[c["op"]].attributes}
    attr_args = [s for k, v in c["attrs"].items() for s in ("--attr", f"{k}:{kinds[k]}={v!r}")]
    dtype = {torch.float32: "float32", torch.float16: "float16",
             torch.bfloat16: "bfloat16"}[c["dtype"]]
    proc = subprocess.run([str(exe), str(lib), "run", "--op", c["op"], "--dtype", dtype,
                           "--n", str(c["n"]), "--d", str(c["d"] if c["op"] != "sinkhorn" else 1),
                           "--T", str(c["t"]), "--dir", str(tmp), *attr_args],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("harness failed: " + proc.stdout[-500:])
    ref = expected(c, x)
    outs = {}
    for name, r in ref.items():
        dt = c["dtype"] if name in RESIDUAL_OUTPUTS else torch.float32
        raw = np.fromfile(tmp / f"T{c['t']}.{name}.out.bin",
                          dtype={torch.bfloat16: np.int16, torch.float16: np.float16,
                                 torch.float32: np.float32}[dt])
        t = torch.from_numpy(raw.copy())
        if dt == torch.bfloat16:
            t = t.view(torch.bfloat16)
        outs[name] = t.reshape(r.shape)
    return outs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200, help="configurations (default: 200)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    ap.add_argument("--gpu", action="store_true", help="also the CUDA kernels and the plugin")
    ap.add_argument("--harness-every", type=int, default=4, metavar="K",
                    help="with --gpu: drive the plugin harness on every K-th config (default 4)")
    ap.add_argument("--only", help="comma-separated backends to run (default: all that apply), "
                                   "e.g. --only kernels,plugin on the GPU machine")
    ap.add_argument("--json", type=Path, help="write counts and worst errors as JSON")
    args = ap.parse_args(argv)
    if args.count < 1 or args.harness_every < 1:
        ap.error("--count and --harness-every must be >= 1")
    harness = None
    if args.gpu:
        from mhc_export import kernels
        from mhc_export.core import build_layout

        if not torch.cuda.is_available() or not kernels.available():
            print(f"fuzz: --gpu needs a CUDA GPU and the kernel library "
                  f"({kernels.unavailable_reason()})", file=sys.stderr)
            return 2
        for major in build_layout.TRT_MAJORS:
            exe = build_layout.plugin_build_dir(major) / build_layout.HARNESS
            if exe.is_file() and build_layout.plugin_library(major).is_file():
                harness = (exe, build_layout.plugin_library(major))
                break
    rng = np.random.default_rng(args.seed)
    stats: dict[str, dict] = defaultdict(lambda: {"checked": 0, "mismatches": 0, "worst": 0.0,
                                                  "worst_config": None, "worst_error": {},
                                                  "by_op": {}})
    degenerate = 0
    failures = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmpdir:
        for i in range(args.count):
            c = draw(rng, args.gpu)
            x = make_inputs(c)
            ref = expected(c, x)
            if not all(bool(torch.isfinite(r).all()) for r in ref.values()):
                degenerate += 1
                continue
            spec = SingleOp.create(c["op"], c["n"], c["d"], c["dtype"], **c["attrs"])
            c["attrs"] = {k: spec.attrs[k] for k in c["attrs"]}  # the float32 values ONNX holds
            ref = expected(c, x)
            model = build_single_op_model(spec)
            backends = {"eager": lambda c=c, x=x: run_eager(c, x),
                        "ops": lambda c=c, x=x: run_ops(c, x),
                        "ort": lambda c=c, x=x, m=model: run_ort(c, x, m),
                        "onnxref": lambda c=c, x=x, m=model: run_onnxref(c, x, m)}
            if args.gpu:
                backends["kernels"] = lambda c=c, x=x: run_kernels(c, x)
                if harness and i % args.harness_every == 0:
                    backends["plugin"] = lambda c=c, x=x: run_plugin(c, x, harness, Path(tmpdir))
            if args.only:
                backends = {k: v for k, v in backends.items() if k in args.only.split(",")}
            for name, fn in backends.items():
                s = stats[name]
                s["checked"] += 1
                try:
                    got = fn()
                    errs = {k: (error(c, k, got[k], r, x), tolerance(c, k))
                            for k, r in conditioned(c, x, ref, got).items()}
                except Exception as e:
                    errs = {"error": (math.inf, 0.0)}
                    failures.append((name, _describe(c), f"{type(e).__name__}: {e}"[:300]))
                for k, (e, _) in errs.items():
                    kind = (str(c["dtype"]).removeprefix("torch.")
                            if k in RESIDUAL_OUTPUTS else "float32 gates")
                    s["worst_error"][kind] = max(s["worst_error"].get(kind, 0.0), e)
                worst = max(e / tol if tol else math.inf for e, tol in errs.values())
                o = s["by_op"].setdefault(c["op"], {"checked": 0, "mismatches": 0, "worst": 0.0})
                o["checked"] += 1
                o["mismatches"] += worst > 1.0
                o["worst"] = max(o["worst"], worst)
                if worst > s["worst"]:
                    s["worst"], s["worst_config"] = worst, _describe(c) | {
                        "errors": {k: e for k, (e, _) in errs.items()}}
                if worst > 1.0:
                    s["mismatches"] += 1
                    if not failures or failures[-1][0] != name:
                        failures.append((name, _describe(c), errs))
    elapsed = time.perf_counter() - t0
    print(f"fuzz: {args.count} configurations, seed {args.seed}, {elapsed:.0f} s, "
          f"{degenerate} degenerate (float64 reference non-finite)")
    print(f"{'backend':<9} {'checked':>8} {'mismatches':>11} {'worst err/tol':>14}  worst rel err")
    for name, s in stats.items():
        by = ", ".join(f"{k} {v:.2e}" for k, v in sorted(s["worst_error"].items()))
        print(f"{name:<9} {s['checked']:>8} {s['mismatches']:>11} {s['worst']:>14.3g}  {by}")
    names = list(stats)
    print(f"{'worst err/tol':<14}" + "".join(f"{n:>10}" for n in names) + "   (checked)")
    for op in FUZZED_OPS:
        per = [stats[n]["by_op"].get(op) for n in names]
        if any(per):
            cells = "".join(f"{p['worst']:>10.3g}" if p else f"{'-':>10}" for p in per)
            print(f"{op:<14}{cells}   ({max(p['checked'] for p in per if p)})")
    for f in failures[:10]:
        print("MISMATCH", f[0], json.dumps(f[1], default=str), f[2])
    if args.json:
        args.json.write_text(json.dumps({
            "count": args.count, "seed": args.seed, "gpu": args.gpu, "seconds": round(elapsed, 1),
            "degenerate": degenerate, "backends": stats, "failures": failures[:50]},
            indent=1, default=str))
    return 1 if any(s["mismatches"] for s in stats.values()) else 0


def error(c: dict, output: str, got: torch.Tensor, ref: torch.Tensor,
          inputs: dict[str, torch.Tensor]) -> float:
    """max |got - ref| / max |ref|, the scale floored at 1e-3 of the output's natural range:
    post_mix lives in [0, post_mult], pre and comb in [0, 1] (+ eps), and layer_input / y /
    residual_out are gated sums of the residual streams. When every gate of a run sits at
    sigmoid(-1000) ~ 1e-435, float32's exact 0 is not a 100% error."""
    residual = inputs.get("residual")
    stream_max = float(residual.double().abs().max()) if residual is not None else 0.0
    post_mult = c["attrs"].get("post_mult", 1.0)
    floor = {"post_mix": post_mult, "next_post_mix": post_mult, "comb_mix": 1.0,
             "next_comb_mix": 1.0, "pre_mix": 1.0, "next_pre_mix": 1.0, "comb": 1.0,
             "layer_input": stream_max, "y": stream_max, "residual_out": stream_max}
    a, e = got.detach().double().cpu(), ref.double()
    if not torch.isfinite(a).all():
        return math.inf
    scale = max(float(e.abs().max()), 1e-3 * floor.get(output, 0.0), 1e-300)
    return float((a - e).abs().max()) / scale


def tolerance(c: dict, output: str) -> float:
    """The dtype's tolerance, widened by the conditioning of the gates: the float32
    rounding of a mix (~6e-8 relative) moves a logit by scale x 6e-8, so outputs that
    pass through the gates may move in proportion to the logit scale beyond 10. The
    outputs of MhcPost, MhcCollapse and MhcPostCollapse, and MhcPostMix's residual_out
    and layer_input (the given gates applied), pass through none."""
    base = tolerance_for(c["dtype"] if output in RESIDUAL_OUTPUTS else "float32")
    gated = c["op"] in GATED_OPS and not (c["op"] == "post_mix" and output in RESIDUAL_OUTPUTS)
    return base * (max(1.0, c["scale"] / 10.0) if gated else 1.0)


def _describe(c: dict) -> dict:
    return {k: (str(v) if isinstance(v, torch.dtype) else v) for k, v in c.items()}


if __name__ == "__main__":
    sys.exit(main())
