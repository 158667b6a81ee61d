"""A repeatable mutation run over the mHC math and its checks.

    python scripts/qa/mutants.py                 # every mutant, one at a time
    python scripts/qa/mutants.py --list          # the mutants and their test subsets
    python scripts/qa/mutants.py --only R1 O2    # some of them
    python scripts/qa/mutants.py --json out.json # also write the results

Each mutant is one plausible one-line bug in mhc_export/reference/eager.py,
mhc_export/core/checks.py, mhc_export/export/onnx_functions.py,
mhc_export/validation/invariants.py, the V4.1 model and fusion pass
(mhc_export/reference/model.py, export/fuse.py) or the kernels' Python binding
(mhc_export/kernels/_ops.py, _lib.py). The runner copies the tree into
a scratch folder once, applies one mutant there at a time (the working tree is
never touched), and runs that mutant's targeted test subset with pytest
(-x, CPU only). A mutant is killed when pytest fails. Before the mutants, the
unmutated subsets must pass (otherwise nothing below means anything).

The mutation list is ours (not a generic operator sweep): each entry is an
error someone could really make in that file, including every mutation named
in issue 13. docs/TESTING.md records the last full run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

REF = "mhc_export/reference/eager.py"
CHECKS = "mhc_export/core/checks.py"
ONNX = "mhc_export/export/onnx_functions.py"
INV = "mhc_export/validation/invariants.py"
OPS = "mhc_export/kernels/_ops.py"
LIB = "mhc_export/kernels/_lib.py"

MODEL = "mhc_export/reference/model.py"
FUSE = "mhc_export/export/fuse.py"

SUBSETS = {
    REF: ["tests/test_reference.py", "tests/test_model_and_ops.py", "tests/test_v41_ops.py"],
    CHECKS: ["tests/test_reference.py", "tests/test_model_and_ops.py"],
    ONNX: ["tests/test_function_bodies.py",
           "tests/test_v41_onnx.py::test_fixture_in_ort_reference_evaluator_and_tensorrt_rule"],
    INV: ["tests/test_invariants.py", "tests/test_v41_ops.py::test_pre_mix_invariant_bounds"],
    OPS: ["tests/test_kernels_attributes.py"],
    LIB: ["tests/test_kernels_attributes.py"],
    MODEL: ["tests/test_v41_model.py"],
    FUSE: ["tests/test_v41_onnx.py::test_pass_fuses_v41_boundaries",
           "tests/test_v41_onnx.py::test_pass_leaves_engram_and_own_pre_boundaries_alone"],
}


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    what: str
    nth: int = 0  # which occurrence of ``old`` (0: it must be unique)


MUTANTS = [
    # --- the eager reference -------------------------------------------------------
    Mutant("R1", REF, "torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + rms_eps)",
           "1 / (torch.sqrt(x.square().mean(dim=-1, keepdim=True)) + rms_eps)",
           "rsqrt(mean + rms_eps) -> 1 / (sqrt(mean) + rms_eps) (issue 13)"),
    Mutant("R2", REF, "hc_base[:n]) + pre_eps", "hc_base[:n])", "pre_eps dropped"),
    Mutant("R3", REF, "post = post_mult * torch.sigmoid", "post = 2.0 * torch.sigmoid",
           "post_mult hard-coded to 2.0 (issue 13)"),
    Mutant("R4", REF, "c = torch.softmax(logits, dim=-1) + eps",
           "c = torch.softmax(logits, dim=-1)", "Sinkhorn: eps after the softmax dropped"),
    Mutant("R5", REF, "for _ in range(iters - 1):", "for _ in range(iters - 2):",
           "Sinkhorn: one round too few"),
    Mutant("R6", REF, "c = c / (c.sum(dim=-2, keepdim=True) + eps)\n        for",
           "c = c / (c.sum(dim=-1, keepdim=True) + eps)\n        for",
           "Sinkhorn: first normalisation over rows instead of columns"),
    Mutant("R7", REF, "torch.sigmoid(mixes * hc_scale[0] + hc_base) + eps",
           "torch.sigmoid(mixes * hc_scale[0] + hc_base)", "MhcHead: eps dropped"),
    Mutant("R8", REF, "_rms_mixes(residual.reshape(t, n * d).float(), hc_fn, rms_eps)\n    w",
           "_rms_mixes(residual.reshape(t, n * d).float(), hc_fn, 1e-6)\n    w",
           "MhcHead: rms_eps replaced by 1e-6"),
    Mutant("R9", REF, 'eq = "tji,tid->tjd" if transpose_comb else "tij,tid->tjd"',
           'eq = "tij,tid->tjd" if transpose_comb else "tji,tid->tjd"',
           "MhcPost: comb transposed (rows instead of columns)"),
    Mutant("R10", REF, "mixes[:, n : 2 * n] * hc_scale[1]", "mixes[:, n : 2 * n] * hc_scale[2]",
           "post gate reads the comb scale"),
    Mutant("R11", REF, "sinkhorn(logits, sinkhorn_iters, sinkhorn_eps, init=sinkhorn_init)",
           "sinkhorn(logits, sinkhorn_iters, pre_eps, init=sinkhorn_init)",
           "MhcPre's Sinkhorn gets pre_eps instead of sinkhorn_eps"),
    Mutant("R12", CHECKS, "if not math.isfinite(value) or value <= 0:",
           "if not math.isfinite(value) or value < 0:", "post_mult = 0 accepted"),
    # --- the ONNX function bodies ----------------------------------------------------
    Mutant("O1", ONNX, "pre_mix = op.Sigmoid(pre_logit) + op.Constant(value_float=pre_eps)",
           "pre_mix = op.Sigmoid(pre_logit)", "MhcMix (MhcPre's body): + pre_eps dropped"),
    Mutant("O2", ONNX, "op.Constant(value_float=rms_eps)", "op.Constant(value_float=1e-6)",
           "MhcPre: rms_eps replaced by the constant 1e-6 (issue 13)", nth=1),
    Mutant("O3", ONNX, "op.Sigmoid(mixes * hc_scale + hc_base) + op.Constant(value_float=eps)",
           "op.Sigmoid(mixes * hc_scale + hc_base)", "MhcHead: + eps dropped (issue 13)"),
    Mutant("O4", ONNX, "op.Constant(value_float=post_mult)", "op.Constant(value_float=2.0)",
           "MhcPre: post_mult hard-coded to 2.0 (issue 13)"),
    Mutant("O5", ONNX, "rounds = op.Sub(op.Constant(value_int=iters), op.Constant(value_int=1))",
           "rounds = op.Constant(value_int=iters)", "MhcSinkhorn: one round too many"),
    Mutant("O6", ONNX, "c = op.Softmax(logits, axis=-1) + e", "c = op.Softmax(logits, axis=-1)",
           "MhcSinkhorn: eps after the softmax dropped"),
    Mutant("O7", ONNX, "op.MatMul(op.Transpose(comb_mix, perm=[0, 2, 1]), op.Cast(residual, to=1))",
           "op.MatMul(comb_mix, op.Cast(residual, to=1))", "MhcPost: comb not transposed"),
    Mutant("O8", ONNX, "op.Constant(value_float=rms_eps)", "op.Constant(value_float=1e-6)",
           "MhcHead: rms_eps replaced by the constant 1e-6", nth=2),
    Mutant("O9", ONNX, "MhcSinkhorn(logits, iters=sinkhorn_iters, eps=sinkhorn_eps)",
           "MhcSinkhorn(logits, iters=sinkhorn_iters, eps=pre_eps)",
           "MhcPre: Sinkhorn gets pre_eps"),
    Mutant("O10", ONNX, "MhcSinkhorn(logits, iters=sinkhorn_iters, eps=sinkhorn_eps)",
           "MhcSinkhorn(logits, eps=sinkhorn_eps)",
           "MhcPre: sinkhorn_iters not passed (the callee's default 20 runs)"),
    Mutant("O11", ONNX, "s_post = op.Slice(hc_scale, op.Constant(value_ints=[1]), "
           "op.Constant(value_ints=[2]))",
           "s_post = op.Slice(hc_scale, op.Constant(value_ints=[2]), op.Constant(value_ints=[3]))",
           "MhcPre: post gate reads the comb scale"),
    # --- the output invariants -------------------------------------------------------
    Mutant("I1", INV, "kappa ** max(2 * iters - 3, 0)", "kappa ** max(iters - 3, 0)",
           "Sinkhorn bound: contraction exponent 2*iters-3 -> iters-3 (issue 13)"),
    Mutant("I2", INV, "torch.maximum(pre_eps - p, p - (1 + pre_eps))", "(p - (1 + pre_eps))",
           "pre lower bound (pre_eps - p) dropped (issue 13)", nth=1),
    Mutant("I3", INV, "torch.maximum(-p, p - post_mult)", "(p - post_mult)",
           "post lower bound (post < 0) dropped"),
    Mutant("I4", INV, "bound = converge + 2 * eps / (1 - kappa).clamp_min(1e-12) + deficit",
           "bound = converge + deficit", "Sinkhorn bound: the eps term dropped (too tight)"),
    Mutant("I5", INV, "if iters <= 2:", "if iters <= 1:",
           "Sinkhorn bound: the K <= 2 fallback only for K = 1"),
    Mutant("I6", INV, "limit = 1 + bound + 1e-12", "limit = 1 + 10 * bound + 1e-12",
           "spectral norm limit 10x looser"),
    Mutant("I7", INV, "bad = int((~torch.isfinite(c)).sum() + (c < 0).sum())",
           "bad = int((~torch.isfinite(c)).sum())", "negative comb entries not counted"),
    Mutant("I8", INV, "err = u * y.norm(dim=-1) + acc", "err = 30 * u * y.norm(dim=-1) + acc",
           "pre recovery tolerance 30x looser"),
    Mutant("I9", INV, "converge = torch.expm1(dist.clamp_max(math.log(n + 1.0)))",
           "converge = torch.expm1(dist.clamp_max(math.log(n + 1.0))) * 8",
           "Sinkhorn bound 8x looser"),
    # --- DeepSeek-V4.1 (issue 23): the delayed pre and its checks ----------------------
    Mutant("V1", REF, "return (residual_out, _collapse(residual_out, pre_mix), *mixes)",
           "return (residual_out, _collapse(residual_out, mixes[0]), *mixes)",
           "MhcPostMix collapses with the site's own pre (V4's wiring)"),
    Mutant("V2", ONNX, "layer_input = MhcCollapse(residual_out, pre_mix)",
           "layer_input = MhcCollapse(residual, pre_mix)",
           "MhcPostMix body collapses the input residual, not residual_out"),
    Mutant("V3", INV, "(1 + pre_eps) * 2.0**-23,", "(1 + pre_eps) * 2.0**-23 + 0.01,",
           "pre_mix range limit loosened by 0.01"),
    Mutant("V4", MODEL, "y = ops.collapse(x, pre) if y is None else y",
           "y = ops.collapse(x, next_pre) if y is None else y",
           "V4.1 model collapses each site with its own pre"),
    Mutant("V5", FUSE, "if _depends_on(producer, collapse.input[1], r):", "if False:",
           "fusion pass fuses a site that collapses with its own pre"),
    # --- the kernels' Python binding -------------------------------------------------
    Mutant("K1", OPS, "PreParams(rms_eps, pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters)",
           "PreParams(pre_eps, rms_eps, sinkhorn_eps, post_mult, sinkhorn_iters)",
           "rms_eps and pre_eps swapped into the C struct"),
    Mutant("K2", OPS, "HeadParams(rms_eps, eps)", "HeadParams(eps, rms_eps)",
           "head rms_eps and eps swapped"),
    Mutant("K3", OPS, "t, n, iters, eps,", "t, n, iters, 1e-6,", "Sinkhorn eps not passed"),
    Mutant("K4", OPS, "ptr(post_mix), ptr(comb_mix), ptr(res)",
           "ptr(comb_mix), ptr(post_mix), ptr(res)", "MhcPost gates swapped"),
    Mutant("K5", OPS, "    check_attributes(rms_eps=rms_eps, eps=eps)\n", "",
           "MhcHead attributes not checked before the C call"),
    Mutant("K6", LIB, '("sinkhorn_eps", ctypes.c_float),\n        ("post_mult", ctypes.c_float),',
           '("post_mult", ctypes.c_float),\n        ("sinkhorn_eps", ctypes.c_float),',
           "ctypes struct fields out of the header's order"),
]


@dataclass
class Result:
    id: str
    file: str
    what: str
    killed: bool
    seconds: float
    detail: str


def _scratch_copy(dest: Path) -> None:
    for name in ("mhc_export", "tests", "scripts", "native/kernels"):
        shutil.copytree(ROOT / name, dest / name, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.onnx*"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _apply(text: str, m: Mutant) -> str:
    count = text.count(m.old)
    if m.nth == 0 and count != 1:
        raise SystemExit(f"mutant {m.id}: expected one occurrence in {m.file}, found {count}")
    if m.nth > count:
        raise SystemExit(f"mutant {m.id}: occurrence {m.nth} asked, {count} in {m.file}")
    at = -1
    for _ in range(max(m.nth, 1)):
        at = text.index(m.old, at + 1)
    return text[:at] + m.new + text[at + len(m.old):]


def _pytest(tree: Path, tests: list[str], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    # The binding is mutated and tested on CPU: keep GPU switches out of the run.
    for key in ("MHC_REQUIRE_GPU", "MHC_REQUIRE_PLUGIN_BUILDS"):
        env.pop(key, None)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return proc.returncode, (lines[0] if lines else summary)[:200]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest run")
    args = ap.parse_args(argv)
    mutants = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in MUTANTS})
        if unknown:
            print(f"error: unknown mutant id(s) {unknown}", file=sys.stderr)
            return 2
        mutants = [m for m in MUTANTS if m.id in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.id:4} {m.file:32} {m.what}  [{' '.join(SUBSETS[m.file])}]")
        return 0
    start = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mhc-mutants-") as tmp:
        tree = Path(tmp)
        _scratch_copy(tree)
        originals = {f: (tree / f).read_text() for f in SUBSETS}
        for m in mutants:  # every mutant must apply before anything runs
            _apply(originals[m.file], m)
        subsets = sorted({t for m in mutants for t in SUBSETS[m.file]})
        t0 = time.monotonic()
        rc, detail = _pytest(tree, subsets, args.timeout)
        print(f"baseline ({' '.join(subsets)}): rc={rc} {detail} "
              f"[{time.monotonic() - t0:.0f} s]", flush=True)
        if rc != 0:
            print("error: the unmutated test subsets fail; fix that first", file=sys.stderr)
            return 1
        for m in mutants:
            path = tree / m.file
            path.write_text(_apply(originals[m.file], m))
            t0 = time.monotonic()
            rc, detail = _pytest(tree, SUBSETS[m.file], args.timeout)
            path.write_text(originals[m.file])
            killed = rc not in (0, 5)
            res = Result(m.id, m.file, m.what, killed, round(time.monotonic() - t0, 1),
                         detail if killed else "SURVIVED")
            results.append(res)
            print(f"{m.id:4} {'killed  ' if killed else 'SURVIVED'} {res.seconds:6.1f} s  "
                  f"{m.what}  <- {res.detail}", flush=True)
    survived = [r.id for r in results if not r.killed]
    total = time.monotonic() - start
    print(f"\n{len(results) - len(survived)} killed, {len(survived)} survived "
          f"{survived or ''} of {len(results)} mutants in {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         "seconds": round(total), "cpus": os.cpu_count(),
                                         "results": [asdict(r) for r in results]}, indent=1))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
