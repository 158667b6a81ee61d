"""Graph pass: fuse each layer boundary of an exported graph into one node.

Every boundary between two sublayers is an MhcPost whose output (the new
residual streams) feeds the next MhcPre; the last feeds MhcHead. The pass
rewrites

    MhcPost(x, R, post, comb) -> R'            MhcPostPre(x, R, post, comb, fn, s, b)
    MhcPre(R', fn, s, b) -> y, post', comb'  =>   -> R', y, post', comb'

and MhcPost -> MhcHead into MhcPostHead (only when the head is the post's sole
consumer, since MhcPostHead does not output R'). R' keeps its name, so every
other consumer of it still finds it. Attributes come from the MhcPre (MhcHead);
the result is re-sorted topologically. Works on any graph with the pattern:
our reference model, and the HF DeepSeek-V4 export.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

from .spec import MHC_HEAD, MHC_POST, MHC_POST_HEAD, MHC_POST_PRE, MHC_PRE, ONNX_DOMAIN


def fuse_boundaries(graph: onnx.GraphProto) -> dict[str, int]:
    """Fuse in place; returns how many boundaries of each kind were fused."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    replaced: dict[int, onnx.NodeProto | None] = {}  # id(node) -> its replacement (None: drop)
    fused = {MHC_POST_PRE.op_type: 0, MHC_POST_HEAD.op_type: 0}
    for node in graph.node:
        if node.domain != ONNX_DOMAIN or node.op_type not in (MHC_PRE.op_type, MHC_HEAD.op_type):
            continue
        post, chain = _through_reshapes(producer, node.input[0])
        if (post is None or post.domain != ONNX_DOMAIN or post.op_type != MHC_POST.op_type
                or id(post) in replaced):
            continue
        if node.op_type == MHC_PRE.op_type:
            kind, outputs = MHC_POST_PRE, [post.output[0], *node.output]
        else:
            links = [post.output[0], *(r.output[0] for r in chain)]
            if any(len(consumers[x]) != 1 or x in graph_outputs for x in links):
                continue  # someone else needs the residual MhcPostHead would not output
            kind, outputs = MHC_POST_HEAD, list(node.output)
        new = onnx.helper.make_node(
            kind.op_type, [*post.input, *node.input[1:]], outputs,
            name=f"{post.name or 'post'}+{node.name or node.op_type}", domain=ONNX_DOMAIN)
        new.attribute.extend(node.attribute)
        replaced[id(post)] = None
        replaced[id(node)] = new
        for reshape in chain:  # now read by nobody
            if len(consumers[reshape.output[0]]) == 1 and reshape.output[0] not in graph_outputs:
                replaced[id(reshape)] = None
        fused[kind.op_type] += 1
    if replaced:
        nodes = [replaced.get(id(n), n) for n in graph.node]
        _topological(graph, [n for n in nodes if n is not None])
    return fused


def _through_reshapes(producer, name: str):
    """(producer of ``name`` past any Reshape chain, the Reshapes passed).

    A Reshape chain from MhcPost's [T, n, d] output to an mhc input [T', n, d]
    is the identity (reshapes keep element order, and n, d are fixed by the
    weights, so T' = T): HF's DeepSeek-V4 export views the streams as
    [batch, seq, n, d] between decoder layers and flattens them again.
    """
    chain = []
    node = producer.get(name)
    while node is not None and node.domain in ("", "ai.onnx") and node.op_type == "Reshape":
        chain.append(node)
        node = producer.get(node.input[0])
    return node, chain


def _topological(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Reorder ``nodes`` so every node follows its producers (stable otherwise)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            outer = _outer_inputs(node)
            if all(name in available for name in outer):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise RuntimeError("fuse_boundaries: the graph has a cycle or an undefined input: "
                               + ", ".join(sorted(set(_outer_inputs(rest[0])) - available)))
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _outer_inputs(node: onnx.NodeProto) -> list[str]:
    """The node's inputs plus the outer-scope names its subgraphs read."""
    names = list(node.input)
    for attr in node.attribute:
        for g in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            for sub in g.node:
                local.update(sub.output)
                names += [i for i in _outer_inputs(sub) if i not in local]
    return names
