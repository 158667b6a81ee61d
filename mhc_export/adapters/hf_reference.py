"""References for an HF export that cannot share the loader's mistakes.

- :func:`weights_error`: every tensor the export's modules hold against the
  independent float64 reading of the files (:mod:`.hf_truth`).
- :func:`reference_run`: HF's own model in float64, its weights from that same
  independent reading. For a slice A:B it is, when it fits in memory, the full
  model run to layer B-1 with forward hooks recording layer A's input and
  layer B-1's output on the same token ids; otherwise HF's layers A..B-1 alone.
  The label says which one ran.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .hf_checkpoint import CheckpointInfo, available_memory
from .hf_truth import IndependentReader

_SLICE_KEY = re.compile(r"^model\.layers\.(\d+)\.(.*)$")
FULL_REFERENCE = "HF DeepseekV4ForCausalLM run to layer {last} (float64, forward hooks)"
SLICE_REFERENCE = "HF decoder layers {a}..{last} alone (float64)"
MODEL_REFERENCE = "HF DeepseekV4ForCausalLM (float64)"
_F64_FACTOR = 2.5  # the float64 weights, plus activations and the reader's temporaries


def _loaded(graph: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(dense tensors by module key, tensors kept in stored form by module key)."""
    modules = graph.model if hasattr(graph, "model") else graph.layers
    kept = getattr(modules, "stored_weights", {})
    dense = {k: v for k, v in modules.state_dict().items() if ".parametrizations." not in k}
    return dense, kept


def _module_key(hf_name: str, layers: range | None) -> str:
    if layers is None:
        return hf_name
    m = _SLICE_KEY.match(hf_name)
    assert m is not None, hf_name
    return f"{int(m.group(1)) - layers.start}.{m.group(2)}"


def weights_error(graph: torch.nn.Module, path, layers: range | None
                  ) -> tuple[float, int, str, list[str]]:
    """(max relative error, tensors compared, worst tensor, tensors the reading lacks)."""
    dense, kept = _loaded(graph)
    seen: set[str] = set()
    worst, worst_name, count = 0.0, "", 0
    for hf_name, expert, truth in IndependentReader(path).tensors(layers):
        key = _module_key(hf_name, layers)
        if key in kept:
            got = kept[key].dense(torch.float32) if expert is None else \
                kept[key].part(expert).dense(torch.float32)
        elif key in dense:
            got = dense[key] if expert is None else dense[key][expert]
        else:
            if layers is None and hf_name == "lm_head.weight":
                continue  # tied embeddings: the head is the embedding
            return float("inf"), count, f"{hf_name} (not in the export)", []
        seen.add(key)
        got64 = got.double().numpy() if got.dtype != torch.int64 else got.numpy()
        if got64.shape != truth.shape:
            return float("inf"), count, f"{hf_name} shape {list(got64.shape)}", []
        err = float(np.abs(got64 - truth).max()) / max(float(np.abs(truth).max()), 1e-30) \
            if truth.size else 0.0
        count += 1
        if err > worst or not worst_name:
            worst, worst_name = err, hf_name if expert is None else f"{hf_name}[{expert}]"
    lacking = sorted((set(dense) | set(kept)) - seen - {"lm_head.weight"})
    return worst, count, worst_name, lacking


def _f64_bytes(info: CheckpointInfo, layers: range | None) -> int:
    """Memory HF's float64 model of ``layers`` (None: all of them) needs, from the headers."""
    total = 0
    for name, (dtype, shape) in info.headers.items():
        m = re.match(r"^(?:model\.)?layers\.(\d+)\.", name)
        if name.startswith(("mtp.", "model.mtp.")) or (layers is not None and m
                                                         and int(m.group(1)) not in layers):
            continue
        n = 8
        for s in shape:
            n *= s
        total += n * (2 if dtype in ("I8", "U8") else 1)
    return int(total * _F64_FACTOR)


def _holds_layers(names: Iterable[str], layers: range) -> bool:
    """Whether checkpoint tensor ``names`` include the embedding and every layer of ``layers``."""
    names = list(names)
    found = {int(m.group(1)) for n in names
             if (m := re.match(r"^(?:model\.)?layers\.(\d+)\.", n))}
    has_embed = any(n.removeprefix("model.") in ("embed.weight", "embed_tokens.weight")
                    for n in names)
    return has_embed and set(layers) <= found


def runs_from_layer0(info: CheckpointInfo, layers: range, have: int | None = None) -> bool:
    """Whether :func:`reference_run` checks slice ``layers`` (A:B) against HF's model run
    from layer 0: the files hold the embedding and layers 0..B-1, and their float64 model
    fits in ``have`` bytes (default: what is available now). Then validation reads layers
    0..A-1 too; otherwise it runs the slice's layers alone."""
    prefix = range(0, layers.stop)
    have = available_memory() if have is None else have
    return _holds_layers(info.headers, prefix) and _f64_bytes(info, prefix) <= have


def _hf_model(config: Any, reader: IndependentReader, layers: range | None,
              n_layers: int) -> torch.nn.Module:
    """HF's DeepseekV4ForCausalLM of ``n_layers`` layers (or the slice's layers) in float64."""
    from transformers import DeepseekV4ForCausalLM
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4RotaryEmbedding

    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    start = 0 if layers is None else layers.start
    config.num_hidden_layers = n_layers
    config.layer_types = list(config.layer_types[start:start + n_layers])
    config.mlp_layer_types = list(config.mlp_layer_types[start:start + n_layers])
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.device("meta"):
            model = DeepseekV4ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    state: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, torch.Tensor]] = {}
    wanted = range(start, start + n_layers)
    for hf_name, expert, value in reader.tensors(wanted, top=False):
        m = _SLICE_KEY.match(hf_name)
        name = f"model.layers.{int(m.group(1)) - start}.{m.group(2)}" if m else hf_name
        t = torch.from_numpy(value)
        if expert is None:
            state[name] = t
        else:
            experts.setdefault(name, {})[expert] = t
    for name, parts in experts.items():
        state[name] = torch.stack([parts[e] for e in range(len(parts))])
    for hf_name, _, value in reader.tensors(range(0), top=True):  # embed, norm, head
        state[hf_name] = torch.from_numpy(value)
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        model.lm_head.weight = model.model.embed_tokens.weight
    rope = DeepseekV4RotaryEmbedding(config)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, DeepseekV4RotaryEmbedding):
                setattr(module, child_name, rope)
    return model.eval()


def reference_run(info: CheckpointInfo, layers: range | None, *, batch: int, seq: int,
                  seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, str] | str:
    """(graph inputs in float64 / int64, expected output, reference label), or why none fits."""
    reader = IndependentReader(info.path)
    have = available_memory()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, info.config.vocab_size, (batch, seq), generator=g)
    positions = torch.arange(seq).unsqueeze(0).expand(batch, seq)
    if layers is None:
        if (need := _f64_bytes(info, None)) > have:
            return f"HF's float64 model needs ~{need / 2**30:.1f} GiB"
        model = _hf_model(info.config, reader, None, info.config.num_hidden_layers)
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        return {"input_ids": ids}, logits, MODEL_REFERENCE
    last = layers.stop - 1
    if runs_from_layer0(info, layers, have):
        model = _hf_model(info.config, reader, None, layers.stop)
        seen: dict[str, torch.Tensor] = {}
        hooks = [model.model.layers[layers.start].register_forward_pre_hook(
                     lambda m, args, kw: seen.__setitem__("in", kw.get("hidden_states",
                                                                      args[0] if args else None)),
                     with_kwargs=True),
                 model.model.layers[last].register_forward_hook(
                     lambda m, args, out: seen.__setitem__("out", out))]
        try:
            with torch.no_grad():
                model.model(input_ids=ids, position_ids=positions, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        inputs = {"hidden_streams": seen["in"], "input_ids": ids}
        return inputs, seen["out"], FULL_REFERENCE.format(last=last)
    if (need := _f64_bytes(info, layers)) > have:
        return (f"HF's float64 layers {layers.start}..{last} need ~{need / 2**30:.1f} GiB, "
                f"{have / 2**30:.1f} GiB available")
    from .hf_export import LayerSlice

    model = _hf_model(info.config, reader, layers, len(layers))
    graph = LayerSlice(model.config, model.model.layers)
    streams = torch.randn(batch, seq, info.config.hc_mult, info.config.hidden_size,
                          generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = graph(streams, ids)
    return ({"hidden_streams": streams, "input_ids": ids}, out,
            SLICE_REFERENCE.format(a=layers.start, last=last))
