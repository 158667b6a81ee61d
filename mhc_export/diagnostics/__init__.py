"""mHC diagnostics (seed 003) on the project's reference ops, and the width sweep."""

from .gauge import centering_basis, gauge_perp_basis, project_gauge_perp
from .measures import (
    GateStats,
    LogitUpdate,
    Sensitivity,
    comb_logits,
    dynamic_sensitivity,
    gate_stats,
    logit_update,
    quotient_jacobian,
    random_mhc_weights,
    sinkhorn_error,
    spectral_stats,
)
from .sweep import SweepConfig, SweepResult, fit_power_law, format_sweep, run_sweep

__all__ = [
    "GateStats",
    "LogitUpdate",
    "Sensitivity",
    "SweepConfig",
    "SweepResult",
    "centering_basis",
    "comb_logits",
    "dynamic_sensitivity",
    "fit_power_law",
    "format_sweep",
    "gate_stats",
    "gauge_perp_basis",
    "logit_update",
    "project_gauge_perp",
    "quotient_jacobian",
    "random_mhc_weights",
    "run_sweep",
    "sinkhorn_error",
    "spectral_stats",
]
