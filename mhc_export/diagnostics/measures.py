"""The six mHC diagnostics of seed 003, computed on the project's reference ops.

Definitions follow the seed (per token x = residual[t] flattened to n*d):
1. Sinkhorn error eps_K = max(max_i |row_i - 1|, max_j |col_j - 1|) of comb.
2. Spectral norm ||comb||_2 and condition number sigma_max / sigma_min.
3. Quotient Jacobian: the Jacobian of logits -> Sinkhorn(logits) restricted to
   the complement of the gauge space G = {r 1^T + 1 c^T}, i.e. U^T J U with U an
   orthonormal basis of G^perp; its singular values and condition number.
4. Dynamic sensitivity ||D comb(x)||_2 * ||x||, ||D pre(x)||_2 * ||x||,
   ||D post(x)||_2 * ||x||: how much a relative change of the input moves the gates.
5. Logit update after one SGD step on ||comb - I||_F^2 over the comb rows of
   hc_fn, hc_scale[2] and the comb part of hc_base: the fraction of the update
   dZ that lies outside the gauge space, ||P_perp dZ|| / ||dZ||.
6. Gate statistics of pre and post.
Everything differentiates mhc_export.reference.eager through torch.func, so what is
measured is the code the backends are validated against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.func import jacrev, vmap

from ..core.checks import check_attributes, check_pre_inputs
from ..core.spec import (
    RMS_EPS,
    SINKHORN_EPS,
    SINKHORN_ITERS,
    PreAttrs,
    num_mixes,
    pre_attributes,
)
from ..reference.eager import pre_mixes, sinkhorn
from .gauge import gauge_perp_basis, project_gauge_perp

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations stay strings
    from typing import Unpack

__all__ = [
    "GateStats",
    "LogitUpdate",
    "Sensitivity",
    "comb_logits",
    "dynamic_sensitivity",
    "gate_stats",
    "logit_update",
    "quotient_jacobian",
    "random_mhc_weights",
    "sinkhorn_error",
    "spectral_stats",
]


def _square(name: str, t: torch.Tensor) -> int:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < 2 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must have shape [..., n, n], got {list(t.shape)}")
    return t.shape[-1]


def random_mhc_weights(
    n: int, d: int, generator: torch.Generator, *, init_std: float = 0.02, scale: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The seed's initialisation: hc_fn ~ N(0, init_std^2), hc_scale = scale, hc_base = 0."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got n={n}, d={d}")
    m = num_mixes(n)
    hc_fn = torch.randn(m, n * d, generator=generator) * init_std
    return hc_fn, torch.full((3,), float(scale)), torch.zeros(m)


# ---------------------------------------------------------------------------
# 1, 2: properties of a comb matrix
# ---------------------------------------------------------------------------


def sinkhorn_error(comb: torch.Tensor) -> torch.Tensor:
    """eps_K per matrix: the largest |row sum - 1| or |column sum - 1| (float64)."""
    _square("comb", comb)
    c = comb.detach().to(torch.float64)
    rows = (c.sum(dim=-1) - 1.0).abs().amax(dim=-1)
    cols = (c.sum(dim=-2) - 1.0).abs().amax(dim=-1)
    return torch.maximum(rows, cols)


def spectral_stats(comb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(spectral norm, condition number) per matrix, float64; a singular matrix gives inf."""
    _square("comb", comb)
    sv = torch.linalg.svdvals(comb.detach().to(torch.float64))
    smax, smin = sv[..., 0], sv[..., -1]
    cond = torch.where(smin > 0, smax / smin.clamp_min(1e-300), torch.full_like(smax, math.inf))
    return smax, cond


# ---------------------------------------------------------------------------
# 3: quotient Jacobian of the Sinkhorn map
# ---------------------------------------------------------------------------


def quotient_jacobian(
    logits: torch.Tensor, iters: int = SINKHORN_ITERS, eps: float = SINKHORN_EPS
) -> torch.Tensor:
    """Singular values (descending) of U^T J U for each [n, n] logit matrix.

    J = d vec(Sinkhorn(Z)) / d vec(Z) at Z = logits (row-major vec), U the
    orthonormal basis of G^perp. Returns [..., (n-1)^2] float64.
    """
    n = _square("logits", logits)
    check_attributes(iters=iters, eps=eps)
    batch = logits.shape[:-2]
    z = logits.detach().to(torch.float32).reshape(-1, n, n)
    jac = vmap(jacrev(lambda m: sinkhorn(m, iters, eps)))(z)  # [B, n, n, n, n]
    u = gauge_perp_basis(n)
    jq = u.T @ jac.reshape(-1, n * n, n * n).to(torch.float64) @ u
    return torch.linalg.svdvals(jq).reshape(*batch, (n - 1) ** 2)


# ---------------------------------------------------------------------------
# 4: dynamic sensitivity of the gates to the input
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensitivity:
    """Per token: ||D gate(x)||_2 * ||x|| for comb, pre and post (float64 [T])."""

    comb: torch.Tensor
    pre: torch.Tensor
    post: torch.Tensor


def dynamic_sensitivity(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    **pre_attrs: Unpack[PreAttrs],
) -> Sensitivity:
    """||D comb(x)|| ||x||, ||D pre(x)|| ||x||, ||D post(x)|| ||x|| for every token of residual
    (MhcPre's attributes as keywords, spec defaults for the missing ones)."""
    t, n, d = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    attrs = pre_attributes(pre_attrs)
    x = residual.detach().float()

    # Tokens do not interact, so the Jacobian of the token-summed gates with
    # respect to the whole batch holds every token's own Jacobian side by side:
    # one reverse pass per gate entry (2n + n^2) instead of one per token.
    def summed(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pre, post, comb = pre_mixes(r, hc_fn, hc_scale, hc_base, **attrs)  # type: ignore[arg-type]
        return pre.sum(0), post.sum(0), comb.sum(0).reshape(n * n)

    jp, jq, jc = jacrev(summed)(x)  # [outs, T, n, d] each
    xnorm = x.reshape(t, n * d).to(torch.float64).norm(dim=-1)

    def scaled(j: torch.Tensor) -> torch.Tensor:
        per_token = j.reshape(j.shape[0], t, n * d).transpose(0, 1).to(torch.float64)
        # The Gram matrix is tiny ([outs, outs]) where the Jacobian is [outs, n*d];
        # in float64 its top eigenvalue gives sigma_max to full float32 accuracy.
        gram = per_token @ per_token.mT
        return torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0).sqrt() * xnorm

    return Sensitivity(comb=scaled(jc), pre=scaled(jp), post=scaled(jq))


# ---------------------------------------------------------------------------
# 5: gauge component of a logit update
# ---------------------------------------------------------------------------


def comb_logits(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
) -> torch.Tensor:
    """The [T, n, n] logits that MhcPre feeds to Sinkhorn (spec: mixes[2n:] * s + b)."""
    t, n, d = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    x = residual.reshape(t, n * d).float()
    xhat = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + rms_eps)
    z = (xhat @ hc_fn[2 * n :].t()) * hc_scale[2] + hc_base[2 * n :]
    return z.reshape(t, n, n)


@dataclass(frozen=True)
class LogitUpdate:
    """Per token: ||P_perp dZ||, ||dZ|| and their ratio (float64 [T])."""

    perp_norm: torch.Tensor
    total_norm: torch.Tensor
    perp_ratio: torch.Tensor


def logit_update(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    lr: float = 1e-3,
    rms_eps: float = RMS_EPS,
    sinkhorn_eps: float = SINKHORN_EPS,
    sinkhorn_iters: int = SINKHORN_ITERS,
) -> LogitUpdate:
    """One SGD step on ||comb - I||_F^2, taken separately for each token's own loss.

    The step moves the comb rows of hc_fn, hc_scale[2] and the comb part of
    hc_base; dZ is the resulting change of that token's comb logits.
    """
    t, n, _ = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    eye = torch.eye(n)
    dz = []
    # Each token is its own sample (the seed draws one x per sample): the
    # parameters' gradients must not mix tokens, so step them one by one.
    for k in range(t):
        params = [hc_fn.detach().clone().requires_grad_(True),
                  hc_scale.detach().clone().requires_grad_(True),
                  hc_base.detach().clone().requires_grad_(True)]
        r = residual[k : k + 1].detach()
        z = comb_logits(r, *params, rms_eps=rms_eps)
        comb = sinkhorn(z, sinkhorn_iters, sinkhorn_eps)
        loss = (comb - eye).square().sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            stepped = [p - lr * g for p, g in zip(params, grads, strict=True)]
            dz.append((comb_logits(r, *stepped, rms_eps=rms_eps) - z)[0].to(torch.float64))
    delta = torch.stack(dz)
    perp = project_gauge_perp(delta).flatten(1).norm(dim=-1)
    total = delta.flatten(1).norm(dim=-1)
    ratio = torch.where(total > 0, perp / total.clamp_min(1e-300), torch.zeros_like(total))
    return LogitUpdate(perp_norm=perp, total_norm=total, perp_ratio=ratio)


# ---------------------------------------------------------------------------
# 6: gate statistics
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GateStats:
    pre_mean: float
    pre_l1_mean: float
    pre_min: float
    pre_max: float
    post_mean: float
    post_linf_mean: float
    post_min: float
    post_max: float


def gate_stats(pre: torch.Tensor, post: torch.Tensor) -> GateStats:
    """Seed statistics (mean, mean per-token L1 of pre, mean per-token Linf of post) and ranges."""
    for name, g in (("pre", pre), ("post", post)):
        if not isinstance(g, torch.Tensor) or g.dim() < 1 or g.numel() == 0:
            raise ValueError(f"{name} must be a non-empty [..., n] tensor")
    p = pre.detach().to(torch.float64).reshape(-1, pre.shape[-1])
    q = post.detach().to(torch.float64).reshape(-1, post.shape[-1])
    return GateStats(
        pre_mean=float(p.mean()), pre_l1_mean=float(p.abs().sum(-1).mean()),
        pre_min=float(p.min()), pre_max=float(p.max()),
        post_mean=float(q.mean()), post_linf_mean=float(q.abs().amax(-1).mean()),
        post_min=float(q.min()), post_max=float(q.max()),
    )
