"""A single mHC op (``--op``): a one-node model, recognised later by its node alone."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import onnx
import torch

from ..core.preflight import check_export_outputs, check_memory, default_output
from ..core.spec import ALL_OPS as OPS
from ..core.spec import dtype_name
from ..export.single_op import SingleOp, export_single_op, single_op_from_onnx
from ..validation.report import Report
from ..validation.runners import FunctionRunner, Runner
from .base import (
    DEFAULT_HIDDEN,
    DEFAULT_STREAMS,
    DEFAULT_TOKENS,
    ValidateOptions,
    done,
    progress,
)


def parse_attrs(items: list[str], op: str) -> dict[str, Any]:
    """``--attr NAME=VALUE`` items as op attributes, typed by the op's contract."""
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


class SingleOpSource:
    """One op at sizes n, d, a residual dtype and attribute values; no metadata (the one
    node's attributes and input shapes rebuild it)."""

    kind = "op"

    def claims(self, proto: onnx.ModelProto) -> bool:
        return single_op_from_onnx(proto) is not None

    def build(self, args: argparse.Namespace, dtype: torch.dtype) -> SingleOp:
        streams = DEFAULT_STREAMS if args.streams is None else args.streams
        hidden = DEFAULT_HIDDEN if args.hidden is None else args.hidden
        return SingleOp.create(args.op, streams, hidden, dtype, **parse_attrs(args.attr, args.op))

    def metadata(self, eager: Any, args: argparse.Namespace,
                 dtype: torch.dtype) -> dict[str, str]:
        return {}  # the node says it all

    def export(self, args: argparse.Namespace, dtype: torch.dtype,
               external: bool | None) -> tuple[Path, Report | None]:
        from ..validation.ort_compare import validate_single_op

        spec = self.build(args, dtype)
        width = "" if args.op == "sinkhorn" else f"_d{spec.hidden}"  # MhcSinkhorn has no d
        out = args.out or default_output(
            f"mhc_{args.op}_n{spec.streams}{width}_{dtype_name(dtype)}.onnx")
        check_export_outputs(args, out)
        tokens = 3 if args.no_validate else args.tokens or DEFAULT_TOKENS
        check_memory(spec.memory_bytes(tokens),
                     f"{OPS[args.op].op_type} at n={spec.streams}, d={spec.hidden}, T={tokens}",
                     "lower --hidden/--tokens")
        sizes = f"n={spec.streams}" + ("" if args.op == "sinkhorn" else f", d={spec.hidden}")
        progress(f"exporting {OPS[args.op].op_type} ({sizes}, {dtype_name(dtype)}) to {out}")
        t0 = time.perf_counter()
        export_single_op(spec, out, opset=args.opset)
        done(t0)
        if args.no_validate:
            return out, None
        progress("validating in ONNX Runtime against eager")
        t0 = time.perf_counter()
        report = validate_single_op(out, spec, tokens=tokens)
        done(t0)
        return out, report

    def rebuild(self, proto: onnx.ModelProto, path: str | os.PathLike[str],
                checkpoint: Path | None = None) -> SingleOp:
        spec = single_op_from_onnx(proto)
        if spec is None:
            raise ValueError(f"{path} is not a single-op model")
        return spec

    def runner(self, eager: SingleOp) -> Runner:
        names = OPS[eager.op].outputs
        return FunctionRunner("eager", lambda inputs: dict(
            zip(names, eager.reference(dict(inputs)), strict=True)))

    def validate(self, path: Path, proto: onnx.ModelProto, opts: ValidateOptions) -> Report:
        from ..validation.ort_compare import validate_single_op

        spec = self.rebuild(proto, path)
        given = [f for f, v in (("--batch", opts.batch), ("--seq", opts.seq),
                                ("--checkpoint", opts.checkpoint)) if v is not None]
        if given:
            raise ValueError(f"{' '.join(given)}: {path} is a single-op model (use --tokens)")
        tokens = opts.tokens or DEFAULT_TOKENS
        check_memory(spec.memory_bytes(tokens), f"validating {path.name} at T={tokens}",
                     "lower --tokens")
        return validate_single_op(path, spec, tokens=tokens, seed=opts.seed)
