"""V4.1 in ONNX: single-op fixtures (MhcMix, MhcCollapse, MhcPostMix, MhcPostCollapse), the
tiny-v41 model fused and plain, and the fusion pass on hand-built graphs.

Every export is checked with the full checker and run in ONNX Runtime, in
onnx.reference and under TensorRT's one-level attribute rule, against
mhc_export/testing/f64.py or the eager model, with attributes far from their defaults.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from support import (
    assert_two_forms_agree,
    export_fixtures,
    graph,
    inlined_logits,
    mhc_node,
    ort_logits,
    reference_logits,
    set_attr,
    single_op_runs,
)
from test_v41_model import ODD_V41

from mhc_export.core.spec import V41_OPS
from mhc_export.export.fuse import fuse_boundaries
from mhc_export.export.model_export import export_model
from mhc_export.export.single_op import SingleOp, single_op_from_onnx
from mhc_export.reference.model import build_model, get_config, random_tokens
from mhc_export.testing.f64 import (
    ODD_ATTRS,
    collapse_f64,
    mix_f64,
    post_collapse_f64,
    post_mix_f64,
    rel_err,
)

F64 = {"mix": mix_f64, "collapse": collapse_f64, "post_mix": post_mix_f64,
       "post_collapse": post_collapse_f64}


def _expected(op: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = F64[op](*inputs.values(), **ODD_ATTRS[op])
    out = out if isinstance(out, (list, tuple)) else [out]
    return dict(zip(V41_OPS[op].outputs, out, strict=True))


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return export_fixtures(tmp_path_factory.mktemp("v41ops"), {
        (op, dtype): SingleOp.create(op, 4, 40, dtype, **ODD_ATTRS[op])
        for op in V41_OPS for dtype in ("float32", "bfloat16")})


@pytest.mark.parametrize("op", list(V41_OPS))
def test_fixture_is_one_flat_node_in_spec_order(fixtures, op):
    spec, path = fixtures[op, "float32"]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    contract = V41_OPS[op]
    assert [i.name for i in model.graph.input] == list(contract.inputs)
    assert [o.name for o in model.graph.output] == list(contract.outputs)
    (node,) = model.graph.node
    assert (node.domain, node.op_type) == ("mhc", contract.op_type)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs.pop("plugin_namespace") == b"mhc" and attrs.pop("plugin_version") == b"1"
    assert attrs == pytest.approx(ODD_ATTRS[op])
    assert [f.name for f in model.functions] == [contract.op_type]
    assert all(n.domain == "" for f in model.functions for n in f.node)  # flat
    assert single_op_from_onnx(model) == spec


@pytest.mark.parametrize("op", list(V41_OPS))
def test_fixture_in_ort_reference_evaluator_and_tensorrt_rule(fixtures, op):
    spec, path = fixtures[op, "float32"]
    inputs = spec.random_inputs(13, seed=3)
    exp = _expected(op, inputs)
    runs = single_op_runs(path, inputs)
    assert list(runs) == list(exp)
    for name, e in exp.items():
        for got in runs[name]:  # ONNX Runtime, TensorRT's inlining, onnx.reference
            assert rel_err(got, e) < 2e-6, name
    if op in ("mix", "post_mix"):  # the attributes matter: defaults give other mixes
        default = F64[op](*inputs.values())
        assert rel_err(runs[V41_OPS[op].outputs[-1]][0], default[-1]) > 1e-2


@pytest.mark.parametrize("op", list(V41_OPS))
def test_fixture_validation_names_the_family(fixtures, op):
    from mhc_export.validation.ort_compare import validate_single_op

    spec, path = fixtures[op, "bfloat16"]
    report = validate_single_op(path, spec, tokens=11)
    assert report.passed, report.format()
    assert report.config["family"] == "V4.1"
    names = {i.name for i in report.invariants}
    if op in ("mix", "post_mix"):
        assert {"pre_mix outside [pre_eps, 1+pre_eps]", "sinkhorn error",
                "post_mix outside [0, post_mult]"} <= names
    else:
        assert not names  # a collapse has no mixes to check


@pytest.fixture(scope="module")
def tiny_v41_pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("v41pair")
    model = build_model(get_config("tiny-v41", **ODD_V41), seed=6)
    fused, plain = base / "fused.onnx", base / "plain.onnx"
    export_model(model, fused)
    export_model(model, plain, fuse=False)
    return model, fused, plain


def _kinds(path) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in onnx.load(path).graph.node:
        if n.domain == "mhc":
            out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def test_v41_model_fused_and_plain_agree(tiny_v41_pair):
    model, fused, plain = tiny_v41_pair
    layers = model.cfg.layers
    # The spec's node-count table with E = 0 and site 1's collapse skipped.
    assert _kinds(fused) == {"MhcMix": 1, "MhcPostMix": 2 * layers - 1, "MhcPostCollapse": 1}
    assert _kinds(plain) == {"MhcMix": 2 * layers, "MhcCollapse": 2 * layers,
                             "MhcPost": 2 * layers}
    f = onnx.load(fused)
    onnx.checker.check_model(f, full_check=True)
    assert {fn.name for fn in f.functions} == {"MhcMix", "MhcPostMix", "MhcPostCollapse"}
    tokens, eager = assert_two_forms_agree(model, fused, plain, seq=7, seed=9)
    for path in (fused, plain):
        onnx.checker.check_model(onnx.load(path), full_check=True)
        assert rel_err(reference_logits(path, tokens), eager) < 1e-4
        assert rel_err(inlined_logits(onnx.load(path), tokens), eager) < 1e-4


@pytest.mark.parametrize(("engram", "extra"), [((1,), 0), ((0, 1), 1)], ids=str)
def test_engram_boundaries_stay_plain(tmp_path, engram, extra):
    """The spec's node-count table with E engram layers among 1..L-1 (site 1's collapse
    skipped; an engram on layer 0 brings it back: one more MhcCollapse)."""
    model = build_model(get_config("tiny-v41", engram_layers=engram, **ODD_V41), seed=2)
    big_l, e = model.cfg.layers, sum(1 for i in engram if i > 0)
    path = tmp_path / "engram.onnx"
    export_model(model, path)
    assert _kinds(path) == {"MhcMix": 1 + e, "MhcCollapse": e + extra, "MhcPost": e,
                            "MhcPostMix": 2 * big_l - 1 - e, "MhcPostCollapse": 1}
    tokens = random_tokens(model.cfg, 2, 5, seed=4)
    with torch.no_grad():
        eager = model(tokens)
    assert rel_err(ort_logits(path, tokens), eager) < 1e-4
    assert rel_err(inlined_logits(onnx.load(path), tokens), eager) < 1e-4


@pytest.mark.parametrize("which", ["fused", "plain"])
def test_v41_model_validates_with_invariants(tiny_v41_pair, which):
    from mhc_export.validation.ort_compare import validate_model

    model, fused, plain = tiny_v41_pair
    report = validate_model(fused if which == "fused" else plain, model, batch=1, seq=5)
    assert report.passed, report.format()
    assert report.config["family"] == "V4.1"
    ort_inv = {i.name for i in report.invariants if i.backend.startswith("onnxruntime")}
    assert {"pre_mix outside [pre_eps, 1+pre_eps]", "sinkhorn error"} <= ort_inv


def test_v4_model_report_names_its_family(tmp_path):
    from mhc_export.validation.ort_compare import validate_model

    model = build_model("tiny", seed=1)
    path = tmp_path / "tiny.onnx"
    export_model(model, path)
    report = validate_model(path, model, batch=1, seq=4)
    assert report.passed and report.config["family"] == "V4"
    assert "family: V4" in report.format()


# ---- the pass on hand-built graphs ----------------------------------------------------


W = ["fn", "s", "b"]
ZERO = {"MhcPostPre": 0, "MhcPostHead": 0}


def test_pass_fuses_v41_boundaries():
    # site 1: mixes p1 of X1; site 2 collapses R1 with p1 (delayed), the end with p2.
    mix1 = mhc_node("MhcMix", ["X", *W], ["p1", "q1", "c1"], sinkhorn_iters=5)
    post1 = mhc_node("MhcPost", ["y1", "X", "q1", "c1"], ["R1"])
    side = onnx.helper.make_node("Identity", ["R1"], ["R1copy"])  # another reader of R1
    mix2 = mhc_node("MhcMix", ["R1", "fn2", "s2", "b2"], ["p2", "q2", "c2"], sinkhorn_iters=3)
    col2 = mhc_node("MhcCollapse", ["R1", "p1"], ["y2"])
    post2 = mhc_node("MhcPost", ["y2", "R1", "q2", "c2"], ["R2"])
    end = mhc_node("MhcCollapse", ["R2", "p2"], ["out"])
    g = graph([mix1, post1, side, col2, mix2, post2, end],
               ["X", "y1", *W, "fn2", "s2", "b2"], ["out", "R1copy"])
    assert fuse_boundaries(g) == {**ZERO, "MhcPostMix": 1, "MhcPostCollapse": 1}
    by = {n.op_type: n for n in g.node}
    assert sorted(by) == ["Identity", "MhcMix", "MhcPostCollapse", "MhcPostMix"]
    seen = {i.name for i in g.input}
    for n in g.node:  # topologically sorted
        assert set(n.input) <= seen, n.op_type
        seen.update(n.output)
    pm = by["MhcPostMix"]
    assert list(pm.input) == ["y1", "X", "p1", "q1", "c1", "fn2", "s2", "b2"]
    assert list(pm.output) == ["R1", "y2", "p2", "q2", "c2"]
    assert onnx.helper.get_attribute_value(pm.attribute[0]) == 3  # the next site's attributes
    pc = by["MhcPostCollapse"]
    assert list(pc.input) == ["y2", "R1", "p2", "q2", "c2"] and list(pc.output) == ["out"]


def test_pass_leaves_engram_and_own_pre_boundaries_alone():
    # An engram rewrites the stream between the post and the next site: no fusion there.
    post1 = mhc_node("MhcPost", ["y1", "X", "q1", "c1"], ["R1"])
    engram = onnx.helper.make_node("Relu", ["R1"], ["E1"])
    mix2 = mhc_node("MhcMix", ["E1", *W], ["p2", "q2", "c2"])
    col2 = mhc_node("MhcCollapse", ["E1", "p1"], ["y2"])
    # V4's wiring: the collapse uses the pre made from the same stream. Not a V4.1 site.
    post2 = mhc_node("MhcPost", ["y2", "E1", "q2", "c2"], ["R2"])
    mix3 = mhc_node("MhcMix", ["R2", *W], ["p3", "q3", "c3"])
    col3 = mhc_node("MhcCollapse", ["R2", "p3"], ["y3"])
    # The final collapse while the stream is also a graph output (e.g. an MTP input).
    post3 = mhc_node("MhcPost", ["y3", "R2", "q3", "c3"], ["R3"])
    end = mhc_node("MhcCollapse", ["R3", "p3"], ["out"])
    g = graph([post1, engram, mix2, col2, post2, mix3, col3, post3, end],
               ["X", "y1", "q1", "c1", "p1", *W], ["out", "R3"])
    before = onnx.GraphProto()
    before.CopyFrom(g)
    assert fuse_boundaries(g) == {**ZERO, "MhcPostMix": 0, "MhcPostCollapse": 0}
    assert g == before


def test_export_command_v41(tmp_path):
    from mhc_export.cli import main

    fused, plain = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    assert main(["export", "--config", "tiny-v41", "--no-validate", "--out", str(fused)]) == 0
    assert main(["export", "--config", "tiny-v41", "--no-fuse", "--no-validate", "--out",
                 str(plain)]) == 0
    assert set(_kinds(fused)) == {"MhcMix", "MhcPostMix", "MhcPostCollapse"}
    assert set(_kinds(plain)) == {"MhcMix", "MhcCollapse", "MhcPost"}
    for op in V41_OPS:
        out = tmp_path / f"{op}.onnx"
        assert main(["export", "--op", op, "--hidden", "24", "--out", str(out)]) == 0
        assert _kinds(out) == {V41_OPS[op].op_type: 1}
    assert main(["export", "--op", "collapse", "--attr", "rms_eps=1e-20", "--no-validate",
                 "--out", str(tmp_path / "bad.onnx")]) == 2


def test_validate_command_rebuilds_the_v41_model(tmp_path, capsys):
    from mhc_export.cli import main

    path = tmp_path / "v41.onnx"
    assert main(["export", "--config", "tiny-v41", "--dtype", "float16", "--no-validate",
                 "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["validate", "--onnx", str(path), "--seq", "4"]) == 0
    said = capsys.readouterr().out
    assert "family: V4.1" in said and "config: tiny-v41" in said and "RESULT: PASS" in said


@pytest.mark.parametrize(("op", "change", "needle"), [
    ("post_mix", lambda n: set_attr(n, "sinkhorn_iters", 7.0),
     "attribute sinkhorn_iters must be int, got float"),
    ("post_mix", lambda n: n.input.__delitem__(2), "takes 8 inputs"),
    ("mix", lambda n: set_attr(n, "rms_eps", "1e-20"), "attribute rms_eps must be float"),
    ("collapse", lambda n: set_attr(n, "rms_eps", 1e-20), "unknown attribute 'rms_eps'"),
    ("post_collapse", lambda n: n.output.append("extra"), "has 1 outputs"),
])
def test_bad_v41_nodes_are_named(fixtures, op, change, needle, tmp_path, capsys):
    from mhc_export.cli import main
    from mhc_export.validation.onnx_check import mhc_node_problems

    model = onnx.load(fixtures[op, "float32"][1])
    assert not mhc_node_problems(model)
    change(model.graph.node[0])
    problems = mhc_node_problems(model)
    assert len(problems) == 1 and needle in problems[0], problems
    assert V41_OPS[op].op_type in problems[0]
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    assert main(["validate", "--onnx", str(path)]) == 2
    assert needle in capsys.readouterr().err
