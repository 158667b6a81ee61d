"""``mhc-export export`` (and ``python export_scripts/export.py``).

With no arguments: build the ``small`` model, export it to
``engines/mhc_small.onnx``, validate it against ONNX Runtime and eager, print
the report; exit 0 only if everything passed. ``--op`` exports a one-node
model of a single mHC op instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, EXIT_VALIDATION_FAILED
from ..spec import DEFAULT_OPSET, OPS, dtype_name, parse_dtype
from .build import add_build_options, build_from_args, summarize

REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINES_DIR = REPO_ROOT / "engines"


def configure(p: argparse.ArgumentParser) -> None:
    from ..model import CONFIGS, MODES

    g = p.add_argument_group("model")
    g.add_argument("--config", default="small", choices=sorted(CONFIGS),
                   help="named model config (default: small)")
    g.add_argument("--dtype", default="float32",
                   help="residual/model dtype: float32, float16 or bfloat16 (default: float32)")
    g.add_argument("--mode", default="fused", choices=MODES,
                   help="fused: one mhc node per op (+ local functions); "
                        "decomposed: standard ops only (default: fused)")
    g.add_argument("--seed", type=int, default=0, help="weight init seed (default: 0)")
    g.add_argument("--checkpoint", type=Path, help="load weights (and config) from safetensors")
    g.add_argument("--save-checkpoint", type=Path, help="also save the weights as safetensors")
    h = p.add_argument_group("HF transformers DeepSeek-V4 (mhc_export/adapters, docs/HF.md)")
    h.add_argument("--hf", type=Path, metavar="PATH",
                   help="export a DeepSeek-V4 checkpoint directory written by save_pretrained "
                        "(input_ids -> logits)")
    h.add_argument("--layers", metavar="A:B",
                   help="with --hf: export decoder layers A..B-1 alone (residual streams in "
                        "and out)")
    s = p.add_argument_group("single op (writes a one-node model instead of the full model)")
    s.add_argument("--op", choices=sorted(OPS), help="export only this op")
    s.add_argument("--streams", type=int, default=4, help="n for --op (default: 4)")
    s.add_argument("--hidden", type=int, default=256, help="d for --op (default: 256)")
    s.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE",
                   help="op attribute for --op, e.g. --attr sinkhorn_iters=10 (repeatable)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, help="ONNX path (default: engines/mhc_<config>.onnx or "
                                            "engines/mhc_<op>_n<N>_d<D>_<dtype>.onnx)")
    o.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"standard ONNX opset (>= 17, default: {DEFAULT_OPSET})")
    o.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                   help="weights in a side file <out>.data (auto: only when > 1 GiB)")
    v = p.add_argument_group("validation")
    v.add_argument("--no-validate", action="store_true", help="export only")
    v.add_argument("--batch", type=int, default=2, help="validation batch (default: 2)")
    v.add_argument("--seq", type=int, default=16, help="validation sequence length (default: 16)")
    v.add_argument("--tokens", type=int, default=37,
                   help="validation token count T for --op (default: 37)")
    v.add_argument("--report", type=Path, help="report JSON (default: <out>.report.json)")
    p.add_argument("--build-engine", action="store_true",
                   help="also build a TensorRT engine <out>.plan (needs TensorRT; the "
                        "engine build options below apply)")
    add_build_options(p)


def parse_attrs(items: list[str], op: str) -> dict[str, Any]:
    kinds = {a.name: a.kind for a in OPS[op].attributes}
    attrs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--attr {item!r}: expected NAME=VALUE")
        if name not in kinds:
            raise ValueError(f"--attr {name}: op {op} has attributes {sorted(kinds) or 'none'}")
        try:
            attrs[name] = int(value) if kinds[name] == "int" else float(value)
        except ValueError:
            raise ValueError(f"--attr {name}={value!r}: not a valid {kinds[name]}") from None
    return attrs


def _progress(msg: str) -> float:
    print(f"[mhc-export] {msg}", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"[mhc-export]   done in {time.perf_counter() - t0:.1f}s", flush=True)


def run(args: argparse.Namespace) -> int:
    from ..onnx_export import check_opset

    check_opset(args.opset)
    dtype = parse_dtype(args.dtype)
    for name in ("batch", "seq", "tokens", "streams", "hidden"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    external = {"auto": None, "always": True, "never": False}[args.external_data]
    if args.layers and not args.hf:
        raise ValueError("--layers applies to --hf exports only")
    if args.hf:
        from ..adapters.hf_cli import export_hf_command

        out, report = export_hf_command(args, dtype, external)
    elif args.op:
        out, report = _export_op(args, dtype, external)
    else:
        out, report = _export_model(args, dtype, external)
    status = EXIT_OK
    if report is not None:
        print(report.format())
        report_path = args.report or out.with_suffix(".report.json")
        report.write_json(report_path)
        print(f"[mhc-export] report written to {report_path}")
        status = EXIT_OK if report.passed else EXIT_VALIDATION_FAILED
    if args.build_engine:
        plan = out.with_suffix(".plan")
        t0 = _progress(f"building TensorRT engine {plan}")
        print(summarize(build_from_args(out, args, plan)))
        _done(t0)
    return status


def _export_op(args: argparse.Namespace, dtype, external):
    from ..single_op import SingleOp, export_single_op
    from ..validate import validate_single_op

    if args.external_data == "always":
        raise ValueError("--external-data always: single-op models have no weights to move")
    spec = SingleOp.create(args.op, args.streams, args.hidden, dtype,
                           **parse_attrs(args.attr, args.op))
    out = args.out or ENGINES_DIR / (
        f"mhc_{args.op}_n{args.streams}_d{args.hidden}_{dtype_name(dtype)}.onnx")
    t0 = _progress(f"exporting {OPS[args.op].op_type} (n={args.streams}, d={args.hidden}, "
                   f"{dtype_name(dtype)}) to {out}")
    export_single_op(spec, out, opset=args.opset)
    _done(t0)
    if args.no_validate:
        return out, None
    t0 = _progress("validating in ONNX Runtime against eager")
    report = validate_single_op(out, spec, tokens=args.tokens)
    _done(t0)
    return out, report


def _export_model(args: argparse.Namespace, dtype, external):
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..model import build_model, cast_model
    from ..model_export import export_model
    from ..validate import validate_model

    if args.attr:
        raise ValueError("--attr applies to --op exports only")
    if args.checkpoint:
        t0 = _progress(f"loading checkpoint {args.checkpoint}")
        model = load_checkpoint(args.checkpoint, mode=args.mode)
        model = cast_model(model, dtype)
        config = model.cfg.name
    else:
        config = args.config
        t0 = _progress(f"building model '{config}' ({dtype_name(dtype)}, {args.mode}, "
                       f"seed {args.seed})")
        model = build_model(config, dtype=dtype, mode=args.mode, seed=args.seed)
    _done(t0)
    if args.save_checkpoint:
        save_checkpoint(model, args.save_checkpoint)
        print(f"[mhc-export] checkpoint written to {args.save_checkpoint}")
    out = args.out or ENGINES_DIR / f"mhc_{config}.onnx"
    metadata = {
        "mhc_export.config": json.dumps(model.cfg.to_dict()),
        "mhc_export.dtype": json.dumps(dtype_name(dtype)),
        "mhc_export.mode": json.dumps(args.mode),
        "mhc_export.seed": json.dumps(args.seed),
        "mhc_export.checkpoint": json.dumps(str(args.checkpoint) if args.checkpoint else None),
    }
    t0 = _progress(f"exporting to {out} (opset {args.opset})")
    result = export_model(model, out, opset=args.opset, external_data=external,
                          metadata=metadata)
    _done(t0)
    nodes = ", ".join(f"{k} x{v}" for k, v in sorted(result.mhc_nodes.items())) or "none"
    print(f"[mhc-export]   mhc nodes: {nodes}"
          + (f"; weights in {result.external_data}" if result.external_data else ""))
    if args.no_validate:
        return out, None
    t0 = _progress(f"validating in ONNX Runtime against eager (batch {args.batch}, "
                   f"seq {args.seq})")
    report = validate_model(out, model, batch=args.batch, seq=args.seq)
    _done(t0)
    return out, report
