"""The width sweep of seed 003: every diagnostic at each hidden size d.

Per width, `samples` independent draws of the seed's initialisation (hc_fn ~
N(0, 0.02^2), hc_scale = 0.1, hc_base = 0) each see one token x ~ N(0, I);
the gate diagnostics use those tokens' comb/pre/post. The headline is the
power law ||DC(x)|| ||x|| ~ d^alpha, fitted by least squares on log-log.
Width-independent parts (the quotient Jacobian over K, the Sinkhorn error
against iterations) are computed once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.checks import check_attributes
from ..core.spec import MAX_STREAMS, SINKHORN_EPS, SINKHORN_ITERS
from ..reference.eager import pre_mixes, sinkhorn
from .measures import (
    comb_logits,
    dynamic_sensitivity,
    gate_stats,
    logit_update,
    quotient_jacobian,
    random_mhc_weights,
    sinkhorn_error,
    spectral_stats,
)

__all__ = ["SweepConfig", "SweepResult", "fit_power_law", "format_sweep", "run_sweep"]

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)
QUOTIENT_K = (1, 2, 5, 10, 20, 50)
ERROR_ITERS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)


@dataclass(frozen=True)
class SweepConfig:
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    streams: int = 4
    iters: int = SINKHORN_ITERS
    samples: int = 16
    seed: int = 0
    eps: float = SINKHORN_EPS
    init_std: float = 0.02
    scale: float = 0.1
    lr: float = 1e-3

    def check(self) -> None:
        """Reject bad settings with a message naming the setting."""
        if not self.widths:
            raise ValueError("widths: give at least one width")
        bad = [w for w in self.widths if isinstance(w, bool) or not isinstance(w, int) or w < 1]
        if bad:
            raise ValueError(f"widths must be positive integers, got {bad}")
        if len(set(self.widths)) != len(self.widths):
            raise ValueError(f"widths must be distinct, got {list(self.widths)}")
        if not isinstance(self.streams, int) or not 2 <= self.streams <= MAX_STREAMS:
            raise ValueError(f"streams must be an integer in 2..{MAX_STREAMS}, got {self.streams}")
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an integer >= 1, got {self.samples}")
        check_attributes(iters=self.iters, eps=self.eps)
        for name in ("init_std", "scale", "lr"):
            v = getattr(self, name)
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v}")


def _mean_std(t: torch.Tensor) -> dict[str, float]:
    return {"mean": float(t.mean()), "std": float(t.std(unbiased=False)), "max": float(t.max())}


@dataclass
class SweepResult:
    config: SweepConfig
    per_width: dict[int, dict[str, Any]] = field(default_factory=dict)
    # None (with a note) where no fit exists: one width.
    exponents: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    quotient_jacobian: dict[int, dict[str, float]] = field(default_factory=dict)
    error_curve: dict[str, Any] = field(default_factory=dict)

    @property
    def exponent(self) -> float | None:
        """alpha in ||DC(x)|| ||x|| ~ d^alpha (None for a one-width sweep)."""
        return self.exponents["dc_x"]

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: a value that is not finite becomes null, with a note saying why."""
        cfg = asdict(self.config)
        cfg["widths"] = list(self.config.widths)
        notes = list(self.notes)
        data = _finite_or_null({
            "config": cfg,
            "exponents": self.exponents,
            "per_width": {str(d): v for d, v in self.per_width.items()},
            "quotient_jacobian": {f"K={k}": v for k, v in self.quotient_jacobian.items()},
            "sinkhorn_error_vs_iters": self.error_curve,
        }, "", notes)
        data["notes"] = notes
        return data


def _finite_or_null(obj: Any, where: str, notes: list[str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        notes.append(f"{where.lstrip('.')} is null: the value was {obj} (e.g. a singular comb)")
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v, f"{where}.{k}", notes) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v, f"{where}[{i}]", notes) for i, v in enumerate(obj)]
    return obj


def fit_power_law(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares fit log y = alpha log x + log c; returns (alpha, c)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.size < 2:
        raise ValueError("a power-law fit needs at least two (x, y) points of equal count")
    if (xa <= 0).any() or (ya <= 0).any():
        raise ValueError("a power-law fit needs positive x and y")
    a = np.vstack([np.log(xa), np.ones_like(xa)]).T
    alpha, logc = np.linalg.lstsq(a, np.log(ya), rcond=None)[0]
    return float(alpha), float(math.exp(logc))


def _width(cfg: SweepConfig, d: int, gen: torch.Generator) -> tuple[dict[str, Any], torch.Tensor]:
    n, s = cfg.streams, cfg.samples
    attrs = {"rms_eps": cfg.eps, "sinkhorn_iters": cfg.iters}
    dc, dp, dq, perp, total, ratio, pres, posts, combs, logits = ([] for _ in range(10))
    for _ in range(s):
        w = random_mhc_weights(n, d, gen, init_std=cfg.init_std, scale=cfg.scale)
        x = torch.randn(1, n, d, generator=gen)
        sens = dynamic_sensitivity(x, *w, pre_eps=cfg.eps, sinkhorn_eps=cfg.eps, **attrs)
        upd = logit_update(x, *w, lr=cfg.lr, sinkhorn_eps=cfg.eps, **attrs)
        pre, post, comb = pre_mixes(x, *w, pre_eps=cfg.eps, sinkhorn_eps=cfg.eps, **attrs)
        dc.append(sens.comb)
        dp.append(sens.pre)
        dq.append(sens.post)
        perp.append(upd.perp_norm)
        total.append(upd.total_norm)
        ratio.append(upd.perp_ratio)
        pres.append(pre)
        posts.append(post)
        combs.append(comb)
        logits.append(comb_logits(x, *w, rms_eps=cfg.eps))
    comb = torch.cat(combs)
    err = sinkhorn_error(comb)
    smax, cond = spectral_stats(comb)
    cat = torch.cat
    row = {
        "sinkhorn_error": {"mean": float(err.mean()), "max": float(err.max())},
        "spectral_norm": {"mean": float(smax.mean()), "max": float(smax.max()),
                          "condition_mean": float(cond.mean())},
        "dc_x": _mean_std(cat(dc)),
        "dp_x": _mean_std(cat(dp)),
        "dq_x": _mean_std(cat(dq)),
        "logit_update": {"perp_norm_mean": float(cat(perp).mean()),
                         "total_norm_mean": float(cat(total).mean()),
                         "perp_ratio_mean": float(cat(ratio).mean())},
        "gates": asdict(gate_stats(cat(pres), cat(posts))),
    }
    return row, torch.cat(logits)


def _error_curve(
    labelled: dict[str, torch.Tensor], iters: tuple[int, ...], eps: float
) -> dict[str, Any]:
    curve: dict[str, Any] = {"iters": list(iters), "eps": eps}
    for label, z in labelled.items():
        errs = [sinkhorn_error(sinkhorn(z, k, eps)) for k in iters]
        curve[label] = {"mean": [float(e.mean()) for e in errs],
                        "max": [float(e.max()) for e in errs]}
    return curve


def run_sweep(cfg: SweepConfig | None = None) -> SweepResult:
    """Run every diagnostic at every width; reproducible for a given cfg.seed."""
    cfg = cfg or SweepConfig()
    cfg.check()
    gen = torch.Generator().manual_seed(cfg.seed)
    res = SweepResult(config=cfg)
    model_logits = None
    for d in sorted(cfg.widths):
        res.per_width[d], model_logits = _width(cfg, d, gen)
    widths = sorted(res.per_width)
    if len(widths) >= 2:
        for key in ("dc_x", "dp_x", "dq_x"):
            res.exponents[key] = fit_power_law(
                widths, [res.per_width[d][key]["mean"] for d in widths])[0]
    else:
        res.exponents = {k: None for k in ("dc_x", "dp_x", "dq_x")}
        res.notes.append(f"exponents are null: a power-law fit needs two or more widths, "
                         f"the sweep has one (d={widths[0]})")

    n = cfg.streams
    # The seed's distribution for the width-free diagnostics: standard normal logits.
    z = torch.randn(cfg.samples, n, n, generator=gen)
    for k in QUOTIENT_K:
        sv = quotient_jacobian(z, k, cfg.eps)
        res.quotient_jacobian[k] = {
            "sigma_max_mean": float(sv[:, 0].mean()),
            "sigma_min_mean": float(sv[:, -1].mean()),
            "kappa_mean": float((sv[:, 0] / sv[:, -1]).mean()),
        }
    iters = tuple(sorted(set(ERROR_ITERS) | {cfg.iters}))
    assert model_logits is not None
    res.error_curve = _error_curve(
        {f"model logits (d={widths[-1]})": model_logits, "standard normal logits": z},
        iters, cfg.eps)
    return res


def format_sweep(res: SweepResult) -> str:
    """The sweep as a plain-text table, with the fitted exponents under it."""
    header = ["d", "||DC||·||x||", "||Dpre||·||x||", "||Dpost||·||x||", "||C||_2 max",
              "cond(C)", "eps_K max", "perp ratio", "pre mean", "post mean"]
    rows = []
    for d, r in sorted(res.per_width.items()):
        rows.append([
            str(d), f"{r['dc_x']['mean']:.4f}", f"{r['dp_x']['mean']:.4f}",
            f"{r['dq_x']['mean']:.4f}", f"{r['spectral_norm']['max']:.6f}",
            f"{r['spectral_norm']['condition_mean']:.3f}", f"{r['sinkhorn_error']['max']:.2e}",
            f"{r['logit_update']['perp_ratio_mean']:.4f}", f"{r['gates']['pre_mean']:.4f}",
            f"{r['gates']['post_mean']:.4f}",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    e = {k: "n/a" if v is None else f"{v:.3f}" for k, v in res.exponents.items()}
    lines.append("")
    lines.append("fitted exponents (log-log least squares over d): "
                 f"||DC||·||x|| ~ d^{e['dc_x']}, ||Dpre||·||x|| ~ d^{e['dp_x']}, "
                 f"||Dpost||·||x|| ~ d^{e['dq_x']}")
    lines += [f"note: {n}" for n in res.notes]
    lines.append("")
    lines.append("quotient Jacobian of Sinkhorn on G^perp (standard normal logits):")
    lines.append(f"{'K':>4}  {'sigma_max':>10}  {'sigma_min':>10}  {'kappa':>10}")
    for k, q in res.quotient_jacobian.items():
        lines.append(f"{k:>4}  {q['sigma_max_mean']:>10.4f}  {q['sigma_min_mean']:>10.4f}  "
                     f"{q['kappa_mean']:>10.3f}")
    curve = res.error_curve
    labels = [k for k in curve if k not in ("iters", "eps")]
    lines.append("")
    lines.append("Sinkhorn error eps_K (max over samples) against iterations:")
    lines.append(f"{'iters':>5}  " + "  ".join(f"{lab:>24}" for lab in labels))
    for i, k in enumerate(curve["iters"]):
        lines.append(f"{k:>5}  " + "  ".join(f"{curve[lab]['max'][i]:>24.2e}" for lab in labels))
    return "\n".join(lines)
