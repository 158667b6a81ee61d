"""HF transformers' DeepSeek-V4.1 (``transformers.models.deepseek_v41``) as names and attributes.

No transformers release on the package index ships ``deepseek_v41`` yet (5.25 is
the newest; the model is on transformers' main branch), and this package does not
depend on unreleased code. So this module holds what the adapter will need, written
from the spec's "DeepSeek-V4.1 in HF transformers" section, and is tested against a
V4.1-shaped module tree of our own (tests/test_hf_v41_mapping.py):

* the name mapping between HF's parameters and our reference model's
  (:func:`our_name`, :func:`hf_name`): the mix weights are raw float32 attributes of
  each decoder layer, ``model.layers.{l}.hc_{attn,ffn}_{fn,scale,base}``;
* the op attributes from the (text) config (:func:`mix_attributes`);
* the check that says clearly why ``--hf`` cannot load a V4.1 checkpoint today
  (:func:`require_transformers`).

HF's functions map onto the ops as ``hc_mixes`` -> MhcMix, ``hc_collapse`` ->
MhcCollapse, ``hc_expand`` -> MhcPost; ``DeepseekV41TextModel.forward`` seeds a
float32 one-hot pre, threads (streams, pre) through the layers, and ends with
``hc_collapse`` and ``model.norm`` (there is no ``hc_head``).
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from ..core.errors import MhcError
from ..core.spec import MAX_STREAMS

MODEL_TYPE = "deepseek_v41"
TRANSFORMERS_MODULE = "transformers.models.deepseek_v41"
# The first transformers release with deepseek_v41: none yet (checked 2026-12-06,
# 5.25 newest). Name it here once one ships; the --hf message then says it.
FIRST_TRANSFORMERS_RELEASE: str | None = None
# V4.1's post gate is 2 * sigmoid(.) (the constant in hc_mixes).
POST_MULT = 2.0
SITES = {"attn": 0, "ffn": 1}  # sublayer order within a decoder layer
MIX_PARAMS = {"fn": "hc_fn", "scale": "hc_scale", "base": "hc_base"}
# HF (transformers) name -> our reference model's name, for everything but the mixes.
_PLAIN = {
    "model.embed.weight": "embed.weight",
    "model.norm.weight": "final_norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_MIX = re.compile(r"hc_(attn|ffn)_(fn|scale|base)")
_NORM = re.compile(r"(attn|ffn)_norm\.weight")


def our_name(hf: str) -> str | None:
    """Our reference model's parameter for HF's ``hf`` (``model.``-prefixed, as in the
    module tree), or None for the sublayer bodies (MLA/MoE, not mHC's business)."""
    if hf in _PLAIN:
        return _PLAIN[hf]
    m = _LAYER.fullmatch(hf)
    if m is None:
        return None
    layer, rest = int(m.group(1)), m.group(2)
    if mix := _MIX.fullmatch(rest):
        return f"sublayers.{2 * layer + SITES[mix.group(1)]}.mhc.{MIX_PARAMS[mix.group(2)]}"
    if norm := _NORM.fullmatch(rest):
        return f"sublayers.{2 * layer + SITES[norm.group(1)]}.norm.weight"
    return None


def hf_name(layer: int, site: str, param: str) -> str:
    """``model.layers.{layer}.hc_{site}_{param}``, e.g. hf_name(3, "ffn", "fn")."""
    if site not in SITES or param not in MIX_PARAMS:
        raise ValueError(f"site must be one of {sorted(SITES)} and param one of "
                         f"{sorted(MIX_PARAMS)}, got {site!r}, {param!r}")
    return f"model.layers.{layer}.hc_{site}_{param}"


def checkpoint_name(hf: str) -> str:
    """The on-disk name: the checkpoint has ``layers.{l}.hc_attn_fn``; transformers'
    conversion mapping adds ``model.``."""
    return hf.removeprefix("model.")


def mix_shapes(streams: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """hc_{site}_fn [M, n*d], _scale [3], _base [M] with M = (2 + n) * n; all float32."""
    m = (2 + streams) * streams
    return {"fn": (m, streams * hidden), "scale": (3,), "base": (m,)}


def text_config(config: Any) -> Any:
    """The composite DeepseekV41Config keeps the language model's fields in text_config."""
    return getattr(config, "text_config", None) or config


def mix_attributes(config: Any) -> dict[str, float | int]:
    """MhcMix's attributes from a V4.1 config: rms_eps = rms_norm_eps (1e-20 for Flash,
    always written: the op default 1e-6 is wrong for V4.1), pre_eps = sinkhorn_eps =
    hc_eps, sinkhorn_iters = hc_sinkhorn_iters, post_mult = 2."""
    c = text_config(config)
    n = int(c.hc_mult)
    if not 1 <= n <= MAX_STREAMS:
        raise ValueError(f"config hc_mult={n}: mhc-export supports 1..{MAX_STREAMS} streams")
    return {"rms_eps": float(c.rms_norm_eps), "pre_eps": float(c.hc_eps),
            "sinkhorn_eps": float(c.hc_eps), "post_mult": POST_MULT,
            "sinkhorn_iters": int(c.hc_sinkhorn_iters)}


def transformers_has_v41() -> bool:
    return importlib.util.find_spec("transformers") is not None and \
        importlib.util.find_spec(TRANSFORMERS_MODULE) is not None


def require_transformers(where: str) -> None:
    """Raise one clear line where the installed transformers cannot load V4.1 (``where``
    names the checkpoint); the --hf export of V4.1 is not wired in either case yet."""
    import transformers

    have = transformers.__version__
    if not transformers_has_v41():
        release = (f"transformers >= {FIRST_TRANSFORMERS_RELEASE}" if FIRST_TRANSFORMERS_RELEASE
                   else "a transformers release that ships it (none does yet)")
        raise MhcError(
            f"{where}: model_type {MODEL_TYPE!r} is DeepSeek-V4.1; transformers {have} has no "
            f"{MODEL_TYPE} model, so --hf cannot load it: it needs {release}. Our V4.1 graph "
            "exports with --config tiny-v41, small-v41 or v41-flash-layer")
    raise MhcError(f"{where}: transformers {have} has {MODEL_TYPE}, but mhc-export's --hf path "
                   "exports DeepSeek-V4 only so far (the V4.1 name mapping is in "
                   "mhc_export/adapters/hf_deepseek_v41.py; docs/HF.md)")
