"""HF transformers DeepSeek-V4 through the mhc ops: adapter, export forms, ONNX export, CLI.

Tiny random checkpoints are built here (save_pretrained to a temp dir, no
download) with every mHC parameter perturbed so Sinkhorn and the gates do
real work (HF's init makes them trivial), all three attention layer types,
hash and learned routers, hc_mult 4 and 2. Skips only where transformers
(the [hf] extra) is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

pytest.importorskip("transformers.models.deepseek_v4",
                    reason="transformers >= 5.23 (pip install -e '.[hf]') is not installed")

from mhc_export.adapters.hf_deepseek_v4 import MARK, adapt, adapted
from mhc_export.adapters.hf_testing import (
    bf16_errors,
    make_config,
    random_model,
    save_random_checkpoint,
)
from mhc_export.adapters.hf_testing import max_rel as rel
from mhc_export.cli import main
from mhc_export.validation import ort_runner

SLIDING, CSA, HCA = ("sliding_attention", "compressed_sparse_attention",
                     "heavily_compressed_attention")
# n=4: the spec's width, default attributes, layer types in V4's order.
# n=2: other attributes (eps, Sinkhorn iterations) and another layer/router order.
CONFIGS = {
    "n4": {},
    "n2": dict(hc_mult=2, hc_sinkhorn_iters=7, hc_eps=1e-5, rms_norm_eps=1e-5,
               layer_types=[HCA, SLIDING, CSA], mlp_layer_types=["moe", "hash_moe", "moe"]),
}
F32_TOL = 1e-5


def ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 97, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
    return random_model(make_config(**CONFIGS[request.param]), seed=1)


# ---------------------------------------------------------------------------
# Adapter in PyTorch
# ---------------------------------------------------------------------------


@torch.no_grad()
def test_mhc_params_make_sinkhorn_non_trivial(model):
    hc = model.model.layers[0].attn_hc
    post, comb, _ = hc(model.model.embed_tokens(ids(1, 9)).unsqueeze(2)
                       .expand(-1, -1, model.config.hc_mult, -1).contiguous())
    assert comb.std() > 0.05  # far from the uniform 1/n matrix of HF's init
    assert post.std() > 0.05


@torch.no_grad()
@pytest.mark.parametrize(("batch", "seq"), [(1, 5), (3, 19)])
def test_adapter_float32_matches_hf_eager(model, batch, seq):
    x = ids(batch, seq, seed=seq)
    ref = model(x, use_cache=False).logits
    with adapted(model) as a:
        got = model(x, use_cache=False).logits
    layers = model.config.num_hidden_layers
    assert a.counts == {"pre": 2 * layers, "post": 2 * layers, "head": 1}
    assert a.attrs.streams == model.config.hc_mult
    assert a.attrs.sinkhorn_iters == model.config.hc_sinkhorn_iters
    err = rel(got, ref)
    assert 0 < err <= F32_TOL  # > 0: the ops really ran (HF normalises x, we scale the product)


@torch.no_grad()
def test_adapter_calls_the_custom_ops(model, monkeypatch):
    calls = []
    real = torch.ops.mhc.pre

    def spy(*args):
        calls.append(args[4:])
        return real(*args)

    monkeypatch.setattr(torch.ops.mhc, "pre", spy)
    with adapted(model):
        model(ids(1, 4), use_cache=False)
    c = model.config
    assert len(calls) == 2 * c.num_hidden_layers
    assert calls[0] == (c.rms_norm_eps, c.hc_eps, c.hc_eps, 2.0, c.hc_sinkhorn_iters)


@torch.no_grad()
def test_undo_restores_hf(model):
    x = ids(2, 7)
    before = model(x, use_cache=False).logits
    a = adapt(model, export=True)
    with pytest.raises(RuntimeError, match="already adapted"):
        adapt(model)
    a.undo()
    assert not any("forward" in m.__dict__ or MARK in m.__dict__ for m in model.modules())
    assert torch.equal(model(x, use_cache=False).logits, before)


@torch.no_grad()
@pytest.mark.parametrize("seq", [1, 3, 4, 7, 8, 9, 16, 17, 33])
def test_export_forms_match_hf_at_every_length(model, seq):
    """Below, at and above both compress rates (4, 8) and the sliding window (8)."""
    x = ids(2, seq, seed=100 + seq)
    ref = model(x, use_cache=False).logits
    with adapted(model, export=True) as a:
        got = model(x, use_cache=False).logits
    assert {"attention", "dense_experts", "indexer"} <= set(a.counts)
    assert rel(got, ref) <= F32_TOL


@torch.no_grad()
def test_bf16_difference_is_hf_rounding_not_ours():
    """bf16: HF rounds post and comb to bf16 before mixing, we mix in float32.

    With every expert and every compressed entry selected (no top-k whose picks
    a rounding can flip) the difference is rounding alone: ours is within 2e-2
    of HF's bf16 logits and no further than HF's own bf16 from the float32 model.
    """
    cfg = make_config(num_experts_per_tok=4, index_topk=16)
    diff, hf_err, our_err = bf16_errors(random_model(cfg, seed=3), ids(2, 40, seed=7))
    print(f"bf16: ours vs HF {diff:.2e}; vs float32: HF {hf_err:.2e}, ours {our_err:.2e}")
    assert 0 < diff <= 2e-2
    assert our_err <= hf_err * 1.1


# ---------------------------------------------------------------------------
# Export: checkpoint -> ONNX -> ONNX Runtime vs HF eager
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"hf_{request.param}")
    ckpt = tmp / "ckpt"
    # n4 sharded (index + several files), n2 a single model.safetensors.
    shard = "150KB" if request.param == "n4" else None
    model = save_random_checkpoint(ckpt, make_config(**CONFIGS[request.param]), seed=2,
                                   max_shard_size=shard)
    out = tmp / "model.onnx"
    assert main(["export", "--hf", str(ckpt), "--out", str(out), "--seq", "11"]) == 0
    return model, ckpt, out


def _mhc_counts(proto: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        if node.domain == "mhc":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_export_graph_nodes_attributes_functions(exported):
    model, ckpt, out = exported
    if (ckpt / "model.safetensors.index.json").is_file():
        assert len(list(ckpt.glob("*.safetensors"))) > 1
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(out)
    c = model.config
    layers = c.num_hidden_layers
    counts = _mhc_counts(proto)
    if "MhcPostPre" in counts:  # the fused boundary form, when the fusion pass is present
        assert counts == {"MhcPre": 1, "MhcPostPre": 2 * layers - 1, "MhcPostHead": 1}
    else:
        assert counts == {"MhcPre": 2 * layers, "MhcPost": 2 * layers, "MhcHead": 1}
    assert {f.name for f in proto.functions} >= set(counts)
    for node in proto.graph.node:
        if node.domain == "mhc" and node.op_type in ("MhcPre", "MhcPostPre"):
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            assert a["sinkhorn_iters"] == c.hc_sinkhorn_iters
            assert a["rms_eps"] == pytest.approx(c.rms_norm_eps, rel=1e-6)
            assert a["pre_eps"] == pytest.approx(c.hc_eps, rel=1e-6)
            assert a["sinkhorn_eps"] == pytest.approx(c.hc_eps, rel=1e-6)
            assert a["post_mult"] == 2.0
            assert a["plugin_namespace"] == b"mhc"
    (inp,) = proto.graph.input
    assert inp.name == "input_ids" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = inp.type.tensor_type.shape.dim
    assert all(d.dim_param and not d.dim_value for d in dims)  # batch and seq dynamic
    (o,) = proto.graph.output
    assert o.name == "logits" and o.type.tensor_type.shape.dim[2].dim_value == c.vocab_size
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["mhc_export.hf_checkpoint"] == str(ckpt.resolve())


@torch.no_grad()
@pytest.mark.parametrize(("batch", "seq"), [(1, 6), (3, 21)])
def test_onnx_runtime_matches_hf_eager(exported, batch, seq):
    model, _, out = exported
    x = ids(batch, seq, seed=seq)
    ref = model(x, use_cache=False).logits
    sess = ort_runner.session(out, "CPUExecutionProvider")
    got = ort_runner.run(sess, {"input_ids": x})["logits"]
    assert rel(got, ref) <= F32_TOL


def test_reference_evaluator_runs_the_export(exported):
    from onnx.reference import ReferenceEvaluator

    model, _, out = exported
    x = ids(1, 9, seed=5)
    (got,) = ReferenceEvaluator(str(out)).run(None, {"input_ids": x.numpy()})
    with torch.no_grad():
        ref = model(x, use_cache=False).logits
    assert rel(torch.from_numpy(got), ref) <= F32_TOL


def test_validate_command_reruns_hf_from_metadata(exported, capsys):
    _, _, out = exported
    assert main(["validate", "--onnx", str(out), "--seq", "13", "--batch", "1"]) == 0
    text = capsys.readouterr().out
    assert "RESULT: PASS" in text and "HF eager" in text


# ---------------------------------------------------------------------------
# --layers: a slice of decoder layers
# ---------------------------------------------------------------------------


def test_layer_slice_matches_hf_layers(exported, tmp_path, capsys):
    model, ckpt, _ = exported
    out = tmp_path / "slice.onnx"
    assert main(["export", "--hf", str(ckpt), "--layers", "1:3", "--out", str(out),
                 "--seq", "17"]) == 0
    assert "RESULT: PASS" in capsys.readouterr().out
    proto = onnx.load(out)
    c = model.config
    names = [i.name for i in proto.graph.input]
    hash_in_slice = "hash_moe" in c.mlp_layer_types[1:3]
    assert names == (["hidden_streams", "input_ids"] if hash_in_slice else ["hidden_streams"])
    shape = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape[2:]] == [c.hc_mult, c.hidden_size]
    assert _mhc_counts(proto).get("MhcHead") is None
    # The slice against the same two layers run by HF (its own forwards), fresh inputs.
    g = torch.Generator().manual_seed(11)
    streams = torch.randn(2, 10, c.hc_mult, c.hidden_size, generator=g)
    x = ids(2, 10, seed=12)
    inputs = {"hidden_streams": streams, **({"input_ids": x} if hash_in_slice else {})}
    inner = model.model
    pos = torch.arange(10).unsqueeze(0).expand(2, -1)
    from transformers.masking_utils import create_sliding_window_causal_mask

    # The cache positionally: past_key_values before transformers 5.25, cache after.
    mask = create_sliding_window_causal_mask(inner.config, streams[:, :, 0], None, None,
                                             position_ids=pos)
    rope = {k: inner.rotary_emb(streams[:, :, 0], position_ids=pos, layer_type=k)
            for k in ("main", "compress")}
    h = streams
    with torch.no_grad():
        for layer in inner.layers[1:3]:
            h = layer(h, position_embeddings=rope, position_ids=pos, attention_mask=mask,
                      input_ids=x)
    got = ort_runner.run(ort_runner.session(out, "CPUExecutionProvider"), inputs)
    assert rel(got["hidden_streams_out"], h) <= F32_TOL


# ---------------------------------------------------------------------------
# Bad input: exit 2, one line naming the problem, nothing written
# ---------------------------------------------------------------------------


def _bad_checkpoints(root: Path) -> dict[str, tuple[Path, str]]:
    cases = {}
    llama = root / "llama"
    llama.mkdir(parents=True)
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cases["not deepseek"] = (llama, "model_type is 'llama'")
    cases["no dir"] = (root / "nowhere", "not a directory")
    empty = root / "noconfig"
    empty.mkdir()
    cases["no config"] = (empty, "no config.json")
    good = root / "good"
    save_random_checkpoint(good, make_config(num_hidden_layers=1, layer_types=[SLIDING],
                                             mlp_layer_types=["moe"]), max_shard_size="100KB")
    missing = root / "missing"
    missing.mkdir()
    for f in good.iterdir():
        (missing / f.name).write_bytes(f.read_bytes())
    victim = sorted(missing.glob("model-*.safetensors"))[-1]
    victim.unlink()
    cases["missing shard"] = (missing, f"names {victim.name}, which is missing")
    hc9 = root / "hc9"
    hc9.mkdir()
    cfg = json.loads((good / "config.json").read_text())
    (hc9 / "config.json").write_text(json.dumps({**cfg, "hc_mult": 9}))
    cases["hc_mult 9"] = (hc9, "hc_mult=9")
    cases["layers"] = (good, "--layers '3:1'")
    return cases


def test_bad_inputs_exit_2_one_line_nothing_written(tmp_path, capsys):
    cases = _bad_checkpoints(tmp_path / "ckpts")
    capsys.readouterr()  # save_pretrained's progress bars
    outdir = tmp_path / "out"
    for name, (path, message) in cases.items():
        extra = ["--layers", "3:1"] if name == "layers" else []
        rc = main(["export", "--hf", str(path), "--out", str(outdir / f"{name}.onnx"), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2, name
        assert len(err.splitlines()) == 1 and message in err, (name, err)
        assert not outdir.exists(), name


def test_sqrt_softplus_form_is_bit_identical_in_bf16():
    from transformers.activations import SqrtSoftplusActivation

    from mhc_export.adapters.hf_export_forms import sqrt_softplus_forward

    act = SqrtSoftplusActivation()
    x = (torch.randn(4096, generator=torch.Generator().manual_seed(4)) * 6).to(torch.bfloat16)
    assert torch.equal(sqrt_softplus_forward(act, x), act(x))


def test_bf16_export_validates_what_onnx_runtime_can_run(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    save_random_checkpoint(ckpt, make_config(**CONFIGS["n2"]), seed=5)
    out = tmp_path / "bf16.onnx"
    assert main(["export", "--hf", str(ckpt), "--dtype", "bfloat16", "--out", str(out),
                 "--seq", "9"]) == 0
    text = capsys.readouterr().out
    assert "RESULT: PASS" in text
    assert "cannot run this bfloat16 graph" in text  # said, not hidden
    assert "(MhcPre node)" in text
    assert "(MhcPostPre node)" in text or "(MhcPost node)" in text
    onnx.checker.check_model(str(out), full_check=True)
