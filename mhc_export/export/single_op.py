"""One-node ONNX models, one per mHC op: the unit fixtures for plugins and tools.

Graph inputs and outputs carry exactly the spec's names, weights are graph
inputs (not initializers), and the token count T is dynamic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from ..core.dtypes import ONNX_FROM_TORCH, TORCH_FROM_ONNX
from ..core.preflight import check_streams
from ..core.spec import ALL_OPS as OPS
from ..core.spec import (
    DEFAULT_OPSET,
    MHC_PRE,
    ONNX_DOMAIN,
    RESIDUAL_DTYPES,
    V41_OPS,
    num_mixes,
    parse_dtype,
)
from ..reference import eager as reference
from ..reference import ops
from .onnx_export import ExportResult, export


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


class _PostPreOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base):
        a = self.attrs
        return ops.post_pre(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base,
                            a["rms_eps"], a["pre_eps"], a["sinkhorn_eps"], a["post_mult"],
                            a["sinkhorn_iters"])


class _PostHeadOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base):
        return ops.post_head(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base,
                             self.attrs["rms_eps"], self.attrs["eps"])


class _MixOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, residual, hc_fn, hc_scale, hc_base):
        return ops.mix(residual, hc_fn, hc_scale, hc_base, *self.attrs.values())


class _CollapseOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()

    def forward(self, residual, pre_mix):
        return ops.collapse(residual, pre_mix)


class _PostMixOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.attrs = attrs

    def forward(self, x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base):
        return ops.post_mix(x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base,
                            *self.attrs.values())


class _PostCollapseOp(torch.nn.Module):
    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()

    def forward(self, x, residual, pre_mix, post_mix, comb_mix):
        return ops.post_collapse(x, residual, pre_mix, post_mix, comb_mix)


_MODULES = {"pre": _PreOp, "sinkhorn": _SinkhornOp, "post": _PostOp, "head": _HeadOp,
            "post_pre": _PostPreOp, "post_head": _PostHeadOp, "mix": _MixOp,
            "collapse": _CollapseOp, "post_mix": _PostMixOp, "post_collapse": _PostCollapseOp}


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
        check_streams(streams)
        if op == "sinkhorn":
            hidden = 1  # [T, n, n] logits: no d
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"--hidden must be >= 1, got {hidden}")
        full = OPS[op].with_defaults(attrs, ValueError)
        reference.check_attributes(**full)
        # ONNX stores float attributes as float32: keep the value the graph will hold,
        # written as the shortest decimal that is that float32 (1e-06, not 9.99e-07).
        full = {k: float(str(np.float32(v))) if isinstance(v, float) else v
                for k, v in full.items()}
        if op == "sinkhorn" and parse_dtype(dtype) != torch.float32:
            raise ValueError("MhcSinkhorn is float32 by contract (logits and comb); "
                             f"dtype {dtype} does not apply")
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
        post_inputs = {}
        if self.op in V41_OPS:
            return self._v41_inputs(tokens, residual, randn, g)
        if self.op in ("post", "post_pre", "post_head"):
            comb = reference.sinkhorn(randn(tokens, n, n, scale=2.0))
            post_inputs = {
                "x": randn(tokens, d).to(self.dtype),
                "residual": residual,
                "post_mix": 2.0 * torch.rand(tokens, n, generator=g),
                "comb_mix": comb,
            }
            if self.op == "post":
                return post_inputs
        rows, scales = (num_mixes(n), 3) if self.op in ("pre", "post_pre") else (n, 1)
        values = {
            "residual": residual,
            **post_inputs,
            "hc_fn": randn(rows, k, scale=k ** -0.5),
            "hc_scale": 0.5 + torch.rand(scales, generator=g),
            "hc_base": randn(rows, scale=0.5),
        }
        return {name: values[name] for name in OPS[self.op].inputs}

    def _v41_inputs(self, tokens: int, residual: torch.Tensor, randn, g: torch.Generator
                    ) -> dict[str, torch.Tensor]:
        """V4.1 inputs: pre_mix in (pre_eps, 1 + pre_eps) as an MhcMix makes it."""
        n, d = self.streams, self.hidden
        k, m = n * d, num_mixes(n)
        pre_eps = float(self.attrs.get("pre_eps", MHC_PRE.defaults()["pre_eps"]))
        values = {
            "x": randn(tokens, d).to(self.dtype),
            "residual": residual,
            "pre_mix": torch.rand(tokens, n, generator=g) + pre_eps,
            "post_mix": 2.0 * torch.rand(tokens, n, generator=g),
            "comb_mix": reference.sinkhorn(randn(tokens, n, n, scale=2.0)),
            "hc_fn": randn(m, k, scale=k ** -0.5),
            "hc_scale": 0.5 + torch.rand(3, generator=g),
            "hc_base": randn(m, scale=0.5),
        }
        return {name: values[name] for name in OPS[self.op].inputs}

    def module(self) -> torch.nn.Module:
        return _MODULES[self.op](self.attrs)

    def memory_bytes(self, tokens: int) -> int:
        """Peak memory of exporting and validating at ``tokens``: the float32 weights
        held by the inputs, the tracer, ONNX Runtime and the reference, and the
        per-token tensors of eager, ONNX Runtime and the comparison (float64)."""
        n, d = self.streams, self.hidden
        rows = num_mixes(n) if self.op in ("pre", "post_pre") else n
        weights = 0 if self.op in ("sinkhorn", "post") else rows * n * d * 4
        per_token = (2 * n * d + d + n * n + n) * 8
        return 4 * weights + 6 * tokens * per_token

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


def single_op_from_onnx(model: onnx.ModelProto) -> SingleOp | None:
    """The op instance of a one-node mhc model (op, n, d, dtype, attributes), else None.

    Only T may be dynamic: n and d are read from the first input's shape and
    the dtype from the residual-dtype input (``x`` for MhcPost).
    """
    nodes = [n for n in model.graph.node if n.domain == ONNX_DOMAIN]
    if len(model.graph.node) != 1 or len(nodes) != 1:
        return None
    node = nodes[0]
    key = next((k for k, c in OPS.items() if c.op_type == node.op_type), None)
    if key is None or [i.name for i in model.graph.input] != list(OPS[key].inputs):
        return None
    types = {i.name: i.type.tensor_type for i in model.graph.input}
    shaped = "logits" if key == "sinkhorn" else "residual"
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in types[shaped].shape.dim]
    if len(dims) != 3 or None in dims[1:]:
        layout = "T, n, n" if key == "sinkhorn" else "T, n, d"
        raise ValueError(f"{shaped} must be [{layout}] with only T dynamic, got {dims}")
    defaults = OPS[key].defaults()
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
             if a.name in defaults}
    if key == "sinkhorn":
        return SingleOp.create(key, streams=dims[1], hidden=1, dtype=torch.float32, **attrs)
    elem = types["residual"].elem_type
    if TORCH_FROM_ONNX.get(elem) not in RESIDUAL_DTYPES:
        raise ValueError(f"{node.op_type} residual type {onnx.TensorProto.DataType.Name(elem)} "
                         "is not float32, float16 or bfloat16")
    return SingleOp.create(key, streams=dims[1], hidden=dims[2], dtype=TORCH_FROM_ONNX[elem],
                           **attrs)




def build_single_op_model(spec: SingleOp, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The one-node model ``export_single_op`` writes, assembled directly (milliseconds
    instead of a torch.export trace): same node, attributes, names, types and flat
    local function. For sweeps over many attribute values (scripts/qa/fuzz.py)."""
    from ..core.spec import ONNX_DOMAIN_VERSION, PLUGIN_ATTRIBUTES
    from .onnx_functions import function_protos

    contract = OPS[spec.op]
    inputs = spec.random_inputs(tokens=2)
    outputs = spec.reference(inputs)

    def info(name: str, t: torch.Tensor, per_token: bool) -> onnx.ValueInfoProto:
        dims = ["T", *t.shape[1:]] if per_token else list(t.shape)
        return onnx.helper.make_tensor_value_info(name, ONNX_FROM_TORCH[t.dtype], dims)

    weights = ("hc_fn", "hc_scale", "hc_base")
    node = onnx.helper.make_node(
        contract.op_type, list(contract.inputs), list(contract.outputs), domain=ONNX_DOMAIN,
        name=contract.op_type,
        **spec.attrs, **{a.name: a.default for a in PLUGIN_ATTRIBUTES})
    graph = onnx.helper.make_graph(
        [node], f"mhc_{spec.op}",
        [info(k, v, k not in weights) for k, v in inputs.items()],
        [info(k, v, True) for k, v in zip(contract.outputs, outputs, strict=True)])
    model = onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", opset),
        onnx.helper.make_opsetid(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)])
    model.ir_version = 10
    model.functions.extend(function_protos({contract.op_type}, opset))
    return model
