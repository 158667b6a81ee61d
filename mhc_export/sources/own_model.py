"""The own reference model (``--config`` or ``--checkpoint``): V4/V4.1 as mhc_export builds it."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import onnx
import torch

from ..core import metadata as md
from ..core.metadata import model_metadata, read_metadata
from ..core.preflight import check_export_outputs, check_memory, default_output
from ..core.spec import dtype_name, parse_dtype
from ..validation.report import Report
from ..validation.runners import FunctionRunner, Runner
from .base import DEFAULT_BATCH, DEFAULT_SEQ, ValidateOptions, done, progress


def form_name(mode: str, *, fuse: bool, target: str = "mhc") -> str:
    """The export's form as its default name and progress line say it: fused (mhc nodes,
    boundaries fused), unfused (mhc nodes, --no-fuse), ort (ONNX Runtime's contrib ops,
    --target onnxruntime) or decomposed (standard ops)."""
    if target == "onnxruntime":
        return "ort"
    if mode == "decomposed":
        return "decomposed"
    return "fused" if fuse else "unfused"


class OwnModelSource:
    """A model built from a named config and a seed, or loaded from a safetensors checkpoint;
    its config, dtype, mode, seed and checkpoint path go into the ONNX metadata."""

    kind = "model"

    def claims(self, proto: onnx.ModelProto) -> bool:
        return read_metadata(proto).get(md.CONFIG) is not None

    def build(self, args: argparse.Namespace, dtype: torch.dtype) -> Any:
        from ..reference.checkpoint import load_checkpoint
        from ..reference.model import build_model, cast_model, get_config

        mode = args.mode or "fused"
        if args.checkpoint:
            progress(f"loading checkpoint {args.checkpoint}")
            t0 = time.perf_counter()
            model = cast_model(load_checkpoint(args.checkpoint, mode=mode), dtype)
        else:
            cfg = get_config(args.config or "small")
            seed = 0 if args.seed is None else args.seed
            form = form_name(mode, fuse=not args.no_fuse, target=args.target)
            progress(f"building model '{cfg.name}' ({dtype_name(dtype)}, {form}, seed {seed})")
            t0 = time.perf_counter()
            model = build_model(cfg, dtype=dtype, mode=mode, seed=seed)
        done(t0)
        return model

    def metadata(self, eager: Any, args: argparse.Namespace,
                 dtype: torch.dtype) -> dict[str, str]:
        return model_metadata(eager.cfg.to_dict(), dtype_name(dtype), args.mode or "fused",
                              0 if args.seed is None else args.seed,
                              not args.no_fuse and args.target == "mhc",
                              str(args.checkpoint.resolve()) if args.checkpoint else None,
                              target=args.target)

    def export(self, args: argparse.Namespace, dtype: torch.dtype,
               external: bool | None) -> tuple[Path, Report | None]:
        from ..export.model_export import export_model
        from ..reference.checkpoint import save_checkpoint

        out, batch, seq = self._preflight(args, dtype)
        model = self.build(args, dtype)
        if args.save_checkpoint:
            save_checkpoint(model, args.save_checkpoint)
            progress(f"checkpoint written to {args.save_checkpoint}")
        metadata = self.metadata(model, args, dtype)
        progress(f"exporting to {out} (opset {args.opset})")
        t0 = time.perf_counter()
        result = export_model(model, out, opset=args.opset, external_data=external,
                              metadata=metadata, fuse=not args.no_fuse, target=args.target)
        done(t0)
        counts = {**result.mhc_nodes, **result.contrib_nodes}
        nodes = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"
        progress(f"  mhc nodes: {nodes}"
                 + (f"; weights in {result.external_data}" if result.external_data else ""))
        if args.no_validate:
            return out, None
        from ..validation.ort_compare import validate_model

        progress(f"validating in ONNX Runtime against eager (batch {batch}, seq {seq})")
        t0 = time.perf_counter()
        report = validate_model(out, model, batch=batch, seq=seq)
        done(t0)
        return out, report

    def _preflight(self, args: argparse.Namespace, dtype: torch.dtype
                   ) -> tuple[Path, int, int]:
        """The output path and validation sizes, after the output and memory checks."""
        from ..reference.checkpoint import read_config
        from ..reference.model import get_config
        from ..validation.ort_compare import validation_memory

        batch, seq = args.batch or DEFAULT_BATCH, args.seq or DEFAULT_SEQ
        cfg = read_config(args.checkpoint) if args.checkpoint else get_config(
            args.config or "small")
        form = form_name(args.mode or "fused", fuse=not args.no_fuse, target=args.target)
        suffix = "" if form == "fused" else f"_{form}"
        out = args.out or default_output(f"mhc_{cfg.name}_{dtype_name(dtype)}{suffix}.onnx")
        check_export_outputs(args, out)
        if not args.no_validate:
            check_memory(validation_memory(cfg, dtype, batch, seq),
                         f"validating {cfg.name} at batch {batch}, seq {seq}",
                         "lower --batch/--seq or pass --no-validate")
        return out, batch, seq

    def rebuild(self, proto: onnx.ModelProto, path: str | os.PathLike[str],
                checkpoint: Path | None = None) -> Any:
        from ..validation.ort_compare import model_from_metadata

        return model_from_metadata(proto, checkpoint)

    def runner(self, eager: Any) -> Runner:
        return FunctionRunner("eager", lambda inputs: {"logits": eager(inputs["tokens"])})

    def validate(self, path: Path, proto: onnx.ModelProto, opts: ValidateOptions) -> Report:
        from ..validation.ort_compare import validate_model, validation_memory

        if opts.tokens is not None:
            raise ValueError(f"--tokens applies to single-op models; {path} is a full model "
                             "(use --batch/--seq)")
        if opts.checkpoint is not None:
            _check_same_config(read_metadata(proto)[md.CONFIG], opts.checkpoint, path)
        model = self.rebuild(proto, path, opts.checkpoint)
        batch, seq = opts.batch or DEFAULT_BATCH, opts.seq or DEFAULT_SEQ
        dtype = parse_dtype(read_metadata(proto)[md.DTYPE])
        check_memory(validation_memory(model.cfg, dtype, batch, seq),
                     f"validating {path.name} at batch {batch}, seq {seq}",
                     "lower --batch/--seq")
        return validate_model(path, model, batch=batch, seq=seq, seed=opts.seed)


def _check_same_config(recorded: dict[str, Any], checkpoint: Path, path: Path) -> None:
    """Refuse a --checkpoint whose config differs from the one recorded at export."""
    from ..reference.checkpoint import read_config

    mine = read_config(checkpoint).to_dict()
    diff = sorted(k for k in recorded if k != "name" and recorded[k] != mine.get(k))
    if diff:
        raise ValueError(
            f"--checkpoint {checkpoint} holds config {mine['name']} but {path} was "
            f"exported from config {recorded.get('name')}; they differ in "
            + ", ".join(f"{k} ({mine.get(k)} vs {recorded[k]})" for k in diff))
