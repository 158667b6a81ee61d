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

The mutation list (scripts/qa/mutants.json, data) is ours, not a generic
operator sweep: each entry is an error someone could really make in that file,
including every mutation named in issue 13. docs/TESTING.md records the last full run.
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


# The mutants, as data: id, file, what it breaks, the text replaced and its replacement,
# and for a text that is not unique which occurrence (1-based).
MUTANTS = [Mutant(**m) for m in json.loads((Path(__file__).with_name("mutants.json")).read_text())]


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
