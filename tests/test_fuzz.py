"""CI-sized runs of the two fuzzers (scripts/fuzz.py, scripts/fuzz_cli.py).

The full runs (>= 1000 configurations on CPU and on the GPU) are recorded in
docs/TESTING.md; here a few hundred keep every backend honest on each commit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import onnx
import pytest

from mhc_export.export.single_op import SingleOp, build_single_op_model, export_single_op

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_numeric_fuzz_cpu_backends(tmp_path, capsys):
    fuzz = _script("fuzz")
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--count", "150", "--seed", "11", "--json", str(out)]) == 0, \
        capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res["backends"]) == {"eager", "ops", "ort", "onnxref"}
    for name, s in res["backends"].items():
        assert s["mismatches"] == 0, name
        assert s["checked"] >= 140, name
        assert 0 < s["worst"] < 1, name  # a real, nonzero error was measured
    assert res["degenerate"] <= 5


def test_fuzz_detects_a_wrong_backend(monkeypatch, capsys):
    """A backend that ignores an attribute must show up as mismatches."""
    fuzz = _script("fuzz")
    real = fuzz.run_eager

    def wrong(c, x):
        c = {**c, "attrs": {k: (v * 3 if k.endswith("eps") else v) for k, v in c["attrs"].items()}}
        return real(c, x)

    monkeypatch.setattr(fuzz, "run_eager", wrong)
    assert fuzz.main(["--count", "60", "--seed", "5"]) == 1
    assert "MISMATCH eager" in capsys.readouterr().out


def test_cli_bad_input_fuzz():
    fuzz_cli = _script("fuzz_cli")
    count, failures, per_family = fuzz_cli.fuzz(120, seed=3)
    assert count == 120 and sum(per_family.values()) == 120
    assert not failures, failures[:5]


@pytest.mark.parametrize("op", ["pre", "sinkhorn", "post", "head"])
def test_direct_single_op_model_is_the_exported_one(tmp_path, op):
    """The fuzzer's fast model builder gives the exporter's artifact."""
    spec = SingleOp.create(op, 3, 24, "float32" if op == "sinkhorn" else "bfloat16",
                           **({"rms_eps": 0.1} if op in ("pre", "head") else {}))
    export_single_op(spec, tmp_path / "m.onnx")
    exported, built = onnx.load(tmp_path / "m.onnx"), build_single_op_model(spec)
    onnx.checker.check_model(built, full_check=True)

    def node_attrs(m):
        return sorted((a.name, onnx.helper.get_attribute_value(a))
                      for a in m.graph.node[0].attribute)

    def io(vis):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_value or bool(d.dim_param) for d in v.type.tensor_type.shape.dim])
                for v in vis]

    assert node_attrs(exported) == node_attrs(built)
    assert io(exported.graph.input) == io(built.graph.input)
    assert io(exported.graph.output) == io(built.graph.output)
    assert [f.SerializeToString() for f in exported.functions] == \
        [f.SerializeToString() for f in built.functions]
