"""``--target onnxruntime``: MhcCollapse / MhcPost (and MhcPre's collapse) as ONNX Runtime's
com.microsoft HyperConnectionPreMix / HyperConnectionPostMix, in V4 and V4.1 graphs.

The contrib ops are checked alone against mhc_export/testing/f64.py (the exact-mapping
claim, every residual dtype), and the rewritten models against the mhc form in ONNX
Runtime, the eager model, and onnx.reference with the two ops written here in numpy
from ONNX Runtime's schema text.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx.reference.op_run import OpRun
from support import assert_two_forms_agree, reference_logits
from test_v41_model import ODD_V41

from mhc_export.cli import main
from mhc_export.core.spec import FIRST_ORT_RELEASE
from mhc_export.export.model_export import export_model
from mhc_export.export.ort_target import ORT_DOMAIN
from mhc_export.reference import eager as reference
from mhc_export.reference.model import build_model, get_config
from mhc_export.testing.f64 import collapse_f64, post_f64, rel_err
from mhc_export.validation import ort_runner
from mhc_export.validation.ort_compare import validate_model

ODD_V4 = {**ODD_V41, "head_eps": 0.05}
_ONNX = {torch.float32: onnx.TensorProto.FLOAT, torch.float16: onnx.TensorProto.FLOAT16,
         torch.bfloat16: onnx.TensorProto.BFLOAT16}
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


class HyperConnectionPreMix(OpRun):
    """Y[..., h] = reduction_scale * sum_c X[..., c, h] * pre_mix[..., c] (grouped X)."""

    op_domain = ORT_DOMAIN

    def _run(self, streams, pre_mix, reduction_scale=1.0, num_branches=0):
        y = np.einsum("tch,tc->th", streams.astype(np.float32), pre_mix.astype(np.float32))
        return ((y * np.float32(reduction_scale)).astype(streams.dtype),)


class HyperConnectionPostMix(OpRun):
    """Y[..., k, h] = sum_c stream_mix[..., c, k] * streams[..., c, h] + post_mix[..., k] * b."""

    op_domain = ORT_DOMAIN

    def _run(self, streams, block_output, post_mix, stream_mix=None, num_branches=0):
        s = streams.astype(np.float32)
        y = np.einsum("tck,tch->tkh", stream_mix.astype(np.float32), s)
        y = y + post_mix.astype(np.float32)[..., None] * block_output.astype(np.float32)[:, None]
        return (y.astype(streams.dtype),)


def _one_node(op: str, inputs: dict[str, torch.Tensor], **attrs) -> onnx.ModelProto:
    def info(name, t):
        return onnx.helper.make_tensor_value_info(name, _ONNX[t.dtype], list(t.shape))

    node = onnx.helper.make_node(op, list(inputs), ["y"], domain=ORT_DOMAIN, **attrs)
    first = next(iter(inputs.values()))
    graph = onnx.helper.make_graph([node], op, [info(k, v) for k, v in inputs.items()],
                                   [onnx.helper.make_tensor_value_info("y", _ONNX[first.dtype],
                                                                       None)])
    return onnx.helper.make_model(graph, opset_imports=[
        onnx.helper.make_opsetid("", 20), onnx.helper.make_opsetid(ORT_DOMAIN, 1)])


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize(("t", "n", "d"), [(1, 4, 64), (13, 3, 40), (7, 8, 16)])
def test_contrib_ops_are_our_collapse_and_post(t, n, d, dtype):
    """ONNX Runtime's kernels against float64: the exact mapping the target relies on."""
    g = torch.Generator().manual_seed(t * 10 + n)
    residual = torch.randn(t, n, d, generator=g).to(dtype)
    x = torch.randn(t, d, generator=g).to(dtype)
    pre = torch.rand(t, n, generator=g) + 0.05
    post = 2 * torch.rand(t, n, generator=g)
    comb = reference.sinkhorn(torch.randn(t, n, n, generator=g) * 2)
    feeds = {"streams": residual, "pre_mix": pre}
    model = _one_node("HyperConnectionPreMix", feeds, reduction_scale=1.0, num_branches=0)
    y = ort_runner.run(ort_runner.session(model.SerializeToString(), "CPUExecutionProvider"),
                       feeds)["y"]
    assert y.dtype == dtype and rel_err(y, collapse_f64(residual, pre)) < TOL[dtype]
    feeds = {"streams": residual, "block_output": x, "post_mix": post, "stream_mix": comb}
    model = _one_node("HyperConnectionPostMix", feeds, num_branches=0)
    out = ort_runner.run(ort_runner.session(model.SerializeToString(), "CPUExecutionProvider"),
                         feeds)["y"]
    assert out.dtype == dtype and rel_err(out, post_f64(x, residual, post, comb)) < TOL[dtype]
    # comb's orientation matters: its transpose (seed 000's update) is far away.
    assert rel_err(out, post_f64(x, residual, post, comb.mT)) > 10 * TOL[dtype]


@pytest.fixture(scope="module", params=["tiny", "tiny-v41"])
def exported(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("ort")
    odd = ODD_V4 if request.param == "tiny" else ODD_V41
    model = build_model(get_config(request.param, **odd), seed=5)
    ort_path, mhc_path = base / "ort.onnx", base / "mhc.onnx"
    result = export_model(model, ort_path, target="onnxruntime")
    export_model(model, mhc_path)
    return model, ort_path, mhc_path, result


def test_target_emits_the_contrib_ops(exported):
    model, ort_path, _, result = exported
    proto = onnx.load(ort_path)
    onnx.checker.check_model(proto, full_check=True)
    layers = model.cfg.layers
    v41 = model.cfg.family == "V4.1"
    # V4: each MhcPre's collapse and each MhcPost; V4.1: every MhcCollapse (site 1's is
    # skipped, the final one added) and every MhcPost.
    assert result.contrib_nodes == {"HyperConnectionPreMix": 2 * layers,
                                    "HyperConnectionPostMix": 2 * layers}
    assert result.mhc_nodes == ({"MhcMix": 2 * layers} if v41 else
                                {"MhcMix": 2 * layers, "MhcHead": 1})
    assert {f.name for f in proto.functions} == set(result.mhc_nodes)
    assert any(o.domain == ORT_DOMAIN and o.version == 1 for o in proto.opset_import)
    for node in proto.graph.node:
        if node.domain == ORT_DOMAIN:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            want = {"num_branches": 0}
            if node.op_type == "HyperConnectionPreMix":
                want["reduction_scale"] = 1.0
            assert attrs == want, node.name  # written explicitly, never left to defaults
    mix = next(n for n in proto.graph.node if n.op_type == "MhcMix")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in mix.attribute}
    assert attrs["rms_eps"] == pytest.approx(0.1) and attrs["sinkhorn_iters"] == 7
    assert attrs["plugin_namespace"] == b"mhc"


def test_target_computes_what_the_mhc_form_computes(exported):
    model, ort_path, mhc_path, _ = exported
    tokens, eager = assert_two_forms_agree(model, ort_path, mhc_path, seq=9, seed=7)
    got = reference_logits(ort_path, tokens,
                           new_ops=[HyperConnectionPreMix, HyperConnectionPostMix])
    assert rel_err(got, eager) < 1e-4


def test_target_validates_with_invariants_and_family(exported):
    model, ort_path, _, _ = exported
    report = validate_model(ort_path, model, batch=1, seq=6)
    assert report.passed, report.format()
    assert report.config["family"] == model.cfg.family
    assert any(i.name.startswith("pre_mix outside") and i.backend.startswith("onnxruntime")
               for i in report.invariants)


def test_target_command_line(tmp_path, capsys):
    out = tmp_path / "v41_ort.onnx"
    assert main(["export", "--config", "tiny-v41", "--target", "onnxruntime", "--seq", "4",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "HyperConnectionPostMix x4" in said and "family: V4.1" in said
    for bad, needle in ((["--no-fuse"], "always unfused"),
                        (["--mode", "decomposed"], "decomposed"),
                        (["--op", "collapse"], "full-model exports")):
        assert main(["export", "--target", "onnxruntime", "--no-validate", "--out",
                     str(tmp_path / "x.onnx"), *bad]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    assert FIRST_ORT_RELEASE == "1.31.0"


def test_target_on_an_hf_deepseek_v4_checkpoint(tmp_path, capsys):
    """The HF DeepSeek-V4 export with --target onnxruntime: contrib ops, HF eager parity,
    and validation with the invariants on the MhcMix nodes the target splits MhcPre into."""
    pytest.importorskip("transformers.models.deepseek_v4",
                        reason="transformers >= 5.23 (pip install -e '.[hf]') is not installed")
    from mhc_export.adapters.hf_testing import make_config, save_random_checkpoint

    ckpt, out = tmp_path / "ckpt", tmp_path / "hf_ort.onnx"
    model = save_random_checkpoint(ckpt, make_config(), seed=2)
    assert main(["export", "--hf", str(ckpt), "--target", "onnxruntime", "--seq", "7",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "RESULT: PASS" in said and "family: V4" in said
    assert "pre_mix outside [pre_eps, 1+pre_eps]" in said
    layers = model.config.num_hidden_layers
    kinds: dict[str, int] = {}
    for node in onnx.load(out).graph.node:
        if node.domain in ("mhc", ORT_DOMAIN):
            kinds[node.op_type] = kinds.get(node.op_type, 0) + 1
    assert kinds == {"MhcMix": 2 * layers, "HyperConnectionPreMix": 2 * layers,
                     "HyperConnectionPostMix": 2 * layers, "MhcHead": 1}
    x = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x, use_cache=False).logits
    got = ort_runner.run(ort_runner.session(out, "CPUExecutionProvider"), {"input_ids": x})
    assert rel_err(got["logits"], ref) < 1e-5
