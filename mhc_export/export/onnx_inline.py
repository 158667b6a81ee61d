"""Flatten ONNX local functions: inline the calls one function makes to another.

TensorRT's ONNX parser resolves an attribute reference (``ref_attr_name``)
only against the attributes of the call node of the function it is importing;
a function called from inside another function sees its caller's references
unresolved (``iters`` reads as 0, ``eps`` as 0.0). So every function we ship
has a flat body: nested calls are inlined here, and each reference in the
inlined nodes is rewritten to point one level up, at the outer function's own
attribute (or replaced by the value the call node gave, or the callee's default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import onnx
from onnx import AttributeProto, FunctionProto, NodeProto

FunctionKey = tuple[str, str]


def key(proto: FunctionProto | NodeProto) -> FunctionKey:
    return (proto.domain, proto.name if isinstance(proto, FunctionProto) else proto.op_type)


def flatten(proto: FunctionProto, library: Mapping[FunctionKey, FunctionProto]) -> FunctionProto:
    """A copy of ``proto`` with every call to a ``library`` function inlined, recursively."""
    flat = FunctionProto()
    flat.CopyFrom(proto)
    nodes: list[NodeProto] = []
    for i, node in enumerate(proto.node):
        callee = library.get(key(node))
        if callee is None:
            nodes.append(node)
            continue
        callee = flatten(callee, library)
        prefix = f"{node.name or node.op_type}_{i}/"
        nodes.extend(expand_call(node, callee, prefix, _resolve_from_call(node, callee)))
        _merge_opsets(flat, callee)
    del flat.node[:]
    flat.node.extend(nodes)
    still_calls = {n.domain for n in _all_nodes(flat.node)}
    kept = [o for o in flat.opset_import if o.domain == "" or o.domain in still_calls]
    del flat.opset_import[:]
    flat.opset_import.extend(kept)
    return flat


Resolver = Callable[[AttributeProto], AttributeProto | None]


def expand_call(call: NodeProto, callee: FunctionProto, prefix: str,
                resolve: Resolver) -> list[NodeProto]:
    """The callee's nodes with its formal inputs/outputs bound to the call's, other values
    renamed under ``prefix``, and each attribute reference replaced through ``resolve``
    (which returns the attribute to use, or None to drop it)."""
    names: dict[str, str] = {"": ""}
    names.update(zip(callee.input, call.input, strict=False))
    names.update(zip(callee.output, call.output, strict=False))

    def rename(name: str) -> str:
        return names.get(name, prefix + name)

    out = []
    for node in callee.node:
        copy = NodeProto()
        copy.CopyFrom(node)
        _rewrite(copy, rename, resolve, prefix)
        out.append(copy)
    return out


def _rewrite(node: NodeProto, rename: Callable[[str], str], resolve: Resolver,
             prefix: str) -> None:
    node.name = prefix + (node.name or node.op_type)
    node.input[:] = [rename(v) for v in node.input]
    node.output[:] = [rename(v) for v in node.output]
    attrs = []
    for attr in node.attribute:
        if attr.ref_attr_name:
            resolved = resolve(attr)
            if resolved is None:
                continue
            attr = resolved
        for g in _subgraphs(attr):
            _rewrite_graph(g, rename, resolve, prefix)
        attrs.append(attr)
    del node.attribute[:]
    node.attribute.extend(attrs)


def _rewrite_graph(graph: onnx.GraphProto, rename, resolve, prefix) -> None:
    for vi in (*graph.input, *graph.output, *graph.value_info):
        vi.name = rename(vi.name)
    for init in graph.initializer:
        init.name = rename(init.name)
    for node in graph.node:
        _rewrite(node, rename, resolve, prefix)


def _subgraphs(attr: AttributeProto) -> list[onnx.GraphProto]:
    if attr.type == AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _resolve_from_call(call: NodeProto, callee: FunctionProto) -> Resolver:
    """A reference inside the callee takes the call node's attribute of that name: its
    value, or (when the call node itself only refers to the caller's attribute) that
    reference, now one level deep; failing both, the callee's default."""
    given = {a.name: a for a in call.attribute}
    defaults = {a.name: a for a in callee.attribute_proto}

    def resolve(attr: AttributeProto) -> AttributeProto | None:
        source = given.get(attr.ref_attr_name) or defaults.get(attr.ref_attr_name)
        if source is None:
            return None
        new = AttributeProto()
        new.CopyFrom(source)
        new.name = attr.name
        return new

    return resolve


def _merge_opsets(target: FunctionProto, source: FunctionProto) -> None:
    have = {o.domain: o for o in target.opset_import}
    for imp in source.opset_import:
        if imp.domain not in have:
            target.opset_import.append(imp)
        elif have[imp.domain].version != imp.version:
            raise ValueError(f"functions {target.name} and {source.name} import opset "
                             f"{imp.domain or 'ai.onnx'} at different versions")


def _all_nodes(nodes):
    for node in nodes:
        yield node
        for attr in node.attribute:
            for g in _subgraphs(attr):
                yield from _all_nodes(g.node)


def calls_any(proto: FunctionProto, keys: set[FunctionKey]) -> bool:
    """True when any node of the body (subgraphs included) calls one of ``keys``."""
    return any(key(n) in keys for n in _all_nodes(proto.node))
