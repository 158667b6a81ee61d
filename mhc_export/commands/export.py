"""``mhc-export export`` (and ``python export_scripts/export.py``).

With no arguments: build the ``small`` model, export it to
``engines/mhc_small_float32.onnx``, validate it against ONNX Runtime and eager, print
the report; exit 0 only if everything passed. ``--op`` exports a one-node
model of a single mHC op instead.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..core.errors import EXIT_OK, EXIT_VALIDATION_FAILED
from ..core.preflight import STREAMS_HELP, check_streams
from ..core.spec import ALL_OPS as OPS
from ..core.spec import (
    DEFAULT_OPSET,
    EXPORT_TARGETS,
    FIRST_ORT_RELEASE,
    OPSET_HELP,
    parse_dtype,
)
from ..sources import source_for
from ..sources.base import (
    DEFAULT_BATCH,
    DEFAULT_HIDDEN,
    DEFAULT_SEQ,
    DEFAULT_STREAMS,
    DEFAULT_TOKENS,
    done,
    progress,
)
from .build import add_build_options, build_from_args, summarize


def configure(p: argparse.ArgumentParser) -> None:
    from ..reference.model import CONFIGS, MODES

    g = p.add_argument_group("model")
    g.add_argument("--config", choices=sorted(CONFIGS),
                   help="named model config (default: small; not with --checkpoint or --op)")
    g.add_argument("--dtype", default="float32",
                   help="residual/model dtype: float32, float16 or bfloat16 (default: float32)")
    g.add_argument("--mode", choices=MODES,
                   help="fused: one mhc node per op (+ local functions); "
                        "decomposed: standard ops only (default: fused)")
    g.add_argument("--seed", type=int, help="weight init seed (default: 0; not with --checkpoint)")
    g.add_argument("--checkpoint", type=Path, help="load weights (and config) from safetensors")
    g.add_argument("--save-checkpoint", type=Path, help="also save the weights as safetensors")
    h = p.add_argument_group("HF transformers DeepSeek-V4 (mhc_export/adapters, docs/HF.md)")
    h.add_argument("--hf", type=Path, metavar="PATH",
                   help="export a DeepSeek-V4 checkpoint directory, as published (native "
                        "names, FP8/FP4) or written by save_pretrained (input_ids -> logits)")
    h.add_argument("--layers", metavar="A:B",
                   help="with --hf: export decoder layers A..B-1 alone (residual streams in "
                        "and out)")
    h.add_argument("--weights", choices=("dequantized", "native"),
                   help="with --hf: dequantized (default: FP8/FP4 decoded to --dtype) or "
                        "native (FP8/FP4 kept as stored, decoded in the graph)")
    s = p.add_argument_group("single op (writes a one-node model instead of the full model)")
    s.add_argument("--op", choices=sorted(OPS), help="export only this op")
    s.add_argument("--streams", type=int,
                   help=f"n for --op, {STREAMS_HELP} (default: {DEFAULT_STREAMS})")
    s.add_argument("--hidden", type=int,
                   help=f"d for --op (default: {DEFAULT_HIDDEN}; MhcSinkhorn has none)")
    s.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="op attribute for --op, e.g. --attr sinkhorn_iters=10 (repeatable)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path,
                   help="ONNX path (default, in the checkout's engines/ folder whatever the "
                        "current directory: mhc_<config>_<dtype>[_decomposed|_unfused].onnx, "
                        "mhc_<op>_n<N>[_d<D>]_<dtype>.onnx, hf_<dir>[_layersA-B]_<dtype>"
                        "[_unfused].onnx)")
    o.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"standard ONNX opset, {OPSET_HELP} (default: {DEFAULT_OPSET})")
    o.add_argument("--no-fuse", action="store_true",
                   help="keep each layer boundary as MhcPost + MhcPre (MhcHead) instead of one "
                        "MhcPostPre (MhcPostHead) node; V4.1: MhcPost + MhcMix + MhcCollapse "
                        "instead of MhcPostMix (MhcPostCollapse)")
    o.add_argument("--target", choices=EXPORT_TARGETS, default="mhc",
                   help="mhc: mhc nodes + local functions, for any runtime (default); "
                        "onnxruntime: MhcCollapse and MhcPost (and MhcPre's collapse) as ONNX "
                        "Runtime's com.microsoft HyperConnectionPreMix/PostMix contrib ops "
                        f"(ONNX Runtime >= {FIRST_ORT_RELEASE}; unfused; docs/ONNXRUNTIME.md)")
    o.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                   help="weights in a side file <out>.data (auto: only when > 1 GiB)")
    v = p.add_argument_group("validation")
    v.add_argument("--no-validate", action="store_true", help="export only")
    v.add_argument("--batch", type=int, help=f"validation batch (default: {DEFAULT_BATCH})")
    v.add_argument("--seq", type=int,
                   help=f"validation sequence length (default: {DEFAULT_SEQ})")
    v.add_argument("--tokens", type=int,
                   help=f"validation token count T for --op (default: {DEFAULT_TOKENS})")
    v.add_argument("--report", type=Path, help="report JSON (default: <out>.report.json)")
    p.add_argument("--build-engine", action="store_true",
                   help="also build a TensorRT engine <out>.plan (needs TensorRT; the "
                        "engine build options below apply)")
    add_build_options(p)


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags among ``names`` that the user set (their defaults are None or empty)."""
    return ["--" + n.replace("_", "-") for n in names if getattr(args, n) not in (None, [], False)]


def _refuse(flags: list[str], why: str) -> None:
    if flags:
        raise ValueError(f"{' '.join(flags)}: {why}")


def check_args(args: argparse.Namespace) -> None:
    """Refuse conflicting or ignored flags and bad sizes, before any work starts."""
    if args.target == "onnxruntime":
        _refuse(_given(args, "no_fuse"), "the onnxruntime target is always unfused")
        _refuse(_given(args, "build_engine"), "TensorRT cannot parse the onnxruntime target's "
                "com.microsoft ops; build from a --target mhc export")
        _refuse(_given(args, "op"), "--target onnxruntime applies to full-model exports")
        if args.mode == "decomposed":
            raise ValueError("--target onnxruntime: a decomposed export has no mhc nodes to "
                             "map onto ONNX Runtime's ops")
    if args.op:
        _refuse(_given(args, "config", "checkpoint", "save_checkpoint", "mode", "seed", "batch",
                       "seq", "no_fuse"), "applies to full-model exports, not to --op")
        if args.external_data == "always":
            raise ValueError("--external-data always: single-op models have no weights to move")
        if args.op == "sinkhorn":
            _refuse(_given(args, "hidden"), "MhcSinkhorn works on [T, n, n] logits and has no d")
            if parse_dtype(args.dtype) != torch.float32:
                raise ValueError(f"--dtype {args.dtype}: MhcSinkhorn is float32 by contract "
                                 "(logits and comb); it takes no --dtype")
        check_streams(DEFAULT_STREAMS if args.streams is None else args.streams)
    else:
        _refuse(_given(args, "streams", "hidden", "tokens", "attr"),
                "applies to --op exports only (a full model takes n and d from its config)")
        if args.mode == "decomposed":
            _refuse(_given(args, "no_fuse"), "a decomposed export has no mhc nodes to fuse")
        if args.checkpoint:
            _refuse(_given(args, "config", "seed"),
                    "conflicts with --checkpoint, which carries its own config and weights")
    if args.no_validate:
        _refuse(_given(args, "batch", "seq", "tokens", "report"),
                "has no effect with --no-validate")
    for name in ("batch", "seq", "tokens", "hidden"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")


def run(args: argparse.Namespace) -> int:
    from ..export.onnx_export import check_opset

    check_opset(args.opset)
    try:
        dtype = parse_dtype(args.dtype)
    except ValueError as e:
        raise ValueError(f"--dtype {args.dtype}: {e}") from None
    check_args(args)
    external = {"auto": None, "always": True, "never": False}[args.external_data]
    if (args.layers is not None or args.weights) and not args.hf:
        flag = "layers" if args.layers is not None else "weights"
        raise ValueError(f"--{flag} applies to --hf exports only")
    if args.build_engine:  # no TensorRT: say so now (exit 3), not after export and validation
        from ..engine.trt_module import load_tensorrt

        load_tensorrt(getattr(args, "tensorrt", None))
    out, report = source_for(args).export(args, dtype, external)
    status = EXIT_OK
    if report is not None:
        print(report.format())
        report_path = args.report or out.with_suffix(".report.json")
        report.write_json(report_path)
        print(f"[mhc-export] report written to {report_path}")
        status = EXIT_OK if report.passed else EXIT_VALIDATION_FAILED
    if args.build_engine:
        plan = out.with_suffix(".plan")
        progress(f"building TensorRT engine {plan}")
        t0 = time.perf_counter()
        print(summarize(build_from_args(out, args, plan)))
        done(t0)
    return status
