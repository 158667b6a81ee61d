"""Bad input: exit 2 and one line naming the problem, checked before any work, nothing written.

One test per defect found by trying the tool as a new user would (issue 8).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from support import fails, set_attr

from mhc_export.cli import main
from mhc_export.core import preflight, spec
from mhc_export.export.single_op import SingleOp, export_single_op
from mhc_export.validation.onnx_check import mhc_node_problems

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    onnx_path, ckpt = base / "tiny.onnx", base / "tiny.safetensors"
    assert main(["export", "--config", "tiny", "--out", str(onnx_path), "--no-validate",
                 "--save-checkpoint", str(ckpt)]) == 0
    return onnx_path, ckpt


# 1. corrupt or truncated checkpoint
@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_checkpoint(tmp_path, capsys, tiny, kind):
    bad = tmp_path / "bad.safetensors"
    data = tiny[1].read_bytes()
    bad.write_bytes(os.urandom(4096) if kind == "random" else data[: len(data) // 2])
    out = tmp_path / "m.onnx"
    fails(["export", "--checkpoint", str(bad), "--out", str(out)], capsys,
           str(bad), "corrupt or truncated")
    assert not out.exists()


# 2. corrupt or truncated ONNX
@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_onnx(tmp_path, capsys, tiny, kind):
    bad = tmp_path / "bad.onnx"
    data = tiny[0].read_bytes()
    bad.write_bytes(os.urandom(2048) if kind == "random" else data[: len(data) // 3])
    fails(["validate", "--onnx", str(bad)], capsys, str(bad), "not a readable ONNX model")


# 3. n outside 1..8: one rule, checked before export, stated in --help
@pytest.mark.parametrize("streams", [0, 9, -1])
def test_streams_limit(tmp_path, capsys, streams):
    out = tmp_path / "p.onnx"
    fails(["export", "--op", "pre", "--streams", str(streams), "--out", str(out)], capsys,
           "--streams must be in 1..8")
    assert not out.exists()


def test_streams_rule_is_stated_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "1..8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    assert "1..8" in capsys.readouterr().out
    fails(["diagnose", "--streams", "9"], capsys, "--streams must be in 1..8")


def test_one_stream_exports(tmp_path):
    assert main(["export", "--op", "pre", "--streams", "1", "--hidden", "8",
                 "--out", str(tmp_path / "p1.onnx"), "--tokens", "3"]) == 0


# 4. --out naming a directory (or under a file)
def test_out_is_a_directory(tmp_path, capsys):
    fails(["export", "--op", "post", "--out", str(tmp_path)], capsys, "is a directory")
    f = tmp_path / "file"
    f.write_text("x")
    fails(["export", "--op", "post", "--out", str(f / "m.onnx")], capsys, "is a file")
    fails(["export", "--config", "tiny", "--out", str(tmp_path / "m.onnx"),
            "--report", str(tmp_path)], capsys, "--report", "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# 5. a validation too large for memory is refused early, with the number
def test_validation_memory_estimate(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    err = fails(["export", "--config", "tiny", "--seq", "100000", "--out", str(out)], capsys,
                 "GiB of memory", "lower --batch/--seq or pass --no-validate")
    assert not out.exists()
    needed = float(err.split("needs about ")[1].split(" GiB")[0])
    assert needed > 100  # 2 x 4 heads x 1e10 float32 scores, and more


# 6. conflicting or ignored flags
@pytest.mark.parametrize(("args", "needle"), [
    (["--config", "small", "--checkpoint", "CKPT"], "--config: conflicts with --checkpoint"),
    (["--seed", "3", "--checkpoint", "CKPT"], "--seed: conflicts with --checkpoint"),
    (["--config", "tiny", "--streams", "3", "--hidden", "40"],
     "--streams --hidden: applies to --op exports only"),
    (["--config", "tiny", "--tokens", "5"], "--tokens: applies to --op exports only"),
    (["--op", "pre", "--config", "tiny"], "--config: applies to full-model exports"),
    (["--op", "pre", "--batch", "2"], "--batch: applies to full-model exports"),
    (["--op", "post", "--no-validate", "--tokens", "4"], "--tokens: has no effect with"),
    (["--op", "sinkhorn", "--hidden", "40"], "MhcSinkhorn works on [T, n, n] logits"),
])
def test_conflicting_or_ignored_flags(tmp_path, capsys, tiny, args, needle):
    args = [a.replace("CKPT", str(tiny[1])) for a in args]
    out = tmp_path / "m.onnx"
    fails(["export", *args, "--out", str(out)], capsys, needle)
    assert not out.exists()


def test_validate_ignored_flags(tmp_path, capsys, tiny):
    fails(["validate", "--onnx", str(tiny[0]), "--tokens", "5"], capsys,
           "--tokens applies to single-op models")
    fails(["validate", "--onnx", str(tiny[0]), "--plugins", "x.so"], capsys,
           "--plugins applies to --engine only")


# 7. Sinkhorn in bf16 is refused: it is float32 by contract
def test_sinkhorn_dtype(tmp_path, capsys):
    out = tmp_path / "s.onnx"
    fails(["export", "--op", "sinkhorn", "--dtype", "bfloat16", "--out", str(out)], capsys,
           "MhcSinkhorn is float32 by contract")
    assert not out.exists()


# 8. default names carry dtype and mode
def test_default_names_carry_dtype_and_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "OUTPUT_DIR", tmp_path)
    for extra in ([], ["--mode", "decomposed"], ["--dtype", "float16"]):
        assert main(["export", "--config", "tiny", "--no-validate", *extra]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [
        "mhc_tiny_float16.onnx", "mhc_tiny_float32.onnx", "mhc_tiny_float32_decomposed.onnx"]


# 9. a checkpoint of another config is bad input, not a validation failure
def test_validate_with_checkpoint_of_other_config(tmp_path, capsys, tiny):
    small_ckpt = tmp_path / "small.safetensors"
    from mhc_export.reference.checkpoint import save_checkpoint
    from mhc_export.reference.model import build_model

    save_checkpoint(build_model("small", seed=1), small_ckpt)
    fails(["validate", "--onnx", str(tiny[0]), "--checkpoint", str(small_ckpt)], capsys,
           "holds config small", "exported from config tiny", "hidden (256 vs 64)")


# 11. without TensorRT, say what works here instead of `pip install tensorrt`
def test_no_tensorrt_message(tmp_path, capsys, tiny, monkeypatch):
    monkeypatch.setenv("MHC_TRT_RTX_DIR", str(tmp_path / "none"))
    assert main(["build", "--onnx", str(tiny[0]), "--out", str(tmp_path / "m.plan")]) == 3
    err = capsys.readouterr().err
    assert "pip install tensorrt" not in err
    assert "NVIDIA's own packages" in err and "mhc-export[rtx]" in err
    assert "ONNX Runtime" in err


# 12. what validate prints is what was exported
def test_sinkhorn_export_and_validate_print_the_same(tmp_path, capsys):
    out = tmp_path / "s.onnx"
    assert main(["export", "--op", "sinkhorn", "--streams", "3", "--attr", "eps=1e-6",
                 "--out", str(out)]) == 0
    exported = capsys.readouterr().out
    assert main(["validate", "--onnx", str(out)]) == 0
    validated = capsys.readouterr().out

    def config(text: str) -> dict[str, str]:
        rows = [ln.strip().split(": ", 1) for ln in text.splitlines() if ln.startswith("  ")
                and ": " in ln and not ln.startswith("    ")]
        return {k: v for k, v in rows if k not in ("onnx", "tokens")}

    assert config(exported) == config(validated)
    assert config(validated)["eps"] == "1e-06"
    assert "hidden" not in config(validated)


# 13. report rows say what they compare, against which limit, within 100 columns
def test_report_is_readable(tmp_path, capsys):
    assert main(["export", "--op", "pre", "--hidden", "40", "--out", str(tmp_path / "p.onnx"),
                 "--dtype", "bfloat16"]) == 0
    text = capsys.readouterr().out
    report_text = text[text.index("== validate"):]
    # Every line of the report, but those naming this test's (long) temporary paths.
    lines = [ln for ln in report_text.splitlines() if str(tmp_path) not in ln]
    assert all(len(ln) <= 100 for ln in lines), max(lines, key=len)
    assert all(ln == ln.rstrip() for ln in lines)
    assert "rel err = max|out - ref| / max|ref|, passes when <= limit" in text
    header = next(ln for ln in lines if ln.startswith("backend") and "rel err" in ln).split()
    assert header.index("limit") == header.index("err") + 1  # the limit sits by the rel err
    report = json.loads((tmp_path / "p.report.json").read_text())
    for inv in report["invariants"]:
        assert inv["passed"] == (inv["value"] <= inv["limit"])


# 14. Ctrl-C: exit 130, one line, nothing half-written
def test_ctrl_c(tmp_path):
    out = tmp_path / "m.onnx"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mhc_export", "export", "--config", "small", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    line = ""
    while time.time() < deadline and "exporting to" not in line:
        line = proc.stdout.readline()
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["mhc-export export: interrupted; nothing was left "
                                        "half-written"], err
    assert not out.exists() or out.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# 15. pyproject: an SPDX license string, no deprecated table
def test_pyproject_license_is_spdx():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"


# 16 is tests/test_function_bodies.py (every model loads in onnx.reference).

# 17. the build's error without headers names ../shared and MHC_TRT_HEADERS
def test_build_scripts_name_the_headers(tmp_path):
    env = {**os.environ, "MHC_TRT_HEADERS": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "dev" / "build_plugins_ci.sh"),
                           str(tmp_path / "b")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2
    assert "../shared/third_party" in proc.stderr and "MHC_TRT_HEADERS" in proc.stderr
    env = {**os.environ, "TENSORRT_ROOT": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "dev" / "build_plugins.sh")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "TENSORRT_ROOT" in proc.stderr and "../shared/third_party" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_readme_states_what_the_tests_need():
    readme = (REPO / "README.md").read_text()
    assert "../shared" in readme and "passed" in readme and "minutes" in readme


# Bad ONNX for the plugins: the build/validate path names the node and refuses.
@pytest.fixture(scope="module")
def pre_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("pre") / "pre.onnx"
    export_single_op(SingleOp.create("pre", 4, 16, "float32"), path)
    return onnx.load(path)


def _mutated(model, change):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    change(m.graph.node[0])
    return m


def _refused_everywhere(model, change, needle, op_type, tmp_path, capsys):
    """``model`` with ``change`` made to its node: one problem naming ``op_type`` and
    ``needle``, refused with it by validate and build (no plan written); the model itself
    has none."""
    bad = _mutated(model, change)
    problems = mhc_node_problems(bad)
    assert len(problems) == 1 and needle in problems[0], problems
    assert op_type in problems[0]
    path = tmp_path / "bad.onnx"
    onnx.save(bad, path)
    fails(["validate", "--onnx", str(path)], capsys, needle)
    fails(["build", "--onnx", str(path), "--out", str(tmp_path / "b.plan")], capsys, needle)
    assert not (tmp_path / "b.plan").exists()
    assert not mhc_node_problems(model)


@pytest.mark.parametrize(("change", "needle"), [
    (lambda n: set_attr(n, "sinkhorn_iters", 7.0),
     "attribute sinkhorn_iters must be int, got float"),
    (lambda n: set_attr(n, "rms_eps", "1e-6"), "attribute rms_eps must be float, got string"),
    (lambda n: set_attr(n, "bogus", 1), "unknown attribute 'bogus'"),
    (lambda n: n.input.__delitem__(3), "takes 4 inputs"),
    (lambda n: set_attr(n, "plugin_version", "2"), "plugin_version '2' is not provided"),
    (lambda n: set_attr(n, "plugin_namespace", "other"), "plugin_namespace 'other'"),
])
def test_bad_mhc_nodes_are_named(pre_model, change, needle, tmp_path, capsys):
    _refused_everywhere(pre_model, change, needle, "MhcPre", tmp_path, capsys)


def test_check_output_path_unit(tmp_path):
    assert preflight.check_output_path(tmp_path / "new" / "deeper" / "m.onnx")
    with pytest.raises(ValueError, match="is a directory"):
        preflight.check_output_path(tmp_path)


# V4.1's plugin nodes: the plugin identity refusals, through validate and build
# (tests/test_v41_onnx.py covers their attribute and arity checks in validate).
@pytest.fixture(scope="module")
def v41_models(tmp_path_factory):
    models = {}
    for op in ("post_mix", "post_collapse"):
        path = tmp_path_factory.mktemp(op) / f"{op}.onnx"
        export_single_op(SingleOp.create(op, 4, 16, "float32"), path)
        models[op] = onnx.load(path)
    return models


@pytest.mark.parametrize(("op", "change", "needle"), [
    ("post_mix", lambda n: set_attr(n, "plugin_namespace", "other"), "plugin_namespace 'other'"),
    ("post_collapse", lambda n: set_attr(n, "plugin_version", "2"),
     "plugin_version '2' is not provided"),
])
def test_bad_v41_plugin_identity_is_named(v41_models, op, change, needle, tmp_path, capsys):
    _refused_everywhere(v41_models[op], change, needle, spec.ALL_OPS[op].op_type, tmp_path,
                        capsys)
