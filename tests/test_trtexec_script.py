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


@pytest.mark.parametrize("major", ["10", "11"])
def test_precision_flags_per_major(models, major):
    proc = _dry_run(models, TRT_MAJOR=major)
    assert proc.returncode == 0, proc.stderr
    cmds = _commands(proc.stdout)
    assert len(cmds) == 4  # two models x (decode, prefill)
    bf16 = [c for c in cmds if "bfloat16" in c]
    fp32 = [c for c in cmds if "float32" in c]
    assert all(("--bf16" in c) == (major == "10") for c in bf16)
    assert not any("--bf16" in c or "--fp16" in c for c in fp32)


def test_plugin_serialization_only_with_version_compatible(models, tmp_path):
    lib = tmp_path / "libmhc_trt_plugins_trt11.so"
    lib.write_bytes(b"x")
    plain = _commands(_dry_run(models, TRT_MAJOR="11", MHC_PLUGIN_LIB=str(lib)).stdout)
    assert all(f"--dynamicPlugins={lib}" in c for c in plain)
    assert not any("--setPluginsToSerialize" in c or "--versionCompatible" in c for c in plain)
    embedded = _commands(_dry_run(models, TRT_MAJOR="11", MHC_PLUGIN_LIB=str(lib),
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
    for needle in ("--versionCompatible", "TensorRT 11 has no --bf16/--fp16", "10.7"):
        assert needle in head


def test_fused_boundary_fixtures_are_single_ops(tmp_path):
    (tmp_path / "mhc_post_pre_n4_d64_float32.onnx").write_bytes(b"")
    proc = _dry_run(tmp_path, TRT_MAJOR="11")
    cmds = _commands(proc.stdout)
    assert len(cmds) == 2 and all("x:1x64,residual:1x4x64" in c for c in cmds), cmds
