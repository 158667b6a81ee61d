"""No silent GPU skips: the require switches fail, and the GPU runner's JUnit gate catches skips.

Each case runs pytest in a subprocess on a real GPU test module with no build
(an empty build root, a kernel library path that does not exist) and reads
its JUnit XML, exactly as scripts/gpu/run.sh gate and kernels do. The runner's
dry run (every mode) shows the commands it would run on the GPU machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mhc_export.testing.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "gpu" / "run.sh"
junit_gate = load_script(ROOT / "scripts" / "qa" / "junit_gate.py")

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


def _dry(tmp_path: Path, *args: str, **env: str) -> list[str]:
    """The commands `scripts/gpu/run.sh --dry-run ARGS` prints, one per line."""
    full = {**os.environ, "OUT": str(tmp_path / "out"), **env}
    for key in ("MHC_KERNELS_LIB", "MHC_MIN_GPU_TESTS", "MODES", "TESTS_K", "NCU_JOBS",
                "GATE_BUILD", "GATE_BENCH"):
        if key not in env:
            full.pop(key, None)
    proc = subprocess.run(["bash", str(RUNNER), "--dry-run", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def _one(lines: list[str], *parts: str) -> str:
    """The one printed command holding every part."""
    hits = [ln for ln in lines if ln.startswith("+ ") and all(p in ln for p in parts)]
    assert len(hits) == 1, (parts, lines)
    return hits[0]


def _floor(name: str) -> int:
    """A gated run's floor of GPU tests, as the runner sets it (raised when tests are added)."""
    m = re.search(rf"^{name}=(\d+)", RUNNER.read_text(), re.M)
    assert m, f"{name} is not set in {RUNNER}"
    return int(m[1])


REQUIRE = "MHC_REQUIRE_PLUGIN_BUILDS=1 MHC_REQUIRE_GPU=1"
KERNELS_ONLY = "-DMHC_BUILD_TRT_PLUGINS=OFF"


def test_runner_gate_builds_both_header_sets_and_gates_every_gpu_test(tmp_path):
    lines = _dry(tmp_path, "gate", "-m", "gpu")
    build = _one(lines, "build_plugins_ci.sh")
    assert f"MHC_TRT_HEADERS={ROOT}/.trt_headers" in build and "MHC_CUDA_ARCHS=90" in build
    switches = _one(lines, "export", "MHC_REQUIRE_GPU")
    assert REQUIRE in switches
    collect = _one(lines, "--collect-only")
    assert collect.endswith("-m gpu -m gpu")
    run = _one(lines, "timeout 480", "-m pytest")
    assert run.endswith(f"--junitxml={tmp_path}/out/tests.xml -m gpu")
    gate = _one(lines, "scripts/qa/junit_gate.py")
    assert gate.endswith(f"--expect {tmp_path}/out/gpu_tests.txt --min {_floor('MIN_GATE')}")
    order = [lines.index(x) for x in (build, switches, collect, run, gate)]
    assert order == sorted(order)
    assert "--min 7" in _one(_dry(tmp_path, "gate", MHC_MIN_GPU_TESTS="7"), "junit_gate")
    assert not [ln for ln in lines if "benchmarks/" in ln]
    # GATE_BENCH=1: after the gate, each benchmark driver once, each writing its JSON.
    benched = _dry(tmp_path, "gate", GATE_BENCH="1")
    drivers = sorted(p.name for p in (ROOT / "benchmarks").glob("bench_*.py"))
    for name in drivers:
        assert f"--json {tmp_path}/out/gate_{name[:-3]}.json" in _one(benched, f"benchmarks/{name}")
    assert benched.index(_one(benched, "junit_gate")) < benched.index(_one(benched, drivers[0]))
    # The short gate builds the TensorRT 11 set alone; an unknown build is refused.
    short = _one(_dry(tmp_path, "gate", GATE_BUILD="plugins"), "build_plugins")
    assert "scripts/dev/build_plugins.sh" in short and KERNELS_ONLY not in short
    proc = subprocess.run(["bash", str(RUNNER), "--dry-run", "gate"], cwd=ROOT, text=True,
                          env={**os.environ, "OUT": str(tmp_path / "o"), "GATE_BUILD": "x"},
                          capture_output=True, timeout=60)
    assert proc.returncode == 2 and "unknown build 'x'" in proc.stdout
    # Nothing was built: the dry run leaves no build tree behind.
    assert not (tmp_path / "out" / "build.txt").read_text()


def test_runner_kernels_fuzz_hf_modes(tmp_path):
    lines = _dry(tmp_path, "kernels", "--t-list", "1")
    assert KERNELS_ONLY in _one(lines, "scripts/dev/build_plugins.sh")
    assert REQUIRE in _one(lines, "export", "MHC_REQUIRE_GPU")
    assert f"--min {_floor('MIN_KERNELS')}" in _one(lines, "junit_gate.py")
    assert _one(lines, "bench_kernels.py").endswith(
        f"--json {tmp_path}/out/bench_kernels.json --t-list 1")

    lines = _dry(tmp_path, "fuzz", "50", "3")
    build = _one(lines, "build_plugins.sh")
    assert "TENSORRT_ROOT=" in build and KERNELS_ONLY not in build
    assert "--count 50 --seed 3" in _one(lines, "scripts/qa/fuzz.py --gpu")

    lines = _dry(tmp_path, "hf")
    pip = _one(lines, "pip install")
    assert lines.index(pip) < lines.index(_one(lines, "build_plugins.sh"))
    assert "PYTHONPATH=/tmp/site:" in _one(lines, "export PYTHONPATH=/tmp/site")
    # The carried set must import before anything is built.
    assert lines.index(_one(lines, "-c", "transformers.models.deepseek_v4")) < lines.index(
        _one(lines, "build_plugins.sh"))
    # Its GPU tests are gated like the others: skipped is failed.
    assert REQUIRE in _one(lines, "export", "MHC_REQUIRE_GPU")
    assert _one(lines, "junit_gate.py").endswith("--min 4")
    _one(lines, "-m pytest -q", "tests/test_hf_gpu.py")
    _one(lines, "benchmarks/bench_hf_layers.py")


def test_runner_stream_steps(tmp_path):
    lines = _dry(tmp_path, "stream")  # default steps: smoke bench ncu tests boundary
    assert KERNELS_ONLY in _one(lines, "build_plugins.sh")
    assert len([ln for ln in lines if "scripts/gpu/profile_kernel.py" in ln]) == 5 + 3
    assert "MHC_STREAM=0" in _one(lines, "bench_kernels.py", "bench_v5.json")
    assert "MHC_STREAM=0" in _one(lines, "bench_boundary.py", "boundary_v5.json")
    assert _one(lines, "-m pytest").endswith("-x -rP tests/test_kernels.py")
    lines = _dry(tmp_path, "stream", "peer", "post", "model", "stalls", "sass", "decode")
    assert "--peer flashinfer" in _one(lines, "bench_kernels.py", "bench_peer.json")
    assert "MHC_POST_TOKEN_MAJOR=1" in _one(lines, "post_tokenmajor.json")
    _one(lines, "bench_model_mhc.py")
    _one(lines, "cuobjdump -sass")
    assert len([ln for ln in lines if "smsp__average_warps_issue_stalled" in ln]) == 2
    assert len([ln for ln in lines if "--launch-count 4" in ln]) == 5


def test_runner_prefill_and_v41_steps(tmp_path):
    lines = _dry(tmp_path, "prefill", "smoke", "bench", "sweep", "ncu", MODES="auto legacy",
                 NCU_JOBS="twopass:pre:4096")
    assert "MHC_PREFILL=chunked" in _one(lines, "profile_kernel.py pre 300 1024 --n 2")
    assert "MHC_PREFILL=legacy" in _one(lines, "prefill_bench_legacy.json")
    assert "MHC_PREFILL_L2_FRAC=0.45" in _one(lines, "prefill_bench_frac45.json")
    assert "MHC_PREFILL=twopass" in _one(lines, "ncu --profile-from-start off")
    assert lines[-1] == "+ archive_out"  # every mode ends packing $OUT (8 files come back)

    lines = _dry(tmp_path, "v41", "build", "tests", "harness", "bench", "ncu", "stalls")
    assert REQUIRE in _one(lines, "export", "MHC_REQUIRE_GPU")
    _one(lines, "tests/test_kernels_v41.py")
    _one(lines, "tests/test_plugin_harness.py -k")
    assert "MHC_V41_BALANCE=1" in _one(lines, "bench_v41_balanced.json")
    assert len([ln for ln in lines if "regex:v41 " in ln]) == 2
    _one(lines, "regex:v41StreamKernel", "stalled")
    # A/B runs: each mode's switches set for its own commands only.
    lines = _dry(tmp_path, "prefill", "stalls", "bench", MODES="twopass+ilv1+tma1", MODE_OPS="pre",
                 STALL_MODES="twopass twopass+ilv1+tma1")
    stalls = [i for i, ln in enumerate(lines) if "regex:prefillKernel" in ln]
    assert len(stalls) == 2 and all("--profile-from-start off" in lines[i] for i in stalls)
    between = "".join(lines[stalls[0]:stalls[1]])  # twopass, then twopass+ilv1+tma1
    assert "MHC_PREFILL_ILV=1" in between and "MHC_PREFILL_TMA=1" in between
    # '+' is not a file name the device tool returns: the mode's files spell it '_'.
    assert "MHC_PREFILL_TMA=1" in _one(lines, "prefill_bench_twopass_ilv1_tma1.json")
    assert "--ops pre " in _one(lines, "prefill_bench_twopass_ilv1_tma1.json")
    assert not [ln for ln in lines if "+ilv" in ln and "/out/" in ln]
    lines = _dry(tmp_path, "v41", "bench", "stalls", V41_MODES="coalesced+staged",
                 V41_STALL_MODES="coalesced")
    both = _one(lines, "bench_v41_coalesced_staged.json")
    assert "MHC_V41_COALESCED_LOADS=1" in both and "MHC_V41_STAGED_STORES=1" in both
    assert "MHC_V41" not in _one(lines, "bench_v41_default.json")
    assert len([ln for ln in lines if "regex:v41StreamKernel" in ln]) == 2
    assert "--launch-count 4" in _one(_dry(tmp_path, "v41", "decode"), "post_mix 1 5120")
    lines = _dry(tmp_path, "v41", "build", "fuzz", FUZZ_COUNT="5")
    fuzz = _one(lines, "scripts/qa/fuzz.py --gpu --only kernels")
    assert "--count 5 --seed 23" in fuzz
    assert lines.index(_one(lines, "build_plugins.sh")) < lines.index(fuzz)


def test_runner_ab_times_this_tree_against_the_base_library(tmp_path):
    lines = _dry(tmp_path, "v41", "ab", BENCH_T="1,4096")
    base = f"MHC_KERNELS_LIB={ROOT}/.base/libmhc_kernels.so"
    assert base not in _one(lines, "bench_v41_default.json")
    assert base in _one(lines, "bench_v41_base.json", "--t-list 1,4096")
    assert base in _one(lines, "bench_kernels_base.json")
    assert base not in _one(lines, "bench_kernels_default.json")
    # pdl is the same step with plain first launches as the other side.
    lines = _dry(tmp_path, "v41", "pdl", PDL_V4="0")
    assert "MHC_PDL_FIRST=0" in _one(lines, "bench_v41_plainfirst.json")
    assert not [ln for ln in lines if "bench_kernels" in ln]
    # prepare-base builds REF in a worktree of its own and copies its library.
    lines = _dry(tmp_path, "prepare-base", "abc123")
    add = _one(lines, "git worktree add")
    assert add.endswith(" abc123") and "--detach" in add
    build = _one(lines, "build_plugins.sh")
    assert "-DMHC_BUILD_TRT_PLUGINS=OFF" in build
    assert lines.index(add) < lines.index(build) < lines.index(_one(lines, "cp ", ".base/"))


def test_runner_phases_reads_a_debug_build_of_its_own(tmp_path):
    lines = _dry(tmp_path, "v41", "phases", PHASES_T="8")
    build = _one(lines, "build_plugins.sh", "/build/phases")
    assert "-DMHC_PHASE_CLOCKS=ON" in build and "-DMHC_BUILD_TRT_PLUGINS=OFF" in build
    run = _one(lines, "phase_clocks.py")
    assert f"MHC_KERNELS_LIB={ROOT}/build/phases/kernels/libmhc_kernels.so" in run
    assert "--t 8" in run and lines.index(build) < lines.index(run)


def test_runner_prepare_copies_both_header_sets(tmp_path):
    lines = _dry(tmp_path, "prepare", MHC_TRT_HEADERS=str(tmp_path / "h"))
    copies = [ln for ln in lines if ln.startswith("+ cp -r")]
    assert copies == [f"+ cp -r {tmp_path}/h/tensorrt-{v} .trt_headers/tensorrt-{v}"
                      for v in ("10.16", "11.1")]


def test_runner_refuses_an_unknown_mode_or_step(tmp_path):
    proc = subprocess.run(["bash", str(RUNNER), "--dry-run", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: scripts/gpu/run.sh" in proc.stderr
    env = {**os.environ, "OUT": str(tmp_path), "MHC_DRY_RUN": "1"}
    proc = subprocess.run(["bash", str(RUNNER), "stream", "nope"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown step nope" in proc.stdout


def test_ci_never_requires_a_gpu():
    # CI and the test command never set MHC_REQUIRE_GPU: GPU tests skip there with the reason.
    for path in ("scripts/test.sh", ".ci/run"):
        assert "MHC_REQUIRE_GPU" not in (ROOT / path).read_text(), path
