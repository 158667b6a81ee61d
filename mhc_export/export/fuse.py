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

DeepSeek-V4.1 (delayed pre) boundaries are rewritten the same way:

    MhcPost(x, R, post, comb) -> R'
    MhcMix(R', fn, s, b) -> p', post', comb'     =>   MhcPostMix(x, R, p, post, comb, fn, s, b)
    MhcCollapse(R', p) -> y                              -> R', y, p', post', comb'

and the last MhcPost -> MhcCollapse into MhcPostCollapse (again only when the
collapse is the post's sole consumer). A boundary where anything rewrites the
stream between the post and the next site (the engram layers) does not match:
that site's MhcMix and MhcCollapse read the rewritten stream, not R'. Nor does
one whose collapse weight depends on R' (a site collapsing with its own pre,
V4's wiring), which MhcPostMix cannot express.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

from ..core.spec import (
    MHC_COLLAPSE,
    MHC_HEAD,
    MHC_MIX,
    MHC_POST,
    MHC_POST_COLLAPSE,
    MHC_POST_HEAD,
    MHC_POST_MIX,
    MHC_POST_PRE,
    MHC_PRE,
    ONNX_DOMAIN,
)


def fuse_boundaries(graph: onnx.GraphProto) -> dict[str, int]:
    """Fuse in place; returns how many boundaries of each kind were fused."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    replaced: dict[int, onnx.NodeProto | None] = {}  # id(node) -> its replacement (None: drop)
    fused = {MHC_POST_PRE.op_type: 0, MHC_POST_HEAD.op_type: 0,
             MHC_POST_MIX.op_type: 0, MHC_POST_COLLAPSE.op_type: 0}
    _fuse_v41(graph, producer, consumers, graph_outputs, replaced, fused)
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


def _is_mhc(node: onnx.NodeProto, op_type: str) -> bool:
    return node.domain == ONNX_DOMAIN and node.op_type == op_type


def _fuse_v41(graph: onnx.GraphProto, producer, consumers, graph_outputs,
              replaced: dict[int, onnx.NodeProto | None], fused: dict[str, int]) -> None:
    """V4.1 boundaries: MhcPost -> (MhcMix, MhcCollapse) and the final MhcPost -> MhcCollapse."""
    for post in graph.node:
        if not _is_mhc(post, MHC_POST.op_type) or id(post) in replaced:
            continue
        r = post.output[0]
        readers = consumers[r]
        mixes = [n for n in readers if _is_mhc(n, MHC_MIX.op_type) and n.input[0] == r]
        collapses = [n for n in readers if _is_mhc(n, MHC_COLLAPSE.op_type) and n.input[0] == r]
        if len(collapses) != 1 or len(mixes) > 1:
            continue
        collapse = collapses[0]
        if _depends_on(producer, collapse.input[1], r):
            continue  # the collapse weight is made from R' (own pre): not a delayed-pre site
        if mixes:
            mix = mixes[0]
            new = onnx.helper.make_node(
                MHC_POST_MIX.op_type, [post.input[0], post.input[1], collapse.input[1],
                                       *post.input[2:], *mix.input[1:]],
                [r, collapse.output[0], *mix.output],
                name=f"{post.name or 'post'}+{mix.name or 'mix'}", domain=ONNX_DOMAIN)
            new.attribute.extend(mix.attribute)
            replaced[id(mix)] = None
            kind = MHC_POST_MIX
        else:
            if len(readers) != 1 or r in graph_outputs:
                continue  # someone else needs the residual MhcPostCollapse would not output
            new = onnx.helper.make_node(
                MHC_POST_COLLAPSE.op_type, [post.input[0], post.input[1], collapse.input[1],
                                            *post.input[2:]],
                list(collapse.output), name=f"{post.name or 'post'}+{collapse.name or 'collapse'}",
                domain=ONNX_DOMAIN)
            new.attribute.extend(collapse.attribute)  # the plugin identity (no fields)
            kind = MHC_POST_COLLAPSE
        replaced[id(post)] = new
        replaced[id(collapse)] = None
        fused[kind.op_type] += 1


def _depends_on(producer, name: str, source: str) -> bool:
    """Whether tensor ``name`` is computed (transitively) from tensor ``source``."""
    seen, stack = set(), [name]
    while stack:
        cur = stack.pop()
        if cur == source:
            return True
        node = producer.get(cur)
        if node is None or cur in seen:
            continue
        seen.add(cur)
        stack.extend(_outer_inputs(node))
    return False


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
