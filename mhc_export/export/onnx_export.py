"""Export to ONNX with the torch.onnx (dynamo) exporter.

The ``mhc::*`` custom ops are translated to bare ``mhc`` domain nodes carrying
the spec's attributes plus ``plugin_namespace``/``plugin_version``; after the
exporter is done (its opset conversion inlines any local function it sees, so
bodies cannot go in earlier) the matching FunctionProtos from
:mod:`mhc_export.export.onnx_functions` are attached. The result is checked with the
full ONNX checker and shape inference, then written atomically.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import onnx
import torch

from ..core.spec import (
    DEFAULT_OPSET,
    EXPORT_TARGETS,
    ONNX_DOMAIN,
    ONNX_DOMAIN_VERSION,
    OPSET_HELP,
    OPSETS,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from ..reference import ops  # noqa: F401  (registers torch.ops.mhc.*)
from .fuse import fuse_boundaries
from .onnx_functions import NODE_OPS, function_protos
from .ort_target import ensure_opset, to_onnxruntime

# Models whose weights exceed this go to an external data file (protobuf's
# hard limit is 2 GiB; stay well clear of it).
EXTERNAL_DATA_THRESHOLD = 1 << 30

_PLUGIN = {"plugin_namespace": PLUGIN_NAMESPACE, "plugin_version": PLUGIN_VERSION}


def _pre(residual, hc_fn, hc_scale, hc_base, rms_eps, pre_eps, sinkhorn_eps, post_mult,
         sinkhorn_iters):
    return NODE_OPS["MhcPre"](
        residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, pre_eps=pre_eps,
        sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters, **_PLUGIN,
    )


def _sinkhorn(logits, iters, eps):
    return NODE_OPS["MhcSinkhorn"](logits, iters=iters, eps=eps, **_PLUGIN)


def _post(x, residual, post_mix, comb_mix):
    return NODE_OPS["MhcPost"](x, residual, post_mix, comb_mix, **_PLUGIN)


def _head(residual, hc_fn, hc_scale, hc_base, rms_eps, eps):
    return NODE_OPS["MhcHead"](residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, eps=eps,
                               **_PLUGIN)


def _post_pre(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps, pre_eps,
              sinkhorn_eps, post_mult, sinkhorn_iters):
    return NODE_OPS["MhcPostPre"](
        x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps=rms_eps,
        pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps, post_mult=post_mult,
        sinkhorn_iters=sinkhorn_iters, **_PLUGIN)


def _post_head(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps, eps):
    return NODE_OPS["MhcPostHead"](x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base,
                                   rms_eps=rms_eps, eps=eps, **_PLUGIN)


def _mix(residual, hc_fn, hc_scale, hc_base, rms_eps, pre_eps, sinkhorn_eps, post_mult,
         sinkhorn_iters):
    return NODE_OPS["MhcMix"](
        residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, pre_eps=pre_eps,
        sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters, **_PLUGIN)


def _collapse(residual, pre_mix):
    return NODE_OPS["MhcCollapse"](residual, pre_mix, **_PLUGIN)


def _post_mix(x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps,
              pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters):
    return NODE_OPS["MhcPostMix"](
        x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps=rms_eps,
        pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps, post_mult=post_mult,
        sinkhorn_iters=sinkhorn_iters, **_PLUGIN)


def _post_collapse(x, residual, pre_mix, post_mix, comb_mix):
    return NODE_OPS["MhcPostCollapse"](x, residual, pre_mix, post_mix, comb_mix, **_PLUGIN)


TRANSLATIONS: dict[Callable, Callable] = {
    torch.ops.mhc.mix.default: _mix,
    torch.ops.mhc.collapse.default: _collapse,
    torch.ops.mhc.post_mix.default: _post_mix,
    torch.ops.mhc.post_collapse.default: _post_collapse,
    torch.ops.mhc.post_pre.default: _post_pre,
    torch.ops.mhc.post_head.default: _post_head,
    torch.ops.mhc.pre.default: _pre,
    torch.ops.mhc.sinkhorn.default: _sinkhorn,
    torch.ops.mhc.post.default: _post,
    torch.ops.mhc.head.default: _head,
}


@dataclass
class ExportResult:
    path: Path
    mhc_nodes: dict[str, int]
    external_data: Path | None
    opset: int
    contrib_nodes: dict[str, int] = field(default_factory=dict)  # com.microsoft (--target)


class ExportOptions(TypedDict, total=False):
    """The keyword options of :func:`export` that callers pass through (the defaults are
    export's)."""

    opset: int
    external_data: bool | None
    metadata: dict[str, str] | None
    verbose: bool
    fuse: bool
    target: str


def check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"--opset {opset!r}: the exporter writes standard opsets {OPSET_HELP}")
    return opset


def export(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Sequence[dict[int, torch.export.Dim] | None],
    opset: int = DEFAULT_OPSET,
    external_data: bool | None = None,
    metadata: dict[str, str] | None = None,
    verbose: bool = False,
    fuse: bool = True,
    target: str = "mhc",
    passes: Sequence[Callable[[onnx.ModelProto], object]] = (),
) -> ExportResult:
    """Export ``module(*args)`` to ``path`` with mhc nodes + local functions.

    ``external_data=None`` moves weights to ``<path>.data`` only when they are
    larger than EXTERNAL_DATA_THRESHOLD. ``fuse`` rewrites each MhcPost ->
    MhcPre (MhcHead) boundary into one MhcPostPre (MhcPostHead) node, and each
    V4.1 boundary into MhcPostMix (MhcPostCollapse) (:mod:`mhc_export.export.fuse`).
    ``target="onnxruntime"`` instead emits ONNX Runtime's contrib ops for the
    collapses and posts (:mod:`mhc_export.export.ort_target`); that graph is unfused.
    ``passes`` run on the translated model before the checks (e.g. the FP8 decode
    rewrite of ``--weights native``).
    """
    check_opset(opset)
    if target not in EXPORT_TARGETS:
        raise ValueError(f"unknown export target {target!r}; expected one of {EXPORT_TARGETS}")
    path = Path(path)
    with _quiet(not verbose):
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=opset,
            input_names=list(input_names), output_names=list(output_names),
            dynamic_shapes=tuple(dynamic_shapes), custom_translation_table=TRANSLATIONS,
            optimize=True, verbose=verbose,
        )
    proto = program.model_proto
    model_opset = next(o.version for o in proto.opset_import if o.domain == "")
    if model_opset != opset:  # the converter gives up silently; never write the wrong one
        raise RuntimeError(f"the exporter wrote opset {model_opset}, not the {opset} asked for")
    contrib: dict[str, int] = {}
    if target == "onnxruntime":
        contrib = {k: v for k, v in to_onnxruntime(proto.graph).items() if v}
        ensure_opset(proto)
    elif fuse:
        fuse_boundaries(proto.graph)
    for graph_pass in passes:
        graph_pass(proto)
    counts = _mhc_node_counts(proto)
    if counts:
        proto.functions.extend(function_protos(set(counts), model_opset))
        if not any(o.domain == ONNX_DOMAIN for o in proto.opset_import):
            proto.opset_import.append(onnx.helper.make_opsetid(ONNX_DOMAIN, ONNX_DOMAIN_VERSION))
    proto.producer_name = "mhc-export"
    onnx.helper.set_model_props(proto, dict(metadata or {}))
    _check(proto)
    weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
    if external_data is None:
        external_data = weight_bytes > EXTERNAL_DATA_THRESHOLD
    data_path = save_model(proto, path, external_data=external_data)
    return ExportResult(path, counts, data_path, model_opset, contrib)


def _mhc_node_counts(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.domain == ONNX_DOMAIN:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


_STORED_TYPES = (onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT8E4M3FN)


def _size(proto: onnx.ModelProto) -> int:
    """Serialized size; upb's ByteSize raises above 2 GiB, so count the weights first."""
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    return weights if weights >= 1 << 31 else proto.ByteSize()


def _weightless(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its initializers as graph inputs, built without copying their data."""
    light = onnx.ModelProto(ir_version=proto.ir_version, producer_name=proto.producer_name)
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    light.metadata_props.extend(proto.metadata_props)
    src, dst = proto.graph, light.graph
    dst.name = src.name
    dst.node.extend(src.node)
    dst.input.extend(src.input)
    dst.output.extend(src.output)
    dst.value_info.extend(src.value_info)
    for t in src.initializer:  # as typed graph inputs: checked and inferred, no data
        dst.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _check(proto: onnx.ModelProto) -> None:
    """Full checker + strict shape inference; every graph output must get a shape."""
    if _size(proto) < (1 << 31) - (1 << 20):
        onnx.checker.check_model(proto, full_check=True)
        # Data propagation evaluates integer ops on constants: on stored weights decoded
        # in-graph (uint8/float8 codes, --weights native) that is tens of GB.
        stored = any(t.data_type in _STORED_TYPES for t in proto.graph.initializer)
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True,
                                                     data_prop=not stored)
    else:  # too large for in-memory checks: check a weight-less copy
        light = _weightless(proto)
        onnx.checker.check_model(light, full_check=False)
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True)
    for out in inferred.graph.output:
        if not out.type.tensor_type.HasField("shape"):
            raise RuntimeError(f"ONNX shape inference gave output {out.name!r} no shape")


def save_model(
    proto: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool = False
) -> Path | None:
    """Write ``proto`` atomically; with external data, the data file first, then the model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        tmp_model = Path(tmp) / path.name
        if external_data:
            onnx.save_model(proto, tmp_model, save_as_external_data=True,
                            all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
            os.replace(Path(tmp) / data_name, path.parent / data_name)
        else:
            onnx.save_model(proto, tmp_model)
        os.replace(tmp_model, path)
    return path.parent / data_name if external_data else None


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence the exporter's own progress chatter; errors still propagate."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
