"""The operator contract of ``shared/spec/mhc_ops.md`` as data.

Every layer (eager reference, torch custom ops, ONNX nodes and functions, CUDA
kernels, TensorRT plugins) takes its names, defaults and limits from here so
that they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import torch

from .dtypes import RESIDUAL_NAMES

ONNX_DOMAIN = "mhc"
ONNX_DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "mhc"
PLUGIN_VERSION = "1"
# The standard opsets an export can import: what torch.onnx's version converter
# (onnxscript's) writes; it leaves other requests at opset 18 without failing, so
# they are refused up front (tests/test_bad_input.py checks this against onnxscript).
OPSETS = range(18, 26)
OPSET_HELP = f"{OPSETS.start}..{OPSETS.stop - 1}"
DEFAULT_OPSET = 20

RESIDUAL_DTYPES: tuple[torch.dtype, ...] = (torch.bfloat16, torch.float16, torch.float32)
DTYPE_NAMES: dict[str, torch.dtype] = dict(RESIDUAL_NAMES)

# Streams supported end to end; the CUDA kernels accept 1..MAX_STREAMS.
MAX_STREAMS = 8

# Attribute defaults of shared/spec/mhc_ops.md. Every signature default in the
# package refers to these names (tests/test_contract.py checks it).
RMS_EPS = 1e-6  # MhcPre, MhcHead: eps under the RMS root
PRE_EPS = 1e-6  # MhcPre: added to the pre gate
SINKHORN_EPS = 1e-6  # MhcPre's sinkhorn_eps, MhcSinkhorn's eps
POST_MULT = 2.0  # MhcPre: post gate = post_mult * sigmoid(.)
SINKHORN_ITERS = 20  # MhcPre's sinkhorn_iters, MhcSinkhorn's iters
HEAD_EPS = 1e-6  # MhcHead's eps: added to the head weights

SINKHORN_INITS = ("softmax_row", "exp", "softmax_col")
"""Sinkhorn starting points: V4 (row softmax + eps, then a column pass),
seed 000 (exp, then full row/column rounds), seed 002 / MaxText (column
softmax, denominators clipped at 1e-12, then full row/column rounds)."""


@dataclass(frozen=True)
class Attr:
    name: str
    kind: str  # "float" | "int" | "string"
    default: float | int | str


@dataclass(frozen=True)
class OpContract:
    op_type: str
    torch_name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: tuple[Attr, ...] = field(default_factory=tuple)

    def defaults(self) -> dict[str, float | int | str]:
        return {a.name: a.default for a in self.attributes}

    def with_defaults(self, given: Mapping[str, float | int | str],
                      error: type[Exception] = TypeError) -> dict[str, float | int | str]:
        """The op's attributes: its defaults, replaced by ``given``. A name the op does not
        have raises ``error``: TypeError where the attributes are keyword arguments (as
        Python's own check), ValueError where they are values read from a user or a model."""
        defaults = self.defaults()
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise error(f"{self.op_type} has no attribute {unknown[0]!r}; its attributes are "
                        f"{', '.join(defaults) or 'none'}")
        return {**defaults, **given}


_PLUGIN_ATTRS = (
    Attr("plugin_namespace", "string", PLUGIN_NAMESPACE),
    Attr("plugin_version", "string", PLUGIN_VERSION),
)

MHC_PRE = OpContract(
    op_type="MhcPre",
    torch_name="mhc::pre",
    inputs=("residual", "hc_fn", "hc_scale", "hc_base"),
    outputs=("layer_input", "post_mix", "comb_mix"),
    attributes=(
        Attr("rms_eps", "float", RMS_EPS),
        Attr("pre_eps", "float", PRE_EPS),
        Attr("sinkhorn_eps", "float", SINKHORN_EPS),
        Attr("post_mult", "float", POST_MULT),
        Attr("sinkhorn_iters", "int", SINKHORN_ITERS),
    ),
)


class PreAttrs(TypedDict, total=False):
    """MhcPre's attributes as keyword arguments (MhcMix, MhcPostPre and MhcPostMix take
    the same); the functions that accept them fill the missing ones with pre_attributes."""

    rms_eps: float
    pre_eps: float
    sinkhorn_eps: float
    post_mult: float
    sinkhorn_iters: int


def pre_attributes(given: Mapping[str, float | int]) -> dict[str, float | int]:
    """MhcPre's attributes: MHC_PRE's defaults, replaced by ``given``. An unknown name is a
    TypeError, as an unknown keyword argument is."""
    return MHC_PRE.with_defaults(given)  # type: ignore[return-value]


MHC_SINKHORN = OpContract(
    op_type="MhcSinkhorn",
    torch_name="mhc::sinkhorn",
    inputs=("logits",),
    outputs=("comb",),
    attributes=(Attr("iters", "int", SINKHORN_ITERS), Attr("eps", "float", SINKHORN_EPS)),
)
MHC_POST = OpContract(
    op_type="MhcPost",
    torch_name="mhc::post",
    inputs=("x", "residual", "post_mix", "comb_mix"),
    outputs=("out",),
)
MHC_HEAD = OpContract(
    op_type="MhcHead",
    torch_name="mhc::head",
    inputs=("residual", "hc_fn", "hc_scale", "hc_base"),
    outputs=("y",),
    attributes=(Attr("rms_eps", "float", RMS_EPS), Attr("eps", "float", HEAD_EPS)),
)

MHC_POST_PRE = OpContract(
    op_type="MhcPostPre",
    torch_name="mhc::post_pre",
    inputs=("x", "residual", "post_mix", "comb_mix", "hc_fn", "hc_scale", "hc_base"),
    outputs=("residual_out", "layer_input", "next_post_mix", "next_comb_mix"),
    attributes=MHC_PRE.attributes,
)
MHC_POST_HEAD = OpContract(
    op_type="MhcPostHead",
    torch_name="mhc::post_head",
    inputs=("x", "residual", "post_mix", "comb_mix", "hc_fn", "hc_scale", "hc_base"),
    outputs=("y",),
    attributes=MHC_HEAD.attributes,
)

# ---- DeepSeek-V4.1: single-pass mHC (delayed pre), spec "DeepSeek-V4.1" on ------------
# A site's mixes come from its own input, but its collapse uses the PREVIOUS
# site's pre; the mix order everywhere is hc_fn's row order (pre, post, comb).
MHC_MIX = OpContract(
    op_type="MhcMix",
    torch_name="mhc::mix",
    inputs=("residual", "hc_fn", "hc_scale", "hc_base"),
    outputs=("pre_mix", "post_mix", "comb_mix"),
    attributes=MHC_PRE.attributes,
)
MHC_COLLAPSE = OpContract(
    op_type="MhcCollapse",
    torch_name="mhc::collapse",
    inputs=("residual", "pre_mix"),
    outputs=("layer_input",),
)
MHC_POST_MIX = OpContract(
    op_type="MhcPostMix",
    torch_name="mhc::post_mix",
    inputs=("x", "residual", "pre_mix", "post_mix", "comb_mix", "hc_fn", "hc_scale",
            "hc_base"),
    outputs=("residual_out", "layer_input", "next_pre_mix", "next_post_mix", "next_comb_mix"),
    attributes=MHC_PRE.attributes,
)
MHC_POST_COLLAPSE = OpContract(
    op_type="MhcPostCollapse",
    torch_name="mhc::post_collapse",
    inputs=("x", "residual", "pre_mix", "post_mix", "comb_mix"),
    outputs=("y",),
)

V41_FLASH_RMS_EPS = 1e-20
"""V4.1-Flash's ``rms_norm_eps``: both ``rms_eps`` of the mixes and the eps of every
weighted RMSNorm. Exporters write it explicitly (the MhcMix default stays 1e-6)."""
V41_FLASH = {"streams": 4, "hidden": 5120, "layers": 40, "engram_layers": (1, 14),
             "rms_eps": V41_FLASH_RMS_EPS}
"""DeepSeek-V4.1-Flash's mHC sizes (the spec's "DeepSeek-V4.1" section)."""

EXPORT_TARGETS = ("mhc", "onnxruntime")
"""mhc: mhc nodes + local functions (TensorRT plugins, any runtime); onnxruntime: MhcCollapse
and MhcPost (and MhcPre's collapse) as ONNX Runtime's com.microsoft HyperConnectionPreMix /
HyperConnectionPostMix contrib ops (mhc_export.export.ort_target)."""
FIRST_ORT_RELEASE = "1.31.0"
"""The first ONNX Runtime release whose builds register both contrib ops (1.30.0 has neither)."""

FAMILIES = ("V4", "V4.1")
"""Model families: V4 collapses each site with its own pre (MhcPre), V4.1 with the
previous site's (MhcMix + MhcCollapse, delayed pre)."""

OPS: dict[str, OpContract] = {
    "pre": MHC_PRE,
    "sinkhorn": MHC_SINKHORN,
    "post": MHC_POST,
    "head": MHC_HEAD,
}
# The fused layer boundaries (ONNX nodes, flat local functions, kernels composed
# behind the C API, plugins), kept apart from the four base ops they compose.
FUSED_OPS: dict[str, OpContract] = {
    "post_pre": MHC_POST_PRE,
    "post_head": MHC_POST_HEAD,
}
# V4.1's ops (the spec's "DeepSeek-V4.1" section): nodes, flat local functions,
# torch custom ops, single-op fixtures.
V41_OPS: dict[str, OpContract] = {
    "mix": MHC_MIX,
    "collapse": MHC_COLLAPSE,
    "post_mix": MHC_POST_MIX,
    "post_collapse": MHC_POST_COLLAPSE,
}
ALL_OPS: dict[str, OpContract] = {**OPS, **FUSED_OPS, **V41_OPS}
# The ops that have a TensorRT plugin in native/plugins/ (the harness and the bad-ONNX
# checks iterate over these): all of them.
PLUGIN_OPS: dict[str, OpContract] = {**OPS, **FUSED_OPS, **V41_OPS}
# Which family each node type belongs to (MhcPost and MhcSinkhorn serve both).
V41_OP_TYPES = frozenset(c.op_type for c in V41_OPS.values())
V4_ONLY_OP_TYPES = frozenset(c.op_type for c in (MHC_PRE, MHC_HEAD, MHC_POST_PRE, MHC_POST_HEAD))
PLUGIN_ATTRIBUTES = _PLUGIN_ATTRS


# Each output's dimensions after the rows and whether it is float32 (the mixes, MhcSinkhorn's
# comb); the others are in the residual's dtype. A "next_" output is shaped as the mix it names.
_OUTPUT_DIMS: dict[str, tuple[str, bool]] = {
    "out": ("nd", False), "residual_out": ("nd", False),
    "layer_input": ("d", False), "y": ("d", False),
    "pre_mix": ("n", True), "post_mix": ("n", True), "comb_mix": ("nn", True),
    "comb": ("nn", True),
}
OutputSpec = tuple[str, tuple[int, ...], torch.dtype]
"""An output of an op: (name, shape, dtype)."""


def output_spec(c: OpContract, shape: Sequence[int], dtype: torch.dtype) -> list[OutputSpec]:
    """Every output of ``c`` from the shape and dtype of its residual [T, n, d] (the rows are
    T), or of MhcSinkhorn's logits [..., n, n] (any leading rows; comb has their shape)."""
    if "logits" in c.inputs:
        rows, n, d = tuple(shape[:-2]), shape[-1], 0
    else:
        rows, n, d = (shape[0],), shape[1], shape[2]
    size = {"n": n, "d": d}
    specs = []
    for name in c.outputs:
        dims, f32 = _OUTPUT_DIMS[name.removeprefix("next_")]
        specs.append((name, (*rows, *(size[k] for k in dims)), torch.float32 if f32 else dtype))
    return specs


def num_mixes(n: int) -> int:
    """M = (2 + n) * n rows of hc_fn: pre (n), post (n), comb (n*n)."""
    return (2 + n) * n


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """Residual dtype from a name ("bf16", "float16", ...) or a torch dtype."""
    if isinstance(name, torch.dtype):
        if name not in RESIDUAL_DTYPES:
            raise ValueError(f"unsupported residual dtype {name}; expected one of {dtype_list()}")
        return name
    if not isinstance(name, str):  # e.g. a corrupt dtype in a model's metadata
        raise ValueError(f"dtype {name!r} is not a dtype name; expected one of {dtype_list()}")
    try:
        return DTYPE_NAMES[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}; expected one of {sorted(set(DTYPE_NAMES))}"
        ) from None


def dtype_list() -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in RESIDUAL_DTYPES)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
