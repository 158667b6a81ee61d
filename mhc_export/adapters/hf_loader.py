"""Our loader for DeepSeek-V4 checkpoints: both layouts, every published precision.

A load has two steps. :func:`plan` (headers only, before any work) maps every
checkpoint tensor the selection needs to the HF module tensor it fills, and
checks the result against the modules built for the selection: a missing,
unexpected or misshapen tensor of a selected layer is a
:class:`CheckpointError` naming it. :func:`build` then reads exactly those
tensors, decodes FP8/FP4 with :mod:`.hf_quant` (never transformers' FP8
modules, so no ``accelerate`` and the same result on every host) and assigns
them with ``load_state_dict(strict=True, assign=True)`` into modules created on
the meta device: a tensor the checkpoint does not provide cannot be
initialised at random, it stays on meta and is refused.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .hf_checkpoint import CheckpointError, CheckpointInfo
from .hf_layout import DOWN, GATE_UP, NATIVE, hf_name_of, is_mtp, layer_of, native_name, scale_names
from .hf_quant import FP4_GROUP, Stored

_QUANT = ("F8_E4M3", "I8", "U8")
# How the scale of a quantized weight is stored (hf_quant: UE8M0 or float32).
_SCALE_STORAGE = ("F8_E8M0", "F32")
# What a float model tensor may be stored as: a float type or one of the quantized forms.
_FLOAT_STORAGE = ("F64", "F32", "F16", "BF16", *_QUANT)


@dataclass
class Plan:
    """Which checkpoint tensors fill which HF tensors for one selection."""

    layers: range | None  # None: the full model
    config: Any  # the config the modules are built from (slice: renumbered layers)
    pieces: dict[str, dict[tuple[int, int], str]]  # HF name -> {(expert, part): ckpt name}
    expected: dict[str, tuple[tuple[int, ...], torch.dtype]]  # HF name -> (shape, dtype)


def slice_config(info: CheckpointInfo, layers: range) -> Any:
    """The checkpoint's config cut to decoder layers A..B-1 (renumbered 0..B-A-1)."""
    config = copy.deepcopy(info.config)
    config.num_hidden_layers = len(layers)
    config.layer_types = list(config.layer_types[layers.start:layers.stop])
    config.mlp_layer_types = list(config.mlp_layer_types[layers.start:layers.stop])
    return config


def _module_config(config: Any) -> Any:
    config = copy.deepcopy(config)
    config.quantization_config = None  # we decode; transformers' FP8 modules never appear
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    return config


def new_modules(config: Any, layers: range | None, dtype: torch.dtype,
                device: str = "meta") -> torch.nn.Module:
    """Empty HF modules of a selection: the full causal LM, or the slice's decoder layers."""
    from transformers import DeepseekV4ForCausalLM
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4DecoderLayer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # as from_pretrained: HF's fp32 norms and mHC stay fp32
    try:
        with torch.device(device):
            if layers is None:
                return DeepseekV4ForCausalLM(config).eval()
            return torch.nn.ModuleList(DeepseekV4DecoderLayer(config, i)
                                       for i in range(len(layers))).eval()
    finally:
        torch.set_default_dtype(previous)


def plan(info: CheckpointInfo, layers: range | None, dtype: torch.dtype) -> Plan:
    """Map and check the selection's tensors from the headers alone (no data read)."""
    config = _module_config(info.config if layers is None else slice_config(info, layers))
    prefix = "" if layers is None else "model.layers."  # a slice is a bare ModuleList
    expected = {prefix + k: (tuple(v.shape), v.dtype)
                for k, v in new_modules(config, layers, dtype).state_dict().items()}
    if layers is None and getattr(config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)
    scales = _scale_names(info)
    pieces: dict[str, dict[tuple[int, int], str]] = {}
    for name in info.weight_map:
        if is_mtp(name) or name in scales:
            continue
        layer = layer_of(name)
        if layers is not None and (layer is None or layer not in layers):
            continue
        mapped = hf_name_of(name, layers.start if layers else 0)
        if mapped is None or mapped[0] not in expected:
            orphan = _orphan_scale(info, name)
            if orphan:
                raise CheckpointError(f"{info.path}: missing tensor {orphan} (its scale {name} "
                                      "is present)")
            raise CheckpointError(f"{info.path}: unexpected tensor {name} (not part of a "
                                  "DeepSeek-V4 model of this config)")
        hf_name, expert, part = mapped
        pieces.setdefault(hf_name, {})[(expert, part)] = name
    result = Plan(layers, config, pieces, expected)
    for hf_name, (shape, want) in expected.items():
        _check_piece(info, result, hf_name, shape, want.is_floating_point)
    block = block_size(info)
    for got in pieces.values():
        for name in got.values():
            if info.headers[name][0] in _QUANT:
                _check_scale_grid(info, name, block)
    return result


def _check_scale_grid(info: CheckpointInfo, name: str, block: tuple[int, int]) -> None:
    """The scale of a quantized weight is UE8M0 or float32 and has exactly the grid its
    decode reads: FP8 ``[..., ceil(r/bo), ceil(c/bi)]``, FP4 ``[..., r, ceil(2c/32)]``. A
    grid too large would be cut silently (wrong weights), one too small fail mid-load."""
    dtype, shape = info.headers[name]
    scale = _scale_of(info, name)
    *lead, r, c = shape
    if dtype == "F8_E4M3":
        want = [*lead, -(-r // block[0]), -(-c // block[1])]
        how = f"one per {block[0]} x {block[1]} block (weight_block_size)"
    else:
        want = [*lead, r, -(-2 * c // FP4_GROUP)]
        how = f"one per {FP4_GROUP} FP4 values of a row"
    if info.headers[scale][0] not in _SCALE_STORAGE:
        raise CheckpointError(f"{info.path}: scale {scale} of {name} is stored as "
                              f"{info.headers[scale][0]}; scales are UE8M0 (F8_E8M0) or F32")
    got = list(info.headers[scale][1])
    if got != want:
        raise CheckpointError(f"{info.path}: scale {scale} has shape {got}, but its weight "
                              f"{name} {list(shape)} ({dtype}) needs {want}: {how}")


def _scale_names(info: CheckpointInfo) -> set[str]:
    """Checkpoint names that are scales of a quantized weight beside them."""
    out = set()
    for name, (dtype, _) in info.headers.items():
        if dtype in _QUANT:
            out.add(_scale_of(info, name))
    return out


def _orphan_scale(info: CheckpointInfo, name: str) -> str | None:
    """The weight a scale belongs to, when the weight itself is missing."""
    for suffix, weight in ((".scale", name.removesuffix(".scale") + ".weight"),
                           ("_scale_inv", name.removesuffix("_scale_inv"))):
        if name.endswith(suffix) and weight not in info.headers:
            return weight
    return None


def _scale_of(info: CheckpointInfo, name: str) -> str:
    for scale in scale_names(name):
        if scale in info.headers:
            return scale
    raise CheckpointError(f"{info.path}: {name} is {info.headers[name][0]} but its scale "
                          f"{scale_names(name)[0 if info.layout == NATIVE else 1]} is missing")


def _missing_name(info: CheckpointInfo, p: Plan, hf_name: str, expert: int, part: int) -> str:
    """The checkpoint name a missing HF tensor would have (original layer number)."""
    start = p.layers.start if p.layers else 0
    name = hf_name
    if name.startswith("model.layers."):
        i, rest = name.removeprefix("model.layers.").split(".", 1)
        name = f"model.layers.{int(i) + start}.{rest}"
    if info.layout == NATIVE:
        return native_name(name, part, expert if expert >= 0 else None)
    return name


def _check_piece(info: CheckpointInfo, p: Plan, hf_name: str, shape: tuple[int, ...],
                 floating: bool) -> None:
    got = p.pieces.get(hf_name, {})
    merged = hf_name.endswith((GATE_UP, DOWN)) and (-1, 0) not in got
    keys = ([(e, q) for e in range(shape[0]) for q in range(2 if hf_name.endswith(GATE_UP)
                                                              else 1)]
            if merged else [(-1, 0)])
    for e, q in keys:
        if (e, q) not in got:
            raise CheckpointError(f"{info.path}: missing tensor "
                                  f"{_missing_name(info, p, hf_name, e, q)} (needed for "
                                  f"{_what(p)})")
    extra = sorted(set(got) - set(keys))
    if extra:
        raise CheckpointError(f"{info.path}: unexpected tensor {got[extra[0]]}")
    stored = {got[k]: info.headers[got[k]][0] for k in keys}
    bad = [(name, kind) for name, kind in stored.items() if kind not in _FLOAT_STORAGE]
    if floating and bad:
        raise CheckpointError(f"{info.path}: tensor {bad[0][0]} is stored as {bad[0][1]}, not a "
                              "float type (nor FP8/FP4); the file is corrupt")
    decoded = _decoded_shape(info, [got[k] for k in keys], merged, len(keys) // max(1, shape[0])
                             if merged else 1)
    if decoded != tuple(shape):
        raise CheckpointError(f"{info.path}: tensor {got[keys[0]]} has shape "
                              f"{list(decoded)} after decoding, the config needs {list(shape)}")


def _what(p: Plan) -> str:
    return "the full model" if p.layers is None else f"layers {p.layers.start}:{p.layers.stop}"


def _decoded_shape(info: CheckpointInfo, names: list[str], merged: bool, parts: int
                   ) -> tuple[int, ...]:
    shapes = []
    for name in names:
        dtype, shape = info.headers[name]
        shape = tuple(shape)
        if dtype in ("I8", "U8"):  # FP4: two values per byte
            shape = (*shape[:-1], shape[-1] * 2)
        shapes.append(shape)
    if not merged:
        return shapes[0]
    rows = sum(s[0] for s in shapes[:parts])
    return (len(shapes) // parts, rows, *shapes[0][1:])


def block_size(info: CheckpointInfo) -> tuple[int, int]:
    """The FP8 scale block (rows, columns): quantization_config.weight_block_size, 128 x 128
    when the config names none; anything but two positive integers is refused."""
    q = getattr(info.config, "quantization_config", None) or {}
    q = q if isinstance(q, dict) else q.to_dict()
    block = q.get("weight_block_size")
    if block is None:
        return (128, 128)
    if not (isinstance(block, (list, tuple)) and len(block) == 2
            and all(type(b) is int and b > 0 for b in block)):
        raise CheckpointError(f"{info.path}/config.json: quantization_config.weight_block_size "
                              f"must be two positive integers (rows, columns), got {block!r}")
    return (block[0], block[1])


class _Reader:
    """Tensors by checkpoint name, one open safetensors handle per file."""

    def __init__(self, info: CheckpointInfo):
        self.info = info
        self.handles: dict[Any, Any] = {}

    def __call__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        file = self.info.weight_map[name]
        if file not in self.handles:
            self.handles[file] = safe_open(file, framework="pt")
        return self.handles[file].get_tensor(name)


def stored(info: CheckpointInfo, p: Plan, hf_name: str, read: Callable[[str], torch.Tensor]
           ) -> Stored:
    """One HF tensor as the checkpoint stores it (experts stacked), not yet decoded."""
    got = p.pieces[hf_name]
    shape = p.expected[hf_name][0]
    block = block_size(info)
    if (-1, 0) in got:
        return _one(info, got[(-1, 0)], shape, block, read)
    parts = 2 if hf_name.endswith(GATE_UP) else 1
    items = [[_one(info, got[(e, q)], None, block, read) for q in range(parts)]
             for e in range(shape[0])]
    first = items[0][0]
    aligned = first.kind != "fp8" or all(s.shape[0] % block[0] == 0 for s in items[0])
    if first.kind == "dense" or not aligned or any(s.kind != first.kind for r in items for s in r):
        data = torch.stack([torch.cat([s.dense(torch.float32) for s in r]) for r in items])
        return Stored("dense", data, shape, source=got[(0, 0)])
    data = torch.stack([torch.cat([s.data for s in r]) for r in items])
    scale = torch.stack([torch.cat([s.scale for s in r]) for r in items])
    return Stored(first.kind, data, shape, scale, block, source=got[(0, 0)])


def _one(info: CheckpointInfo, name: str, shape, block, read) -> Stored:
    data = read(name)
    dtype = info.headers[name][0]
    if dtype not in _QUANT:
        return Stored("dense", data, tuple(data.shape) if shape is None else shape, source=name)
    scale = read(_scale_of(info, name))
    if dtype == "F8_E4M3":
        return Stored("fp8", data, tuple(data.shape) if shape is None else shape, scale, block,
                      source=name)
    # The scale covers every row: plan() held its header shape to the weight's grid
    # (_check_scale_grid) and the data read has the header's shape.
    decoded = (*data.shape[:-1], data.shape[-1] * 2)
    # I8 and U8 are the same FP4 bytes; one dtype, or stacking experts stored in both
    # would promote the bytes to int16.
    return Stored("fp4", data.view(torch.int8), decoded if shape is None else shape, scale,
                  source=name)


def build(info: CheckpointInfo, p: Plan, dtype: torch.dtype,
          keep: Callable[[str, Stored], bool] | None = None) -> torch.nn.Module:
    """The selection's modules with every tensor from the checkpoint (decoded to ``dtype``).

    ``keep(hf_name, stored)`` True leaves that tensor in its stored form for the
    caller (``--weights native``); it is then filled with a placeholder of the
    right shape on meta and the caller must bind it before use.
    """
    modules = new_modules(p.config, p.layers, dtype)
    read = _Reader(info)
    state, kept = {}, {}
    for hf_name, (shape, want) in p.expected.items():
        s = stored(info, p, hf_name, read)
        if keep is not None and keep(hf_name, s):
            kept[hf_name] = s
            state[hf_name] = torch.empty(shape, dtype=want, device="meta")
        else:
            state[hf_name] = s.dense(want)
    if p.layers is not None:
        state = {k.removeprefix("model.layers."): v for k, v in state.items()}
        kept = {k.removeprefix("model.layers."): v for k, v in kept.items()}
    modules.load_state_dict(state, strict=True, assign=True)
    _finish(modules, p)
    modules.stored_weights = kept  # type: ignore[assignment]
    return modules


def _finish(modules: torch.nn.Module, p: Plan) -> None:
    """Recreate the non-persistent buffers (RoPE tables) the meta build left empty."""
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4RotaryEmbedding

    if p.layers is None and getattr(p.config, "tie_word_embeddings", False):
        modules.lm_head.weight = modules.model.embed_tokens.weight
    # Every RoPE table (the model's, each compressor's and indexer's) is non-persistent.
    rope = DeepseekV4RotaryEmbedding(p.config)
    for module in list(modules.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, DeepseekV4RotaryEmbedding):
                setattr(module, child_name, rope)
    for name, buf in modules.named_buffers():
        if buf.is_meta:
            raise CheckpointError(f"internal: buffer {name} was not loaded")
