"""Every shipped function body is flat, so the strictest consumers compute the right numbers.

TensorRT's parser resolves attribute references one level deep only
(tests/trt_attr_inline.py emulates it); onnx's own ReferenceEvaluator needs
every function it meets defined. Both must agree with the float64 reference
for every single-op fixture and for a tiny model, with attributes far from
their defaults so a lost attribute cannot hide.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator
from trt_attr_inline import inline_like_tensorrt

from mhc_export.core.spec import OPS
from mhc_export.export.model_export import export_model
from mhc_export.export.onnx_functions import FUNCTIONS
from mhc_export.export.single_op import SingleOp, export_single_op
from mhc_export.reference.model import build_model, get_config, random_tokens
from mhc_export.testing.f64 import ODD_ATTRS, head_f64, post_f64, pre_f64, rel_err, sinkhorn_f64
from mhc_export.validation import ort_runner

ATTRS = ODD_ATTRS  # far from the defaults and from each other


def _expected(op: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    a = ATTRS[op]
    v = list(inputs.values())
    if op == "pre":
        out = pre_f64(*v, **a)
        return {"layer_input": out[0], "post_mix": out[1], "comb_mix": out[2]}
    if op == "sinkhorn":
        return {"comb": sinkhorn_f64(inputs["logits"], a["iters"], a["eps"])}
    if op == "post":
        return {"out": post_f64(*v)}
    return {"y": head_f64(*v, **a)}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("flat")
    out = {}
    for op in OPS:
        spec = SingleOp.create(op, 3 if op == "sinkhorn" else 4, 40, "float32", **ATTRS[op])
        path = base / f"{op}.onnx"
        export_single_op(spec, path)
        out[op] = (spec, path)
    return out


def _ort(model: onnx.ModelProto, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return ort_runner.run(ort_runner.session(model.SerializeToString(), "CPUExecutionProvider"),
                          inputs)


@pytest.mark.parametrize("op", list(OPS))
def test_function_bodies_are_flat(fixtures, op):
    model = onnx.load(fixtures[op][1])
    for fn in model.functions:
        nested = [n.op_type for n in fn.node if n.domain != ""]
        assert not nested, f"{fn.name} calls {nested}"


@pytest.mark.parametrize("op", list(OPS))
def test_tensorrt_attribute_resolution_gives_float64_numbers(fixtures, op):
    spec, path = fixtures[op]
    inputs = spec.random_inputs(13, seed=7)
    got = _ort(inline_like_tensorrt(onnx.load(path)), inputs)
    for name, exp in _expected(op, inputs).items():
        assert rel_err(got[name], exp) < 2e-6, name


@pytest.mark.parametrize("op", list(OPS))
def test_reference_evaluator_runs_every_fixture(fixtures, op):
    spec, path = fixtures[op]
    inputs = spec.random_inputs(5, seed=11)
    names = [o.name for o in onnx.load(path).graph.output]
    outs = ReferenceEvaluator(str(path)).run(None, {k: v.numpy() for k, v in inputs.items()})
    for name, got in zip(names, outs, strict=True):
        assert rel_err(torch.from_numpy(np.asarray(got)), _expected(op, inputs)[name]) < 2e-6


def test_nested_body_is_what_tensorrt_gets_wrong(fixtures):
    """The emulation must see the old defect: MhcPre calling MhcMix calling MhcSinkhorn,
    with attribute references."""
    spec, path = fixtures["pre"]
    model = onnx.load(path)
    nested = [FUNCTIONS[name].to_function_proto()
              for name in ("MhcPre", "MhcCollapse", "MhcMix", "MhcSinkhorn")]
    for fn in nested:
        for imp in fn.opset_import:
            if imp.domain == "":
                imp.version = next(o.version for o in model.opset_import if o.domain == "")
    del model.functions[:]
    model.functions.extend(reversed(nested))  # callee first
    inputs = spec.random_inputs(13, seed=7)
    comb = _expected("pre", inputs)["comb_mix"]
    assert rel_err(_ort(model, inputs)["comb_mix"], comb) < 2e-6  # ORT follows any depth
    assert rel_err(_ort(inline_like_tensorrt(model), inputs)["comb_mix"], comb) > 1e-2


@pytest.fixture(scope="module")
def tiny_odd_attrs(tmp_path_factory):
    cfg = get_config("tiny", rms_eps=0.1, pre_eps=0.05, sinkhorn_eps=1e-2, post_mult=1.3,
                     sinkhorn_iters=7, head_eps=0.05)
    model = build_model(cfg, seed=4)
    path = tmp_path_factory.mktemp("tiny") / "tiny_odd.onnx"
    export_model(model, path)
    return model, path


def test_tiny_model_under_tensorrt_rules_and_reference_evaluator(tiny_odd_attrs):
    model, path = tiny_odd_attrs
    tokens = random_tokens(model.cfg, 2, 5, seed=3)
    with torch.no_grad():
        expected = model(tokens)
    proto = onnx.load(path)
    assert all(n.domain == "" for f in proto.functions for n in f.node)
    got = _ort(inline_like_tensorrt(proto), {"tokens": tokens})["logits"]
    assert rel_err(got, expected) < 1e-4
    ref = ReferenceEvaluator(str(path)).run(None, {"tokens": tokens.numpy()})[0]
    assert rel_err(torch.from_numpy(np.asarray(ref)), expected) < 1e-4
    # The attributes matter: the default-attribute model gives other logits.
    default = build_model("tiny", seed=4)
    with torch.no_grad():
        assert rel_err(default(tokens), expected) > 1e-3


def test_validation_uses_the_nodes_attributes(fixtures, tiny_odd_attrs):
    """The Sinkhorn invariant must be judged with the iters/eps the node ran with (with the
    defaults, eps=1e-2 output fails a bound meant for eps=1e-6)."""
    from mhc_export.validation.ort_compare import validate_model, validate_single_op

    spec, path = fixtures["pre"]
    report = validate_single_op(path, spec, tokens=33)
    assert report.passed, report.format()
    sink = [i for i in report.invariants if i.name.endswith("sinkhorn error")]
    assert sink and all("iters=7, eps=0.01" in i.detail for i in sink)
    model, tiny_path = tiny_odd_attrs
    report = validate_model(tiny_path, model, batch=1, seq=6)
    assert report.passed, report.format()


@pytest.mark.parametrize("op", list(OPS))
def test_onnxruntime_runs_every_fixture_with_its_attributes(fixtures, op):
    """The exported single-op model as shipped (ORT inlines the function itself)."""
    spec, path = fixtures[op]
    inputs = spec.random_inputs(9, seed=5)
    got = ort_runner.run(ort_runner.session(path, "CPUExecutionProvider"), inputs)
    for name, exp in _expected(op, inputs).items():
        assert rel_err(got[name], exp) < 2e-6, name
