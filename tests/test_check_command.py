"""``mhc-export check``: the mhc node contract of an ONNX file, as trtexec users need it.

onnx-tensorrt passes a plugin only the attributes its creator lists and drops the
rest silently, and imports a node without plugin_namespace/plugin_version as its
local function, also silently; this command names the node and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from mhc_export.cli import main


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("check") / "sinkhorn.onnx"
    rc = main(["export", "--op", "sinkhorn", "--streams", "4", "--no-validate",
               "--attr", "iters=7", "--out", str(path)])
    assert rc == 0
    return path


def _edited(src: Path, dst: Path, edit) -> Path:
    model = onnx.load(str(src))
    edit(next(n for n in model.graph.node if n.domain == "mhc"))
    onnx.save(model, str(dst))
    return dst


def _drop(name: str):
    def edit(node):
        keep = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(keep)
    return edit


def test_clean_export_passes(exported, capsys):
    assert main(["check", str(exported)]) == 0
    assert "1 mhc node(s) follow the contract" in capsys.readouterr().out


@pytest.mark.parametrize("attr", ["plugin_namespace", "plugin_version"])
def test_node_without_plugin_identity_is_refused(exported, tmp_path, capsys, attr):
    """Such a node quietly takes the function path in TensorRT."""
    bad = _edited(exported, tmp_path / "bad.onnx", _drop(attr))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "node_sinkhorn (mhc::MhcSinkhorn)" in err and f"missing attribute {attr}" in err


def test_misspelled_attribute_is_named(exported, tmp_path, capsys):
    def misspell(node):
        for a in node.attribute:
            if a.name == "iters":
                a.name = "iter"
    bad = _edited(exported, tmp_path / "bad.onnx", misspell)
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "node_sinkhorn (mhc::MhcSinkhorn): unknown attribute 'iter'" in err


def _layer_info(path: Path, layers: list[dict]) -> Path:
    path.write_text(json.dumps({"Layers": layers, "Bindings": ["logits", "comb"]}))
    return path


def test_trtexec_layer_info_counts_plugin_layers_per_op(exported, tmp_path, capsys):
    good = _layer_info(tmp_path / "good.json", [
        {"Name": "node_sinkhorn", "LayerType": "PluginV3", "ParameterType": "PluginV3"},
        {"Name": "copy", "LayerType": "Reformat"}])
    assert main(["check", str(exported), "--layer-info", str(good)]) == 0
    assert "plugin layers: MhcSinkhorn x1" in capsys.readouterr().out
    # the node was imported as its local function: its body's layers, no plugin
    fallback = _layer_info(tmp_path / "fallback.json", [
        {"Name": "node_sinkhorn/Loop", "LayerType": "Loop"},
        {"Name": "node_sinkhorn/Div", "LayerType": "ElementWise"}])
    assert main(["check", str(exported), "--layer-info", str(fallback)]) == 1
    assert "MhcSinkhorn: 0 of 1 node(s) became plugin layers" in capsys.readouterr().err


def test_bad_arguments_exit_2_before_work(exported, tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.onnx")]) == 2
    assert main(["check", str(exported), "--layer-info", str(tmp_path / "nope.json")]) == 2
    assert main(["check", str(exported), "--plugins", "x.so", "--layer-info",
                 str(exported)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("mhc-export check: error:") for line in err)
