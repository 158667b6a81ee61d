"""Loaders that map the seed documents' weight layouts onto the spec's hc_fn/hc_scale/hc_base.

Seed 000 (``mHCLayer.load_weights``) and seed 002 (MaxText's
``ManifoldConstrainedHyperConnections``) hold the same parameters under other
names and row orders, and differ from V4 in a few constants. Each loader
returns the spec's weights plus the :class:`MhcVariant` that reproduces that
seed's numbers with :func:`variant_pre` / :func:`variant_post`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..core.spec import POST_MULT, PRE_EPS, RMS_EPS, SINKHORN_EPS, SINKHORN_ITERS, num_mixes
from . import eager as reference


@dataclass(frozen=True)
class MhcVariant:
    """Constants that distinguish the V4 form from the seed variants."""

    name: str = "v4"
    rms_eps: float = RMS_EPS
    pre_eps: float = PRE_EPS
    sinkhorn_eps: float = SINKHORN_EPS
    post_mult: float = POST_MULT
    sinkhorn_iters: int = SINKHORN_ITERS
    sinkhorn_init: str = "softmax_row"
    transpose_comb: bool = False  # seed 000 updates with B @ X instead of comb^T @ X


@dataclass(frozen=True)
class MhcLayerWeights:
    hc_fn: torch.Tensor  # [(2+n)*n, n*d] float32
    hc_scale: torch.Tensor  # [3] float32
    hc_base: torch.Tensor  # [(2+n)*n] float32
    variant: MhcVariant


def _f32(t: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(t).detach().to(torch.float32)


def _expect(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    return t


def from_seed000(
    W_pre: torch.Tensor, W_res: torch.Tensor, W_post: torch.Tensor,
    S_pre: torch.Tensor, S_res: torch.Tensor, S_post: torch.Tensor,
    alpha_pre: float, alpha_res: float, alpha_post: float,
    *, sinkhorn_iters: int = SINKHORN_ITERS, eps: float = 1e-6,
) -> MhcLayerWeights:
    """Seed 000's ``load_weights`` arguments -> spec weights.

    Seed 000 stacks [W_pre; W_res; W_post] but the spec orders hc_fn rows as
    pre, post, comb. Its rms scale sqrt(K / (sum x^2 + eps)) equals the spec's
    rsqrt(mean x^2 + rms_eps) with rms_eps = eps / K; it has no pre_eps.
    """
    n = W_pre.shape[0]
    k = W_pre.shape[1]
    _expect("W_pre", W_pre, (n, k))
    _expect("W_res", W_res, (n * n, k))
    _expect("W_post", W_post, (n, k))
    hc_fn = torch.cat([_f32(W_pre), _f32(W_post), _f32(W_res)], dim=0)
    hc_base = torch.cat([
        _f32(_expect("S_pre", S_pre, (1, n))).flatten(),
        _f32(_expect("S_post", S_post, (n, 1))).flatten(),
        _f32(_expect("S_res", S_res, (n, n))).flatten(),
    ])
    hc_scale = torch.stack([_f32(alpha_pre), _f32(alpha_post), _f32(alpha_res)]).flatten()
    variant = MhcVariant(
        name="seed000", rms_eps=eps / k, pre_eps=0.0, sinkhorn_eps=eps,
        sinkhorn_iters=sinkhorn_iters, sinkhorn_init="exp", transpose_comb=True,
    )
    return MhcLayerWeights(hc_fn, hc_scale, hc_base, variant)


MAXTEXT_NAMES = (
    "mhc_norm.scale", "pre_alpha", "post_alpha", "res_alpha", "pre_beta", "post_beta",
    "res_beta", "pre_alpha_scale", "post_alpha_scale", "res_alpha_scale",
)


def from_maxtext(
    params: Mapping[str, torch.Tensor], *, sinkhorn_iters: int = SINKHORN_ITERS,
    norm_eps: float = 1e-6,
) -> MhcLayerWeights:
    """MaxText parameter dict (names as in seed 002, '/' or '.' separated) -> spec weights.

    MaxText normalises the flattened residual with a learned RMSNorm scale g
    before its projections; (x_hat * g) @ W = x_hat @ (g[:, None] * W), so g
    folds into hc_fn. Its pre gate has no eps and its Sinkhorn starts from a
    column softmax with denominators clipped at 1e-12.
    """
    p = {k.replace("/", "."): v for k, v in params.items()}
    missing = [name for name in MAXTEXT_NAMES if name not in p]
    if missing:
        raise ValueError(f"MaxText parameters missing: {missing}")
    k, n = p["pre_alpha"].shape
    g = _f32(_expect("mhc_norm.scale", p["mhc_norm.scale"], (k,)))
    w = {
        name: _f32(_expect(name, p[name], (k, cols)))
        for name, cols in (("pre_alpha", n), ("post_alpha", n), ("res_alpha", n * n))
    }
    hc_fn = torch.cat([w["pre_alpha"].T, w["post_alpha"].T, w["res_alpha"].T], dim=0) * g
    hc_base = torch.cat([
        _f32(_expect("pre_beta", p["pre_beta"], (n,))),
        _f32(_expect("post_beta", p["post_beta"], (n,))),
        _f32(_expect("res_beta", p["res_beta"], (n, n))).flatten(),
    ])
    hc_scale = torch.cat([
        _f32(p[f"{name}_alpha_scale"]).reshape(1) for name in ("pre", "post", "res")
    ])
    variant = MhcVariant(
        name="maxtext", rms_eps=norm_eps, pre_eps=0.0, sinkhorn_iters=sinkhorn_iters,
        sinkhorn_init="softmax_col",
    )
    return MhcLayerWeights(hc_fn, hc_scale, hc_base, variant)


def variant_pre(
    residual: torch.Tensor, w: MhcLayerWeights
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPre with the variant's constants: (layer_input, post_mix, comb_mix)."""
    v = w.variant
    n = residual.shape[1]
    if w.hc_fn.shape[0] != num_mixes(n):
        raise ValueError(f"weights are for {w.hc_fn.shape[0]} mixes, residual has n={n}")
    return reference.mhc_pre(
        residual, w.hc_fn, w.hc_scale, w.hc_base, rms_eps=v.rms_eps, pre_eps=v.pre_eps,
        sinkhorn_eps=v.sinkhorn_eps, post_mult=v.post_mult, sinkhorn_iters=v.sinkhorn_iters,
        sinkhorn_init=v.sinkhorn_init,
    )


def variant_post(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    variant: MhcVariant,
) -> torch.Tensor:
    return reference.mhc_post(x, residual, post_mix, comb_mix,
                              transpose_comb=variant.transpose_comb)
