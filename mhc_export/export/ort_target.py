"""Graph pass for ONNX Runtime targets (``--target onnxruntime``): ORT's own contrib ops.

ONNX Runtime ships two ``com.microsoft`` contrib ops (since spec.FIRST_ORT_RELEASE, 1.31.0)
that compute exactly two of ours, with CPU and CUDA kernels:

* MhcCollapse(residual, pre_mix) is ``HyperConnectionPreMix(streams=residual,
  pre_mix)`` with ``reduction_scale`` = 1.0 and ``num_branches`` = 0 (grouped
  [T, n, d] streams; pre_mix float32 [T, n]): y[t, h] = sum_c x[t, c, h] * pre[t, c],
  summed in float32, rounded once.
* MhcPost(x, residual, post_mix, comb_mix) is ``HyperConnectionPostMix(streams=residual,
  block_output=x, post_mix, stream_mix=comb_mix)``, ``num_branches`` = 0:
  Y[k] = sum_c stream_mix[c, k] * streams[c] + post_mix[k] * block_output, i.e. comb's
  columns, as MhcPost.

V4's MhcPre is MhcMix followed by MhcCollapse with its own pre (the spec's identity), so
it becomes an ``mhc::MhcMix`` node and a HyperConnectionPreMix. MhcMix, MhcHead and
MhcSinkhorn stay ``mhc`` nodes, run by ORT through their local functions. The pass runs
on the unfused graph: MhcPostPre/MhcPostMix and friends have no ORT kernel, and splitting
them again would only undo the fusion. Both reduction_scale and num_branches are written
explicitly (a model builder elsewhere emits 1/n for another hyper-connection family).
"""

from __future__ import annotations

import onnx

from ..core.spec import MHC_COLLAPSE, MHC_MIX, MHC_POST, MHC_PRE, ONNX_DOMAIN, PLUGIN_ATTRIBUTES

ORT_DOMAIN = "com.microsoft"
ORT_DOMAIN_VERSION = 1
PRE_MIX = "HyperConnectionPreMix"
POST_MIX = "HyperConnectionPostMix"


def _pre_mix(residual: str, pre: str, out: str, name: str) -> onnx.NodeProto:
    return onnx.helper.make_node(PRE_MIX, [residual, pre], [out], name=name, domain=ORT_DOMAIN,
                                 reduction_scale=1.0, num_branches=0)


def _post_mix(node: onnx.NodeProto) -> onnx.NodeProto:
    x, residual, post, comb = node.input
    return onnx.helper.make_node(POST_MIX, [residual, x, post, comb], list(node.output),
                                 name=f"{node.name or 'post'}/ort", domain=ORT_DOMAIN,
                                 num_branches=0)


def to_onnxruntime(graph: onnx.GraphProto) -> dict[str, int]:
    """Rewrite ``graph`` in place; returns how many contrib nodes of each kind it emitted."""
    infos = {v.name: v for v in graph.value_info}
    nodes: list[onnx.NodeProto] = []
    counts = {PRE_MIX: 0, POST_MIX: 0}
    for node in graph.node:
        if node.domain != ONNX_DOMAIN:
            nodes.append(node)
        elif node.op_type == MHC_COLLAPSE.op_type:
            nodes.append(_pre_mix(*node.input, node.output[0], f"{node.name or 'collapse'}/ort"))
            counts[PRE_MIX] += 1
        elif node.op_type == MHC_POST.op_type:
            nodes.append(_post_mix(node))
            counts[POST_MIX] += 1
        elif node.op_type == MHC_PRE.op_type:
            nodes += _split_pre(graph, node, infos)
            counts[PRE_MIX] += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return counts


def _split_pre(graph: onnx.GraphProto, node: onnx.NodeProto,
               infos: dict[str, onnx.ValueInfoProto]) -> list[onnx.NodeProto]:
    """MhcPre -> MhcMix (its pre as a new tensor) + HyperConnectionPreMix (own pre)."""
    layer_input, post, comb = node.output
    pre = f"{layer_input}__pre_mix"
    base = node.name or "pre"
    mix = onnx.helper.make_node(MHC_MIX.op_type, list(node.input), [pre, post, comb],
                                name=f"{base}/mix", domain=ONNX_DOMAIN)
    plugin = {a.name for a in PLUGIN_ATTRIBUTES}
    mix.attribute.extend(a for a in node.attribute if a.name in set(MHC_MIX.defaults()) | plugin)
    if post in infos:  # pre has post_mix's shape and type: [T, n] float32
        info = onnx.ValueInfoProto()
        info.CopyFrom(infos[post])
        info.name = pre
        graph.value_info.append(info)
    return [mix, _pre_mix(node.input[0], pre, layer_input, f"{base}/ort")]


def ensure_opset(proto: onnx.ModelProto) -> None:
    """Import com.microsoft where the graph uses it."""
    used = any(n.domain == ORT_DOMAIN for n in proto.graph.node)
    if used and not any(o.domain == ORT_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(ORT_DOMAIN, ORT_DOMAIN_VERSION))
