"""`mhc-export build` and engine validation: arguments, exit codes, the no-TensorRT path."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import pytest
import torch
from test_engine_builder import rtx_targets, tiny_onnx

from mhc_export import cli
from mhc_export.commands import build as build_cmd
from mhc_export.core.errors import EXIT_NO_TENSORRT, EXIT_USAGE, TensorRTNotAvailable
from mhc_export.engine import builder as B
from mhc_export.engine import runtime as R
from mhc_export.engine import validate as V
from mhc_export.engine.trt_module import load_tensorrt


def _parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser(only="build").parse_args(["build", *argv])


def _no_tensorrt(prefer=None):
    raise TensorRTNotAvailable("no TensorRT Python API found (test): install TensorRT")


def test_build_arguments_parse_to_values():
    a = _parse(["--onnx", "m.onnx", "--out", "m.plan", "--bf16", "--decode-max-tokens", "8",
                "--prefill-max-tokens", "1024", "--timing-cache", "t.cache",
                "--tensorrt", "tensorrt-rtx", "--plugins", "lib.so",
                "--rtx-compute-capability", "SM89", "--rtx-compute-capability", "SM120"])
    assert (a.onnx, a.out, a.bf16, a.fp16) == ("m.onnx", "m.plan", True, False)
    assert (a.decode_max_tokens, a.prefill_max_tokens) == (8, 1024)
    assert (a.timing_cache, a.tensorrt, a.plugins) == ("t.cache", "tensorrt-rtx", "lib.so")
    assert a.compute_capabilities == ["SM89", "SM120"]


def test_build_defaults():
    a = _parse(["--onnx", "m.onnx", "--out", "m.plan"])
    assert a.decode_max_tokens == B.DEFAULT_DECODE_MAX_TOKENS
    assert a.prefill_max_tokens == B.DEFAULT_PREFILL_MAX_TOKENS
    assert not (a.fp16 or a.bf16 or a.strongly_typed or a.no_tf32)


@pytest.mark.parametrize("argv, needle", [
    (["--fp16", "--bf16"], "not allowed with argument"),
    (["--decode-max-tokens", "0"], "expected a positive integer, got 0"),
    (["--prefill-max-tokens", "lots"], "expected a positive integer, got 'lots'"),
    (["--tensorrt", "onnxruntime"], "invalid choice"),
])
def test_bad_build_arguments_exit_2_with_reason(argv, needle, capsys):
    with pytest.raises(SystemExit) as ei:
        _parse(["--onnx", "m.onnx", "--out", "m.plan", *argv])
    assert ei.value.code == 2
    assert needle in capsys.readouterr().err


def test_build_without_tensorrt_exits_3_with_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(B, "load_tensorrt", _no_tensorrt)
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    rc = cli.main(["build", "--onnx", str(onnx_path), "--out", str(tmp_path / "m.plan")])
    assert rc == EXIT_NO_TENSORRT == 3
    assert "mhc-export build: error: no TensorRT Python API found" in capsys.readouterr().err
    assert not (tmp_path / "m.plan").exists()


def test_build_exits_3_where_tensorrt_is_really_absent(tmp_path, capsys):
    try:
        load_tensorrt()
    except TensorRTNotAvailable:
        pass
    else:
        pytest.skip("TensorRT is installed here; the monkeypatched test covers exit 3")
    rc = cli.main(["build", "--onnx", str(tiny_onnx(tmp_path / "m.onnx")),
                   "--out", str(tmp_path / "m.plan")])
    assert rc == 3
    assert "no TensorRT Python API found" in capsys.readouterr().err


def test_build_of_missing_onnx_exits_2_naming_it(tmp_path, capsys):
    rc = cli.main(["build", "--onnx", str(tmp_path / "absent.onnx"),
                   "--out", str(tmp_path / "m.plan")])
    assert rc == EXIT_USAGE
    assert "absent.onnx does not exist" in capsys.readouterr().err


def test_build_from_args_passes_options_and_defaults(tmp_path, monkeypatch):
    seen = {}

    def fake_build(onnx_path, plan_path, **kw):
        seen.update(kw, onnx=onnx_path, plan=plan_path)
        return "result"

    monkeypatch.setattr(build_cmd, "build_engine", fake_build)
    args = _parse(["--onnx", "m.onnx", "--out", "x.plan", "--fp16", "--no-tf32",
                   "--decode-max-tokens", "2", "--serialize-plugins"])
    assert build_cmd.build_from_args("m.onnx", args, "x.plan") == "result"
    assert seen["plan"] == Path("x.plan")
    assert seen["precision"] == B.Precision(fp16=True, bf16=False, tf32=False,
                                            strongly_typed=False)
    assert (seen["decode_max_tokens"], seen["serialize_plugins"]) == (2, True)
    # the export command's namespace has none of the build options: defaults apply,
    # and the plan goes beside the ONNX
    seen.clear()
    build_cmd.build_from_args(tmp_path / "model.onnx", argparse.Namespace())
    assert seen["plan"] == tmp_path / "model.plan"
    assert seen["precision"] == B.Precision()
    assert seen["prefill_max_tokens"] == B.DEFAULT_PREFILL_MAX_TOKENS
    assert seen["plugins"] is None and seen["progress"] is True


def test_add_build_options_extends_another_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--build-engine", action="store_true")
    build_cmd.add_build_options(p)
    a = p.parse_args(["--build-engine", "--bf16", "--prefill-max-tokens", "512"])
    assert a.build_engine and a.bf16 and a.prefill_max_tokens == 512


# ---------------------------------------------------------------------------
# engine validation


def test_validate_engine_without_tensorrt_raises_exit_code_3(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "load_tensorrt", _no_tensorrt)
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    Path(f"{plan}.json").write_text(json.dumps({"onnx": {"path": str(onnx_path)}}))
    with pytest.raises(TensorRTNotAvailable) as ei:
        V.validate_engine(plan)
    assert ei.value.exit_code == EXIT_NO_TENSORRT
    assert "no TensorRT Python API found" in str(ei.value)


def test_validate_engine_needs_an_onnx_model(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(ValueError, match="records none; pass the ONNX model"):
        V.validate_engine(plan)
    with pytest.raises(FileNotFoundError, match=r"gone\.onnx"):
        V.validate_engine(plan, tmp_path / "gone.onnx")
    with pytest.raises(FileNotFoundError, match=r"absent\.plan"):
        V.validate_engine(tmp_path / "absent.plan", tmp_path / "gone.onnx")


def test_validate_command_maps_no_tensorrt_to_exit_3(tmp_path, monkeypatch, capsys):
    try:
        importlib.import_module("mhc_export.commands.validate")
    except ImportError as e:
        pytest.skip(f"the validate command is not in the tree yet: {e}")
    monkeypatch.setattr(V, "load_tensorrt", _no_tensorrt)
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    Path(f"{plan}.json").write_text(json.dumps({"onnx": {"path": str(onnx_path)}}))
    rc = cli.main(["validate", "--engine", str(plan)])
    assert rc == EXIT_NO_TENSORRT
    assert "no TensorRT" in capsys.readouterr().err


def test_inputs_for_the_full_model_interface(tmp_path):
    import onnx
    from test_engine_builder import tokens_onnx

    model = onnx.load(str(tokens_onnx(tmp_path / "t.onnx", ["batch", "seq"])))
    inputs = V.make_inputs(model, tokens=5, seed=1)
    assert inputs["tokens"].shape == (1, 5) and inputs["tokens"].dtype == torch.int64
    # token ids index the 32-row embedding table found behind the Gather
    assert int(inputs["tokens"].min()) >= 0 and int(inputs["tokens"].max()) < 32
    assert torch.equal(inputs["tokens"], V.make_inputs(model, tokens=5, seed=1)["tokens"])
    assert V.make_inputs(model, tokens=5, seed=1, batch=2, seq=3)["tokens"].shape == (2, 3)


def test_tolerance_follows_build_precision():
    f32 = torch.zeros(1)
    assert V._tolerance(f32, None) == pytest.approx(1e-4)
    assert V._tolerance(f32, {"precision": {"requested": {"bf16": True}}}) == pytest.approx(2e-2)
    assert V._tolerance(torch.zeros(1, dtype=torch.int64), None) == 0.0


@pytest.mark.trt
def test_build_command_with_real_tensorrt(tmp_path, monkeypatch, capsys):
    try:
        trt = load_tensorrt()
    except TensorRTNotAvailable as e:
        pytest.skip(f"needs TensorRT or TensorRT-RTX: {e}")
    monkeypatch.setenv("MHC_BUILD_ROOT", str(tmp_path / "build"))
    monkeypatch.delenv(R.PLUGIN_ENV, raising=False)
    plan = tmp_path / "m.plan"
    argv = ["build", "--onnx", str(tiny_onnx(tmp_path / "m.onnx")), "--out", str(plan),
            "--decode-max-tokens", "2", "--prefill-max-tokens", "32", "--no-progress"]
    for cc in rtx_targets(trt) or []:
        argv += ["--rtx-compute-capability", cc]
    assert cli.main(argv) == 0
    side = json.loads(Path(f"{plan}.json").read_text())
    assert side["plan"]["bytes"] == plan.stat().st_size
    assert "profile decode: x [1, 8]..[2, 8]" in capsys.readouterr().err
