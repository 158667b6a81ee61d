"""Inline a model's local functions the way onnx-tensorrt resolves their attributes.

onnx-tensorrt (OnnxAttrs.cpp) looks a ``ref_attr_name`` up only in the
attributes of the call node of the function being imported
(``localFunctionStack().back().attrs``), and pushes a nested call's attributes
as they are stored: a nested node whose attributes are themselves references
carries no values, so references inside the nested body read as 0 / 0.0 / "".
Written here, apart from mhc_export.export.onnx_inline, so the production flattener
is checked by an independent emulation of the strictest consumer.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto, helper

_ZERO = {
    AttributeProto.INT: 0,
    AttributeProto.FLOAT: 0.0,
    AttributeProto.STRING: b"",
}


def _value_attr(name: str, source: AttributeProto | None, kind: int) -> AttributeProto:
    """``name`` with the value of ``source``; what TensorRT reads when there is none."""
    if source is None or source.ref_attr_name:
        return helper.make_attribute(name, _ZERO[kind]) if kind in _ZERO else None
    out = AttributeProto()
    out.CopyFrom(source)
    out.name = name
    return out


def inline_like_tensorrt(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph holds standard ops only, every local-function call
    expanded under TensorRT's attribute rules; the functions are dropped."""
    functions = {(f.domain, f.name): f for f in model.functions}
    counter = [0]

    def expand(node: onnx.NodeProto, frame: dict[str, AttributeProto]) -> list[onnx.NodeProto]:
        fn = functions.get((node.domain, node.op_type))
        if fn is None:
            return [_resolved(node, frame)]
        counter[0] += 1
        prefix = f"trt{counter[0]}/"
        names = {"": ""}
        names.update(zip(fn.input, node.input, strict=False))
        names.update(zip(fn.output, node.output, strict=False))
        # The frame of this call: the call node's attributes as stored (references included).
        inner = {a.name: a for a in node.attribute}
        out = []
        for body_node in fn.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(body_node)
            _rename(copy, names, prefix)
            out.extend(expand(copy, inner))
        return out

    flat = onnx.ModelProto()
    flat.CopyFrom(model)
    nodes = []
    for node in model.graph.node:
        nodes.extend(expand(node, {}))
    del flat.graph.node[:]
    flat.graph.node.extend(nodes)
    del flat.functions[:]
    return flat


def _resolved(node: onnx.NodeProto, frame: dict[str, AttributeProto]) -> onnx.NodeProto:
    attrs = []
    for attr in node.attribute:
        if attr.ref_attr_name:
            value = _value_attr(attr.name, frame.get(attr.ref_attr_name), attr.type)
            if value is None:
                continue
            attr = value
        if attr.type == AttributeProto.GRAPH:
            for i, sub in enumerate(attr.g.node):
                attr.g.node[i].CopyFrom(_resolved(sub, frame))
        attrs.append(attr)
    del node.attribute[:]
    node.attribute.extend(attrs)
    return node


def _rename(node: onnx.NodeProto, names: dict[str, str], prefix: str) -> None:
    def rn(v: str) -> str:
        return names.get(v, prefix + v)

    node.name = prefix + node.name
    node.input[:] = [rn(v) for v in node.input]
    node.output[:] = [rn(v) for v in node.output]
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            g = attr.g
            for vi in (*g.input, *g.output, *g.value_info):
                vi.name = rn(vi.name)
            for sub in g.node:
                _rename(sub, names, prefix)
