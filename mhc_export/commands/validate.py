"""``mhc-export validate``: check an exported ONNX model, or a TensorRT engine.

The model source the ONNX file came from (:mod:`mhc_export.sources`) rebuilds
its eager reference: a full model from the metadata the exporter stored
(config, dtype, seed, checkpoint), an HF export from its recorded checkpoint, a
single-op model from the node's own attributes and input shapes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.errors import EXIT_OK, EXIT_VALIDATION_FAILED, MhcError
from ..core.preflight import check_output_path
from ..sources import validate_onnx_file
from ..sources.base import DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_TOKENS, ValidateOptions


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", type=Path, help="exported ONNX model to validate")
    p.add_argument("--engine", type=Path, help="TensorRT engine (.plan) to validate instead")
    p.add_argument("--plugins", type=Path, help="TensorRT plugin library (with --engine)")
    p.add_argument("--checkpoint", type=Path, help="weights to compare with (default: the "
                                                   "ones recorded at export; full models only)")
    p.add_argument("--batch", type=int, help=f"batch for full models (default: {DEFAULT_BATCH})")
    p.add_argument("--seq", type=int, help=f"sequence length (default: {DEFAULT_SEQ})")
    p.add_argument("--tokens", type=int,
                   help=f"T for single-op models (default: {DEFAULT_TOKENS})")
    p.add_argument("--seed", type=int, default=1234, help="input seed (default: 1234)")
    p.add_argument("--report", type=Path, help="report JSON (default: <model>.report.json)")


def run(args: argparse.Namespace) -> int:
    for name in ("batch", "seq", "tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if args.plugins and not args.engine:
        raise ValueError("--plugins applies to --engine only")
    if args.engine:
        from ..engine.validate import validate_engine

        if args.checkpoint:
            raise ValueError("--checkpoint applies to --onnx; an engine is compared with the "
                             "eager model recorded in its ONNX")
        target = args.engine
        check_output_path(args.report or target.with_suffix(".report.json"), "--report")
        report = validate_engine(args.engine, onnx_path=args.onnx, plugin_library=args.plugins,
                                 batch=args.batch or DEFAULT_BATCH, seq=args.seq or DEFAULT_SEQ,
                                 tokens=args.tokens or DEFAULT_TOKENS, seed=args.seed)
    elif args.onnx:
        target = args.onnx
        check_output_path(args.report or target.with_suffix(".report.json"), "--report")
        report = validate_onnx_file(args.onnx, ValidateOptions(
            checkpoint=args.checkpoint, batch=args.batch, seq=args.seq, tokens=args.tokens,
            seed=args.seed))
    else:
        raise MhcError("give --onnx MODEL.onnx or --engine MODEL.plan")
    print(report.format())
    path = args.report or target.with_suffix(".report.json")
    report.write_json(path)
    print(f"[mhc-export] report written to {path}")
    return EXIT_OK if report.passed else EXIT_VALIDATION_FAILED
