"""The ``--hf`` path of ``mhc-export export``: checks first, then load, export, validate.

Every check that can fail (the directory, its config and files, ``--layers``,
flags that do not apply, the memory the export needs) runs before any work,
so bad input exits 2 with one line and writes nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..core.errors import MhcError
from ..core.spec import dtype_name

# Options of the reference-model export that an HF export does not take.
_NOT_WITH_HF = ("op", "checkpoint", "save_checkpoint", "config", "seed")


def _say(msg: str) -> None:
    print(f"[mhc-export] {msg}", flush=True)


def _check_reference_prefix(info, layers: range, dtype: torch.dtype) -> None:
    """Validating a slice A:B runs HF's model from layer 0 when the files hold layers
    0..B-1 (hf_reference.reference_run): those layers are read too, so check them now."""
    from .hf_checkpoint import CheckpointError
    from .hf_loader import plan
    from .hf_reference import holds_layers

    prefix = range(0, layers.stop)
    if layers.start == 0 or not holds_layers(info.headers, prefix):
        return
    try:
        plan(info, prefix, dtype)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; validating layers {layers.start}:{layers.stop} runs the "
                              "model from layer 0 (--no-validate skips it)") from None


def export_hf_command(args: argparse.Namespace, dtype: torch.dtype, external: bool | None):
    """(ONNX path, report or None) for ``mhc-export export --hf PATH``."""
    from ..core.preflight import check_export_outputs
    from .hf_checkpoint import inspect_checkpoint, parse_layers
    from .hf_export import build_graph, default_out, export_graph, metadata
    from .hf_loader import plan
    from .hf_memory import check_memory
    from .hf_native import FP8_MIN_OPSET
    from .hf_preflight import check_dtype

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
        raise MhcError(f"--weights native needs --opset {FP8_MIN_OPSET} or later (FP8 weights "
                       f"are decoded by DequantizeLinear); got --opset {args.opset}")
    checked = plan(info, layers, dtype)  # every tensor of the selection present and in shape
    if layers is not None and not args.no_validate:
        _check_reference_prefix(info, layers, dtype)
    need = check_memory(info, dtype, layers, weights)
    fuse = not getattr(args, "no_fuse", False)
    target = getattr(args, "target", "mhc")
    out: Path = args.out or default_out(info, layers, dtype, weights, fuse=fuse, target=target)
    check_export_outputs(args, out)  # preflight: the same output checks as every export
    what = f"layers {layers.start}:{layers.stop}" if layers else "full model"
    _say(f"HF DeepSeek-V4 {info.path} ({info.layout} layout, {what}, {dtype_name(dtype)}, "
         f"{weights} weights, hc_mult {info.config.hc_mult}; estimate ~"
         f"{(need.need - need.base) / 2**30:.2f} GiB while exporting, ~"
         f"{need.need / 2**30:.2f} GiB peak resident)")
    t0 = time.perf_counter()
    _say("loading checkpoint")
    graph = build_graph(info, dtype, layers, weights, checked)
    _say(f"  loaded in {time.perf_counter() - t0:.1f}s")
    done = export_graph(graph, out, meta=metadata(info, dtype, layers, weights), opset=args.opset,
                        external_data=external, fuse=fuse, target=target, progress=_say)
    counts = {**done.result.mhc_nodes, **done.result.contrib_nodes}
    nodes = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"
    _say(f"  mhc nodes: {nodes}"
         + (f"; weights in {done.result.external_data}" if done.result.external_data else ""))
    if args.no_validate:
        return out, None
    from .hf_validate import validate_hf

    batch = 2 if args.batch is None else args.batch
    seq = 16 if args.seq is None else args.seq
    t0 = time.perf_counter()
    _say(f"validating against an independent reading of the files (batch {batch}, seq {seq})")
    report = validate_hf(out, graph, batch=batch, seq=seq)
    _say(f"  validated in {time.perf_counter() - t0:.1f}s")
    return out, report
