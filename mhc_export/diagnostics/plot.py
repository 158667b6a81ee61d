"""PNG of a width sweep: the sensitivity power law and the Sinkhorn error against K.

matplotlib is the optional ``plot`` extra, imported only here and only when a
plot is asked for.
"""

from __future__ import annotations

import os

from ..core.atomic import atomic_path
from ..core.errors import MhcError
from .sweep import SweepResult

__all__ = ["plot_sweep"]


def load_pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise MhcError(
            "--plot needs matplotlib, which is not installed; "
            "install it with: pip install 'mhc-export[plot]'"
        ) from None
    # A headless backend: the CLI runs on servers without a display.
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(res: SweepResult, path: str | os.PathLike[str]) -> None:
    """Write a two-panel PNG of ``res`` to ``path`` atomically."""
    plt = load_pyplot()
    widths = sorted(res.per_width)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    try:
        dc = [res.per_width[d]["dc_x"]["mean"] for d in widths]
        sd = [res.per_width[d]["dc_x"]["std"] for d in widths]
        ax1.errorbar(widths, dc, yerr=sd, fmt="o", capsize=3, color="C0",
                     label="measured (mean ± std over samples)")
        alpha = res.exponents.get("dc_x")
        if alpha is not None:
            # The fitted line through the geometric means, so it matches the fit exactly.
            import numpy as np

            lx, ly = np.log(widths), np.log(dc)
            c = float(np.exp(ly.mean() - alpha * lx.mean()))
            ax1.plot(widths, [c * d**alpha for d in widths], "-", color="C3",
                     label=f"fit  ∝ d^{alpha:.3f}")
        ax1.set_xscale("log", base=2)
        ax1.set_yscale("log")
        ax1.set_xticks(widths, [str(d) for d in widths])
        ax1.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        # Ticks at 1-2-5 steps, labelled plainly: a sweep often spans under a decade,
        # where the default log axis would show no labelled tick at all.
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax1.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax1.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax1.yaxis.set_minor_formatter(NullFormatter())
        ax1.set_xlabel("hidden size d")
        ax1.set_ylabel("||DC(x)||₂ · ||x||")
        cfg = res.config
        ax1.set_title(f"comb sensitivity vs width (n={cfg.streams}, K={cfg.iters}, "
                      f"{cfg.samples} samples)")
        ax1.grid(True, which="both", alpha=0.3)
        ax1.legend()

        curve = res.error_curve
        labels = [k for k in curve if k not in ("iters", "eps")]
        for i, label in enumerate(labels):
            color = f"C{i}"
            ax2.plot(curve["iters"], curve[label]["max"], "o-", ms=4, color=color,
                     label=f"{label}, max")
            ax2.plot(curve["iters"], curve[label]["mean"], "--", alpha=0.7, color=color,
                     label=f"{label}, mean")
        ax2.axhline(curve["eps"], color="gray", ls=":", label=f"eps = {curve['eps']:g}")
        ax2.axvline(cfg.iters, color="gray", ls="-.", alpha=0.5, label=f"K = {cfg.iters}")
        ax2.set_yscale("log")
        ax2.set_xlabel("Sinkhorn iterations K")
        ax2.set_ylabel("eps_K = max |row/col sum − 1|")
        ax2.set_title("Sinkhorn error against iterations")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
