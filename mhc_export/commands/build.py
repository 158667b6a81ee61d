"""``mhc-export build``: ONNX -> TensorRT engine (plan + JSON sidecar)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..core.errors import EXIT_OK
from ..core.preflight import check_outputs
from ..engine.builder import (
    DEFAULT_DECODE_MAX_TOKENS,
    DEFAULT_PREFILL_MAX_TOKENS,
    BuildResult,
    Precision,
    build_engine,
)


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """The engine options shared by ``mhc-export build`` and ``export --build-engine``."""
    g = parser.add_argument_group("engine build")
    g.add_argument("--plugins", metavar="LIB",
                   help="mHC TensorRT plugin library (default: $MHC_PLUGIN_LIB, else the newest "
                        "build/plugins-trt<major>/libmhc_trt_plugins_trt<major>.so for the running "
                        "TensorRT, else the ONNX local functions; "
                        "'none' forces the local functions)")
    g.add_argument("--serialize-plugins", action="store_true",
                   help="embed the plugin library in the plan (TensorRT 10+; makes the "
                        "plan version-compatible, which TensorRT requires for this)")
    g.add_argument("--decode-max-tokens", type=_positive, default=DEFAULT_DECODE_MAX_TOKENS,
                   metavar="N", help="decode profile: up to N tokens (default %(default)s)")
    g.add_argument("--prefill-max-tokens", type=_positive, default=DEFAULT_PREFILL_MAX_TOKENS,
                   metavar="N", help="prefill profile: up to N tokens (default %(default)s)")
    prec = g.add_mutually_exclusive_group()
    prec.add_argument("--strongly-typed", action="store_true",
                      help="strongly typed network: the ONNX's types decide precision "
                           "(the default; export in bf16/fp16 to build in bf16/fp16)")
    prec.add_argument("--fp16", action="store_true",
                      help="weakly typed network allowed fp16 kernels (TensorRT 10 only; "
                           "an error on TensorRT 11 and TensorRT-RTX)")
    prec.add_argument("--bf16", action="store_true",
                      help="weakly typed network allowed bf16 kernels (TensorRT 10 only)")
    g.add_argument("--no-tf32", action="store_true", help="disallow TF32 for float32 math")
    g.add_argument("--timing-cache", metavar="FILE",
                   help="timing cache to load (if present) and update after the build")
    g.add_argument("--tensorrt", choices=("tensorrt", "tensorrt-rtx"),
                   help="TensorRT flavour to use (default: $MHC_TENSORRT, else whichever exists)")
    g.add_argument("--workspace-mib", type=_positive, metavar="MIB",
                   help="builder workspace limit")
    g.add_argument("--rtx-compute-capability", action="append", metavar="SM",
                   dest="compute_capabilities",
                   help="TensorRT-RTX target, e.g. SM89 (repeatable; default: the current GPU)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--verbose-trt", action="store_true", help="print TensorRT's info log")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, metavar="X.onnx", help="exported ONNX model")
    parser.add_argument("--out", required=True, metavar="X.plan",
                        help="engine to write (and X.plan.json beside it)")
    add_build_options(parser)


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_from_args(
    onnx_path: str | os.PathLike[str],
    args: argparse.Namespace,
    plan_path: str | os.PathLike[str] | None = None,
) -> BuildResult:
    """Build ``plan_path`` (default: the ONNX path with .plan) from parsed build options.

    For ``export --build-engine``: call ``add_build_options(parser)`` on the
    export parser, then this with the exported ONNX. Options missing from
    ``args`` take their defaults.
    """
    def opt(name: str, default: object = None) -> object:
        return getattr(args, name, default)

    plan = Path(plan_path) if plan_path else Path(onnx_path).with_suffix(".plan")
    return build_engine(
        onnx_path,
        plan,
        decode_max_tokens=int(opt("decode_max_tokens", DEFAULT_DECODE_MAX_TOKENS)),
        prefill_max_tokens=int(opt("prefill_max_tokens", DEFAULT_PREFILL_MAX_TOKENS)),
        precision=Precision(fp16=bool(opt("fp16", False)), bf16=bool(opt("bf16", False)),
                            tf32=not opt("no_tf32", False),
                            strongly_typed=True if opt("strongly_typed", False) else None),
        timing_cache=opt("timing_cache"),
        plugins=opt("plugins"),
        serialize_plugins=bool(opt("serialize_plugins", False)),
        tensorrt=opt("tensorrt"),
        workspace_mib=opt("workspace_mib"),
        compute_capabilities=opt("compute_capabilities"),
        progress=not opt("no_progress", False),
        verbose=bool(opt("verbose_trt", False)),
    )


def summarize(result: BuildResult) -> str:
    s = result.sidecar
    lines = [
        f"wrote {result.plan_path} ({s['plan']['bytes']} bytes) and {result.sidecar_path}",
        f"  {s['tensorrt']['flavour']} {s['tensorrt']['version']} on {s['gpu']['name']} "
        f"(compute capability {s['gpu']['compute_capability']}), "
        f"build {s['build_seconds']:.1f} s",
    ]
    for p in s["profiles"]:
        dims = ", ".join(f"{k} {v['min']}..{v['max']} (opt {v['opt']})"
                         for k, v in p["inputs"].items())
        lines.append(f"  profile {p['name']}: {dims}")
    lines.append(f"  plugins: {s['plugins']['library'] or 'none (ONNX local functions)'}")
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    plan = Path(args.out)
    check_outputs({"--out": plan, "--out sidecar (<out>.json)": plan.with_name(plan.name + ".json"),
                   "--timing-cache": args.timing_cache})
    result = build_from_args(args.onnx, args, plan)
    print(summarize(result), file=sys.stderr)
    return EXIT_OK
