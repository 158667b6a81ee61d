"""ONNX export: one mhc node per op with its local function, checked, and right in ONNX Runtime."""

from __future__ import annotations

import onnx
import pytest
import torch
from support import export_fixtures

from mhc_export.core.spec import OPS, PLUGIN_NAMESPACE, PLUGIN_VERSION
from mhc_export.export.model_export import export_model
from mhc_export.export.onnx_export import check_opset
from mhc_export.export.single_op import SingleOp, export_single_op
from mhc_export.reference.model import build_model, random_tokens
from mhc_export.testing.f64 import head_f64, post_f64, pre_f64, rel_err, sinkhorn_f64
from mhc_export.validation import ort_runner
from mhc_export.validation.ort_compare import validate_model, validate_single_op
from mhc_export.validation.report import tolerance_for

DTYPES = ["float32", "float16", "bfloat16"]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.fixture(scope="module")
def single_op_models(tmp_path_factory):
    return export_fixtures(tmp_path_factory.mktemp("single"), {
        (op, dtype): SingleOp.create(op, streams=3 if op == "sinkhorn" else 4, hidden=40,
                                     dtype=dtype)
        for op in OPS
        for dtype in (DTYPES if op != "sinkhorn" else ["float32"])})  # Sinkhorn is float32


@pytest.mark.parametrize("op", list(OPS))
def test_single_op_graph_structure(single_op_models, op):
    _, path = single_op_models[op, "float32" if op == "sinkhorn" else "bfloat16"]
    model = onnx.load(path)
    contract = OPS[op]
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.node) == 1
    node = model.graph.node[0]
    assert (node.domain, node.op_type) == ("mhc", contract.op_type)
    attrs = _attrs(node)
    assert attrs.pop("plugin_namespace") == PLUGIN_NAMESPACE.encode()
    assert attrs.pop("plugin_version") == PLUGIN_VERSION.encode()
    assert set(attrs) == {a.name for a in contract.attributes}
    for a in contract.attributes:
        assert attrs[a.name] == pytest.approx(a.default)
    # Exactly the spec's names, weights as graph inputs, no initializers.
    assert [i.name for i in model.graph.input] == list(contract.inputs)
    assert [o.name for o in model.graph.output] == list(contract.outputs)
    assert not model.graph.initializer
    # The body ships as one flat local function of standard ops (no nested mhc call).
    functions = {(f.domain, f.name): f for f in model.functions}
    assert set(functions) == {("mhc", contract.op_type)}
    body = functions["mhc", contract.op_type]
    assert all(n.domain == "" for n in body.node)
    assert {a.name for a in body.attribute_proto} >= {a.name for a in contract.attributes}
    # T is dynamic and shape inference gives every output a shape.
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert first.dim_param and not first.dim_value
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for out in inferred.graph.output:
        assert out.type.tensor_type.HasField("shape")
        assert len(out.type.tensor_type.shape.dim) >= 2


# MhcSinkhorn is float32 by contract (logits and comb): no other dtype.
OP_DTYPES = [(op, dt) for op in OPS for dt in DTYPES if op != "sinkhorn" or dt == "float32"]


@pytest.mark.parametrize(("op", "dtype"), OP_DTYPES)
@pytest.mark.parametrize("tokens", [1, 29])
def test_single_op_in_onnxruntime_matches_float64(single_op_models, op, dtype, tokens):
    spec, path = single_op_models[op, dtype]
    inputs = spec.random_inputs(tokens, seed=tokens * 31 + len(op))
    sess = ort_runner.session(path, "CPUExecutionProvider")
    outs = ort_runner.run(sess, inputs)
    if op == "pre":
        expected = dict(zip(OPS[op].outputs, pre_f64(*inputs.values())[:3], strict=True))
    elif op == "sinkhorn":
        expected = {"comb": sinkhorn_f64(inputs["logits"])}
    elif op == "post":
        expected = {"out": post_f64(*inputs.values())}
    else:
        expected = {"y": head_f64(*inputs.values())}
    for name, exp in expected.items():
        got = outs[name]
        assert got.shape == exp.shape
        tol = 2e-6 if got.dtype == torch.float32 else tolerance_for(got.dtype)
        assert rel_err(got, exp) < tol, name


def test_single_op_attributes_reach_the_function(tmp_path):
    """A non-default attribute must change the ONNX Runtime result like it changes eager."""
    spec = SingleOp.create("sinkhorn", 4, 1, "float32", iters=2, eps=1e-3)
    path = tmp_path / "sk.onnx"
    export_single_op(spec, path)
    assert _attrs(onnx.load(path).graph.node[0])["iters"] == 2
    logits = spec.random_inputs(8, seed=3)["logits"]
    got = ort_runner.run(ort_runner.session(path, "CPUExecutionProvider"), {"logits": logits})
    assert rel_err(got["comb"], sinkhorn_f64(logits, 2, 1e-3)) < 2e-6
    assert rel_err(got["comb"], sinkhorn_f64(logits, 20, 1e-6)) > 1e-3


def test_validate_single_op_report(single_op_models):
    spec, path = single_op_models["pre", "bfloat16"]
    report = validate_single_op(path, spec, tokens=17)
    assert report.passed, report.format()
    assert {c.output for c in report.comparisons} == {"layer_input", "post_mix", "comb_mix"}
    assert report.invariants


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    base = tmp_path_factory.mktemp("tiny")
    out = {}
    for mode, dtype in [("fused", "float32"), ("decomposed", "float32"), ("fused", "float16"),
                        ("fused", "bfloat16")]:
        model = build_model("tiny", dtype=dtype, mode=mode, seed=2)
        path = base / f"tiny_{mode}_{dtype}.onnx"
        result = export_model(model, path)
        out[mode, dtype] = (model, path, result)
    return out


def test_tiny_fused_graph(tiny_models):
    model, path, result = tiny_models["fused", "float32"]
    layers = model.cfg.layers
    # Fused layer boundaries (the default): one MhcPre, then a MhcPostPre per boundary.
    assert result.mhc_nodes == {"MhcPre": 1, "MhcPostPre": 2 * layers - 1, "MhcPostHead": 1}
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert all(dims), "batch and seq must be dynamic"
    assert [i.name for i in proto.graph.input] == ["tokens"]
    assert [o.name for o in proto.graph.output] == ["logits"]


def test_tiny_decomposed_has_no_custom_nodes(tiny_models):
    _, path, result = tiny_models["decomposed", "float32"]
    assert result.mhc_nodes == {}
    assert not any(n.domain == "mhc" for n in onnx.load(path).graph.node)


@pytest.mark.parametrize(("mode", "dtype"), [("fused", "float32"), ("decomposed", "float32"),
                                             ("fused", "float16")])
def test_tiny_model_in_onnxruntime_matches_eager(tiny_models, mode, dtype):
    model, path, _ = tiny_models[mode, dtype]
    report = validate_model(path, model, batch=2, seq=9, seed=77)
    assert report.passed, report.format()
    logits = [c for c in report.comparisons if c.output == "logits"]
    assert logits and logits[0].max_rel_error < tolerance_for(dtype)
    # Different lengths run through the same graph (dynamic batch and seq).
    sess = ort_runner.session(path, "CPUExecutionProvider")
    tokens = random_tokens(model.cfg, 1, 3, seed=5)
    with torch.no_grad():
        expected = model(tokens)
    got = ort_runner.run(sess, {"tokens": tokens})["logits"]
    assert rel_err(got, expected) < tolerance_for(dtype)


def test_bfloat16_model_report_says_what_ran(tiny_models):
    """ORT's CPU provider cannot run a bf16 transformer; the report must say so and still
    validate the bf16 mhc nodes, which run in float32 inside their functions."""
    model, path, _ = tiny_models["fused", "bfloat16"]
    report = validate_model(path, model, batch=1, seq=4, providers=["CPUExecutionProvider"])
    text = " ".join(report.notes)
    if any(c.output == "logits" for c in report.comparisons):
        pytest.skip("this ONNX Runtime runs the whole bf16 graph")  # newer ORT builds may
    assert "cannot run this bfloat16 graph" in text
    node_checks = {c.backend for c in report.comparisons}
    assert {"onnxruntime-cpu (MhcPre node)", "onnxruntime-cpu (MhcPostPre node)",
            "onnxruntime-cpu (MhcPostHead node)"} <= node_checks
    assert report.passed, report.format()


def test_invariants_flag_a_broken_backend(tiny_models, monkeypatch):
    """Corrupt ORT's comb_mix: the numeric diff on logits may be small, the invariant is not."""
    model, path, _ = tiny_models["fused", "float32"]
    real_run = ort_runner.run

    def broken_run(sess, inputs, output_names=None):
        outs = real_run(sess, inputs, output_names)
        for name in outs:
            if "comb" in name or name.endswith("_2"):
                outs[name] = outs[name] * 1.5
        return outs

    monkeypatch.setattr(ort_runner, "run", broken_run)
    report = validate_model(path, model, batch=1, seq=5)
    bad = [i for i in report.invariants if i.backend.startswith("onnxruntime") and not i.passed]
    assert bad, report.format()
    assert not report.passed


def test_external_data_and_atomic_write(tmp_path, monkeypatch):
    model = build_model("tiny", seed=0)
    path = tmp_path / "ext.onnx"
    result = export_model(model, path, external_data=True)
    assert result.external_data == tmp_path / "ext.onnx.data"
    assert result.external_data.stat().st_size > 100_000
    sess = ort_runner.session(path, "CPUExecutionProvider")
    tokens = random_tokens(model.cfg, 1, 4, seed=0)
    with torch.no_grad():
        assert rel_err(ort_runner.run(sess, {"tokens": tokens})["logits"], model(tokens)) < 1e-4
    # A failure while writing leaves neither a partial model nor temp files behind.
    target = tmp_path / "fail" / "m.onnx"

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", explode)
    with pytest.raises(OSError, match="disk full"):
        export_model(model, target)
    assert list(target.parent.iterdir()) == []


def test_bad_export_arguments():
    with pytest.raises(ValueError, match=r"standard opsets 18\.\.25"):
        check_opset(16)
    with pytest.raises(ValueError, match="MhcPre has no attribute 'iters'"):
        SingleOp.create("pre", 4, 8, "float32", iters=3)
    with pytest.raises(ValueError, match="unknown op 'mul'"):
        SingleOp.create("mul")
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        SingleOp.create("pre", 4, 8, "int8")
    with pytest.raises(ValueError, match="sinkhorn_iters must be >= 1"):
        SingleOp.create("pre", 4, 8, "float32", sinkhorn_iters=0)
