"""Which mhc nodes became plugin layers, per op type: the check every build with a plugin
library runs (``mhc-export build``, ``mhc-export check --plugins``, engines/*.sh).

TensorRT's ONNX parser imports an mhc node as a plugin layer when a creator of
its name, version and namespace is registered, and as its ONNX local function
otherwise, without an error. A build with the plugin library is therefore only
known to use the plugins when its layers are counted: per op type, because one
op whose creator is missing (or one node without ``plugin_namespace``) falls
back alone. onnx-tensorrt names a node's layer after the node, which is how a
plugin layer is matched to its op type.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx

from ..core.spec import ONNX_DOMAIN

UNMATCHED = "(unmatched)"  # plugin layers whose name is no mhc node's


def mhc_node_ops(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> op type for the graph's mhc nodes (unnamed nodes are keyed by index)."""
    return {(n.name or f"#{i}"): n.op_type for i, n in enumerate(model.graph.node)
            if n.domain == ONNX_DOMAIN}


def _op_of(layer_name: str, node_ops: Mapping[str, str]) -> str:
    if layer_name in node_ops:
        return node_ops[layer_name]
    # onnx-tensorrt makes a repeated name unique with a "_<k>" suffix.
    head, _, tail = layer_name.rpartition("_")
    return node_ops.get(head, UNMATCHED) if tail.isdigit() else UNMATCHED


def count_by_op(plugin_layer_names: list[str], node_ops: Mapping[str, str]) -> dict[str, int]:
    """Plugin layers per mhc op type (every op of the model listed, 0 where none)."""
    counts = Counter(_op_of(name, node_ops) for name in plugin_layer_names)
    out = {op: counts.get(op, 0) for op in sorted(set(node_ops.values()))}
    if counts.get(UNMATCHED):
        out[UNMATCHED] = counts[UNMATCHED]
    return out


def network_plugin_layer_names(network: Any, mod: Any) -> list[str] | None:
    """Names of a parsed INetworkDefinition's plugin layers (None where the API cannot tell)."""
    layer_type = getattr(mod, "LayerType", None)
    if layer_type is None or not hasattr(network, "num_layers"):
        return None
    kinds = {getattr(layer_type, k) for k in ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3")
             if hasattr(layer_type, k)}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    return [str(getattr(layer, "name", "")) for layer in layers if layer.type in kinds]


def layer_info_plugin_names(path: str | os.PathLike[str]) -> list[str]:
    """Plugin layer names in trtexec's ``--exportLayerInfo`` JSON (with
    ``--profilingVerbosity=detailed``, which gives each layer its type)."""
    data = json.loads(Path(path).read_text())
    layers = data.get("Layers", []) if isinstance(data, dict) else data
    names = []
    for layer in layers:
        if not isinstance(layer, dict):
            continue  # profilingVerbosity=layer_names_only lists bare names: no types
        kind = f"{layer.get('LayerType', '')} {layer.get('ParameterType', '')}"
        if "plugin" in kind.lower():
            names.append(str(layer.get("Name", "")))
    return names


def missing_plugin_layers(counts: Mapping[str, int], node_ops: Mapping[str, str]) -> list[str]:
    """One line per op type with fewer plugin layers than nodes (empty when all are plugins).

    Plugin layers that match no node name are credited to the ops short of layers, so a
    renamed layer is not reported as a fallback; only a real shortfall remains.
    """
    nodes = Counter(node_ops.values())
    spare = counts.get(UNMATCHED, 0)
    problems = []
    for op in sorted(nodes):
        have = counts.get(op, 0)
        if have < nodes[op]:
            used = min(spare, nodes[op] - have)
            spare -= used
            have += used
        if have < nodes[op]:
            problems.append(f"{op}: {counts.get(op, 0)} of {nodes[op]} node(s) became plugin "
                            "layers (the rest were imported as their ONNX local functions)")
    return problems


def describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in counts.items()) or "no mhc nodes"
