"""No silent GPU skips: the require switches fail, and the GPU scripts' JUnit gate catches skips.

Each case runs pytest in a subprocess on a real GPU test module with no build
(an empty build root, a kernel library path that does not exist) and reads
its JUnit XML, exactly as scripts/gpu_all.sh and scripts/gpu_kernels.sh do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import junit_gate  # noqa: E402

MODULES = ["tests/test_kernels.py", "tests/test_kernels_lib.py", "tests/test_plugin_harness.py",
           "tests/test_plugin_lib.py"]


def _pytest(tmp_path: Path, args: list[str], **env: str) -> tuple[int, Path, str]:
    xml = tmp_path / "r.xml"
    full = {**os.environ, "PYTHONPATH": str(ROOT), "MHC_BUILD_ROOT": str(tmp_path / "nobuild"),
            "MHC_KERNELS_LIB": str(tmp_path / "nobuild" / "libmhc_kernels.so"), **env}
    for key in ("MHC_REQUIRE_PLUGIN_BUILDS", "MHC_REQUIRE_GPU", "MHC_PLUGIN_BUILD_DIR"):
        if key not in env:
            full.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--junitxml={xml}", *args],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)
    return proc.returncode, xml, proc.stdout[-3000:] + proc.stderr[-2000:]


def _outcomes(xml: Path) -> dict[str, int]:
    counts = {"passed": 0, "skipped": 0, "failure": 0, "error": 0}
    for outcome, _ in junit_gate.read_cases(xml).values():
        counts[outcome] += 1
    return counts


@pytest.mark.parametrize("module", MODULES)
def test_missing_build_skips_by_default_and_fails_when_required(tmp_path, module):
    rc, xml, out = _pytest(tmp_path, [module])
    skipped = _outcomes(xml)
    assert rc == 0 and skipped["skipped"] > 0 and not skipped["failure"] + skipped["error"], out
    rc, xml, out = _pytest(tmp_path, [module], MHC_REQUIRE_PLUGIN_BUILDS="1")
    got = _outcomes(xml)
    assert rc != 0, out
    # Every test that skipped for the missing build now fails instead (tool-missing skips
    # such as nm stay skips; the test_plugin_lib cases that build nothing still pass).
    assert got["failure"] + got["error"] >= skipped["skipped"] - got["skipped"] > 0, (got, out)
    messages = [m for o, m in junit_gate.read_cases(xml).values() if o in ("failure", "error")]
    assert all("not built" in m and "MHC_REQUIRE_PLUGIN_BUILDS=1" in m for m in messages), messages


def test_missing_gpu_fails_only_under_mhc_require_gpu(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the no-GPU path cannot be exercised")
    # A fake harness build is enough: the GPU check comes after the build check.
    build = tmp_path / "nobuild" / "plugins-trt11"
    build.mkdir(parents=True)
    for name in ("mhc_plugin_harness", "libmhc_trt_plugins_trt11.so"):
        (build / name).write_text("")
    select = ["tests/test_plugin_harness.py", "-m", "gpu"]
    rc, xml, out = _pytest(tmp_path, select, MHC_REQUIRE_PLUGIN_BUILDS="1")
    got = _outcomes(xml)
    assert rc == 0 and got["skipped"] >= 16 and got["passed"] == 0, (got, out)
    assert "needs a CUDA GPU" in ET.parse(xml).getroot().find(".//skipped").get("message")
    rc, xml, out = _pytest(tmp_path, select, MHC_REQUIRE_PLUGIN_BUILDS="1", MHC_REQUIRE_GPU="1")
    got = _outcomes(xml)
    assert rc != 0 and got["error"] + got["failure"] >= 16 and got["skipped"] == 0, (got, out)


def _xml(tmp_path: Path, cases: str) -> Path:
    path = tmp_path / "x.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


def _ids(tmp_path: Path, *ids: str) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n\n3 tests collected\n")
    return path


def test_gate_fails_on_a_skipped_missing_or_too_few_gpu_tests(tmp_path, capsys):
    a = "tests/test_kernels.py::test_pre_v4_all_t[1]"
    b = "tests/test_plugin_harness.py::test_enqueue_v4_pro_width_bf16[pre]"
    ok = ('<testcase classname="tests.test_kernels" name="test_pre_v4_all_t[1]"/>'
          '<testcase classname="tests.test_plugin_harness" '
          'name="test_enqueue_v4_pro_width_bf16[pre]"/>'
          '<testcase classname="tests.test_engine_runtime" name="test_trt">'
          '<skipped message="needs TensorRT"/></testcase>')
    ids = _ids(tmp_path, a, b)
    assert junit_gate.main([str(_xml(tmp_path, ok)), "--expect", str(ids), "--min", "2"]) == 0
    assert "allowed skip (not a GPU test)" in capsys.readouterr().out
    # The same run with one GPU test skipped, or absent, or with too few collected.
    skipped = ok.replace('name="test_pre_v4_all_t[1]"/>',
                         'name="test_pre_v4_all_t[1]"><skipped message="no GPU"/></testcase>')
    assert junit_gate.main([str(_xml(tmp_path, skipped)), "--expect", str(ids)]) == 1
    assert "GPU test skipped: " + a in capsys.readouterr().out
    missing = ok.split("<testcase", 2)
    assert junit_gate.main([str(_xml(tmp_path, "<testcase" + missing[2])), "--expect",
                            str(ids)]) == 1
    assert "GPU test missing" in capsys.readouterr().out
    assert junit_gate.main([str(_xml(tmp_path, ok)), "--expect", str(ids), "--min", "3"]) == 1
    assert "only 2 GPU tests collected" in capsys.readouterr().out
    # A failure anywhere (not only in a GPU test) fails the gate too.
    failed = ok.replace('<skipped message="needs TensorRT"/>', '<failure message="boom"/>')
    assert junit_gate.main([str(_xml(tmp_path, failed)), "--expect", str(ids)]) == 1
    assert junit_gate.main([str(tmp_path / "none.xml"), "--expect", str(ids)]) == 2


def test_gpu_scripts_run_the_gate_with_both_switches():
    for script in ("gpu_all.sh", "gpu_kernels.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1" in text, script
        # The gated list is the gpu-marked tests (gpu_kernels.sh adds "or peer"
        # when the FlashInfer bundle was carried).
        assert "scripts/junit_gate.py" in text, script
        assert "-m gpu" in text or ("marks=gpu" in text and '-m "$marks"' in text), script
    # CI and the test command never set MHC_REQUIRE_GPU: GPU tests skip there with the reason.
    for path in ("scripts/test.sh", ".ci/run"):
        assert "MHC_REQUIRE_GPU" not in (ROOT / path).read_text(), path
