"""Fused layer boundaries (MhcPostPre, MhcPostHead): reference, custom ops, ONNX, graph pass.

Every check is against mhc_export/testing/f64.py or the unfused graph of the same
model, with attributes far from their defaults.
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
    reference_logits,
    single_op_runs,
)

from mhc_export.core.spec import num_mixes
from mhc_export.export.fuse import fuse_boundaries
from mhc_export.export.model_export import export_model
from mhc_export.export.single_op import SingleOp
from mhc_export.reference import eager as reference
from mhc_export.reference import ops
from mhc_export.reference.model import build_model, get_config
from mhc_export.testing.f64 import head_f64, post_f64, pre_f64, rel_err
from mhc_export.validation.report import tolerance_for

PRE_ATTRS = {"rms_eps": 0.1, "pre_eps": 0.05, "sinkhorn_eps": 1e-2, "post_mult": 1.3,
             "sinkhorn_iters": 7}
HEAD_ATTRS = {"rms_eps": 0.1, "eps": 0.05}


def _inputs(t, n, d, dtype, head=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, scales = (n, 1) if head else (num_mixes(n), 3)
    k = n * d
    return [
        torch.randn(t, d, generator=g).to(dtype),
        torch.randn(t, n, d, generator=g).to(dtype),
        2 * torch.rand(t, n, generator=g),
        reference.sinkhorn(torch.randn(t, n, n, generator=g) * 2),
        torch.randn(rows, k, generator=g) / k**0.5,
        0.5 + torch.rand(scales, generator=g),
        torch.randn(rows, generator=g) * 0.5,
    ]


def _f64_post_pre(v, dtype):
    # The pre half reads the residual as rounded to the residual dtype.
    r = post_f64(*v[:4]).to(dtype)
    return [r, *pre_f64(r, *v[4:], **PRE_ATTRS)[:3]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("t", "n", "d"), [(1, 4, 64), (7, 3, 45), (5, 8, 8), (3, 1, 17)])
def test_reference_and_custom_ops_match_float64(dtype, t, n, d):
    v = _inputs(t, n, d, dtype, seed=t * 10 + n)
    got = reference.mhc_post_pre(*v, **PRE_ATTRS)
    via_op = ops.post_pre(*v, *PRE_ATTRS.values())
    exp = _f64_post_pre(v, dtype)
    for name, a, b, e in zip(("residual_out", "layer_input", "post", "comb"), got, via_op, exp,
                             strict=True):
        tol = 2e-5 if a.dtype == torch.float32 else tolerance_for(a.dtype)
        assert a.dtype == (dtype if name in ("residual_out", "layer_input") else torch.float32)
        assert rel_err(a, e) < tol, name
        assert torch.equal(a, b), name
    vh = _inputs(t, n, d, dtype, head=True, seed=t)
    y = reference.mhc_post_head(*vh, **HEAD_ATTRS)
    y_op = ops.post_head(*vh, *HEAD_ATTRS.values())
    r = post_f64(*vh[:4]).to(dtype)
    e = head_f64(r, *vh[4:], **HEAD_ATTRS)
    assert rel_err(y, e) < (2e-5 if dtype == torch.float32 else tolerance_for(dtype))
    assert torch.equal(y, y_op)


def test_bad_inputs_are_named():
    v = _inputs(3, 4, 16, torch.float32)
    wrong_fn = torch.randn(num_mixes(3), 3 * 16)  # the next hc_fn for n=3, streams are 4
    with pytest.raises(ValueError, match="hc_fn"):
        reference.mhc_post_pre(*v[:4], wrong_fn, *v[5:])
    with pytest.raises(TypeError, match="dtype"):
        reference.mhc_post_pre(v[0].to(torch.int32), *v[1:])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return export_fixtures(tmp_path_factory.mktemp("fused"), {
        (op, dtype): SingleOp.create(op, 4, 24, dtype, **attrs)
        for op, attrs in (("post_pre", PRE_ATTRS), ("post_head", HEAD_ATTRS))
        for dtype in ("float32", "bfloat16")})


@pytest.mark.parametrize("op", ["post_pre", "post_head"])
def test_single_op_fixtures_in_ort_and_reference_evaluator(fixtures, op):
    spec, path = fixtures[op, "float32"]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain == "" for f in model.functions for n in f.node)  # flat
    inputs = spec.random_inputs(6, seed=2)
    v = list(inputs.values())
    if op == "post_pre":
        exp = _f64_post_pre(v, torch.float32)
    else:
        exp = [head_f64(post_f64(*v[:4]).float(), *v[4:], **HEAD_ATTRS)]
    runs = single_op_runs(path, inputs)
    assert list(runs) == list(spec_outputs(op))
    for name, e in zip(spec_outputs(op), exp, strict=True):
        for got in runs[name]:  # ONNX Runtime, TensorRT's inlining, onnx.reference
            assert rel_err(got, e) < 2e-6, name


def spec_outputs(op):
    from mhc_export.core.spec import ALL_OPS

    return ALL_OPS[op].outputs


@pytest.mark.parametrize("op", ["post_pre", "post_head"])
def test_single_op_validation_passes(fixtures, op):
    from mhc_export.validation.ort_compare import validate_single_op

    spec, path = fixtures[op, "bfloat16"]
    report = validate_single_op(path, spec, tokens=11)
    assert report.passed, report.format()
    if op == "post_pre":
        assert any(i.name.endswith("sinkhorn error") for i in report.invariants)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("pair")
    cfg = get_config("tiny", **PRE_ATTRS, head_eps=0.05)
    model = build_model(cfg, seed=6)
    fused, plain = base / "fused.onnx", base / "plain.onnx"
    export_model(model, fused)
    export_model(model, plain, fuse=False)
    return model, fused, plain


def test_fused_and_plain_models_agree(tiny_pair):
    model, fused, plain = tiny_pair
    f, p = onnx.load(fused), onnx.load(plain)
    kinds = sorted(n.op_type for n in f.graph.node if n.domain == "mhc")
    assert kinds == ["MhcPostHead"] + ["MhcPostPre"] * 3 + ["MhcPre"]
    assert sorted({n.op_type for n in p.graph.node if n.domain == "mhc"}) == [
        "MhcHead", "MhcPost", "MhcPre"]
    assert {fn.name for fn in f.functions} == {"MhcPre", "MhcPostPre", "MhcPostHead"}
    onnx.checker.check_model(f, full_check=True)
    tokens, eager = assert_two_forms_agree(model, fused, plain, seq=7, seed=9)
    assert rel_err(reference_logits(fused, tokens), eager) < 1e-4
    assert rel_err(inlined_logits(f, tokens), eager) < 1e-4


def test_fused_model_validates_with_invariants_on_fused_nodes(tiny_pair):
    from mhc_export.validation.ort_compare import validate_model

    model, fused, _ = tiny_pair
    report = validate_model(fused, model, batch=1, seq=5)
    assert report.passed, report.format()
    ort_inv = [i for i in report.invariants if i.backend.startswith("onnxruntime")]
    assert any("sinkhorn error" in i.name for i in ort_inv)


def test_pass_on_a_hand_built_graph():
    post = mhc_node("MhcPost", ["x", "R", "p", "c"], ["R1"])
    # A consumer of R1 placed between the post and the pre stays valid after fusion.
    side = onnx.helper.make_node("Identity", ["R1"], ["R1copy"])
    pre = mhc_node("MhcPre", ["R1", "fn", "s", "b"], ["y", "p2", "c2"], sinkhorn_iters=5)
    post2 = mhc_node("MhcPost", ["y", "R1", "p2", "c2"], ["R2"])
    head = mhc_node("MhcHead", ["R2", "hfn", "hs", "hb"], ["out"], eps=0.5)
    g = graph([post, side, pre, post2, head], ["x", "R", "p", "c", "fn", "s", "b", "hfn",
                                                "hs", "hb"], ["out", "R1copy"])
    assert fuse_boundaries(g) == {"MhcPostPre": 1, "MhcPostHead": 1, "MhcPostMix": 0,
                                  "MhcPostCollapse": 0}
    assert sorted(n.op_type for n in g.node) == ["Identity", "MhcPostHead", "MhcPostPre"]
    seen = {i.name for i in g.input}
    for n in g.node:  # still topologically sorted: every input made before it is read
        assert set(n.input) <= seen, n.op_type
        seen.update(n.output)
    by = {n.op_type: n for n in g.node}
    pp = by["MhcPostPre"]
    assert list(pp.input) == ["x", "R", "p", "c", "fn", "s", "b"]
    assert list(pp.output) == ["R1", "y", "p2", "c2"]
    assert onnx.helper.get_attribute_value(pp.attribute[0]) == 5
    ph = by["MhcPostHead"]
    assert list(ph.input) == ["y", "R1", "p2", "c2", "hfn", "hs", "hb"]
    assert onnx.helper.get_attribute_value(ph.attribute[0]) == pytest.approx(0.5)


def test_pass_leaves_graphs_without_the_pattern_alone():
    # MhcPre fed by a graph input, and a MhcPost whose output other nodes also need
    # before the head: the head fusion would drop that residual, so it stays.
    pre = mhc_node("MhcPre", ["R", "fn", "s", "b"], ["y", "p2", "c2"])
    post = mhc_node("MhcPost", ["y", "R", "p2", "c2"], ["R2"])
    head = mhc_node("MhcHead", ["R2", "hfn", "hs", "hb"], ["out"])
    g = graph([pre, post, head], ["R", "fn", "s", "b", "hfn", "hs", "hb"], ["out", "R2"])
    before = onnx.GraphProto()
    before.CopyFrom(g)
    assert fuse_boundaries(g) == {"MhcPostPre": 0, "MhcPostHead": 0, "MhcPostMix": 0,
                                  "MhcPostCollapse": 0}
    assert g == before


def test_export_command_no_fuse(tmp_path):
    from mhc_export.cli import main

    out = tmp_path / "plain.onnx"
    assert main(["export", "--config", "tiny", "--no-fuse", "--no-validate", "--out",
                 str(out)]) == 0
    kinds = {n.op_type for n in onnx.load(out).graph.node if n.domain == "mhc"}
    assert kinds == {"MhcPre", "MhcPost", "MhcHead"}
