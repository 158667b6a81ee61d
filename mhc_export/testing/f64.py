"""An independent float64 implementation of shared/spec/mhc_ops.md (the float64 reference).

Written from the spec's formulas with numpy-style loops over the small
dimensions, sharing no code with mhc_export.reference.eager, so a bug in one does not
hide in the other. Only the attribute defaults are shared, as data, from core/spec.py
(tests/test_contract.py holds every signature to it).
"""

from __future__ import annotations

import torch

from ..core.spec import HEAD_EPS, POST_MULT, PRE_EPS, RMS_EPS, SINKHORN_EPS, SINKHORN_ITERS

# Attribute values far from the defaults (eps 1e-6, post_mult 2.0, iters 20) and
# from each other, for every float64 comparison that must see the attributes: an
# ignored, swapped or misplaced eps moves float32 outputs by 1e-2..1e-1, not by
# 1e-6 (inside float32 tolerances) as at the defaults.
ODD_ATTRS: dict[str, dict[str, float | int]] = {
    "pre": {"rms_eps": 0.1, "pre_eps": 0.05, "sinkhorn_eps": 1e-2, "post_mult": 1.3,
            "sinkhorn_iters": 7},
    "sinkhorn": {"iters": 5, "eps": 1e-2},
    "post": {},
    "head": {"rms_eps": 0.1, "eps": 0.05},
}
# The fused boundaries take the attributes of the op they end in.
ODD_ATTRS["post_pre"] = ODD_ATTRS["pre"]
ODD_ATTRS["post_head"] = ODD_ATTRS["head"]
# V4.1: MhcMix and MhcPostMix take MhcPre's attributes; the collapses take none.
ODD_ATTRS["mix"] = ODD_ATTRS["post_mix"] = ODD_ATTRS["pre"]
ODD_ATTRS["collapse"] = ODD_ATTRS["post_collapse"] = {}


def sinkhorn_f64(logits: torch.Tensor, iters: int = SINKHORN_ITERS,
                 eps: float = SINKHORN_EPS) -> torch.Tensor:
    z = logits.to(torch.float64)
    z = z - z.max(dim=-1, keepdim=True).values
    c = torch.exp(z)
    c = c / c.sum(dim=-1, keepdim=True) + eps
    c = c / (c.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        c = c / (c.sum(dim=-1, keepdim=True) + eps)
        c = c / (c.sum(dim=-2, keepdim=True) + eps)
    return c


def _mixes_f64(residual: torch.Tensor, hc_fn: torch.Tensor, rms_eps: float) -> torch.Tensor:
    t = residual.shape[0]
    x = residual.to(torch.float64).reshape(t, -1)
    r = 1.0 / torch.sqrt((x * x).mean(dim=1, keepdim=True) + rms_eps)
    return (x @ hc_fn.to(torch.float64).T) * r


def pre_f64(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    rms_eps: float = RMS_EPS, pre_eps: float = PRE_EPS, sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT, sinkhorn_iters: int = SINKHORN_ITERS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (layer_input, post, comb, pre), all float64."""
    t, n, _ = residual.shape
    m = _mixes_f64(residual, hc_fn, rms_eps)
    s = hc_scale.to(torch.float64)
    b = hc_base.to(torch.float64)
    pre = torch.sigmoid(m[:, :n] * s[0] + b[:n]) + pre_eps
    post = post_mult * torch.sigmoid(m[:, n : 2 * n] * s[1] + b[n : 2 * n])
    comb = sinkhorn_f64((m[:, 2 * n :] * s[2] + b[2 * n :]).reshape(t, n, n),
                        sinkhorn_iters, sinkhorn_eps)
    x = residual.to(torch.float64)
    layer_input = sum(pre[:, i : i + 1] * x[:, i, :] for i in range(n))
    return layer_input, post, comb, pre


def post_f64(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor
) -> torch.Tensor:
    n = residual.shape[1]
    r = residual.to(torch.float64)
    c = comb_mix.to(torch.float64)
    p = post_mix.to(torch.float64)
    xf = x.to(torch.float64)
    outs = []
    for j in range(n):
        acc = p[:, j : j + 1] * xf
        for i in range(n):
            acc = acc + c[:, i, j : j + 1] * r[:, i, :]
        outs.append(acc)
    return torch.stack(outs, dim=1)


def head_f64(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    rms_eps: float = RMS_EPS, eps: float = HEAD_EPS,
) -> torch.Tensor:
    n = residual.shape[1]
    m = _mixes_f64(residual, hc_fn, rms_eps)
    w = torch.sigmoid(m * hc_scale.to(torch.float64)[0] + hc_base.to(torch.float64)) + eps
    x = residual.to(torch.float64)
    return sum(w[:, i : i + 1] * x[:, i, :] for i in range(n))


def mix_f64(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **attrs: float | int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcMix: (pre, post, comb), float64."""
    _, post, comb, pre = pre_f64(residual, hc_fn, hc_scale, hc_base, **attrs)
    return pre, post, comb


def collapse_f64(residual: torch.Tensor, pre_mix: torch.Tensor) -> torch.Tensor:
    """MhcCollapse: sum_i pre[:, i] * residual[:, i], float64; no eps, no scale."""
    x = residual.to(torch.float64)
    p = pre_mix.to(torch.float64)
    return sum(p[:, i : i + 1] * x[:, i, :] for i in range(x.shape[1]))


def post_mix_f64(
    x: torch.Tensor, residual: torch.Tensor, pre_mix: torch.Tensor, post_mix: torch.Tensor,
    comb_mix: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **attrs: float | int,
) -> list[torch.Tensor]:
    """MhcPostMix: [residual_out, layer_input, next_pre, next_post, next_comb]. The post is
    rounded to the residual dtype (the spec's rounding point 1) before the collapse (with the
    given, i.e. previous, pre) and the mixes read it; everything else is float64."""
    r = post_f64(x, residual, post_mix, comb_mix).to(residual.dtype)
    return [r, collapse_f64(r, pre_mix), *mix_f64(r, hc_fn, hc_scale, hc_base, **attrs)]


def post_collapse_f64(
    x: torch.Tensor, residual: torch.Tensor, pre_mix: torch.Tensor, post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
) -> torch.Tensor:
    """MhcPostCollapse: the collapse of the post rounded to the residual dtype."""
    return collapse_f64(post_f64(x, residual, post_mix, comb_mix).to(residual.dtype), pre_mix)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (NaN anywhere gives inf), in float64
    on expected's device (a 16384-token benchmark row is GBs in float64)."""
    e = expected.detach().to(torch.float64)
    a = actual.detach().to(e.device, torch.float64)
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-300))
