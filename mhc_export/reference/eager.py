"""Eager PyTorch reference of the mHC ops, V4 and V4.1 (``shared/spec/mhc_ops.md``).

Plain torch math with float32 accumulation. This is the ground truth that the
custom ops, the ONNX function bodies, the CUDA kernels and the TensorRT
plugins are compared against (the tests in turn check it against an
independent float64 implementation).
"""

from __future__ import annotations

import torch

from ..core.checks import (
    check_attributes,
    check_collapse_inputs,
    check_head_inputs,
    check_logits,
    check_post_inputs,
    check_pre_inputs,
)
from ..core.spec import (
    HEAD_EPS,
    POST_MULT,
    PRE_EPS,
    RMS_EPS,
    SINKHORN_EPS,
    SINKHORN_INITS,
    SINKHORN_ITERS,
)

__all__ = [
    "mhc_collapse",
    "mhc_head",
    "mhc_mix",
    "mhc_post",
    "mhc_post_collapse",
    "mhc_post_mix",
    "mhc_pre",
    "pre_mixes",
    "sinkhorn",
]

# MaxText clips Sinkhorn denominators here instead of adding eps.
_MAXTEXT_CLIP = 1e-12


# ---------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------


def sinkhorn(
    logits: torch.Tensor, iters: int = SINKHORN_ITERS, eps: float = SINKHORN_EPS,
    init: str = "softmax_row",
) -> torch.Tensor:
    """Project [..., n, n] float32 logits towards the doubly stochastic matrices.

    ``init="softmax_row"`` is the V4 form of the spec; ``"exp"`` is seed 000
    (exp, then ``iters`` row-then-column rounds); ``"softmax_col"`` is MaxText
    (column softmax, then ``iters`` rounds with denominators clipped at 1e-12,
    ``eps`` unused).
    """
    check_logits(logits)
    check_attributes(iters=iters, eps=eps)
    if init == "softmax_row":
        c = torch.softmax(logits, dim=-1) + eps
        c = c / (c.sum(dim=-2, keepdim=True) + eps)
        for _ in range(iters - 1):
            c = c / (c.sum(dim=-1, keepdim=True) + eps)
            c = c / (c.sum(dim=-2, keepdim=True) + eps)
        return c
    if init == "exp":
        c = torch.exp(logits)
        for _ in range(iters):
            c = c / (c.sum(dim=-1, keepdim=True) + eps)
            c = c / (c.sum(dim=-2, keepdim=True) + eps)
        return c
    if init == "softmax_col":
        c = torch.softmax(logits, dim=-2)
        for _ in range(iters):
            c = c / c.sum(dim=-1, keepdim=True).clamp_min(_MAXTEXT_CLIP)
            c = c / c.sum(dim=-2, keepdim=True).clamp_min(_MAXTEXT_CLIP)
        return c
    raise ValueError(f"unknown Sinkhorn init {init!r}; expected one of {SINKHORN_INITS}")


def _rms_mixes(x: torch.Tensor, hc_fn: torch.Tensor, rms_eps: float) -> torch.Tensor:
    """(hc_fn @ x) * rsqrt(mean(x^2) + rms_eps) for x [T, K] float32."""
    r = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + rms_eps)
    return (x @ hc_fn.t()) * r


def pre_mixes(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    pre_eps: float = PRE_EPS,
    sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT,
    sinkhorn_iters: int = SINKHORN_ITERS,
    sinkhorn_init: str = "softmax_row",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three gates of MhcPre: pre [T, n], post [T, n], comb [T, n, n] (float32)."""
    t, n, d = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    check_attributes(
        rms_eps=rms_eps, pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps,
        post_mult=post_mult, sinkhorn_iters=sinkhorn_iters,
    )
    mixes = _rms_mixes(residual.reshape(t, n * d).float(), hc_fn, rms_eps)
    pre = torch.sigmoid(mixes[:, :n] * hc_scale[0] + hc_base[:n]) + pre_eps
    post = post_mult * torch.sigmoid(mixes[:, n : 2 * n] * hc_scale[1] + hc_base[n : 2 * n])
    logits = (mixes[:, 2 * n :] * hc_scale[2] + hc_base[2 * n :]).reshape(t, n, n)
    comb = sinkhorn(logits, sinkhorn_iters, sinkhorn_eps, init=sinkhorn_init)
    return pre, post, comb


def mhc_pre(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **pre_attrs: float | int | str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPre: returns (layer_input [T, d] residual dtype, post_mix [T, n], comb_mix [T, n, n]).

    Attributes (and ``sinkhorn_init``) as for :func:`pre_mixes`, which owns their defaults."""
    pre, post, comb = pre_mixes(residual, hc_fn, hc_scale, hc_base, **pre_attrs)  # type: ignore[arg-type]
    return _collapse(residual, pre), post, comb


def _collapse(residual: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """sum_i pre[t, i] * residual[t, i] in float32, cast once (MhcPre and MhcCollapse share
    it, so MhcPre(X) == (MhcCollapse(X, pre), post, comb) holds bit for bit)."""
    return torch.einsum("tn,tnd->td", pre, residual.float()).to(residual.dtype)


def mhc_post(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    *,
    transpose_comb: bool = False,
) -> torch.Tensor:
    """MhcPost: out[t, j] = post[t, j] * x[t] + sum_i comb[t, i, j] * residual[t, i].

    ``transpose_comb=True`` gives seed 000's update out[i] = sum_j B[i, j] X[j].
    """
    check_post_inputs(x, residual, post_mix, comb_mix)
    eq = "tji,tid->tjd" if transpose_comb else "tij,tid->tjd"
    mixed = torch.einsum(eq, comb_mix, residual.float())
    out = post_mix.unsqueeze(-1) * x.float().unsqueeze(1) + mixed
    return out.to(residual.dtype)


def mhc_head(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    eps: float = HEAD_EPS,
) -> torch.Tensor:
    """MhcHead: y = sum_i w[i] * residual[i], w = sigmoid(mixes * s + b) + eps."""
    t, n, d = check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    check_attributes(rms_eps=rms_eps, eps=eps)
    mixes = _rms_mixes(residual.reshape(t, n * d).float(), hc_fn, rms_eps)
    w = torch.sigmoid(mixes * hc_scale[0] + hc_base) + eps
    return torch.einsum("tn,tnd->td", w, residual.float()).to(residual.dtype)


def mhc_post_pre(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **pre_attrs: float | int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPostPre, a layer boundary: the post of one sublayer, then the pre of the next.

    Returns (residual_out, layer_input, next_post_mix, next_comb_mix). The pre half
    reads residual_out rounded to the residual dtype, the bits the unfused pair sees.
    """
    residual_out = mhc_post(x, residual, post_mix, comb_mix)
    return (residual_out, *mhc_pre(residual_out, hc_fn, hc_scale, hc_base, **pre_attrs))


def mhc_post_head(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    eps: float = HEAD_EPS,
) -> torch.Tensor:
    """MhcPostHead, the last boundary: MhcHead(MhcPost(...)) on the rounded residual."""
    return mhc_head(mhc_post(x, residual, post_mix, comb_mix), hc_fn, hc_scale, hc_base,
                    rms_eps=rms_eps, eps=eps)


# ---------------------------------------------------------------------------
# DeepSeek-V4.1: single-pass mHC (delayed pre). A site's collapse uses the
# previous site's pre; its own pre is an output that the next site consumes.
# ---------------------------------------------------------------------------


def mhc_mix(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **pre_attrs: float | int | str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcMix: (pre_mix [T, n], post_mix [T, n], comb_mix [T, n, n]), float32; the first five
    lines of MhcPre, with pre output instead of applied. Attributes: MhcPre's."""
    return pre_mixes(residual, hc_fn, hc_scale, hc_base, **pre_attrs)  # type: ignore[arg-type]


def mhc_collapse(residual: torch.Tensor, pre_mix: torch.Tensor) -> torch.Tensor:
    """MhcCollapse: layer_input[t] = sum_i pre_mix[t, i] * residual[t, i], float32 sum, cast
    once to the residual dtype. No eps, RMS factor or scale: pre_mix is used as given."""
    check_collapse_inputs(residual, pre_mix)
    return _collapse(residual, pre_mix)


def mhc_post_mix(
    x: torch.Tensor, residual: torch.Tensor, pre_mix: torch.Tensor,
    post_mix: torch.Tensor, comb_mix: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **pre_attrs: float | int | str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPostMix, the single-pass boundary: the post of site k, the collapse for site k+1
    with site k's own ``pre_mix``, and site k+1's mixes.

    Returns (residual_out, layer_input, next_pre_mix, next_post_mix, next_comb_mix). The
    collapse and the mixes read residual_out rounded to the residual dtype.
    """
    check_collapse_inputs(residual, pre_mix)
    residual_out = mhc_post(x, residual, post_mix, comb_mix)
    mixes = mhc_mix(residual_out, hc_fn, hc_scale, hc_base, **pre_attrs)
    return (residual_out, _collapse(residual_out, pre_mix), *mixes)


def mhc_post_collapse(
    x: torch.Tensor, residual: torch.Tensor, pre_mix: torch.Tensor,
    post_mix: torch.Tensor, comb_mix: torch.Tensor,
) -> torch.Tensor:
    """MhcPostCollapse, V4.1's last boundary: MhcCollapse(MhcPost(...), pre_mix), the post
    result rounded to the residual dtype first."""
    check_collapse_inputs(residual, pre_mix)
    return _collapse(mhc_post(x, residual, post_mix, comb_mix), pre_mix)
