"""An HF transformers DeepSeek-V4 checkpoint (``--hf PATH``): checks first, then load,
export, validate.

Every check that can fail (the directory, its config and files, ``--layers``,
flags that do not apply, the memory the export needs) runs before any work,
so bad input exits 2 with one line and writes nothing. The model code is in
:mod:`mhc_export.adapters`; this module is the source's command-line side.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from ..core.errors import MhcError
from ..core.metadata import is_hf_export
from ..core.spec import dtype_name
from ..validation.report import Report
from ..validation.runners import FunctionRunner, Runner
from .base import DEFAULT_BATCH, DEFAULT_SEQ, ValidateOptions, progress

# Options of the reference-model export that an HF export does not take.
_NOT_WITH_HF = ("op", "checkpoint", "save_checkpoint", "config", "seed")


@dataclass
class _Selection:
    """What ``--hf`` with its flags selects, after every check."""

    info: Any  # adapters.hf_checkpoint.CheckpointInfo
    layers: range | None
    weights: str
    checked: Any  # adapters.hf_loader.Plan
    need: Any  # adapters.hf_memory's estimate


class HfSource:
    """HF's own modules on weights our loader reads (dequantized or native); the
    checkpoint path, dtype, layer slice and weight form go into the ONNX metadata."""

    kind = "hf"

    def claims(self, proto: onnx.ModelProto) -> bool:
        return is_hf_export(proto)

    def _select(self, args: argparse.Namespace, dtype: torch.dtype) -> _Selection:
        from ..adapters.hf_checkpoint import inspect_checkpoint, parse_layers
        from ..adapters.hf_loader import plan
        from ..adapters.hf_memory import check_memory
        from ..adapters.hf_native import FP8_MIN_OPSET
        from ..adapters.hf_preflight import check_dtype

        for name in _NOT_WITH_HF:
            if getattr(args, name, None):
                raise MhcError(f"--{name.replace('_', '-')} does not apply to --hf exports")
        if getattr(args, "mode", None) == "decomposed":
            raise MhcError("--mode decomposed does not apply to --hf exports (mhc nodes only)")
        check_dtype(dtype)  # preflight
        info = inspect_checkpoint(args.hf)
        layers = (None if args.layers is None  # --layers '' is refused, not ignored
                  else parse_layers(args.layers, info.config.num_hidden_layers))
        weights = getattr(args, "weights", None) or "dequantized"
        if weights == "native" and args.opset < FP8_MIN_OPSET:
            raise MhcError(f"--weights native needs --opset {FP8_MIN_OPSET} or later (FP8 "
                           f"weights are decoded by DequantizeLinear); got --opset {args.opset}")
        checked = plan(info, layers, dtype)  # every tensor of the selection present, in shape
        if layers is not None and not getattr(args, "no_validate", False):
            _check_reference_prefix(info, layers, dtype)
        need = check_memory(info, dtype, layers, weights)
        return _Selection(info, layers, weights, checked, need)

    def build(self, args: argparse.Namespace, dtype: torch.dtype) -> torch.nn.Module:
        from ..adapters.hf_export import build_graph

        sel = self._select(args, dtype)
        return build_graph(sel.info, dtype, sel.layers, sel.weights, sel.checked)

    def metadata(self, eager: Any, args: argparse.Namespace,
                 dtype: torch.dtype) -> dict[str, str]:
        from ..adapters.hf_export import metadata

        weights = getattr(args, "weights", None) or "dequantized"
        return metadata(eager.checkpoint_info, dtype, eager.selection, weights)

    def export(self, args: argparse.Namespace, dtype: torch.dtype,
               external: bool | None) -> tuple[Path, Report | None]:
        from ..adapters.hf_export import build_graph, default_out, export_graph
        from ..core.preflight import check_export_outputs

        sel = self._select(args, dtype)
        info, layers = sel.info, sel.layers
        fuse = not getattr(args, "no_fuse", False)
        target = getattr(args, "target", "mhc")
        out: Path = args.out or default_out(info, layers, dtype, sel.weights, fuse=fuse,
                                            target=target)
        check_export_outputs(args, out)  # preflight: the same output checks as every export
        what = f"layers {layers.start}:{layers.stop}" if layers else "full model"
        progress(f"HF DeepSeek-V4 {info.path} ({info.layout} layout, {what}, "
                 f"{dtype_name(dtype)}, {sel.weights} weights, hc_mult {info.config.hc_mult}; "
                 f"estimate ~{(sel.need.need - sel.need.base) / 2**30:.2f} GiB while "
                 f"exporting, ~{sel.need.need / 2**30:.2f} GiB peak resident)")
        t0 = time.perf_counter()
        progress("loading checkpoint")
        graph = build_graph(info, dtype, layers, sel.weights, sel.checked)
        progress(f"  loaded in {time.perf_counter() - t0:.1f}s")
        done = export_graph(graph, out, meta=self.metadata(graph, args, dtype),
                            opset=args.opset, external_data=external, fuse=fuse, target=target,
                            progress=progress)
        counts = {**done.result.mhc_nodes, **done.result.contrib_nodes}
        nodes = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"
        progress(f"  mhc nodes: {nodes}" + (f"; weights in {done.result.external_data}"
                                            if done.result.external_data else ""))
        if args.no_validate:
            return out, None
        from ..adapters.hf_validate import validate_hf

        batch = DEFAULT_BATCH if args.batch is None else args.batch
        seq = DEFAULT_SEQ if args.seq is None else args.seq
        t0 = time.perf_counter()
        progress(f"validating against an independent reading of the files (batch {batch}, "
                 f"seq {seq})")
        report = validate_hf(out, graph, batch=batch, seq=seq)
        progress(f"  validated in {time.perf_counter() - t0:.1f}s")
        return out, report

    def rebuild(self, proto: onnx.ModelProto, path: str | os.PathLike[str],
                checkpoint: Path | None = None) -> torch.nn.Module:
        from ..adapters.hf_validate import graph_from_metadata

        return graph_from_metadata(proto, checkpoint, path)

    def runner(self, eager: torch.nn.Module) -> Runner:
        from ..adapters.hf_export import FULL_OUTPUTS, SLICE_OUTPUTS, CausalLMGraph

        output = (FULL_OUTPUTS if isinstance(eager, CausalLMGraph) else SLICE_OUTPUTS)[0]
        return FunctionRunner("HF eager", lambda inputs: {output: eager(**inputs)})

    def validate(self, path: Path, proto: onnx.ModelProto, opts: ValidateOptions) -> Report:
        from ..adapters.hf_validate import validate_hf

        if opts.tokens is not None:
            raise ValueError(f"--tokens applies to single-op models; {path} is an HF export "
                             "(use --batch/--seq)")
        return validate_hf(path, self.rebuild(proto, path, opts.checkpoint),
                           batch=opts.batch or DEFAULT_BATCH, seq=opts.seq or DEFAULT_SEQ,
                           seed=opts.seed, checkpoint=opts.checkpoint)


def _check_reference_prefix(info: Any, layers: range, dtype: torch.dtype) -> None:
    """Validating a slice A:B reads layers 0..A-1 too when its reference is HF's model run
    from layer 0 (hf_reference.runs_from_layer0, the test reference_run itself makes):
    check those layers now. When that model does not fit, the slice runs alone and the
    earlier layers are never read, so damage there does not refuse the export."""
    from ..adapters.hf_checkpoint import CheckpointError
    from ..adapters.hf_loader import plan
    from ..adapters.hf_reference import runs_from_layer0

    if layers.start == 0 or not runs_from_layer0(info, layers):
        return
    try:
        plan(info, range(0, layers.stop), dtype)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; validating layers {layers.start}:{layers.stop} runs the "
                              "model from layer 0 (--no-validate skips it)") from None
