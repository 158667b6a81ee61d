"""Tensor names of the two DeepSeek-V4 checkpoint layouts, and the slice a layer range needs.

``native``: what DeepSeek publishes (``layers.N.attn.wq_a.weight`` with a
``.scale`` beside each quantized weight, per-expert ``experts.E.w1/w2/w3``,
``embed``/``head``, ``mtp.0.*``). ``hf``: what ``save_pretrained`` writes
(``model.layers.N.self_attn.q_a_proj.weight``, merged ``experts.gate_up_proj``,
``*_scale_inv`` beside quantized weights). The native -> HF table below is
ours; validation maps names through transformers' own conversion table
instead (:mod:`.hf_truth`), so a mistake here cannot pass unnoticed.
"""

from __future__ import annotations

import re

NATIVE = "native"
HF = "hf"

# Native name -> HF name, inside a decoder layer (after ``layers.N.`` / ``model.layers.N.``).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    **{f"hc_{s}_{p}": f"{s}_hc.{p}" for s in ("attn", "ffn") for p in ("fn", "base", "scale")},
    "attn.attn_sink": "self_attn.sinks",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_norm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv.weight": "self_attn.kv_proj.weight",
    "attn.kv_norm.weight": "self_attn.kv_norm.weight",
    "attn.wo_a.weight": "self_attn.o_a_proj.weight",
    "attn.wo_b.weight": "self_attn.o_b_proj.weight",
    **{f"attn.{src}compressor.{a}": f"self_attn.compressor.{dst}{b}"
       for src, dst in (("", ""), ("indexer.", "indexer."))
       for a, b in (("ape", "position_bias"), ("wkv.weight", "kv_proj.weight"),
                    ("wgate.weight", "gate_proj.weight"), ("norm.weight", "kv_norm.weight"))},
    "attn.indexer.wq_b.weight": "self_attn.compressor.indexer.q_b_proj.weight",
    "attn.indexer.weights_proj.weight": "self_attn.compressor.indexer.scorer.weights_proj.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
    "ffn.gate.tid2eid": "mlp.gate.tid2eid",
    "ffn.shared_experts.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared_experts.w2.weight": "mlp.shared_experts.down_proj.weight",
    "ffn.shared_experts.w3.weight": "mlp.shared_experts.up_proj.weight",
}
_TOP_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "head.weight": "lm_head.weight",
    "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn",
    "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}
GATE_UP, DOWN = "mlp.experts.gate_up_proj", "mlp.experts.down_proj"
# Per-expert native weights -> (merged HF tensor, part): gate_up_proj[e] = [w1; w3].
_EXPERT_PARTS = {"w1": (GATE_UP, 0), "w3": (GATE_UP, 1), "w2": (DOWN, 0)}
LAYER_NAME = re.compile(r"^(model\.)?layers\.(\d+)\.(.*)$")
_NATIVE_EXPERT = re.compile(r"^ffn\.experts\.(\d+)\.(w[123])\.weight$")
# transformers 5.25's save_pretrained writes the native suffixes under ``model.``, and the
# attention's kv norm as ``attn.norm`` (its table maps both to ``kv_norm``).
_ALIASES = {"attn.norm.weight": "self_attn.kv_norm.weight"}
_HF_TOP = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
           "model.hc_head.hc_fn", "model.hc_head.hc_base", "model.hc_head.hc_scale"}
_HF_LAYER_NAMES = set(_LAYER_NAMES.values()) | {GATE_UP, DOWN}
MTP_PREFIXES = ("mtp.", "model.mtp.")


def detect_layout(names: list[str] | set[str]) -> str:
    """``native`` when the names carry no ``model.`` prefix (``embed.weight``, ``layers.N.``)."""
    return NATIVE if any(n.startswith(("layers.", "embed.")) for n in names) else HF


def is_mtp(name: str) -> bool:
    return name.startswith(MTP_PREFIXES)


def layer_of(name: str) -> int | None:
    """The decoder layer a checkpoint tensor belongs to (None: outside the stack)."""
    m = LAYER_NAME.match(name)
    return int(m.group(2)) if m else None


def scale_names(weight: str) -> tuple[str, str]:
    """Where a quantized weight's scale may be stored: native ``.scale``, HF ``_scale_inv``."""
    return weight.removesuffix(".weight") + ".scale", weight + "_scale_inv"


def scale_name(weight: str, layout: str) -> str:
    """Where the generator stores a quantized weight's scale in ``layout``."""
    return scale_names(weight)[0 if layout == NATIVE else 1]


def native_name(hf_name: str, part: int = 0, expert: int | None = None) -> str:
    """The published name of an HF tensor (an expert's part for merged experts)."""
    m = LAYER_NAME.match(hf_name)
    if m is None:
        return {v: k for k, v in _TOP_NAMES.items()}[hf_name]
    i, rest = m.group(2), m.group(3)
    if rest in (GATE_UP, DOWN):
        w = next(k for k, v in _EXPERT_PARTS.items() if v == (rest, part))
        return f"layers.{i}.ffn.experts.{expert}.{w}.weight"
    return f"layers.{i}." + {v: k for k, v in _LAYER_NAMES.items()}[rest]


def hf_name_of(name: str, renumber: int = 0) -> tuple[str, int, int] | None:
    """(HF name with layer i -> i - renumber, expert, part) of a checkpoint name, or None.

    Names of every layout map: native, HF, and native suffixes under ``model.``.
    Per-expert native tensors give their expert and part (0 = w1 / w2, 1 = w3);
    every other tensor (-1, 0).
    """
    m = LAYER_NAME.match(name)
    if m is None:
        if name in _HF_TOP:
            return name, -1, 0
        base = name.removeprefix("model.")
        return (_TOP_NAMES[base], -1, 0) if base in _TOP_NAMES else None
    prefix, rest = f"model.layers.{int(m.group(2)) - renumber}.", m.group(3)
    e = _NATIVE_EXPERT.match(rest)
    if e:
        target, part = _EXPERT_PARTS[e.group(2)]
        return prefix + target, int(e.group(1)), part
    if rest in _HF_LAYER_NAMES:
        return prefix + rest, -1, 0
    hf = _LAYER_NAMES.get(rest) or _ALIASES.get(rest)
    return (prefix + hf, -1, 0) if hf else None
