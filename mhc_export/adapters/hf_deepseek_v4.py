"""Route HF transformers' DeepSeek-V4 mHC through the ``mhc::*`` custom ops.

``adapt(model)`` rebinds, per instance, the forwards of the modules that hold
HF's mHC math (``shared/spec/mhc_ops.md``, last section):

- every ``DeepseekV4HyperConnection`` (``attn_hc``, ``ffn_hc``) -> ``mhc::pre``;
- every ``DeepseekV4DecoderLayer`` (its inline residual update) -> ``mhc::post``;
- ``DeepseekV4HyperHead`` (``model.hc_head``) -> ``mhc::head``.

Nothing is copied: the ops read the modules' own ``fn``/``scale``/``base``
parameters, and the module tree, state dict and hooks stay HF's. Attributes
come from the config (``rms_norm_eps``, ``hc_eps``, ``hc_sinkhorn_iters``;
post_mult is V4's constant 2). ``Adaptation.undo()`` removes the rebinding.

``export=True`` also binds the export forms of :mod:`.hf_export_forms`
(attention and compressors without shape-dependent branches, the MoE as every
expert on every token weighted by the routing mask), used only while
exporting; docs/HF.md says what they cost.

Numerics: in float32 the adapted model equals HF's eager model to float32
rounding (HF normalises x before the projection, we scale the projection).
In bf16/fp16 HF casts post and comb to the residual dtype before mixing, we
mix in float32 and round once, so the two differ by bf16 rounding of the
gates (measured in tests/test_hf_adapter.py).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.spec import MAX_STREAMS
from ..reference import ops  # noqa: F401  (registers torch.ops.mhc.*)
from .hf_export_forms import forms

# V4's post gate is 2 * sigmoid(.) (DeepseekV4HyperConnection.forward).
POST_MULT = 2.0
MARK = "_mhc_adapted"


@dataclass(frozen=True)
class MhcAttrs:
    """The mhc op attributes of one DeepSeek-V4 config."""

    rms_eps: float
    hc_eps: float
    sinkhorn_iters: int
    streams: int

    @classmethod
    def from_config(cls, config: Any) -> MhcAttrs:
        n = int(config.hc_mult)
        if not 1 <= n <= MAX_STREAMS:
            raise ValueError(f"config hc_mult={n}: mhc-export supports 1..{MAX_STREAMS} streams")
        iters = int(config.hc_sinkhorn_iters)
        if iters < 1:
            raise ValueError(f"config hc_sinkhorn_iters={iters}: must be >= 1")
        return cls(float(config.rms_norm_eps), float(config.hc_eps), iters, n)

    def pre(self) -> dict[str, float | int]:
        return {"rms_eps": self.rms_eps, "pre_eps": self.hc_eps, "sinkhorn_eps": self.hc_eps,
                "post_mult": POST_MULT, "sinkhorn_iters": self.sinkhorn_iters}

    def head(self) -> dict[str, float]:
        return {"rms_eps": self.rms_eps, "eps": self.hc_eps}


# ---------------------------------------------------------------------------
# Replacement forwards (bound to HF's module instances)
# ---------------------------------------------------------------------------


def _pre(hc, streams: torch.Tensor):
    """mhc::pre on flat streams [T, n, d] with ``hc``'s own parameters."""
    a: MhcAttrs = hc._mhc_attrs
    return torch.ops.mhc.pre(streams, hc.fn.float(), hc.scale.float(), hc.base.float(),
                             a.rms_eps, a.hc_eps, a.hc_eps, POST_MULT, a.sinkhorn_iters)


def hyper_connection_forward(self, hidden_streams: torch.Tensor):
    """DeepseekV4HyperConnection.forward on ``mhc::pre``: (post, comb, collapsed)."""
    b, s, n, d = hidden_streams.shape
    collapsed, post, comb = _pre(self, hidden_streams.reshape(b * s, n, d))
    return post.view(b, s, n), comb.view(b, s, n, n), collapsed.view(b, s, d)


def decoder_layer_forward(self, hidden_states: torch.Tensor,
                          input_ids: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """DeepseekV4DecoderLayer.forward with the residual update on ``mhc::post``.

    The streams stay flat [T, n, d] from the attention's post to the MLP's pre, so
    in the exported graph MhcPost feeds MhcPre directly and the boundary fusion
    pass (mhc_export.export.fuse) can merge them.
    """
    b, s, n, d = hidden_states.shape
    streams = hidden_states.reshape(b * s, n, d)
    collapsed, post, comb = _pre(self.attn_hc, streams)
    attn_output, _ = self.self_attn(self.input_layernorm(collapsed.view(b, s, d)), **kwargs)
    streams = torch.ops.mhc.post(attn_output.reshape(b * s, d).to(streams.dtype), streams,
                                 post, comb)
    collapsed, post, comb = _pre(self.ffn_hc, streams)
    mlp_output = self.mlp(self.post_attention_layernorm(collapsed.view(b, s, d)),
                          input_ids=input_ids)
    streams = torch.ops.mhc.post(mlp_output.reshape(b * s, d).to(streams.dtype), streams,
                                 post, comb)
    return streams.view(b, s, n, d)


def hyper_head_forward(self, x: torch.Tensor) -> torch.Tensor:
    """DeepseekV4HyperHead.forward on ``mhc::head``."""
    b, s, n, d = x.shape
    a: MhcAttrs = self._mhc_attrs
    y = torch.ops.mhc.head(x.reshape(b * s, n, d), self.hc_fn.float(), self.hc_scale.float(),
                           self.hc_base.float(), a.rms_eps, a.hc_eps)
    return y.view(b, s, d)


# ---------------------------------------------------------------------------
# Adaptation
# ---------------------------------------------------------------------------


@dataclass
class Adaptation:
    """What :func:`adapt` rebound; ``undo()`` restores HF's forwards."""

    attrs: MhcAttrs
    modules: list[torch.nn.Module] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def undo(self) -> None:
        for module in self.modules:
            module.__dict__.pop("forward", None)
            module.__dict__.pop("_mhc_attrs", None)
            module.__dict__.pop(MARK, None)
        self.modules.clear()


def _classes():
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as m

    return m


def model_config(model: torch.nn.Module) -> Any:
    """The DeepseekV4Config of a DeepseekV4ForCausalLM / DeepseekV4Model / layer slice."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "deepseek_v4":
        raise TypeError(f"expected a DeepSeek-V4 model (DeepseekV4ForCausalLM, DeepseekV4Model or "
                        f"a module with a deepseek_v4 .config), got {type(model).__name__}")
    return config


def adapt(model: torch.nn.Module, *, export: bool = False) -> Adaptation:
    """Route ``model``'s mHC through ``mhc::pre``/``mhc::post``/``mhc::head`` (in place)."""
    m = _classes()
    attrs = MhcAttrs.from_config(model_config(model))
    bindings = {
        m.DeepseekV4HyperConnection: ("pre", hyper_connection_forward),
        m.DeepseekV4DecoderLayer: ("post", decoder_layer_forward),
        m.DeepseekV4HyperHead: ("head", hyper_head_forward),
    }
    if export:
        bindings.update(forms())
    result = Adaptation(attrs)
    for module in model.modules():
        # Through the MRO: a parametrized module (--weights native) is a subclass.
        entry = next((bindings[c] for c in type(module).__mro__ if c in bindings), None)
        if entry is None:
            continue
        if getattr(module, MARK, False):
            result.undo()
            raise RuntimeError("model is already adapted (undo the earlier adaptation first)")
        name, fn = entry
        module.forward = types.MethodType(fn, module)
        module._mhc_attrs = attrs
        setattr(module, MARK, True)
        result.modules.append(module)
        # Two pre and two post per decoder layer; one head.
        result.counts[name] = result.counts.get(name, 0) + (2 if name == "post" else 1)
    return result


@contextmanager
def adapted(model: torch.nn.Module, *, export: bool = False) -> Iterator[Adaptation]:
    """``with adapted(model): ...`` runs the model on the mhc ops, restoring HF's after."""
    a = adapt(model, export=export)
    try:
        yield a
    finally:
        a.undo()
