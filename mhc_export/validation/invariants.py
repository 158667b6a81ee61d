"""Output-level mHC invariants for validation reports (issue 5, seed 003).

Every backend's MhcPre outputs must satisfy properties that hold whatever the
weights are, so a broken backend fails an invariant and not only a numeric
diff. Each check takes only that backend's outputs and has a limit derived
from the spec's arithmetic (not tuned to one model):

* Sinkhorn error: max |row or column sum - 1| of comb, against a per-token
  bound for ``sinkhorn_iters`` V4 iterations (see sinkhorn_error_bound).
* Spectral norm of comb: <= 1 + that bound, because a non-negative matrix has
  ||C||_2 <= sqrt(max row sum * max column sum) (Schur test).
* comb entries: none negative or non-finite.
* post: within [0, post_mult] (closed, since float32 sigmoid saturates).
* pre: recovered from layer_input = sum_i pre_i residual_i by least squares,
  within [pre_eps, 1 + pre_eps] up to a per-token bound on the rounding of
  layer_input (V4's MhcPre, which does not output pre).
* pre_mix: V4.1's MhcMix and MhcPostMix output pre itself; within
  [pre_eps, 1 + pre_eps] up to the one float32 rounding of sigmoid + pre_eps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.spec import POST_MULT, PRE_EPS, SINKHORN_EPS, SINKHORN_ITERS
from .report import Report

__all__ = ["add_output_invariants", "recover_pre", "sinkhorn_error_bound"]

_U32 = 2.0**-24
# Unit roundoff (round to nearest) of layer_input's storage dtype.
_UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": _U32, "float64": 2.0**-53}
# Tokens whose recovered pre is uncertain by more than this are not identifiable
# (e.g. at the first layer all streams are copies of one embedding).
_MAX_PRE_TOL = 0.25
# Float64 elements per chunk of the pre solve: bounds memory for large T * d.
_CHUNK_ELEMS = 1 << 22


def _dtype_name(x: torch.Tensor | np.ndarray) -> str:
    if isinstance(x, np.ndarray):
        return x.dtype.name
    return str(x.dtype).removeprefix("torch.")


def _f64(name: str, x: object) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        arr = x.astype(np.float32) if x.dtype.name == "bfloat16" else x
        return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float64)
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64)
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def sinkhorn_error_bound(
    comb: torch.Tensor, iters: int = SINKHORN_ITERS, eps: float = SINKHORN_EPS
) -> torch.Tensor:
    """Per-matrix upper bound on eps_K that a correct V4 Sinkhorn output can have.

    Sinkhorn only rescales rows and columns, so the cross ratios of the output
    equal those of the matrix it started from (softmax + eps): the output
    itself gives the projective diameter Delta = max log(c_ik c_jl / c_il c_jk)
    and Birkhoff's contraction kappa = tanh(Delta / 4) per half step. The first
    column pass lands within Delta (Hilbert metric) of the fixed point, each
    later half step contracts by kappa, so after K iterations the row sums are
    within d = kappa^(2K-3) Delta (1 + kappa^2) of each other and |row - 1| <=
    e^d - 1. The eps in the denominators adds at most 2 eps / (1 - kappa) plus
    the column deficit 1 - S/(S + eps) the last column pass leaves; 16 n
    float32 roundings cover the arithmetic. Measured on 4000 random 4 x 4
    logits per scale (std 0.01 .. 12, with column offsets) the largest
    error / bound was 0.16 for K >= 3 (0.86 for 2 x 2 at K = 3; tests/
    test_invariants.py measures it, docs/TESTING.md records it). At logit std
    ~5 and above the projective diameter makes kappa ~1 and the bound vacuous.
    For K <= 2 a column pushed to the eps floor breaks the argument (ratio up
    to 7 measured), so the bound falls back to the trivial n - 1.
    """
    c = comb.detach().to(torch.float64)
    n = c.shape[-1]
    logc = torch.log(c.clamp_min(1e-300))
    diff = logc[..., :, None, :] - logc[..., None, :, :]  # [.., i, j, k] = L_ik - L_jk
    delta = (diff.amax(dim=-1) - diff.amin(dim=-1)).amax(dim=(-2, -1))
    kappa = torch.tanh(delta / 4)
    dist = kappa ** max(2 * iters - 3, 0) * delta * (1 + kappa**2)
    converge = torch.expm1(dist.clamp_max(math.log(n + 1.0)))
    deficit = (1 - c.sum(dim=-2)).clamp_min(0).amax(dim=-1)
    bound = converge + 2 * eps / (1 - kappa).clamp_min(1e-12) + deficit + 16 * n * _U32
    if iters <= 2:
        bound = bound.clamp_min(n - 1.0)
    return bound


def recover_pre(
    layer_input: torch.Tensor | np.ndarray,
    residual: torch.Tensor | np.ndarray,
    *,
    pre_eps: float = PRE_EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares pre [T, n] from layer_input [T, d] = sum_i pre_i residual[:, i],
    and a per-token bound [T] on its error from the rounding of layer_input.

    The bound is (u ||y|| + accumulation) / sigma_min(residual[t]): u the unit
    roundoff of layer_input's dtype, accumulation the float32 sum of n terms.
    Collinear streams give sigma_min = 0 and an infinite bound.
    """
    for name, x in (("layer_input", layer_input), ("residual", residual)):
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if residual.ndim != 3:
        raise ValueError(f"residual must be [T, n, d], got shape {list(residual.shape)}")
    t, n, d = residual.shape
    if tuple(layer_input.shape) != (t, d):
        raise ValueError(f"layer_input must be [T, d] = {[t, d]} to match residual, "
                         f"got {list(layer_input.shape)}")
    u = _UNIT_ROUNDOFF.get(_dtype_name(layer_input))
    if u is None:
        raise TypeError(f"layer_input dtype {_dtype_name(layer_input)} is not a float type")
    pre = torch.empty(t, n, dtype=torch.float64)
    tol = torch.empty(t, dtype=torch.float64)
    step = max(1, _CHUNK_ELEMS // max(1, n * d))
    for a in range(0, t, step):
        # Converted chunk by chunk: float64 copies of all of T * n * d would not fit.
        r = _f64("residual", residual[a : a + step])
        y = _f64("layer_input", layer_input[a : a + step])
        gram = r @ r.mT  # [t, n, n]: n unknowns, so solve the normal equations
        evals = torch.linalg.eigvalsh(gram)
        smin = evals[:, 0].clamp_min(0).sqrt()
        # Collinear streams (the first layer's residual is n copies of the
        # embedding) make the Gram matrix singular to rounding: such tokens get an
        # infinite tolerance (skipped) instead of a solve that fails.
        ok = evals[:, 0] > evals[:, -1] * 1e-12
        safe = torch.where(ok[:, None, None], gram, torch.eye(n, dtype=torch.float64))
        sol, info = torch.linalg.solve_ex(safe, r @ y.unsqueeze(-1))
        ok = ok & (info == 0)
        pre[a : a + step] = sol.squeeze(-1)
        acc = n * math.sqrt(n) * _U32 * (1 + pre_eps) * r.flatten(1).norm(dim=-1)
        err = u * y.norm(dim=-1) + acc
        tol[a : a + step] = torch.where(ok, err / smin.clamp_min(1e-300),
                                        torch.full_like(err, math.inf))
    return pre, tol


def _name(label: str, what: str) -> str:
    return f"{label} {what}" if label else what


def _add_comb(report: Report, backend: str, label: str, comb: torch.Tensor,
              iters: int, eps: float) -> None:
    if comb.dim() < 2 or comb.shape[-1] != comb.shape[-2]:
        raise ValueError(f"comb_mix must be [T, n, n], got shape {list(comb.shape)}")
    n = comb.shape[-1]
    c = comb.reshape(-1, n, n)
    bad = int((~torch.isfinite(c)).sum() + (c < 0).sum())
    report.add_invariant(backend, _name(label, "comb entries <0 or non-finite"), bad, 0,
                         f"min entry {float(c.nan_to_num(nan=-math.inf).min()):.3g}")
    if bad:
        return
    rows = (c.sum(-1) - 1).abs().amax(-1)
    cols = (c.sum(-2) - 1).abs().amax(-1)
    err = torch.maximum(rows, cols)
    bound = sinkhorn_error_bound(c, iters, eps)
    w = int((err / bound).argmax())
    report.add_invariant(
        backend, _name(label, "sinkhorn error"), float(err[w]), float(bound[w]),
        f"max |row-1| {float(rows.max()):.2e}, |col-1| {float(cols.max()):.2e}; "
        f"limit at token {w} for iters={iters}, eps={eps:g}")
    sigma = torch.linalg.matrix_norm(c, ord=2)
    limit = 1 + bound + 1e-12
    w = int(((sigma - 1) / (limit - 1)).argmax())
    report.add_invariant(
        backend, _name(label, "comb spectral norm"), float(sigma[w]), float(limit[w]),
        f"max {float(sigma.max()):.6f}, mean {float(sigma.mean()):.6f}; <= 1 + sinkhorn bound")


def _add_post(report: Report, backend: str, label: str, post: torch.Tensor,
              post_mult: float) -> None:
    p = post.reshape(-1, post.shape[-1]) if post.dim() else post.reshape(1, 1)
    excess = torch.maximum(-p, p - post_mult).clamp_min(0)
    value = float(excess.max()) if torch.isfinite(p).all() else math.inf
    report.add_invariant(
        backend, _name(label, "post_mix outside [0, post_mult]"), value, post_mult * 2.0**-23,
        f"min {float(p.min()):.4g}, mean {float(p.mean()):.4g}, max {float(p.max()):.4g}, "
        f"mean Linf {float(p.abs().amax(-1).mean()):.4g}, post_mult {post_mult:g}")


def _add_pre(report: Report, backend: str, label: str, layer_input: object, residual: object,
             pre_eps: float) -> None:
    pre, tol = recover_pre(layer_input, residual, pre_eps=pre_eps)  # type: ignore[arg-type]
    known = tol <= _MAX_PRE_TOL
    skipped = int((~known).sum())
    if not bool(known.any()):
        report.note(f"{backend}: {_name(label, 'pre')} not checked: streams are collinear in all "
                    f"{pre.shape[0]} tokens, so pre cannot be recovered from layer_input")
        return
    p, tl = pre[known], tol[known]
    excess = torch.maximum(pre_eps - p, p - (1 + pre_eps)).clamp_min(0).amax(-1)
    # float32 pre itself carries one rounding near 1.
    limit = tl + 2.0**-23
    ratio = torch.where(torch.isfinite(excess), excess / limit, torch.full_like(excess, math.inf))
    w = int(ratio.argmax())
    report.add_invariant(
        backend, _name(label, "pre outside [pre_eps, 1+pre_eps]"), float(excess[w]),
        float(limit[w]),
        f"recovered from layer_input ({_dtype_name(layer_input)}): min {float(p.min()):.4g}, "
        f"mean {float(p.mean()):.4g}, max {float(p.max()):.4g}, mean L1 "
        f"{float(p.abs().sum(-1).mean()):.4g}; median limit {float(tl.median()):.2e}"
        + (f"; {skipped} collinear tokens skipped" if skipped else ""))


def _add_pre_mix(report: Report, backend: str, label: str, pre: torch.Tensor,
                 pre_eps: float) -> None:
    p = pre.reshape(-1, pre.shape[-1]) if pre.dim() else pre.reshape(1, 1)
    excess = torch.maximum(pre_eps - p, p - (1 + pre_eps)).clamp_min(0)
    value = float(excess.max()) if torch.isfinite(p).all() else math.inf
    # sigmoid + pre_eps in float32: roundings of a value at most 1 + pre_eps (and of
    # pre_eps itself, stored as a float32 attribute).
    report.add_invariant(
        backend, _name(label, "pre_mix outside [pre_eps, 1+pre_eps]"), value,
        (1 + pre_eps) * 2.0**-23,
        f"min {float(p.min()):.4g}, mean {float(p.mean()):.4g}, max {float(p.max()):.4g}, "
        f"pre_eps {pre_eps:g}")


def add_output_invariants(
    report: Report,
    backend: str,
    *,
    comb_mix: torch.Tensor | np.ndarray | None = None,
    pre_mix: torch.Tensor | np.ndarray | None = None,
    post_mix: torch.Tensor | np.ndarray | None = None,
    post_mult: float = POST_MULT,
    layer_input: torch.Tensor | np.ndarray | None = None,
    residual: torch.Tensor | np.ndarray | None = None,
    pre_eps: float = PRE_EPS,
    label: str = "",
    sinkhorn_iters: int = SINKHORN_ITERS,
    sinkhorn_eps: float = SINKHORN_EPS,
) -> None:
    """Add the mHC output invariants of one backend's MhcPre outputs to ``report``.

    Give whichever outputs the backend produced: comb_mix [T, n, n] (Sinkhorn
    error, spectral norm, positivity), post_mix [T, n] (range), pre_mix [T, n]
    (range; V4.1's MhcMix/MhcPostMix output it), and
    layer_input [T, d] with the residual [T, n, d] it was computed from (pre
    range, pre recovered by least squares). ``label`` prefixes the invariant
    names (e.g. "layer0.attn"); sinkhorn_iters/eps must be the attributes the
    backend ran with.
    """
    if not isinstance(report, Report):
        raise TypeError("report must be a mhc_export.validation.report.Report, got "
                        f"{type(report).__name__}")
    if (layer_input is None) != (residual is None):
        raise ValueError("layer_input and residual must be given together: pre is recovered "
                         "from layer_input = sum_i pre_i * residual_i")
    if not math.isfinite(post_mult) or post_mult <= 0:
        raise ValueError(f"post_mult must be a finite number > 0, got {post_mult}")
    if not math.isfinite(pre_eps) or pre_eps < 0:
        raise ValueError(f"pre_eps must be a finite number >= 0, got {pre_eps}")
    if not isinstance(sinkhorn_iters, int) or isinstance(sinkhorn_iters, bool) \
            or sinkhorn_iters < 1:
        raise ValueError(f"sinkhorn_iters must be an int >= 1, got {sinkhorn_iters}")
    if comb_mix is not None:
        _add_comb(report, backend, label, _f64("comb_mix", comb_mix), sinkhorn_iters,
                  sinkhorn_eps)
    if post_mix is not None:
        _add_post(report, backend, label, _f64("post_mix", post_mix), post_mult)
    if pre_mix is not None:
        _add_pre_mix(report, backend, label, _f64("pre_mix", pre_mix), pre_eps)
    if layer_input is not None:
        _add_pre(report, backend, label, layer_input, residual, pre_eps)
