"""torch.library custom ops: V4's ``mhc::pre``, ``mhc::sinkhorn``, ``mhc::post``,
``mhc::head`` (and the fused ``mhc::post_pre``, ``mhc::post_head``), V4.1's ``mhc::mix``,
``mhc::collapse``, ``mhc::post_mix`` and ``mhc::post_collapse``.

Each op is one opaque node for torch.export, which is what lets the ONNX
exporter emit one ``mhc`` domain node per op (see :mod:`mhc_export.export.onnx_export`).
The eager implementation is the reference itself, so a model run "fused"
(through these ops) and "decomposed" (plain torch math) is bit-identical.

The ops are registered from their contracts in :mod:`mhc_export.core.spec` (input,
output and attribute names, attribute kinds), so the schemas cannot drift from the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core import checks, spec
from ..core.spec import OpContract
from . import eager as reference

__all__ = ["collapse", "head", "kernel_backend", "mix", "post", "post_collapse", "post_head",
           "post_mix", "post_pre", "pre", "sinkhorn"]

# ``int`` attributes are SymInt in the schema torch infers from a Python signature;
# writing it the same way keeps the schemas of the registered ops as they were.
_SCHEMA_KIND = {"float": "float", "int": "SymInt"}

# The input checks each op's fake (meta) implementation runs, in order, as the
# contract whose inputs they take: the fused ops run the checks of the ops they fuse.
_FAKE_CHECKS: dict[str, tuple[OpContract, ...]] = {
    "pre": (spec.MHC_PRE,), "sinkhorn": (), "post": (spec.MHC_POST,), "head": (spec.MHC_HEAD,),
    "post_pre": (spec.MHC_POST, spec.MHC_PRE), "post_head": (spec.MHC_POST, spec.MHC_HEAD),
    "mix": (spec.MHC_PRE,), "collapse": (spec.MHC_COLLAPSE,),
    "post_mix": (spec.MHC_POST, spec.MHC_COLLAPSE, spec.MHC_PRE),
    "post_collapse": (spec.MHC_POST, spec.MHC_COLLAPSE),
}
_CHECK_OF: dict[str, Callable[..., object]] = {
    "MhcPre": checks.check_pre_inputs, "MhcPost": checks.check_post_inputs,
    "MhcHead": checks.check_head_inputs, "MhcCollapse": checks.check_collapse_inputs,
}
# The eager reference of each op: what the CPU kernel runs, and the CUDA kernel where
# the kernel library is not loaded.
_REFERENCE: dict[str, Callable[..., object]] = {
    "pre": reference.mhc_pre, "sinkhorn": reference.sinkhorn, "post": reference.mhc_post,
    "head": reference.mhc_head, "post_pre": reference.mhc_post_pre,
    "post_head": reference.mhc_post_head, "mix": reference.mhc_mix,
    "collapse": reference.mhc_collapse, "post_mix": reference.mhc_post_mix,
    "post_collapse": reference.mhc_post_collapse,
}


def _schema(c: OpContract) -> str:
    args = [f"Tensor {name}" for name in c.inputs]
    args += [f"{_SCHEMA_KIND[a.kind]} {a.name}" for a in c.attributes]
    returns = ", ".join(["Tensor"] * len(c.outputs))
    return f"({', '.join(args)}) -> {returns if len(c.outputs) == 1 else f'({returns})'}"


def _split(c: OpContract, args: Sequence[object]) -> tuple[list[torch.Tensor], dict[str, object]]:
    """The op's positional arguments as (input tensors, attributes by name)."""
    k = len(c.inputs)
    attrs = dict(zip((a.name for a in c.attributes), args[k:], strict=True))
    return list(args[:k]), attrs  # type: ignore[arg-type]


def _fake_outputs(c: OpContract, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Empty outputs of the shapes and dtypes the spec gives for these inputs."""
    shaping = t["logits"] if "logits" in t else t["residual"]
    return tuple(shaping.new_empty(shape, dtype=dtype)
                 for _, shape, dtype in spec.output_spec(c, shaping.shape, shaping.dtype))


def _register(key: str) -> torch.library.CustomOpDef:
    """Register ``mhc::<key>``: the reference on CPU, the kernel binding on CUDA, and a
    fake implementation that runs the reference's input checks (so torch.export fails
    early with the same messages)."""
    c = spec.ALL_OPS[key]
    ref = _REFERENCE[key]

    def eager(*args: object) -> object:
        tensors, attrs = _split(c, args)
        return ref(*tensors, **attrs)

    op = torch.library.custom_op(c.torch_name, eager, mutates_args=(), schema=_schema(c))

    @op.register_fake
    def _fake(*args: object) -> object:
        named = dict(zip(c.inputs, _split(c, args)[0], strict=True))
        for base in _FAKE_CHECKS[key]:
            _CHECK_OF[base.op_type](*(named[i] for i in base.inputs))
        outs = _fake_outputs(c, named)
        return outs[0] if len(outs) == 1 else outs

    @op.register_kernel("cuda")
    def _cuda(*args: object) -> object:
        tensors, attrs = _split(c, args)
        kernel = _kernel(key)
        if kernel is None:
            return ref(*tensors, **attrs)
        return kernel(*[t.contiguous() for t in tensors], **attrs)

    return op


# ---------------------------------------------------------------------------
# CUDA: our kernels (libmhc_kernels.so) for CUDA tensors, through the dispatcher
# ---------------------------------------------------------------------------
# Registered as the ops' CUDA kernels, so eager mode, CUDA graphs and
# torch.compile (which keeps custom ops opaque) all run them. Where the kernel
# library cannot be loaded the CUDA kernel is the reference math on the GPU,
# and kernel_backend() says so.


def kernel_backend() -> str:
    """What the ops run on for CUDA tensors: "mhc-kernels" or "reference"."""
    from ..kernels import _lib

    return "mhc-kernels" if _lib.available() else "reference"


def _kernel(name: str) -> Callable[..., object] | None:
    """The kernel binding ``mhc_export.kernels.<name>`` where the library is loaded, else
    None. Imported late: the kernels package loads ctypes bindings the CPU path never needs."""
    from .. import kernels

    return getattr(kernels, name, None) if kernels.available() else None


pre = _register("pre")
sinkhorn = _register("sinkhorn")
post = _register("post")
head = _register("head")
# The fused layer boundaries.
post_pre = _register("post_pre")
post_head = _register("post_head")
# DeepSeek-V4.1 (delayed pre).
mix = _register("mix")
collapse = _register("collapse")
post_mix = _register("post_mix")
post_collapse = _register("post_collapse")
