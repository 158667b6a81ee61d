"""Validate an HF DeepSeek-V4 export: ONNX Runtime vs HF's own eager model.

The eager reference is HF's model with HF's forwards (not our adapter),
rebuilt from the checkpoint path the exporter recorded in the ONNX metadata.
The report is the one :mod:`mhc_export.validation.ort_compare` writes for our own model:
output comparison per ONNX Runtime provider under the dtype's tolerance, and
the mHC invariants on every MhcPre node's outputs (and on HF's
HyperConnection outputs for eager). Where a provider cannot run the graph
(bf16 on ONNX Runtime's CPU provider) the mhc nodes are validated alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
import torch

from ..core import metadata as md
from ..core.metadata import read_metadata
from ..core.spec import dtype_name, parse_dtype
from ..validation.ort_compare import Probe, compare_in_providers, graph_form
from ..validation.report import Comparison, Report, tolerance_for
from .hf_deepseek_v4 import MhcAttrs, model_config
from .hf_export import FULL_INPUTS, FULL_OUTPUTS, SLICE_OUTPUTS, CausalLMGraph
from .hf_ties import IndexTies


def graph_from_metadata(proto: onnx.ModelProto,
                        checkpoint: str | os.PathLike[str] | None = None,
                        onnx_path: str | os.PathLike[str] = "the model") -> torch.nn.Module:
    """Rebuild the eager HF graph an export came from (``checkpoint`` overrides the path,
    after checking it holds the same model: the config recorded at export)."""
    from .hf_checkpoint import inspect_checkpoint
    from .hf_export import build_graph
    from .hf_memory import check_memory
    from .hf_preflight import check_same_model

    meta = read_metadata(proto)
    if checkpoint:
        info = inspect_checkpoint(checkpoint, flag="--checkpoint")
        # Exports older than the recorded config carry hc_mult only.
        recorded = meta.get(md.HF_CONFIG) or {"hc_mult": meta.get(md.HC_MULT)}
        check_same_model(recorded, info.config, Path(checkpoint), Path(onnx_path))
    else:
        info = inspect_checkpoint(meta[md.HF_CHECKPOINT],
                                  flag=f"the checkpoint recorded in {onnx_path} "
                                       "(--checkpoint names another)")
    dtype = parse_dtype(meta[md.DTYPE])
    layers = range(*meta[md.LAYERS]) if meta.get(md.LAYERS) else None
    weights = meta.get(md.WEIGHTS) or "dequantized"
    check_memory(info, dtype, layers, weights)
    return build_graph(info, dtype, layers, weights)


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
    checkpoint: str | os.PathLike[str] | None = None,
) -> Report:
    """The export against an independent reading of the checkpoint, plus mHC invariants.

    Every weight the export holds is compared with the float64 reading of the
    files (:mod:`.hf_truth`); the ONNX output with HF's float64 model on those
    weights (:func:`.hf_reference.reference_run`, which says what it ran).
    ``checkpoint``: the weights ``graph`` was built from, when not the recorded ones.
    """
    from .hf_reference import reference_run, weights_error

    onnx_path = Path(onnx_path)
    proto = onnx.load(os.fspath(onnx_path), load_external_data=False)
    dtype = _graph_dtype(graph)
    tol = tolerance_for(dtype)
    info, layers = graph.checkpoint_info, graph.selection
    full = isinstance(graph, CausalLMGraph)
    output = (FULL_OUTPUTS if full else SLICE_OUTPUTS)[0]
    meta = read_metadata(proto)
    report = report or Report(f"validate {onnx_path.name}")
    report.config.update({
        "onnx": str(onnx_path),
        "hf_checkpoint": str(Path(checkpoint).resolve()) if checkpoint
        else meta.get(md.HF_CHECKPOINT),
        **({"recorded_hf_checkpoint": meta.get(md.HF_CHECKPOINT)} if checkpoint else {}),
        "layout": info.layout, "layers": meta.get(md.LAYERS) or "all",
        "dtype": dtype_name(dtype), "weights": meta.get(md.WEIGHTS) or "dequantized",
        "mode": graph_form(proto), "family": "V4", "seed": seed,
    })
    err, count, worst, lacking = weights_error(graph, info.path, layers)
    if lacking:
        err, worst = float("inf"), f"{lacking[0]} has no tensor in the independent reading"
    report.comparisons.append(Comparison(
        "mhc-export loader", "independent float64 reading of the files", f"{count} weights",
        dtype_name(dtype), [count], err, err, tol, err <= tol, f"worst: {worst}"))
    ref = reference_run(info, layers, batch=batch, seq=seq, seed=seed)
    if isinstance(ref, str):
        report.config["reference"] = "none (weights only)"
        report.note(f"output not compared: {ref}")
        return report
    inputs64, expected, label = ref
    report.config["reference"] = label
    names = FULL_INPUTS if full else graph.input_names()
    inputs = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs64.items()
              if k in names}
    report.config["inputs"] = {k: list(v.shape) for k, v in inputs.items()}
    # Ties are counted on the eager run in the export's dtype: the scores ONNX Runtime sees.
    with IndexTies(graph) as ties:
        _, eager_probe = _eager_probe(graph, inputs)
    attrs: dict[str, Any] = MhcAttrs.from_config(model_config(_hf(graph))).pre()
    eager_probe.check(report, "HF eager", attrs)
    native = meta.get(md.WEIGHTS) == "native"

    def compare(backend: str, outs: dict[str, torch.Tensor]) -> None:
        c = report.compare(backend, label, output, outs[output], expected, tol)
        if not c.passed and ties.found:
            c.detail = f"the eager run has indexer top-k ties: {ties.summary()}"

    compare_in_providers(report, onnx_path, inputs, dtype=dtype, attrs=attrs, compare=compare,
                         providers=providers, eager="HF eager", fold_constants=not native)
    if ties.found:
        report.note(f"indexer top-k ties in the eager run: {ties.summary()}; which of the "
                    "tied entries a top-k keeps is implementation-defined (torch and ONNX "
                    "Runtime may differ), so outputs can differ there (docs/HF.md)")
    return report


def _hf(graph: torch.nn.Module) -> torch.nn.Module:
    return graph.model if isinstance(graph, CausalLMGraph) else graph
