"""The mHC ops as ONNX: node schemas and local-function bodies of standard ops.

Each ``mhc`` node in an exported model is backed by a FunctionProto of the same
domain and name, authored here with onnxscript from the spec's formulas. ONNX
Runtime and other plain consumers inline it; TensorRT's parser prefers a
registered plugin of the same name and falls back to the body otherwise.

Attributes are referenced from the body (``ref_attr_name``), so one function
serves every node whatever its attribute values. All math runs in float32; the
residual dtype only appears at the Cast in and the CastLike out.

The functions are authored as compositions (MhcPre calls MhcSinkhorn) but
shipped flat (:mod:`mhc_export.export.onnx_inline`): TensorRT's parser resolves an
attribute reference one level deep only, so no shipped body calls another
``mhc`` function.
"""

from __future__ import annotations

import onnx
import onnxscript
from onnx.defs import OpSchema
from onnxscript import FLOAT
from onnxscript import opset18 as op
from onnxscript.values import Op, Opset

from ..core.spec import (
    ALL_OPS,
    HEAD_EPS,
    ONNX_DOMAIN,
    ONNX_DOMAIN_VERSION,
    PLUGIN_ATTRIBUTES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    POST_MULT,
    PRE_EPS,
    RMS_EPS,
    SINKHORN_EPS,
    SINKHORN_ITERS,
    OpContract,
)
from .onnx_inline import calls_any, flatten, key

mhc = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)

# Tensors that carry the residual dtype; everything else is float32.
_RESIDUAL_TENSORS = {"residual", "x", "layer_input", "out", "y", "residual_out"}
_RESIDUAL_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
_ATTR_TYPES = {
    "float": OpSchema.AttrType.FLOAT,
    "int": OpSchema.AttrType.INT,
    "string": OpSchema.AttrType.STRING,
}


@onnxscript.script(mhc, default_opset=op)
def MhcSinkhorn(
    logits: FLOAT, iters: int = SINKHORN_ITERS, eps: float = SINKHORN_EPS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
) -> FLOAT:
    e = op.Constant(value_float=eps)
    c = op.Softmax(logits, axis=-1) + e
    c = c / (op.ReduceSum(c, [-2], keepdims=1) + e)
    rounds = op.Sub(op.Constant(value_int=iters), op.Constant(value_int=1))
    for _ in range(rounds):
        c = c / (op.ReduceSum(c, [-1], keepdims=1) + e)
        c = c / (op.ReduceSum(c, [-2], keepdims=1) + e)
    return c


@onnxscript.script(mhc, default_opset=op)
def MhcMix(
    residual, hc_fn: FLOAT, hc_scale: FLOAT, hc_base: FLOAT,
    rms_eps: float = RMS_EPS, pre_eps: float = PRE_EPS, sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT, sinkhorn_iters: int = SINKHORN_ITERS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    x3 = op.Cast(residual, to=1)
    n = op.Shape(x3, start=1, end=2)
    n2 = n + n
    x = op.Reshape(x3, op.Constant(value_ints=[0, -1]))
    r = op.Reciprocal(op.Sqrt(op.ReduceMean(x * x, [-1], keepdims=1)
                              + op.Constant(value_float=rms_eps)))
    mixes = op.MatMul(x, op.Transpose(hc_fn, perm=[1, 0])) * r
    zero = op.Constant(value_ints=[0])
    axis = op.Constant(value_ints=[1])
    end = op.Constant(value_ints=[9223372036854775807])
    s_pre = op.Slice(hc_scale, zero, op.Constant(value_ints=[1]))
    s_post = op.Slice(hc_scale, op.Constant(value_ints=[1]), op.Constant(value_ints=[2]))
    s_comb = op.Slice(hc_scale, op.Constant(value_ints=[2]), op.Constant(value_ints=[3]))
    pre_logit = op.Slice(mixes, zero, n, axis) * s_pre + op.Slice(hc_base, zero, n)
    pre_mix = op.Sigmoid(pre_logit) + op.Constant(value_float=pre_eps)
    post_logit = op.Slice(mixes, n, n2, axis) * s_post + op.Slice(hc_base, n, n2)
    post_mix = op.Sigmoid(post_logit) * op.Constant(value_float=post_mult)
    comb_flat = op.Slice(mixes, n2, end, axis) * s_comb + op.Slice(hc_base, n2, end)
    logits = op.Reshape(comb_flat, op.Concat(op.Constant(value_ints=[-1]), n, n, axis=0))
    comb_mix = MhcSinkhorn(logits, iters=sinkhorn_iters, eps=sinkhorn_eps)
    return pre_mix, post_mix, comb_mix


@onnxscript.script(mhc, default_opset=op)
def MhcCollapse(
    residual, pre_mix: FLOAT,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    # float32 sum over the streams, cast once to the residual dtype; no eps, no scale.
    mixed = op.ReduceSum(op.Cast(residual, to=1) * op.Unsqueeze(pre_mix, [2]), [1], keepdims=0)
    return op.CastLike(mixed, residual)


@onnxscript.script(mhc, default_opset=op)
def MhcPre(
    residual, hc_fn: FLOAT, hc_scale: FLOAT, hc_base: FLOAT,
    rms_eps: float = RMS_EPS, pre_eps: float = PRE_EPS, sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT, sinkhorn_iters: int = SINKHORN_ITERS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    # V4: the site collapses with its own pre (V4.1's MhcMix + MhcCollapse, undelayed).
    pre_mix, post_mix, comb_mix = MhcMix(
        residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, pre_eps=pre_eps,
        sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)
    layer_input = MhcCollapse(residual, pre_mix)
    return layer_input, post_mix, comb_mix


@onnxscript.script(mhc, default_opset=op)
def MhcPost(
    x, residual, post_mix: FLOAT, comb_mix: FLOAT,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    # out[t, j] = post[t, j] * x[t] + sum_i comb[t, i, j] * residual[t, i]
    mixed = op.MatMul(op.Transpose(comb_mix, perm=[0, 2, 1]), op.Cast(residual, to=1))
    out = op.Unsqueeze(post_mix, [-1]) * op.Unsqueeze(op.Cast(x, to=1), [1]) + mixed
    return op.CastLike(out, residual)


@onnxscript.script(mhc, default_opset=op)
def MhcHead(
    residual, hc_fn: FLOAT, hc_scale: FLOAT, hc_base: FLOAT,
    rms_eps: float = RMS_EPS, eps: float = HEAD_EPS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    x3 = op.Cast(residual, to=1)
    x = op.Reshape(x3, op.Constant(value_ints=[0, -1]))
    r = op.Reciprocal(op.Sqrt(op.ReduceMean(x * x, [-1], keepdims=1)
                              + op.Constant(value_float=rms_eps)))
    mixes = op.MatMul(x, op.Transpose(hc_fn, perm=[1, 0])) * r
    w = op.Sigmoid(mixes * hc_scale + hc_base) + op.Constant(value_float=eps)
    y = op.ReduceSum(op.Unsqueeze(w, [-1]) * x3, [1], keepdims=0)
    return op.CastLike(y, residual)


@onnxscript.script(mhc, default_opset=op)
def MhcPostPre(
    x, residual, post_mix: FLOAT, comb_mix: FLOAT, hc_fn: FLOAT, hc_scale: FLOAT, hc_base: FLOAT,
    rms_eps: float = RMS_EPS, pre_eps: float = PRE_EPS, sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT, sinkhorn_iters: int = SINKHORN_ITERS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    # The pre half reads residual_out in the residual dtype, as the unfused pair does.
    residual_out = MhcPost(x, residual, post_mix, comb_mix)
    layer_input, next_post_mix, next_comb_mix = MhcPre(
        residual_out, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, pre_eps=pre_eps,
        sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)
    return residual_out, layer_input, next_post_mix, next_comb_mix


@onnxscript.script(mhc, default_opset=op)
def MhcPostHead(
    x, residual, post_mix: FLOAT, comb_mix: FLOAT, hc_fn: FLOAT, hc_scale: FLOAT, hc_base: FLOAT,
    rms_eps: float = RMS_EPS, eps: float = HEAD_EPS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    return MhcHead(MhcPost(x, residual, post_mix, comb_mix), hc_fn, hc_scale, hc_base,
                   rms_eps=rms_eps, eps=eps)


@onnxscript.script(mhc, default_opset=op)
def MhcPostMix(
    x, residual, pre_mix: FLOAT, post_mix: FLOAT, comb_mix: FLOAT, hc_fn: FLOAT,
    hc_scale: FLOAT, hc_base: FLOAT,
    rms_eps: float = RMS_EPS, pre_eps: float = PRE_EPS, sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT, sinkhorn_iters: int = SINKHORN_ITERS,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    # The collapse uses the given pre (site k's, the delayed pre); the collapse and the
    # mixes read residual_out in the residual dtype, as the unfused ops do.
    residual_out = MhcPost(x, residual, post_mix, comb_mix)
    layer_input = MhcCollapse(residual_out, pre_mix)
    next_pre_mix, next_post_mix, next_comb_mix = MhcMix(
        residual_out, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, pre_eps=pre_eps,
        sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)
    return residual_out, layer_input, next_pre_mix, next_post_mix, next_comb_mix


@onnxscript.script(mhc, default_opset=op)
def MhcPostCollapse(
    x, residual, pre_mix: FLOAT, post_mix: FLOAT, comb_mix: FLOAT,
    plugin_namespace: str = PLUGIN_NAMESPACE, plugin_version: str = PLUGIN_VERSION,
):
    return MhcCollapse(MhcPost(x, residual, post_mix, comb_mix), pre_mix)


FUNCTIONS = {
    "MhcPre": MhcPre,
    "MhcSinkhorn": MhcSinkhorn,
    "MhcPost": MhcPost,
    "MhcHead": MhcHead,
    "MhcPostPre": MhcPostPre,
    "MhcPostHead": MhcPostHead,
    "MhcMix": MhcMix,
    "MhcCollapse": MhcCollapse,
    "MhcPostMix": MhcPostMix,
    "MhcPostCollapse": MhcPostCollapse,
}


def _schema(contract: OpContract) -> OpSchema:
    def param(name: str) -> OpSchema.FormalParameter:
        return OpSchema.FormalParameter(name, "T" if name in _RESIDUAL_TENSORS else "tensor(float)")

    attrs = [
        OpSchema.Attribute(a.name, _ATTR_TYPES[a.kind], f"default {a.default!r}")
        for a in (*contract.attributes, *PLUGIN_ATTRIBUTES)
    ]
    return OpSchema(
        contract.op_type, ONNX_DOMAIN, ONNX_DOMAIN_VERSION,
        inputs=[param(n) for n in contract.inputs],
        outputs=[param(n) for n in contract.outputs],
        type_constraints=[("T", _RESIDUAL_TYPES, "residual dtype")],
        attributes=attrs,
    )


NODE_OPS: dict[str, Op] = {c.op_type: Op(mhc, c.op_type, _schema(c)) for c in ALL_OPS.values()}
"""onnxscript ops that emit one bare ``mhc`` node (no body) during export."""


def function_protos(op_types: set[str], opset: int) -> list[onnx.FunctionProto]:
    """Flat FunctionProtos for ``op_types``, importing the model's opset.

    Every body is made of standard ops only: calls between our functions are
    inlined, so each attribute reference is one level deep and no function
    depends on another (any consumer, in any order, can import them).
    """
    library = {key(p): p for p in (f.to_function_proto() for f in FUNCTIONS.values())}
    protos = []
    for name in sorted(op_types):
        proto = flatten(library[ONNX_DOMAIN, name], library)
        if calls_any(proto, set(library)):
            raise AssertionError(f"function {name} still calls an mhc function after flattening")
        for imp in proto.opset_import:
            if imp.domain == "":
                imp.version = opset
        _explicit_loop_conditions(proto)
        _unique_node_names(proto.node, name)
        protos.append(proto)
    return protos


def _explicit_loop_conditions(proto: onnx.FunctionProto) -> None:
    """Give each Loop an explicit ``true`` condition input.

    onnxscript emits ``Loop(M, "", ...)`` for a counted loop, which is valid
    ONNX, but TensorRT's parser then leaves the body's ``cond_in`` unregistered
    and fails on the body's ``Identity(cond_in)``. With cond = true the loop
    runs exactly M times either way.
    """
    nodes = list(proto.node)
    out: list[onnx.NodeProto] = []
    for node in nodes:
        if node.op_type == "Loop" and node.domain == "" and len(node.input) > 1 \
                and not node.input[1]:
            cond = f"{node.output[0]}_cond_true"
            out.append(onnx.helper.make_node(
                "Constant", [], [cond], name=cond,
                value=onnx.helper.make_tensor(cond, onnx.TensorProto.BOOL, [], [True])))
            node.input[1] = cond
        out.append(node)
    del proto.node[:]
    proto.node.extend(out)


def _unique_node_names(nodes, prefix: str) -> None:
    """Prefix node names (subgraphs included) so no two nodes of a model share one."""
    for node in nodes:
        node.name = f"{prefix}/{node.name}" if node.name else prefix
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _unique_node_names(attr.g.node, node.name)
