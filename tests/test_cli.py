"""The command line: the main job end to end (tiny config), clear errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from mhc_export.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_export_script_runs_the_main_job(tmp_path):
    """python export_scripts/export.py, as a user runs it (tiny config to stay fast)."""
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [sys.executable, str(REPO / "export_scripts" / "export.py"), "--config", "tiny",
         "--out", str(out), "--seq", "6"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RESULT: PASS" in proc.stdout
    assert "[mhc-export] exporting to" in proc.stdout  # progress lines for the slow steps
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["passed"] is True
    assert report["comparisons"][0]["output"] == "logits"
    assert {i["backend"] for i in report["invariants"]} >= {"eager", "onnxruntime-cpu"}
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert json.loads(meta["mhc_export.config"])["name"] == "tiny"


def test_validate_command_rebuilds_the_reference(tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    ckpt = tmp_path / "tiny.safetensors"
    assert main(["export", "--config", "tiny", "--dtype", "float16", "--seed", "3",
                 "--out", str(out), "--no-validate", "--save-checkpoint", str(ckpt)]) == 0
    assert not (tmp_path / "tiny.report.json").exists()
    assert main(["validate", "--onnx", str(out), "--seq", "5"]) == 0
    assert "RESULT: PASS" in capsys.readouterr().out
    # Validating against other weights must fail on the numbers.
    other = tmp_path / "other.safetensors"
    assert main(["export", "--config", "tiny", "--seed", "4", "--out", str(tmp_path / "o.onnx"),
                 "--no-validate", "--save-checkpoint", str(other)]) == 0
    assert main(["validate", "--onnx", str(out), "--checkpoint", str(other), "--seq", "5"]) == 1
    # And a checkpoint round-trips through export.
    assert main(["export", "--checkpoint", str(ckpt), "--dtype", "float16",
                 "--out", str(tmp_path / "from_ckpt.onnx"), "--seq", "4"]) == 0


@pytest.mark.parametrize("op", ["pre", "sinkhorn", "post", "head"])
def test_single_op_export_and_validate(tmp_path, op, capsys):
    out = tmp_path / f"{op}.onnx"
    args = ["export", "--op", op, "--streams", "4", "--out", str(out), "--tokens", "9"]
    if op != "sinkhorn":  # Sinkhorn is float32 [T, n, n]: no d, no dtype
        args += ["--hidden", "48", "--dtype", "bfloat16"]
    if op == "pre":
        args += ["--attr", "sinkhorn_iters=7", "--attr", "post_mult=1.5"]
    assert main(args) == 0
    assert "RESULT: PASS" in capsys.readouterr().out
    node = onnx.load(out).graph.node[0]
    if op == "pre":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["sinkhorn_iters"] == 7 and attrs["post_mult"] == pytest.approx(1.5)
    assert main(["validate", "--onnx", str(out), "--tokens", "3"]) == 0


def test_default_single_op_path(tmp_path, monkeypatch):
    from mhc_export.core import preflight

    monkeypatch.setattr(preflight, "OUTPUT_DIR", tmp_path)
    assert main(["export", "--op", "post", "--hidden", "16", "--no-validate"]) == 0
    assert (tmp_path / "mhc_post_n4_d16_float32.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--dtype", "int8"], "unknown dtype 'int8'"),
        (["export", "--opset", "13"], "--opset 13: the exporter writes standard opsets 18..25"),
        (["export", "--op", "pre", "--attr", "iters=3"], "op pre has attributes"),
        (["export", "--op", "pre", "--attr", "sinkhorn_iters"], "expected NAME=VALUE"),
        (["export", "--op", "pre", "--attr", "sinkhorn_iters=many"], "not a valid int"),
        (["export", "--op", "pre", "--attr", "sinkhorn_iters=0"], "sinkhorn_iters must be >= 1"),
        (["export", "--op", "sinkhorn", "--attr", "eps=nan"], "eps must be a finite number"),
        (["export", "--seq", "0"], "--seq must be >= 1"),
        (["export", "--attr", "rms_eps=1e-5"], "--attr: applies to --op exports only"),
        (["export", "--checkpoint", "/nonexistent.safetensors"], "does not exist"),
        (["validate"], "give --onnx MODEL.onnx or --engine MODEL.plan"),
        (["validate", "--onnx", "/nonexistent.onnx"], "does not exist"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "x.onnx")] if args[0] == "export"
                else args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "x.onnx").exists()


def test_validate_rejects_foreign_onnx(tmp_path, capsys):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    assert main(["validate", "--onnx", str(path)]) == 2
    assert "was not exported by mhc-export" in capsys.readouterr().err


def test_module_entry_point_help():
    proc = subprocess.run([sys.executable, "-m", "mhc_export", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0
    for cmd in ("export", "validate", "build", "diagnose"):
        assert cmd in proc.stdout
