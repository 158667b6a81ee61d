"""Custom ops and the reference model against float64, and checkpoints."""

from __future__ import annotations

import pytest
import torch
from test_reference import random_pre_inputs

from mhc_export.reference import eager as reference
from mhc_export.reference import ops
from mhc_export.reference.checkpoint import load_checkpoint, read_config, save_checkpoint
from mhc_export.reference.model import CONFIGS, build_model, get_config, random_tokens
from mhc_export.testing.f64 import ODD_ATTRS, head_f64, post_f64, pre_f64, rel_err, sinkhorn_f64


def _op_samples():
    residual, hc_fn, hc_scale, hc_base = random_pre_inputs(5, 4, 24, torch.bfloat16, seed=9)
    comb = reference.sinkhorn(torch.randn(5, 4, 4))
    return {
        ops.pre: (residual, hc_fn, hc_scale, hc_base, 1e-6, 1e-6, 1e-6, 2.0, 20),
        ops.sinkhorn: (torch.randn(5, 4, 4), 7, 1e-6),
        ops.post: (torch.randn(5, 24).bfloat16(), residual, torch.rand(5, 4), comb),
        ops.head: (residual, hc_fn[:4], hc_scale[:1], hc_base[:4], 1e-6, 1e-6),
    }


@pytest.mark.parametrize("op", list(_op_samples()), ids=lambda o: o._name)
def test_custom_op_registration(op):
    """torch.library.opcheck: schema, fake (meta) implementation and dispatch agree."""
    torch.library.opcheck(op, _op_samples()[op],
                          test_utils=("test_schema", "test_faketensor"))


def test_custom_ops_pass_their_attributes_float64():
    """The custom ops against the independent float64 reference, with odd attributes
    (positional, as the model and the exporter call them): a swapped or dropped
    attribute is a 1e-2 error, not a 1e-6 one."""
    residual, hc_fn, hc_scale, hc_base = random_pre_inputs(6, 4, 24, torch.float32, seed=19)
    a, h, sk = ODD_ATTRS["pre"], ODD_ATTRS["head"], ODD_ATTRS["sinkhorn"]
    got = ops.pre(residual, hc_fn, hc_scale, hc_base, a["rms_eps"], a["pre_eps"],
                  a["sinkhorn_eps"], a["post_mult"], a["sinkhorn_iters"])
    exp = pre_f64(residual, hc_fn, hc_scale, hc_base, **a)
    for g, e in zip(got, exp, strict=False):
        assert rel_err(g, e) < 2e-6
    logits = torch.randn(6, 4, 4, generator=torch.Generator().manual_seed(2)) * 2
    assert rel_err(ops.sinkhorn(logits, sk["iters"], sk["eps"]),
                   sinkhorn_f64(logits, sk["iters"], sk["eps"])) < 2e-6
    y = ops.head(residual, hc_fn[:4], hc_scale[:1], hc_base[:4], h["rms_eps"], h["eps"])
    assert rel_err(y, head_f64(residual, hc_fn[:4], hc_scale[:1], hc_base[:4], **h)) < 2e-6
    x = torch.randn(6, 24, generator=torch.Generator().manual_seed(3))
    out = ops.post(x, residual, got[1], got[2])
    assert rel_err(out, post_f64(x, residual, got[1], got[2])) < 2e-6


ODD_CONFIG = {"rms_eps": 0.1, "pre_eps": 0.05, "sinkhorn_eps": 1e-2, "post_mult": 1.3,
              "sinkhorn_iters": 7, "head_eps": 0.05}


def _forward_f64_mhc(model, tokens: torch.Tensor) -> torch.Tensor:
    """The model's forward with every mHC op from mhc_export/testing/f64.py (sharing no
    code with mhc_export.reference.eager or mhc_export.reference.ops); the attention/FFN modules are
    the model's own. The residual stays float32 between sublayers, as in the model."""
    cfg = model.cfg
    a = dict(rms_eps=cfg.rms_eps, pre_eps=cfg.pre_eps, sinkhorn_eps=cfg.sinkhorn_eps,
             post_mult=cfg.post_mult, sinkhorn_iters=cfg.sinkhorn_iters)
    batch = tokens.shape[0]
    h = model.embed(tokens).reshape(-1, cfg.hidden)
    x = h.unsqueeze(1).expand(-1, cfg.streams, -1).float()
    for sub in model.sublayers:
        w = sub.mhc
        y, post, comb, _ = pre_f64(x, w.hc_fn, w.hc_scale, w.hc_base, **a)
        z = sub.norm(y.float())
        if sub.kind == "attention":
            z = sub.body(z.view(batch, -1, cfg.hidden)).reshape(-1, cfg.hidden)
        else:
            z = sub.body(z)
        x = post_f64(z, x, post, comb).float()
    w = model.head_mhc
    y = head_f64(x, w.hc_fn, w.hc_scale, w.hc_base, rms_eps=cfg.rms_eps, eps=cfg.head_eps)
    return model.lm_head(model.final_norm(y.float())).view(batch, -1, cfg.vocab_size)


@pytest.mark.parametrize("mode", ["fused", "decomposed"])
def test_model_matches_a_float64_mhc_forward_with_odd_attributes(mode):
    cfg = get_config("tiny", **ODD_CONFIG)
    model = build_model(cfg, mode=mode, seed=3)
    tokens = random_tokens(cfg, 2, 7, seed=4)
    with torch.no_grad():
        got, exp = model(tokens), _forward_f64_mhc(model, tokens)
        default = _forward_f64_mhc(build_model("tiny", mode=mode, seed=3), tokens)
    assert got.shape == (2, 7, cfg.vocab_size)
    assert torch.isfinite(got).all() and got.std() > 0.1
    assert rel_err(got, exp) < 2e-5
    assert rel_err(got, default) > 1e-2  # the config's attributes reach every op


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_fused_and_decomposed_agree_in_low_precision(dtype):
    """Both modes route to mhc_export.reference.eager (bit-equal by construction); what this adds
    is that the modes wire the same weights and attributes into it in every dtype. The
    float32 test above checks each mode against float64 on its own."""
    cfg = get_config("tiny", **ODD_CONFIG)
    fused = build_model(cfg, dtype=dtype, mode="fused", seed=3)
    decomposed = build_model(cfg, dtype=dtype, mode="decomposed", seed=3)
    tokens = random_tokens(cfg, 2, 7, seed=4)
    with torch.no_grad():
        a, b = fused(tokens), decomposed(tokens)
    assert a.dtype == getattr(torch, dtype) and torch.isfinite(a.float()).all()
    assert torch.equal(a, b)


def test_model_is_causal_prefill_equals_incremental():
    model = build_model("tiny", seed=1)
    tokens = random_tokens(model.cfg, 1, 9, seed=2)
    with torch.no_grad():
        full = model(tokens)
        for k in (1, 4, 8):
            torch.testing.assert_close(model(tokens[:, :k]), full[:, :k], rtol=1e-5, atol=1e-5)


def test_build_model_is_deterministic_and_seeded():
    a = build_model("tiny", seed=5).state_dict()
    b = build_model("tiny", seed=5).state_dict()
    c = build_model("tiny", seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.weight"], c["embed.weight"])
    # mHC weights stay float32 whatever the model dtype.
    m = build_model("tiny", dtype="bfloat16")
    assert m.sublayers[0].mhc.hc_fn.dtype == torch.float32
    assert m.embed.weight.dtype == torch.bfloat16


def test_named_configs():
    assert {"tiny", "small", "v4-pro-layer"} <= set(CONFIGS)
    v4 = get_config("v4-pro-layer")
    assert (v4.hidden, v4.streams, v4.layers) == (7168, 4, 1)
    with pytest.raises(ValueError, match="unknown config 'huge'"):
        get_config("huge")
    with pytest.raises(ValueError, match="not divisible by heads"):
        get_config("tiny", heads=5)
    with pytest.raises(ValueError, match="sinkhorn_iters must be >= 1"):
        get_config("tiny", sinkhorn_iters=0)
    with pytest.raises(ValueError, match="unknown mode"):
        build_model("tiny", mode="fast")
    with pytest.raises(ValueError, match=r"tokens must have shape \[batch, seq\]"):
        build_model("tiny")(torch.zeros(5, dtype=torch.long))


def test_checkpoint_roundtrip(tmp_path):
    model = build_model("tiny", dtype="float16", seed=11)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(model, path)
    assert read_config(path) == model.cfg
    loaded = load_checkpoint(path)
    tokens = random_tokens(model.cfg, 2, 5, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temp files left


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, foreign)
    with pytest.raises(ValueError, match="not an mhc-export checkpoint"):
        load_checkpoint(foreign)
