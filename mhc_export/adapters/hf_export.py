"""Export an HF DeepSeek-V4 checkpoint (or a slice of its decoder layers) to ONNX.

The model is adapted (:mod:`.hf_deepseek_v4`, ``export=True``) and goes
through the same exporter as our own model (:func:`mhc_export.export.onnx_export.export`),
so the mhc nodes carry the spec's attributes, the local functions are
attached, and every graph pass that function applies runs here too.

Graphs:

- full model: ``input_ids`` [batch, seq] int64 -> ``logits`` [batch, seq, vocab];
- ``layers=range(A, B)``: ``hidden_streams`` [batch, seq, n, d] (and
  ``input_ids`` when a hash-routed layer is in the slice) ->
  ``hidden_streams_out`` [batch, seq, n, d]. Positions are 0..seq-1 (the
  cache-free prefill the export form computes).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.metadata import hf_metadata
from ..core.preflight import default_output
from ..core.spec import DEFAULT_OPSET, dtype_name
from ..export.onnx_export import ExportResult, export
from .hf_checkpoint import CheckpointInfo
from .hf_deepseek_v4 import adapted
from .hf_loader import Plan, build, plan
from .hf_preflight import model_config

FULL_INPUTS = ("input_ids",)
FULL_OUTPUTS = ("logits",)
SLICE_OUTPUTS = ("hidden_streams_out",)


def _positions(like: torch.Tensor) -> torch.Tensor:
    b, s = like.shape[:2]
    return torch.arange(s, device=like.device).unsqueeze(0).expand(b, s)


class CausalLMGraph(torch.nn.Module):
    """input_ids -> logits of a DeepseekV4ForCausalLM, cache-free."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, position_ids=_positions(input_ids),
                          use_cache=False).logits


class LayerSlice(torch.nn.Module):
    """Decoder layers A..B-1 of DeepseekV4Model.forward: residual streams in and out."""

    def __init__(self, config, layers: torch.nn.ModuleList):
        from transformers.models.deepseek_v4.modeling_deepseek_v4 import (
            DeepseekV4RotaryEmbedding,
        )

        super().__init__()
        self.config = config
        self.layers = layers
        self.rotary_emb = DeepseekV4RotaryEmbedding(config)
        self.needs_input_ids = any(config.mlp_layer_types[layer.layer_idx] == "hash_moe"
                                   for layer in layers)

    def forward(self, hidden_streams: torch.Tensor,
                input_ids: torch.Tensor | None = None) -> torch.Tensor:
        from transformers.masking_utils import create_sliding_window_causal_mask

        positions = _positions(hidden_streams)
        embeds = hidden_streams[:, :, 0]  # shape and dtype for the mask and RoPE
        # The cache goes positionally: its keyword is past_key_values before transformers
        # 5.25 and cache after (the old name warns, and goes in 5.40).
        mask = create_sliding_window_causal_mask(self.config, embeds, None, None,
                                                 position_ids=positions)
        rope = {kind: self.rotary_emb(embeds, position_ids=positions, layer_type=kind)
                for kind in ("main", "compress")}
        for layer in self.layers:
            hidden_streams = layer(hidden_streams, position_embeddings=rope,
                                   position_ids=positions, attention_mask=mask,
                                   input_ids=input_ids)
        return hidden_streams

    def input_names(self) -> tuple[str, ...]:
        return ("hidden_streams", "input_ids") if self.needs_input_ids else ("hidden_streams",)


def example_inputs(graph: torch.nn.Module, *, batch: int, seq: int, seed: int,
                   dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random inputs for either graph (token ids over the whole vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(graph, CausalLMGraph):
        vocab = graph.model.config.vocab_size
        return {"input_ids": torch.randint(0, vocab, (batch, seq), generator=g)}
    cfg = graph.config
    inputs = {"hidden_streams": torch.randn(batch, seq, cfg.hc_mult, cfg.hidden_size,
                                            generator=g).to(dtype)}
    if graph.needs_input_ids:
        inputs["input_ids"] = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    return inputs


def build_graph(info: CheckpointInfo, dtype: torch.dtype, layers: range | None,
                weights: str = "dequantized", checked: Plan | None = None) -> torch.nn.Module:
    """The eager HF module the export traces: HF's forwards, weights read by our loader.

    ``weights="native"`` keeps FP8/FP4 tensors in their stored form, decoded by
    the graph itself (:mod:`.hf_native`).
    """
    p = checked or plan(info, layers, dtype)
    keep = None
    if weights == "native":
        from .hf_native import keep_stored as keep
    modules = build(info, p, dtype, keep=keep)
    graph = CausalLMGraph(modules) if layers is None else LayerSlice(p.config, modules)
    if weights == "native":
        from .hf_native import bind_stored

        bind_stored(modules, modules.stored_weights)
    graph.checkpoint_info, graph.selection = info, layers  # what validation re-reads
    return graph.eval()


def metadata(info: CheckpointInfo, dtype: torch.dtype, layers: range | None,
             weights: str = "dequantized") -> dict[str, str]:
    return hf_metadata(str(info.path.resolve()), dtype_name(dtype), layers,
                       int(info.config.hc_mult), hf_config=model_config(info.config),
                       weights=weights)


@dataclass
class HfExport:
    result: ExportResult
    graph: torch.nn.Module
    seconds: dict[str, float]


def export_graph(
    graph: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    meta: dict[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    external_data: bool | None = None,
    fuse: bool = True,
    target: str = "mhc",
    progress: Callable[[str], None] = lambda msg: None,
) -> HfExport:
    """Trace ``graph`` with the export forms bound, translate, check and write ``path``."""
    dtype = next(p.dtype for p in graph.parameters() if p.is_floating_point()
                 and p.dtype != torch.float32) if _low_precision(graph) else torch.float32
    # Example sizes > 1: torch.export specialises dims of size 0 and 1.
    example = example_inputs(graph, batch=2, seq=5, seed=0, dtype=dtype)
    names = FULL_INPUTS if isinstance(graph, CausalLMGraph) else graph.input_names()
    outputs = FULL_OUTPUTS if isinstance(graph, CausalLMGraph) else SLICE_OUTPUTS
    dynamic = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    seconds: dict[str, float] = {}
    with torch.no_grad(), adapted(_hf_model(graph), export=True):
        t0 = time.perf_counter()
        progress("tracing (torch.export, export forms bound)")
        # Size-oblivious: do not specialise on dims being 0/1 (contiguity, broadcasting).
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            program = torch.export.export(
                graph, tuple(example[n] for n in names),
                dynamic_shapes=tuple(dynamic for _ in names), strict=False,
            )
        seconds["tracing"] = time.perf_counter() - t0
        progress(f"  traced in {seconds['tracing']:.1f}s")
        t0 = time.perf_counter()
        progress(f"translating to ONNX, checking, writing {path}")
        from .hf_native import fp8_casts_to_dequantize, is_native, stored_forms_kept

        native = is_native(graph)
        with stored_forms_kept() if native else contextlib.nullcontext():
            result = export(program, (), path, input_names=names, output_names=outputs,
                            dynamic_shapes=(), opset=opset, external_data=external_data,
                            metadata=meta, fuse=fuse, target=target,
                            passes=(fp8_casts_to_dequantize,) if native else ())
        seconds["translating+writing"] = time.perf_counter() - t0
        progress(f"  done in {seconds['translating+writing']:.1f}s")
    return HfExport(result, graph, seconds)


def _low_precision(graph: torch.nn.Module) -> bool:
    return any(p.is_floating_point() and p.dtype != torch.float32 for p in graph.parameters())


def _hf_model(graph: torch.nn.Module) -> torch.nn.Module:
    """What :func:`adapted` binds: the HF model, or the slice (its layers are HF's)."""
    return graph.model if isinstance(graph, CausalLMGraph) else graph


def default_out(info: CheckpointInfo, layers: range | None, dtype: torch.dtype,
                weights: str = "dequantized", fuse: bool = True, target: str = "mhc") -> Path:
    name = info.path.resolve().name or "model"
    part = f"_layers{layers.start}-{layers.stop}" if layers else ""
    form = ("_native" if weights == "native" else "") + ("" if fuse else "_unfused")
    form += "_ort" if target == "onnxruntime" else ""
    return default_output(f"hf_{name}{part}_{dtype_name(dtype)}{form}.onnx")
