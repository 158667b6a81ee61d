"""DeepSeek-V4 checkpoints in the layouts users hold, with random weights and their truth.

This file documents the published format (``../shared/spec/hf_checkpoints.md``):

- ``layout="native"``: DeepSeek's names without a ``model.`` prefix
  (``embed.weight``, ``layers.N.attn.wq_a.weight`` + ``layers.N.attn.wq_a.scale``,
  ``layers.N.ffn.experts.E.w1.weight``, ``mtp.0.*``) and a config.json as published
  (``compress_ratios`` with one entry per layer plus the MTP slot, ``num_hash_layers``,
  ``qk_rope_head_dim``, top-level ``expert_dtype``, ``quantization_config``).
- ``layout="hf"``: ``save_pretrained`` names (``model.layers.N.self_attn.q_a_proj.weight``,
  merged ``mlp.experts.gate_up_proj``), quantized weights with ``*_scale_inv``.
- ``weights="fp8"``: attention ``wq_a wq_b wkv wo_a wo_b``, ``indexer.wq_b``, shared
  experts and ``mtp.0.e_proj/h_proj`` in F8_E4M3 with one scale per ``block`` (128 x 128
  as published) in UE8M0 (``scale_fmt="ue8m0"``, F8_E8M0: a power of two) or float32;
  routed experts in FP4 (I8 ``[out, in/2]``, two E2M1 values per byte, low nibble first,
  F8_E8M0 scale per 32 values of a row) or FP8 (``experts="fp8"``, the -Base releases);
  embed, head, norms, gate, compressor ``wkv``/``wgate``, ``weights_proj`` in BF16;
  ``hc_*``, ``attn_sink``, ``ape``, ``gate.bias`` in F32; ``tid2eid`` I64.
  ``weights="bf16"|"fp32"``: every float tensor in that dtype.

:func:`write_checkpoint` returns the truth: every model tensor (HF names) as the float64
value the files encode. ``header_only=True`` writes safetensors headers without data
(sparse files of the right size): the real-size index (names, dtypes, shapes of all of
V4-Flash) for the selection and memory tests, a few hundred kB of disk in all.

From the command line (scripts/rtx/native_weights.sh uses it)::

    python -m mhc_export.testing.v4_checkpoints OUT_DIR [--layout native|hf]
        [--weights fp8|bf16|fp32] [--experts fp4|fp8] [--scale-fmt ue8m0|float32]
        [--shards N] [--no-mtp] [--flash-header-only]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch

from ..adapters.hf_layout import DOWN, GATE_UP, LAYER_NAME, native_name, scale_name

# The published V4-Flash config (spec: hf_checkpoints.md, section 1).
V4_FLASH: dict[str, Any] = dict(
    vocab_size=129280, hidden_size=4096, moe_intermediate_size=2048, num_hidden_layers=43,
    num_attention_heads=64, num_key_value_heads=1, head_dim=512, q_lora_rank=1024,
    num_experts_per_tok=6, n_routed_experts=256, n_shared_experts=1, o_groups=8,
    o_lora_rank=1024, index_n_heads=64, index_head_dim=128, index_topk=512,
    sliding_window=128, hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6,
    # compress_ratios [0, 0, 4, 128, 4, 128, ..., 4] (+ 0 for MTP): two sliding-window
    # layers, then CSA (even layers) and HCA (odd layers) interleaved.
    layer_types=["sliding_attention"] * 2 + ["compressed_sparse_attention",
                                             "heavily_compressed_attention"] * 20
    + ["compressed_sparse_attention"],
    rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                  "beta_fast": 32, "beta_slow": 1},
    mlp_layer_types=["hash_moe"] * 3 + ["moe"] * 40,
)
_RATIO = {"sliding_attention": 0, "compressed_sparse_attention": 4,
          "heavily_compressed_attention": 128}
# Config keys copied as they are into a published-style config.json.
_PUBLISHED_KEYS = (
    "vocab_size", "hidden_size", "moe_intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "q_lora_rank",
    "num_experts_per_tok", "n_routed_experts", "n_shared_experts", "o_groups", "o_lora_rank",
    "index_n_heads", "index_head_dim", "index_topk", "sliding_window", "hc_mult",
    "hc_sinkhorn_iters", "hc_eps", "rms_norm_eps", "max_position_embeddings", "rope_theta",
    "compress_rope_theta", "swiglu_limit", "scoring_func", "routed_scaling_factor",
    "norm_topk_prob", "num_nextn_predict_layers", "tie_word_embeddings", "bos_token_id",
    "eos_token_id",
)
_FP8 = re.compile(r"(attn\.(wq_a|wq_b|wkv|wo_a|wo_b)|indexer\.wq_b|shared_experts\.w[123]"
                  r"|[eh]_proj)\.weight$")
_F32 = re.compile(r"(^|\.)hc_|attn_sink$|\.ape$|gate\.bias$")
_ST = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64", torch.int8: "I8",
       torch.float8_e4m3fn: "F8_E4M3", torch.float8_e8m0fnu: "F8_E8M0"}
FP4_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E4M3_MAX, E2M1_MAX, FP4_GROUP = 448.0, 6.0, 32


def storage(native: str, weights: str, experts: str) -> str:
    """How the published layout stores a tensor: fp8, fp4, f32, bf16 or i64."""
    if native.endswith("tid2eid"):
        return "i64"
    if weights != "fp8":
        return weights
    if re.search(r"\.experts\.\d+\.w[123]\.weight$", native):
        return experts
    if _FP8.search(native):
        return "fp8"
    return "f32" if _F32.search(native) else "bf16"


def _scale(amax: torch.Tensor, top: float, fmt: str) -> torch.Tensor:
    s = torch.where(amax > 0, amax / top, torch.ones_like(amax))
    return torch.exp2(torch.ceil(torch.log2(s))) if fmt == "ue8m0" else s


def _grid(t: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    *lead, r, c = t.shape
    br, bc = block
    pad = torch.nn.functional.pad(t, (0, -c % bc, 0, -r % br))
    return pad.reshape(*lead, pad.shape[-2] // br, br, pad.shape[-1] // bc, bc)


def quant_fp8(w: torch.Tensor, block: tuple[int, int], fmt: str):
    """(F8_E4M3 codes, scale grid, float64 truth) of ``w [..., r, c]``."""
    amax = _grid(w.float().abs(), block).amax(dim=(-3, -1))
    s = _scale(amax, E4M3_MAX, fmt)
    r, c = w.shape[-2:]
    full = s.repeat_interleave(block[0], -2)[..., :r, :].repeat_interleave(block[1], -1)[..., :c]
    q = (w.float() / full).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, _scale_tensor(s, fmt), q.double() * full.double()


def quant_fp4(w: torch.Tensor, fmt: str):
    """(I8 packed pairs, per-32 scales, float64 truth) of ``w [..., r, c]``."""
    groups = w.float().reshape(*w.shape[:-1], -1, FP4_GROUP)
    s = _scale(groups.abs().amax(-1), E2M1_MAX, fmt)
    v = groups / s.unsqueeze(-1)
    mags = torch.tensor(FP4_MAGNITUDES)
    idx = (v.abs().unsqueeze(-1) - mags).abs().argmin(-1)
    codes = (idx | ((v < 0).long() << 3)).reshape(w.shape)
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8).view(torch.int8)
    truth = torch.where(codes >= 8, -1.0, 1.0).double() * mags.double()[codes & 7]
    truth = truth * s.double().repeat_interleave(FP4_GROUP, -1)
    return packed, _scale_tensor(s, fmt), truth


def _scale_tensor(s: torch.Tensor, fmt: str) -> torch.Tensor:
    return s.to(torch.float8_e8m0fnu) if fmt == "ue8m0" else s.float()


def _encode(name: str, value: torch.Tensor, kind: str, layout: str, opts: dict
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({checkpoint name: stored tensor}, float64 truth) of one tensor."""
    if kind == "i64":
        return {name: value.long()}, value.long()
    if kind in ("fp8", "fp4"):
        q, s, truth = (quant_fp8(value, opts["block"], opts["scale_fmt"]) if kind == "fp8"
                       else quant_fp4(value, opts["scale_fmt"]))
        return {name: q, scale_name(name, layout): s}, truth
    dtype = torch.float32 if kind in ("f32", "fp32") else torch.bfloat16
    stored = value.to(dtype)
    return {name: stored}, stored.double()


def _header_entry(name: str, shape: tuple[int, ...], kind: str, layout: str, opts: dict
                  ) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{checkpoint name: (safetensors dtype, shape)} without any data."""
    *lead, r, c = shape if len(shape) >= 2 else (1, *shape)
    if kind == "fp8":
        br, bc = opts["block"]
        sdt = "F8_E8M0" if opts["scale_fmt"] == "ue8m0" else "F32"
        return {name: ("F8_E4M3", shape),
                scale_name(name, layout): (sdt, (*lead, -(-r // br), -(-c // bc)))}
    if kind == "fp4":
        sdt = "F8_E8M0" if opts["scale_fmt"] == "ue8m0" else "F32"
        return {name: ("I8", (*lead, r, c // 2)),
                scale_name(name, layout): (sdt, (*lead, r, c // FP4_GROUP))}
    dt = {"i64": "I64", "f32": "F32", "fp32": "F32"}.get(kind, "BF16")
    return {name: (dt, shape)}


def _pieces(hf_name: str, t: torch.Tensor, layout: str):
    """(checkpoint name, tensor, (expert, part)) of one HF tensor; native experts split."""
    m = LAYER_NAME.match(hf_name)
    rest = m.group(3) if m else ""
    if layout == "hf":
        yield hf_name, t, None
    elif rest in (GATE_UP, DOWN):
        parts = 2 if rest == GATE_UP else 1
        rows = t.shape[1] // parts
        for e in range(t.shape[0]):
            for p in range(parts):
                yield native_name(hf_name, p, e), t[e, p * rows:(p + 1) * rows], (e, p)
    else:
        yield native_name(hf_name), t, None


def _mtp(state: dict[str, torch.Tensor], config, layout: str, gen: torch.Generator):
    """``mtp.0.*``: one decoder block plus the MTP projections (never loaded)."""
    last = config.num_hidden_layers - 1
    h = config.hidden_size
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.startswith(f"model.layers.{last}."):
            for ck, piece, _ in _pieces(name, t, "native"):
                out["mtp.0." + ck.split(".", 2)[2]] = piece
    for name, shape in (("e_proj.weight", (h, h)), ("h_proj.weight", (h, h)),
                        ("enorm.weight", (h,)), ("hnorm.weight", (h,)), ("norm.weight", (h,))):
        out[f"mtp.0.{name}"] = torch.empty(shape, device=next(iter(state.values())).device)
    if out["mtp.0.norm.weight"].device.type != "meta":
        out = {k: (torch.randn(v.shape, generator=gen) * 0.05 if v.is_floating_point() else v)
               for k, v in out.items()}
    return out


def _published_config(config, opts: dict) -> dict[str, Any]:
    """config.json as DeepSeek publishes it (legacy keys; transformers folds them on load)."""
    raw = {"architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
           **{k: getattr(config, k) for k in _PUBLISHED_KEYS},
           "compress_ratios": [_RATIO[t] for t in config.layer_types] + [0],
           "num_hash_layers": config.mlp_layer_types.count("hash_moe"),
           "qk_rope_head_dim": config.qk_rope_head_dim}
    rates = config.compress_rates
    if rates["compressed_sparse_attention"] != 4:
        raw["compress_rate_csa"] = rates["compressed_sparse_attention"]
    if rates["heavily_compressed_attention"] != 128:
        raw["compress_rate_hca"] = rates["heavily_compressed_attention"]
    assert config.mlp_layer_types == sorted(config.mlp_layer_types), "hash layers come first"
    if opts["weights"] == "fp8":
        raw["expert_dtype"] = opts["experts"]
        raw["quantization_config"] = _quant_config(opts, with_experts=False)
    return raw


def _quant_config(opts: dict, with_experts: bool = True) -> dict[str, Any]:
    q = {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": opts["scale_fmt"],
         "weight_block_size": list(opts["block"]), "activation_scheme": "dynamic"}
    return {**q, "expert_dtype": opts["experts"]} if with_experts else q


def write_checkpoint(path: str | Path, config=None, *, layout: str = "native",
                     weights: str = "fp8", experts: str = "fp4", scale_fmt: str = "ue8m0",
                     block: tuple[int, int] = (128, 128), mtp: bool = True, shards: int = 1,
                     seed: int = 0, header_only: bool = False) -> dict[str, torch.Tensor]:
    """Write a random checkpoint to ``path``; return its truth {HF name: float64}.

    ``config``: a DeepseekV4Config (default: the tiny test config of
    :mod:`mhc_export.adapters.hf_testing`). Values come from that module's
    random model (non-trivial mHC, sinks, hash table), then are quantized.
    """
    from ..adapters.hf_testing import make_config, random_model

    assert layout in ("native", "hf") and weights in ("fp8", "bf16", "fp32")
    config = config or make_config()
    opts = dict(weights=weights, experts=experts, scale_fmt=scale_fmt, block=tuple(block))
    if header_only:
        from transformers import DeepseekV4ForCausalLM

        with torch.device("meta"):
            state = dict(DeepseekV4ForCausalLM(config).state_dict())
    else:
        state = random_model(config, seed=seed).state_dict()
    gen = torch.Generator().manual_seed(seed + 1)
    stored: dict[str, Any] = {}
    parts: dict[str, dict] = {}
    for hf_name, t in state.items():
        for name, piece, key in _pieces(hf_name, t, layout):
            kind = storage(native_name(hf_name, *(key[::-1] if key else (0, None)))
                           if layout == "hf" else name, weights, experts)
            if header_only:
                stored.update(_header_entry(name, tuple(piece.shape), kind, layout, opts))
                continue
            tensors, truth = _encode(name, piece, kind, layout, opts)
            stored.update(tensors)
            parts.setdefault(hf_name, {})[key] = truth
    if mtp:
        for name, t in _mtp(state, config, layout, gen).items():
            kind = storage(name, weights, experts)
            stored.update(_header_entry(name, tuple(t.shape), kind, layout, opts) if header_only
                          else _encode(name, t, kind, layout, opts)[0])
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _write_files(path, stored, shards, header_only)
    raw = _published_config(config, opts) if layout == "native" else config.to_dict()
    if layout == "hf" and weights == "fp8":
        raw["quantization_config"] = _quant_config(opts)
    (path / "config.json").write_text(json.dumps(raw, indent=2))
    return {} if header_only else {k: _assemble(v) for k, v in parts.items()}


def _assemble(parts: dict) -> torch.Tensor:
    if None in parts:
        return parts[None]
    experts = 1 + max(e for e, _ in parts)
    n_parts = 1 + max(p for _, p in parts)
    return torch.stack([torch.cat([parts[(e, p)] for p in range(n_parts)])
                        for e in range(experts)])


def _write_files(path: Path, stored: dict[str, Any], shards: int, header_only: bool) -> None:
    from safetensors.torch import save_file

    names = list(stored)
    per = -(-len(names) // shards)
    chunks = [names[i:i + per] for i in range(0, len(names), per)]
    files = (["model.safetensors"] if len(chunks) == 1 else
             [f"model-{i + 1:05d}-of-{len(chunks):05d}.safetensors" for i in range(len(chunks))])
    weight_map, total = {}, 0
    for file, chunk in zip(files, chunks, strict=True):
        if header_only:
            total += _write_header(path / file, {n: stored[n] for n in chunk})
        else:
            tensors = {n: stored[n].contiguous() for n in chunk}
            save_file(tensors, path / file)
            total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({n: file for n in chunk})
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


_SIZE = {"F32": 4, "BF16": 2, "I64": 8, "I8": 1, "F8_E4M3": 1, "F8_E8M0": 1}


def _header_bytes(entries: dict[str, tuple[str, tuple[int, ...]]]) -> tuple[bytes, int]:
    """A safetensors header for ``entries`` (name -> dtype, shape) in order, with its length
    prefix and padding, and the data size it promises."""
    header, offset = {}, 0
    for name, (dtype, shape) in entries.items():
        n = _SIZE[dtype] * _numel(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob, offset


def _write_header(file: Path, entries: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """A safetensors file with its header and no data written: sparse, so it has the size
    the header promises (the preflight refuses a truncated file) and takes no disk."""
    head, size = _header_bytes(entries)
    file.write_bytes(head)
    os.truncate(file, len(head) + size)
    return size


def edit_header(shard: str | Path, edit) -> dict[str, Any]:
    """Apply ``edit`` (a function changing the dict in place) to a safetensors file's header
    and rewrite the file valid: data offsets count from the end of the header, so a longer
    header moves nothing they name. Returns the edited header ({} for a file too short to
    have one). The fuzzers and tests break checkpoints with it."""
    shard = Path(shard)
    data = shard.read_bytes()
    if len(data) < 8:
        return {}
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    shard.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    return header


def flash_config(**overrides: Any):
    """The V4-Flash DeepseekV4Config (real sizes), for header-only indexes and one-layer files."""
    from transformers import DeepseekV4Config

    return DeepseekV4Config(**{**V4_FLASH, **overrides})


def write_real_layers(path: str | Path, config, layers: list[int], *, seed: int = 0,
                      top: bool = True) -> int:
    """A published-layout checkpoint of a real-size config holding only some layers.

    Random stored codes are written tensor by tensor (no float model: one
    V4-Flash layer is 6.6B values): FP4 bytes uniform, FP8 codes of
    N(0, 64), UE8M0 scales around 2**-9 (FP4) and 2**-13 (FP8), so weights are
    of the size trained ones have. One shard per layer plus one for the tensors
    outside the stack (``top``). Returns the bytes written.
    """
    from transformers import DeepseekV4ForCausalLM

    opts = dict(weights="fp8", experts="fp4", scale_fmt="ue8m0", block=(128, 128))
    with torch.device("meta"):
        state = dict(DeepseekV4ForCausalLM(config).state_dict())
    groups: dict[str, dict] = {}
    for hf_name, t in state.items():
        m = LAYER_NAME.match(hf_name)
        if (m is None and not top) or (m is not None and int(m.group(2)) not in layers):
            continue
        file = ("model-top.safetensors" if m is None
                else f"model-layer{int(m.group(2)):03d}.safetensors")
        for name, piece, _ in _pieces(hf_name, t, "native"):
            kind = storage(name, "fp8", "fp4")
            groups.setdefault(file, {}).update(_header_entry(name, tuple(piece.shape), kind,
                                                             "native", opts))
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    total, weight_map = 0, {}
    for file, entries in groups.items():
        total += _write_streaming(path / file, entries, gen, config)
        weight_map.update({n: file for n in entries})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    (path / "config.json").write_text(json.dumps(_published_config(config, opts), indent=2))
    return total


def _write_streaming(file: Path, entries: dict, gen: torch.Generator, config) -> int:
    head, offset = _header_bytes(entries)
    with open(file, "wb") as f:
        f.write(head)
        for name, (dtype, shape) in entries.items():
            rows = shape[0] if shape else 1
            step = max(1, (1 << 26) // max(1, _numel(shape[1:])))
            for r0 in range(0, rows, step):
                part = (min(step, rows - r0), *shape[1:]) if shape else ()
                t = _random_stored(name, dtype, part, gen, config)
                f.write(t.contiguous().view(torch.uint8).numpy().tobytes())
    return offset


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _random_stored(name: str, dtype: str, shape: tuple[int, ...], gen: torch.Generator,
                   config) -> torch.Tensor:
    """Random values of a trained checkpoint's size, in the stored dtype."""
    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    if dtype == "I8":
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    if dtype == "F8_E4M3":
        return (randn() * 64).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    if dtype == "F8_E8M0":  # FP4 scales 2**-9, FP8 scales 2**-13, +-1 octave
        centre = 127 - (9 if ".experts." in name else 13)
        return (centre + torch.randint(-1, 2, shape, generator=gen)).to(torch.uint8)
    if dtype == "I64":
        k = config.num_experts_per_tok
        scores = torch.rand((*shape[:-1], config.n_routed_experts), generator=gen)
        return scores.argsort(-1)[..., :k]
    if name.endswith(("_fn", ".fn")):
        value = randn() * 0.5 / shape[-1] ** 0.5 * 8
    elif name.endswith(("_scale", ".scale")):
        value = 0.5 + 1.5 * torch.rand(shape, generator=gen)
    elif name.endswith(("_base", "attn_sink")):
        value = randn()
    elif name.endswith((".ape", "gate.bias")):
        value = randn() * 0.5
    elif "norm" in name:
        value = 1 + 0.1 * randn()
    else:
        value = randn() * 0.02
    return value.to(torch.float32 if dtype == "F32" else torch.bfloat16)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a random DeepSeek-V4 checkpoint.")
    p.add_argument("out", type=Path)
    p.add_argument("--layout", choices=("native", "hf"), default="native")
    p.add_argument("--weights", choices=("fp8", "bf16", "fp32"), default="fp8")
    p.add_argument("--experts", choices=("fp4", "fp8"), default="fp4")
    p.add_argument("--scale-fmt", choices=("ue8m0", "float32"), default="ue8m0")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--no-mtp", action="store_true")
    p.add_argument("--flash-header-only", action="store_true",
                   help="the real-size V4-Flash index: names, dtypes, shapes, no data")
    a = p.parse_args(argv)
    config = flash_config() if a.flash_header_only else None
    write_checkpoint(a.out, config, layout=a.layout, weights=a.weights, experts=a.experts,
                     scale_fmt=a.scale_fmt, shards=a.shards, mtp=not a.no_mtp,
                     header_only=a.flash_header_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
