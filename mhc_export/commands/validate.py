"""``mhc-export validate``: check an exported ONNX model, or a TensorRT engine.

For a full model the eager reference is rebuilt from the metadata the exporter
stored in the ONNX file (config, dtype, seed, checkpoint); for a single-op
model from the node's own attributes and input shapes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from ..errors import EXIT_OK, EXIT_VALIDATION_FAILED, MhcError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", type=Path, help="exported ONNX model to validate")
    p.add_argument("--engine", type=Path, help="TensorRT engine (.plan) to validate instead")
    p.add_argument("--plugins", type=Path, help="TensorRT plugin library (with --engine)")
    p.add_argument("--checkpoint", type=Path, help="weights to compare with (default: the "
                                                   "ones recorded at export)")
    p.add_argument("--batch", type=int, default=2, help="batch for full models (default: 2)")
    p.add_argument("--seq", type=int, default=16, help="sequence length (default: 16)")
    p.add_argument("--tokens", type=int, default=37, help="T for single-op models (default: 37)")
    p.add_argument("--seed", type=int, default=1234, help="input seed (default: 1234)")
    p.add_argument("--report", type=Path, help="report JSON (default: <model>.report.json)")


def run(args: argparse.Namespace) -> int:
    if args.engine:
        from ..engine.validate import validate_engine

        report = validate_engine(args.engine, onnx_path=args.onnx, plugin_library=args.plugins,
                                 batch=args.batch, seq=args.seq, tokens=args.tokens,
                                 seed=args.seed)
        target = args.engine
    elif args.onnx:
        report = validate_onnx_file(args.onnx, checkpoint=args.checkpoint, batch=args.batch,
                                    seq=args.seq, tokens=args.tokens, seed=args.seed)
        target = args.onnx
    else:
        raise MhcError("give --onnx MODEL.onnx or --engine MODEL.plan")
    print(report.format())
    path = args.report or target.with_suffix(".report.json")
    report.write_json(path)
    print(f"[mhc-export] report written to {path}")
    return EXIT_OK if report.passed else EXIT_VALIDATION_FAILED


def validate_onnx_file(path: Path, *, checkpoint: Path | None = None, batch: int = 2,
                       seq: int = 16, tokens: int = 37, seed: int = 1234):
    """Validate any ONNX file this tool exported, rebuilding its eager reference."""
    from ..single_op import single_op_from_onnx
    from ..validate import model_from_metadata, validate_model, validate_single_op

    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    proto = onnx.load(str(path), load_external_data=False)
    from ..validate import read_metadata

    if read_metadata(proto).get("source") == "hf_deepseek_v4":
        from ..adapters.hf_validate import graph_from_metadata, validate_hf

        return validate_hf(path, graph_from_metadata(proto, checkpoint), batch=batch, seq=seq,
                           seed=seed)
    model = model_from_metadata(proto, checkpoint)
    if model is not None:
        return validate_model(path, model, batch=batch, seq=seq, seed=seed)
    spec = single_op_from_onnx(proto)
    if spec is None:
        raise MhcError(f"{path} was not exported by mhc-export (no model metadata and not a "
                       "single mhc node)")
    return validate_single_op(path, spec, tokens=tokens, seed=seed)
