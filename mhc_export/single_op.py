"""One-node ONNX models, one per mHC op: the unit fixtures for plugins and tools.

Graph inputs and outputs carry exactly the spec's names, weights are graph
inputs (not initializers), and the token count T is dynamic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from . import ops, reference
from .onnx_export import ExportResult, export
from .spec import DEFAULT_OPSET, OPS, num_mixes, parse_dtype


class _PreOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, residual, hc_fn, hc_scale, hc_base):
        a = self.attrs
        return ops.pre(residual, hc_fn, hc_scale, hc_base, a["rms_eps"], a["pre_eps"],
                       a["sinkhorn_eps"], a["post_mult"], a["sinkhorn_iters"])


class _SinkhornOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, logits):
        return ops.sinkhorn(logits, self.attrs["iters"], self.attrs["eps"])


class _PostOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()

    def forward(self, x, residual, post_mix, comb_mix):
        return ops.post(x, residual, post_mix, comb_mix)


class _HeadOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, residual, hc_fn, hc_scale, hc_base):
        return ops.head(residual, hc_fn, hc_scale, hc_base, self.attrs["rms_eps"],
                        self.attrs["eps"])


_MODULES = {"pre": _PreOp, "sinkhorn": _SinkhornOp, "post": _PostOp, "head": _HeadOp}


@dataclass(frozen=True)
class SingleOp:
    """An op instance: which op, its sizes, residual dtype and attribute values."""

    op: str
    streams: int
    hidden: int
    dtype: torch.dtype
    attrs: dict[str, Any]

    @classmethod
    def create(cls, op: str, streams: int = 4, hidden: int = 256,
               dtype: str | torch.dtype = torch.float32, **attrs: Any) -> SingleOp:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {sorted(OPS)}")
        if streams < 1 or hidden < 1:
            raise ValueError(f"streams and hidden must be >= 1, got {streams}, {hidden}")
        contract = OPS[op]
        unknown = set(attrs) - set(contract.defaults())
        if unknown:
            raise ValueError(
                f"op {op} has no attribute(s) {sorted(unknown)}; "
                f"it takes {sorted(contract.defaults()) or 'none'}"
            )
        full = {**contract.defaults(), **attrs}
        reference.check_attributes(**full)
        return cls(op, streams, hidden, parse_dtype(dtype), full)

    def random_inputs(self, tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Fresh random inputs named as the graph inputs; realistic magnitudes."""
        g = torch.Generator().manual_seed(seed)
        n, d = self.streams, self.hidden
        k = n * d

        def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return torch.randn(*shape, generator=g) * scale

        if self.op == "sinkhorn":
            return {"logits": randn(tokens, n, n, scale=2.0)}
        residual = randn(tokens, n, d).to(self.dtype)
        if self.op == "post":
            comb = reference.sinkhorn(randn(tokens, n, n, scale=2.0))
            return {
                "x": randn(tokens, d).to(self.dtype),
                "residual": residual,
                "post_mix": 2.0 * torch.rand(tokens, n, generator=g),
                "comb_mix": comb,
            }
        rows, scales = (num_mixes(n), 3) if self.op == "pre" else (n, 1)
        return {
            "residual": residual,
            "hc_fn": randn(rows, k, scale=k ** -0.5),
            "hc_scale": 0.5 + torch.rand(scales, generator=g),
            "hc_base": randn(rows, scale=0.5),
        }

    def module(self) -> torch.nn.Module:
        return _MODULES[self.op](self.attrs)

    def reference(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        out = self.module()(*inputs.values())
        return out if isinstance(out, tuple) else (out,)


def export_single_op(
    spec: SingleOp,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    verbose: bool = False,
) -> ExportResult:
    contract = OPS[spec.op]
    inputs = spec.random_inputs(tokens=3)
    t = torch.export.Dim("T", min=1)
    # Weights have fixed shapes; every per-token tensor shares the dynamic T.
    dynamic = [{0: t} if name not in ("hc_fn", "hc_scale", "hc_base") else None
               for name in contract.inputs]
    with torch.no_grad():
        return export(
            spec.module(), tuple(inputs.values()), path, input_names=contract.inputs,
            output_names=contract.outputs, dynamic_shapes=dynamic, opset=opset, verbose=verbose,
        )
