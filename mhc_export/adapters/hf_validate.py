"""Validate an HF DeepSeek-V4 export: ONNX Runtime vs HF's own eager model.

The eager reference is HF's model with HF's forwards (not our adapter),
rebuilt from the checkpoint path the exporter recorded in the ONNX metadata.
The report is the one :mod:`mhc_export.validate` writes for our own model:
output comparison per ONNX Runtime provider under the dtype's tolerance, and
the mHC invariants on every MhcPre node's outputs (and on HF's
HyperConnection outputs for eager). Where a provider cannot run the graph
(bf16 on ONNX Runtime's CPU provider) the mhc nodes are validated alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch

from .. import metadata as md
from .. import ort_runner
from ..metadata import read_metadata
from ..report import Report, tolerance_for
from ..spec import dtype_name, parse_dtype
from ..validate import (
    Probe,
    _first_line,
    _has_external,
    _probe_model,
    _validate_mhc_nodes,
)
from .hf_deepseek_v4 import MhcAttrs, model_config
from .hf_export import FULL_OUTPUTS, SLICE_OUTPUTS, CausalLMGraph, example_inputs


def graph_from_metadata(proto: onnx.ModelProto,
                        checkpoint: str | os.PathLike[str] | None = None) -> torch.nn.Module:
    """Rebuild the eager HF graph an export came from (``checkpoint`` overrides the path)."""
    from .hf_checkpoint import check_memory, inspect_checkpoint
    from .hf_export import build_graph

    meta = read_metadata(proto)
    info = inspect_checkpoint(checkpoint or meta[md.HF_CHECKPOINT])
    dtype = parse_dtype(meta[md.DTYPE])
    layers = range(*meta[md.LAYERS]) if meta.get(md.LAYERS) else None
    check_memory(info, dtype, layers)
    return build_graph(info, dtype, layers)


def _graph_dtype(graph: torch.nn.Module) -> torch.dtype:
    for p in graph.parameters():
        if p.is_floating_point() and p.dtype != torch.float32:
            return p.dtype
    return torch.float32


def _eager_probe(graph: torch.nn.Module, inputs: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, Probe]:
    """Run HF's eager graph, recording every HyperConnection's input and outputs."""
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4HyperConnection

    probe = Probe()

    def record(module, args, output):
        streams = args[0]
        b, s, n, d = streams.shape
        post, comb, collapsed = output
        probe.add(streams.reshape(b * s, n, d), collapsed.reshape(b * s, d),
                  post.reshape(b * s, n).float(), comb.reshape(b * s, n, n).float())

    hooks = [m.register_forward_hook(record) for m in graph.modules()
             if isinstance(m, DeepseekV4HyperConnection)]
    try:
        with torch.no_grad():
            out = graph(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return out, probe


def validate_hf(
    onnx_path: str | os.PathLike[str],
    graph: torch.nn.Module,
    *,
    batch: int = 2,
    seq: int = 16,
    seed: int = 1234,
    providers: list[str] | None = None,
    report: Report | None = None,
) -> Report:
    """ONNX Runtime vs HF eager on fresh random inputs, plus mHC invariants per backend."""
    onnx_path = Path(onnx_path)
    proto = onnx.load(os.fspath(onnx_path))
    dtype = _graph_dtype(graph)
    tol = tolerance_for(dtype)
    full = isinstance(graph, CausalLMGraph)
    output = (FULL_OUTPUTS if full else SLICE_OUTPUTS)[0]
    meta = read_metadata(proto)
    report = report or Report(f"validate {onnx_path.name}")
    inputs = example_inputs(graph, batch=batch, seq=seq, seed=seed, dtype=dtype)
    report.config.update({
        "onnx": str(onnx_path), "hf_checkpoint": meta.get(md.HF_CHECKPOINT),
        "layers": meta.get(md.LAYERS) or "all", "dtype": dtype_name(dtype),
        "inputs": {k: list(v.shape) for k, v in inputs.items()}, "seed": seed,
        "reference": "HF transformers eager (DeepseekV4, HF's own forwards)",
    })
    expected, eager_probe = _eager_probe(graph, inputs)
    attrs: dict[str, Any] = MhcAttrs.from_config(model_config(_hf(graph))).pre()
    eager_probe.check(report, "HF eager", attrs)
    probed, groups = _probe_model(proto)
    if not groups:
        report.note("no MhcPre nodes in the graph: invariants from HF eager only")
    with tempfile.TemporaryDirectory() as tmp:
        probed_path = Path(tmp) / onnx_path.name
        onnx.save_model(probed, probed_path, save_as_external_data=_has_external(proto),
                        location=probed_path.name + ".data")
        for provider in providers or ort_runner.available_providers():
            backend = ort_runner.provider_label(provider)
            try:
                outs = ort_runner.run(ort_runner.session(probed_path, provider), inputs)
            except Exception as e:  # ORT raises its own exception types
                report.note(f"{backend} cannot run this {dtype_name(dtype)} graph: "
                            f"{_first_line(e)}")
                _validate_mhc_nodes(report, proto, provider, dtype)
                continue
            report.compare(backend, "HF eager", output, outs[output], expected, tol)
            probe = Probe()
            for names in groups:
                probe.add(*(outs[n] for n in names))
            probe.check(report, backend, attrs)
    return report


def _hf(graph: torch.nn.Module) -> torch.nn.Module:
    return graph.model if isinstance(graph, CausalLMGraph) else graph
