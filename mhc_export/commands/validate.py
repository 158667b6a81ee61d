"""``mhc-export validate``: check an exported ONNX model, or a TensorRT engine.

For a full model the eager reference is rebuilt from the metadata the exporter
stored in the ONNX file (config, dtype, seed, checkpoint); for a single-op
model from the node's own attributes and input shapes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core import metadata as md
from ..core.errors import EXIT_OK, EXIT_VALIDATION_FAILED, MhcError
from ..core.metadata import is_hf_export, read_metadata
from ..core.preflight import check_memory, check_output_path, load_onnx
from ..core.spec import parse_dtype
from ..validation.onnx_check import check_mhc_nodes

DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_TOKENS = 2, 16, 37


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
        report = validate_onnx_file(args.onnx, checkpoint=args.checkpoint, batch=args.batch,
                                    seq=args.seq, tokens=args.tokens, seed=args.seed)
    else:
        raise MhcError("give --onnx MODEL.onnx or --engine MODEL.plan")
    print(report.format())
    path = args.report or target.with_suffix(".report.json")
    report.write_json(path)
    print(f"[mhc-export] report written to {path}")
    return EXIT_OK if report.passed else EXIT_VALIDATION_FAILED


def validate_onnx_file(path: Path, *, checkpoint: Path | None = None, batch: int | None = None,
                       seq: int | None = None, tokens: int | None = None, seed: int = 1234):
    """Validate any ONNX file this tool exported, rebuilding its eager reference.

    Flags that do not apply to the kind of model found (``tokens`` for a full
    model; ``batch``, ``seq``, ``checkpoint`` for a single op) are refused.
    """
    from ..export.single_op import single_op_from_onnx
    from ..reference.checkpoint import read_config
    from ..validation.ort_compare import (
        model_from_metadata,
        validate_model,
        validate_single_op,
        validation_memory,
    )

    proto = load_onnx(path)
    check_mhc_nodes(proto, str(path))
    if is_hf_export(proto):
        from ..adapters.hf_validate import graph_from_metadata, validate_hf

        if tokens is not None:
            raise ValueError(f"--tokens applies to single-op models; {path} is an HF export "
                             "(use --batch/--seq)")
        return validate_hf(path, graph_from_metadata(proto, checkpoint, path),
                           batch=batch or DEFAULT_BATCH, seq=seq or DEFAULT_SEQ, seed=seed,
                           checkpoint=checkpoint)
    recorded = read_metadata(proto).get(md.CONFIG)
    if recorded is not None:
        if tokens is not None:
            raise ValueError(f"--tokens applies to single-op models; {path} is a full model "
                             "(use --batch/--seq)")
        if checkpoint is not None:
            mine = read_config(checkpoint).to_dict()
            diff = sorted(k for k in recorded if k != "name" and recorded[k] != mine.get(k))
            if diff:
                raise ValueError(
                    f"--checkpoint {checkpoint} holds config {mine['name']} but {path} was "
                    f"exported from config {recorded.get('name')}; they differ in "
                    + ", ".join(f"{k} ({mine.get(k)} vs {recorded[k]})" for k in diff))
        model = model_from_metadata(proto, checkpoint)
        batch, seq = batch or DEFAULT_BATCH, seq or DEFAULT_SEQ
        dtype = parse_dtype(read_metadata(proto)[md.DTYPE])
        check_memory(validation_memory(model.cfg, dtype, batch, seq),
                     f"validating {path.name} at batch {batch}, seq {seq}",
                     "lower --batch/--seq")
        return validate_model(path, model, batch=batch, seq=seq, seed=seed)
    spec = single_op_from_onnx(proto)
    if spec is None:
        raise MhcError(f"{path} was not exported by mhc-export (no model metadata and not a "
                       "single mhc node)")
    given = [f for f, v in (("--batch", batch), ("--seq", seq), ("--checkpoint", checkpoint))
             if v is not None]
    if given:
        raise ValueError(f"{' '.join(given)}: {path} is a single-op model (use --tokens)")
    tokens = tokens or DEFAULT_TOKENS
    check_memory(spec.memory_bytes(tokens), f"validating {path.name} at T={tokens}",
                 "lower --tokens")
    return validate_single_op(path, spec, tokens=tokens, seed=seed)
