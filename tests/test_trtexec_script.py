"""engines/trtexec.sh passes each trtexec flag only where the TensorRT major has it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "engines" / "trtexec.sh"


def _dry_run(models: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "MHC_PLUGIN_LIB"}
    full.update(DRY_RUN="1", TRTEXEC="/nonexistent/trtexec", MHC_BUILD_ROOT="/nonexistent", **env)
    return subprocess.run(["bash", str(SCRIPT), str(models)], capture_output=True, text=True,
                          env=full, timeout=60)


@pytest.fixture
def models(tmp_path):
    for name in ("mhc_pre_n4_d64_bfloat16.onnx", "mhc_small_float32.onnx"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def _commands(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith("+ ")]


def _trtexec(out: str) -> list[str]:
    return [c for c in _commands(out) if "trtexec" in c.split()[1]]


@pytest.mark.parametrize("major", ["10", "11"])
def test_networks_are_strongly_typed_as_in_mhc_export_build(models, major):
    """No --bf16/--fp16 (weakly typed; gone in 11): strongly typed like `mhc-export build`,
    which on TensorRT 10 takes --stronglyTyped."""
    proc = _dry_run(models, TRT_MAJOR=major)
    assert proc.returncode == 0, proc.stderr
    cmds = _trtexec(proc.stdout)
    assert len(cmds) == 4  # two models x (decode, prefill)
    assert not any("--bf16" in c or "--fp16" in c for c in cmds)
    assert all(("--stronglyTyped" in c) == (major == "10") for c in cmds)


def test_every_model_is_checked_and_plugin_layers_counted(models, tmp_path):
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    cmds = _commands(_dry_run(models, TRT_MAJOR="11", MHC_PLUGIN_LIB=str(lib)).stdout)
    builds = [c for c in cmds if "--saveEngine=" in c]
    assert len(builds) == 4
    for i, c in enumerate(cmds):
        if "--saveEngine=" not in c:
            continue
        plan = c.split("--saveEngine=")[1].split()[0]
        info = plan.removesuffix(".plan") + ".layers.json"
        assert f"--exportLayerInfo={info}" in c and "--profilingVerbosity=detailed" in c
        onnx = c.split("--onnx=")[1].split()[0]
        # the next command counts that engine's plugin layers per op and fails on none
        assert "-m mhc_export check" in cmds[i + 1]
        assert cmds[i + 1].endswith(f"{onnx} --layer-info {info}")
    contract = [c for c in cmds if c.endswith(".onnx") and "-m mhc_export check" in c]
    assert len(contract) == 2  # the contract check of each model, before it is built


def test_plugin_serialization_only_with_version_compatible(models, tmp_path):
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    plain = _trtexec(_dry_run(models, TRT_MAJOR="11", MHC_PLUGIN_LIB=str(lib)).stdout)
    assert all(f"--dynamicPlugins={lib}" in c for c in plain)
    assert not any("--setPluginsToSerialize" in c or "--versionCompatible" in c for c in plain)
    embedded = _trtexec(_dry_run(models, TRT_MAJOR="11", MHC_PLUGIN_LIB=str(lib),
                                 SERIALIZE_PLUGINS="1").stdout)
    assert all(f"--setPluginsToSerialize={lib}" in c and "--versionCompatible" in c
               for c in embedded)


def test_library_of_the_other_major_is_refused(models, tmp_path):
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    proc = _dry_run(models, TRT_MAJOR="10", MHC_PLUGIN_LIB=str(lib))
    assert proc.returncode == 2
    assert "built for TensorRT 11 but trtexec is TensorRT 10" in proc.stderr
    assert "libmhc_trt_plugins_trt10.so" in proc.stderr


def test_help_text_names_the_rules():
    head = SCRIPT.read_text().split("set -euo pipefail")[0]
    for needle in ("--versionCompatible", "TensorRT 11 has no --bf16/--fp16", "10.7",
                   "--stronglyTyped", "--exportLayerInfo"):
        assert needle in head


def test_fused_boundary_fixtures_are_single_ops(tmp_path):
    (tmp_path / "mhc_post_pre_n4_d64_float32.onnx").write_bytes(b"")
    proc = _dry_run(tmp_path, TRT_MAJOR="11")
    cmds = _trtexec(proc.stdout)
    assert len(cmds) == 2 and all("x:1x64,residual:1x4x64" in c for c in cmds), cmds


POLYGRAPHY = ROOT / "engines" / "polygraphy_compare.sh"


def test_polygraphy_compare_imports_tensorrt_first_and_counts_plugin_layers(tmp_path):
    """polygraphy --plugins only dlopens the library, before its lazy `import tensorrt`:
    the script imports TensorRT first, and counts the plugin layers per op first."""
    import sys

    onnx_path = tmp_path / "m.onnx"
    from onnx import TensorProto, helper, save

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 4])])
    save(helper.make_model(g), str(onnx_path))
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    env = {**os.environ, "DRY_RUN": "1", "MHC_PLUGIN_LIB": str(lib),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(POLYGRAPHY), str(onnx_path)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cmds = _commands(proc.stdout)
    count = next(i for i, c in enumerate(cmds) if "--load dlopen" in c)
    assert cmds[count].endswith(f"-m mhc_export check {onnx_path} --plugins {lib} --load dlopen")
    run = next(i for i, c in enumerate(cmds) if " run " in c and "--trt" in c)
    assert count < run
    assert "import sys, tensorrt; from polygraphy import tools" in cmds[run]
    assert f"--plugins {lib}" in cmds[run]
