"""Check the mhc nodes of an ONNX graph against the op contract, before a parser sees them.

TensorRT's parser hands a node's attributes to the plugin creator as fields
typed by the ONNX attribute types, and picks the plugin by name, version and
namespace; a node that breaks the contract fails there with a message about
the plugin, or worse, builds from the local function. This check names the
node and what is wrong instead: unknown op, wrong input or output count, an
attribute the op does not have or of the wrong type (onnx-tensorrt drops an
attribute that the creator does not list, silently), a plugin_version or
plugin_namespace that is missing or that the library does not provide.
"""

from __future__ import annotations

import onnx
from onnx import AttributeProto

from ..core.spec import ALL_OPS as OPS
from ..core.spec import ONNX_DOMAIN, PLUGIN_ATTRIBUTES, PLUGIN_NAMESPACE, PLUGIN_VERSION

_ONNX_KIND = {AttributeProto.FLOAT: "float", AttributeProto.INT: "int",
              AttributeProto.STRING: "string"}
_CONTRACTS = {c.op_type: c for c in OPS.values()}


def mhc_node_problems(model: onnx.ModelProto) -> list[str]:
    """One line per problem found in the graph's mhc-domain nodes (empty when all is well)."""
    problems = []
    for node in model.graph.node:
        if node.domain != ONNX_DOMAIN:
            continue
        where = f"node {node.name or '(unnamed)'} ({ONNX_DOMAIN}::{node.op_type})"
        contract = _CONTRACTS.get(node.op_type)
        if contract is None:
            problems.append(f"{where}: unknown mhc op; the plugins are {sorted(_CONTRACTS)}")
            continue
        given = [i for i in node.input if i]
        if len(node.input) != len(contract.inputs) or len(given) != len(contract.inputs):
            problems.append(f"{where}: takes {len(contract.inputs)} inputs "
                            f"({', '.join(contract.inputs)}), got {len(given)}")
        if len(node.output) != len(contract.outputs):
            problems.append(f"{where}: has {len(contract.outputs)} outputs "
                            f"({', '.join(contract.outputs)}), got {len(node.output)}")
        kinds = {a.name: a.kind for a in (*contract.attributes, *PLUGIN_ATTRIBUTES)}
        for attr in node.attribute:
            if attr.name not in kinds:
                problems.append(f"{where}: unknown attribute {attr.name!r}; {node.op_type} takes "
                                f"{sorted(kinds)}")
                continue
            got = _ONNX_KIND.get(attr.type, AttributeProto.AttributeType.Name(attr.type))
            if got != kinds[attr.name]:
                problems.append(f"{where}: attribute {attr.name} must be {kinds[attr.name]}, "
                                f"got {got}")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for name, want in (("plugin_version", PLUGIN_VERSION),
                           ("plugin_namespace", PLUGIN_NAMESPACE)):
            value = attrs.get(name)
            if name not in attrs:
                # onnx-tensorrt looks the creator up by these two attributes; without
                # them the node silently takes its local-function path.
                problems.append(f"{where}: missing attribute {name} (must be {want!r}); "
                                "TensorRT's parser would import the node as its local "
                                "function, never as the plugin")
            elif isinstance(value, bytes) and value.decode() != want:
                problems.append(f"{where}: {name} {value.decode()!r} is not provided by the mhc "
                                f"plugin library (it has {name} {want!r})")
    return problems


def check_mhc_nodes(model: onnx.ModelProto, source: str = "the model") -> None:
    """Raise ValueError naming every mhc node of ``model`` that breaks the contract."""
    problems = mhc_node_problems(model)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ValueError(f"{source}: " + "; ".join(problems[:3]) + more)
