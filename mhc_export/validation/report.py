"""The validation report shared by every backend (eager, ONNX Runtime, engines).

A report is a list of output comparisons, each against a reference with a
documented tolerance, plus free-form notes (what could not run and why) and
invariant checks (mHC diagnostics on the backend's own outputs). It prints as a
table and serialises to JSON.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import atomic_write_text

# Tolerances on the max error relative to the reference's max magnitude
# (||out - ref||_inf / max(||ref||_inf, tiny)). float32 paths differ only by
# summation order; bf16/fp16 outputs carry one rounding of the residual dtype
# plus whatever the float32 math before it amplifies.
RELATIVE_TOLERANCE: dict[str, float] = {
    "float32": 1e-4,
    "float16": 4e-3,
    "bfloat16": 2e-2,
}


def tolerance_for(dtype: torch.dtype | str) -> float:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    return RELATIVE_TOLERANCE[name]


@dataclass
class Comparison:
    backend: str
    reference: str
    output: str
    dtype: str
    shape: list[int]
    max_abs_error: float
    max_rel_error: float
    tolerance: float
    passed: bool
    detail: str = ""


@dataclass
class Invariant:
    backend: str
    name: str
    value: float
    limit: float | None
    passed: bool
    detail: str = ""


@dataclass
class Report:
    title: str
    config: dict[str, Any] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    invariants: list[Invariant] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            bool(self.comparisons)
            and all(c.passed for c in self.comparisons)
            and all(i.passed for i in self.invariants)
        )

    def compare(
        self,
        backend: str,
        reference: str,
        output: str,
        actual: torch.Tensor | np.ndarray,
        expected: torch.Tensor | np.ndarray,
        tolerance: float,
    ) -> Comparison:
        """Record max abs / max relative error of ``actual`` against ``expected``."""
        a = _as_f64(actual)
        e = _as_f64(expected)
        if a.shape != e.shape:
            c = Comparison(backend, reference, output, _dtype_name(actual), list(a.shape),
                           math.inf, math.inf, tolerance, False,
                           f"shape {list(a.shape)} != reference {list(e.shape)}")
        else:
            finite = bool(torch.isfinite(a).all())
            diff = (a - e).abs()
            max_abs = float(diff.max()) if diff.numel() else 0.0
            scale = max(float(e.abs().max()) if e.numel() else 0.0, 1e-30)
            max_rel = max_abs / scale if finite else math.inf
            c = Comparison(backend, reference, output, _dtype_name(actual), list(a.shape),
                           max_abs if finite else math.inf, max_rel, tolerance,
                           finite and max_rel <= tolerance,
                           "" if finite else "non-finite values in output")
        self.comparisons.append(c)
        return c

    def add_invariant(self, backend: str, name: str, value: float, limit: float | None,
                      detail: str = "") -> Invariant:
        passed = math.isfinite(value) and (limit is None or value <= limit)
        inv = Invariant(backend, name, float(value), limit, passed, detail)
        self.invariants.append(inv)
        return inv

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "config": self.config,
            "comparisons": [asdict(c) for c in self.comparisons],
            "invariants": [asdict(i) for i in self.invariants],
            "notes": self.notes,
        }

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(_json_safe(self.to_dict()), indent=2) + "\n")

    def format(self) -> str:
        """The report as text, at most 100 columns wide (details wrap under their row)."""
        lines = [f"== {self.title} =="]
        for k, v in self.config.items():
            lines.append(f"  {k}: {v}")
        if self.comparisons:
            lines += ["", "outputs: rel err = max|out - ref| / max|ref|, passes when <= limit"]
            lines.append(_table(
                ["backend", "vs", "output", "dtype", "rel err", "limit", "result", "max|err|"],
                [[c.backend, c.reference, c.output, c.dtype, f"{c.max_rel_error:.3e}",
                  f"{c.tolerance:.0e}", "PASS" if c.passed else "FAIL",
                  f"{c.max_abs_error:.3e}"] for c in self.comparisons],
                [c.detail for c in self.comparisons],
            ))
        if self.invariants:
            lines += ["", "invariants: the worst value found, against the limit at that place; "
                          "passes when value <= limit"]
            lines.append(_table(
                ["backend", "invariant", "value", "limit", "result"],
                [[i.backend, i.name, f"{i.value:.4g}",
                  "-" if i.limit is None else f"{i.limit:.4g}",
                  "PASS" if i.passed else "FAIL"] for i in self.invariants],
                [i.detail for i in self.invariants],
            ))
        for n in self.notes:
            lines += textwrap.wrap(f"note: {n}", 100, subsequent_indent="  ")
        lines.append(f"RESULT: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(line.rstrip() for line in lines)


def _as_f64(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if x.dtype.name == "bfloat16":
            x = x.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64)
    return x.detach().to(device="cpu", dtype=torch.float64)


def _dtype_name(x: torch.Tensor | np.ndarray) -> str:
    if isinstance(x, np.ndarray):
        return str(x.dtype)
    return str(x.dtype).removeprefix("torch.")


def _table(header: list[str], rows: list[list[str]], details: list[str] | None = None) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    for k, r in enumerate(rows):
        out.append(fmt.format(*r))
        if details and details[k]:
            out += textwrap.wrap(details[k], 100, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(line.rstrip() for line in out)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
