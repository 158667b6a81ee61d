"""Fuzz the command line with bad input: every case must exit 2 with one line, no file.

    python scripts/fuzz_cli.py --count 200 --seed 1

Each case takes a valid command and breaks one thing: a size out of range or
not a number, an unknown dtype or attribute, an attribute value outside its
range, an output path that is a directory or lies under a file, a corrupt,
truncated or missing checkpoint or ONNX file, or flags that conflict. The
command runs in-process (mhc_export.cli.main); the case passes when it exits
2, printed exactly one line on stderr naming a flag, file or value, printed no
traceback, and left no new file in its output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mhc_export.cli import main as cli_main  # noqa: E402

BASES = [
    ["export", "--op", "pre", "--streams", "4", "--hidden", "16", "--no-validate"],
    ["export", "--op", "head", "--streams", "3", "--hidden", "8", "--no-validate"],
    ["export", "--op", "sinkhorn", "--streams", "2", "--no-validate"],
    ["export", "--config", "tiny", "--no-validate"],
]
BAD_SIZES = ["0", "-1", "9", "100", "abc", "1.5", ""]
BAD_DTYPES = ["int8", "float64", "bf16x", "half2"]
BAD_ATTRS = {
    "pre": ["sinkhorn_iters=0", "sinkhorn_iters=-3", "sinkhorn_iters=2.5", "rms_eps=-1",
            "pre_eps=nan", "post_mult=0", "post_mult=-2", "sinkhorn_eps=inf", "bogus=1",
            "rms_eps", "=3"],
    "head": ["eps=-0.1", "rms_eps=nan", "iters=3"],
    "sinkhorn": ["iters=0", "eps=-1", "eps=abc"],
}


def _corrupt(path: Path, rnd: random.Random, kind: str) -> Path:
    if kind == "random":
        path.write_bytes(rnd.randbytes(rnd.randint(1, 4096)))
    elif kind == "empty":
        path.write_bytes(b"")
    return path


def make_case(rnd: random.Random, tmp: Path, fixtures: dict[str, Path]) -> list[str]:
    base = list(rnd.choice(BASES))
    out = ["--out", str(tmp / "out" / "m.onnx")]
    kind = rnd.choice(["size", "dtype", "attr", "out", "file", "conflict", "opset"])
    op = base[2] if base[1] == "--op" else None
    if kind == "size":
        flag = rnd.choice(["--streams", "--hidden", "--tokens"] if op else ["--batch", "--seq"])
        if op == "sinkhorn" and flag == "--hidden":
            flag = "--streams"
        if flag in ("--tokens", "--batch", "--seq"):
            base = [a for a in base if a != "--no-validate"]
        value = rnd.choice(BAD_SIZES if flag == "--streams" else
                           [v for v in BAD_SIZES if v not in ("9", "100")])
        base = _set(base, flag, value)
    elif kind == "dtype":
        base = _set(base, "--dtype", rnd.choice(BAD_DTYPES))
    elif kind == "attr" and op:
        base += ["--attr", rnd.choice(BAD_ATTRS[op])]
    elif kind == "out":
        out = ["--out", str(tmp) if rnd.random() < 0.5 else str(fixtures["file"] / "m.onnx")]
    elif kind == "file":
        which = rnd.choice(["checkpoint", "onnx", "missing-checkpoint", "missing-onnx"])
        bad = tmp / f"bad_{rnd.randint(0, 1 << 30)}"
        if which == "checkpoint":
            return ["export", "--checkpoint",
                    str(_corrupt(bad, rnd, rnd.choice(["random", "empty"]))), *out]
        if which == "onnx":
            return ["validate", "--onnx", str(_corrupt(bad, rnd, rnd.choice(["random", "empty"]))),
                    "--report", str(tmp / "out" / "r.json")]
        if which == "missing-checkpoint":
            return ["export", "--checkpoint", str(bad), *out]
        return ["validate", "--onnx", str(bad)]
    elif kind == "conflict":
        return rnd.choice([
            ["export", "--config", "tiny", "--streams", "3", *out],
            ["export", "--op", "pre", "--config", "small", *out],
            ["export", "--op", "sinkhorn", "--dtype", "bfloat16", *out],
            ["export", "--op", "sinkhorn", "--hidden", "8", *out],
            ["export", "--op", "post", "--no-validate", "--tokens", "3", *out],
            ["export", "--config", "tiny", "--seq", "200000", *out],
            ["export", "--config", "small", "--checkpoint", str(fixtures["ckpt"]), *out],
        ])
    else:
        base += ["--opset", rnd.choice(["0", "16", "x"])]
    return [*base, *out]


def _set(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        i = args.index(flag)
        return [*args[:i + 1], value, *args[i + 2:]]
    return [*args, flag, value]


def run_case(args: list[str], outdir: Path) -> str | None:
    """None when the case behaved; else what went wrong."""
    before = set(outdir.rglob("*")) if outdir.exists() else set()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(args)
    except SystemExit as e:
        rc = e.code
    except BaseException as e:
        return f"raised {type(e).__name__}: {e}"
    text = err.getvalue().strip()
    after = set(outdir.rglob("*")) if outdir.exists() else set()
    if rc != 2:
        return f"exit {rc}: {text[:300]}"
    if len(text.splitlines()) != 1:
        return f"{len(text.splitlines())} lines on stderr: {text[:300]}"
    if "Traceback" in text:
        return f"traceback: {text[:300]}"
    if after - before:
        return f"left files: {sorted(str(p) for p in after - before)}"
    return None


def fuzz(count: int, seed: int) -> tuple[int, list[tuple[list[str], str]]]:
    rnd = random.Random(seed)
    failures = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "file").write_text("not a folder")
        ckpt = tmp / "tiny.safetensors"
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli_main(["export", "--config", "tiny", "--no-validate", "--out",
                             str(tmp / "tiny.onnx"), "--save-checkpoint", str(ckpt)]) == 0
        fixtures = {"file": tmp / "file", "ckpt": ckpt}
        for _ in range(count):
            args = make_case(rnd, tmp, fixtures)
            problem = run_case(args, tmp / "out")
            if problem:
                failures.append((args, problem))
    return count, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    count, failures = fuzz(a.count, a.seed)
    print(f"fuzz_cli: {count} bad invocations, seed {a.seed}: {count - len(failures)} exited 2 "
          f"with one line and no file, {len(failures)} did not")
    for args, problem in failures[:20]:
        print("FAIL", " ".join(args), "->", problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
