"""CI-sized runs of the two fuzzers (scripts/qa/fuzz.py, scripts/qa/fuzz_cli.py).

scripts/qa/fuzz.py covers the V4 ops and V4.1's MhcMix, MhcCollapse, MhcPostMix and
MhcPostCollapse; scripts/qa/fuzz_cli.py's hf families both checkpoint layouts.

The full runs (>= 1000 configurations on CPU and on the GPU) are recorded in
docs/FUZZING.md; here a few hundred keep every backend honest on each commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from mhc_export.export.single_op import SingleOp, build_single_op_model, export_single_op
from mhc_export.testing.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    return load_script(ROOT / "scripts" / "qa" / f"{name}.py")


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
        # V4 and V4.1 ops alike (MhcMix, MhcCollapse, MhcPostMix, MhcPostCollapse)
        assert set(s["by_op"]) == set(fuzz.FUZZED_OPS), (name, sorted(s["by_op"]))
        for op, o in s["by_op"].items():
            assert o["checked"] >= 8 and 0 < o["worst"] < 1, (name, op, o)
    assert res["degenerate"] <= 5


def test_fuzz_draws_v41_attributes_across_their_range():
    """rms_eps down to V4.1-Flash's 1e-20; a collapse's given pre a real one."""
    import numpy as np

    fuzz = _script("fuzz")
    rng = np.random.default_rng(0)
    configs = [fuzz.draw(rng, gpu=False) for _ in range(2000)]
    mix_eps = [c["attrs"]["rms_eps"] for c in configs if c["op"] in ("mix", "post_mix")]
    assert min(e for e in mix_eps if e > 0) == pytest.approx(1e-20)
    assert any(1e-19 < e < 1e-10 for e in mix_eps) and max(mix_eps) > 0.1
    for c in configs[:200]:
        if c["op"] in ("collapse", "post_mix", "post_collapse"):
            pre = fuzz.make_inputs(c)["pre_mix"]
            assert c["pre_eps"] <= float(pre.min()) and float(pre.max()) <= 1 + c["pre_eps"]
            assert c["attrs"].get("pre_eps", c["pre_eps"]) == c["pre_eps"]


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


def test_fuzz_detects_the_v41_bug(monkeypatch, capsys):
    """A MhcPostMix backend that collapses with the NEW pre (V4's MhcPostPre, the bug the
    spec warns of) must show up as mismatches."""
    fuzz = _script("fuzz")
    real = fuzz.run_ops

    def v4_collapse(c, x):
        got = real(c, x)
        if c["op"] == "post_mix":
            got["layer_input"] = fuzz.reference.mhc_collapse(got["residual_out"],
                                                             got["next_pre_mix"])
        return got

    monkeypatch.setattr(fuzz, "run_ops", v4_collapse)
    assert fuzz.main(["--count", "40", "--seed", "5", "--only", "ops"]) == 1
    assert "MISMATCH ops" in capsys.readouterr().out


def test_cli_bad_input_fuzz():
    fuzz_cli = _script("fuzz_cli")
    count, failures, per_family = fuzz_cli.fuzz(120, seed=3)
    assert count == 120 and sum(per_family.values()) == 120
    assert not failures, failures[:5]


def test_cli_bad_input_fuzz_hf_layouts():
    """The hf families on both checkpoint layouts (save_pretrained and DeepSeek's published
    FP8/FP4 one): every break refused cleanly."""
    pytest.importorskip("transformers.models.deepseek_v4", reason="transformers >= 5.23")
    fuzz_cli = _script("fuzz_cli")
    count, failures, per_family = fuzz_cli.fuzz(40, seed=13, families=["hf", "hf-flags"])
    assert count == 40 and set(per_family) == {"hf", "hf-flags"}
    assert not failures, failures[:5]


@pytest.mark.parametrize("op", ["pre", "sinkhorn", "post", "head", "mix", "collapse",
                                "post_mix", "post_collapse"])
def test_direct_single_op_model_is_the_exported_one(tmp_path, op):
    """The fuzzer's fast model builder gives the exporter's artifact."""
    spec = SingleOp.create(op, 3, 24, "float32" if op == "sinkhorn" else "bfloat16",
                           **({"rms_eps": 0.1} if op in ("pre", "head", "mix", "post_mix")
                              else {}))
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
