"""``mhc-export check``: the mhc node contract of any ONNX file, before TensorRT sees it.

TensorRT's ONNX parser (onnx-tensorrt) passes a plugin only the attributes its
creator lists in getFieldNames and drops any other silently, and it imports a
node without plugin_namespace/plugin_version as its local function, also
silently; trtexec users have no other warning. This command names the node and
the problem (exit 2), and optionally counts the plugin layers per op type:
``--plugins LIB`` parses the model with TensorRT (exit 1 when an op fell back
to its local function), ``--layer-info FILE`` reads trtexec's
``--exportLayerInfo`` JSON of a built engine instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import EXIT_OK, EXIT_USAGE, EXIT_VALIDATION_FAILED
from ..core.preflight import load_onnx
from ..engine import plugin_layers as PL
from ..validation.onnx_check import mhc_node_problems


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="ONNX model to check")
    p.add_argument("--plugins", metavar="LIB",
                   help="also parse with TensorRT and this plugin library and count the "
                        "plugin layers per op (exit 1 if an op was imported as its function)")
    p.add_argument("--load", choices=("registry", "dlopen"), default="registry",
                   help="how --plugins enters the process: IPluginRegistry.load_library "
                        "(default; trtexec, mhc-export build) or a bare dlopen after "
                        "importing TensorRT (polygraphy --plugins)")
    p.add_argument("--tensorrt", choices=("tensorrt", "tensorrt-rtx"),
                   help="TensorRT flavour for --plugins (default: whichever exists)")
    p.add_argument("--layer-info", type=Path, metavar="FILE",
                   help="trtexec --exportLayerInfo JSON of an engine built from MODEL: count "
                        "its plugin layers per op (exit 1 if an op has none)")


def run(args: argparse.Namespace) -> int:
    if args.plugins and args.layer_info is not None:
        raise ValueError("--plugins parses the model, --layer-info reads a built engine's "
                         "layers: give one of them")
    model = load_onnx(args.model, flag="MODEL")
    if args.layer_info is not None and not args.layer_info.is_file():
        raise FileNotFoundError(f"--layer-info {args.layer_info} does not exist")
    problems = mhc_node_problems(model)
    for line in problems:
        print(f"mhc-export check: {args.model}: {line}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    node_ops = PL.mhc_node_ops(model)
    print(f"{args.model}: {len(node_ops)} mhc node(s) follow the contract")
    counts = None
    if args.layer_info is not None:
        counts = PL.count_by_op(PL.layer_info_plugin_names(args.layer_info), node_ops)
    elif args.plugins:
        from ..engine.builder import parse_plugin_layers

        counts, _ = parse_plugin_layers(args.model, args.plugins, load=args.load,
                                        tensorrt=args.tensorrt)
    if counts is None:
        return EXIT_OK
    print(f"plugin layers: {PL.describe(counts)}")
    missing = PL.missing_plugin_layers(counts, node_ops)
    for line in missing:
        print(f"mhc-export check: {args.model}: {line}", file=sys.stderr)
    return EXIT_VALIDATION_FAILED if missing else EXIT_OK
