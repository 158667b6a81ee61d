"""Custom ops, the reference model (fused vs decomposed), and checkpoints."""

from __future__ import annotations

import pytest
import torch
from test_reference import random_pre_inputs

from mhc_export import ops, reference
from mhc_export.checkpoint import load_checkpoint, read_config, save_checkpoint
from mhc_export.model import CONFIGS, build_model, get_config, random_tokens


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


def test_custom_ops_equal_reference():
    s = _op_samples()
    a = s[ops.pre]
    for got, exp in zip(ops.pre(*a), reference.mhc_pre(*a[:4], sinkhorn_iters=20), strict=True):
        assert torch.equal(got, exp)
    assert torch.equal(ops.sinkhorn(*s[ops.sinkhorn]),
                       reference.sinkhorn(s[ops.sinkhorn][0], 7))
    assert torch.equal(ops.post(*s[ops.post]), reference.mhc_post(*s[ops.post]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_and_decomposed_are_identical(dtype):
    fused = build_model("tiny", dtype=dtype, mode="fused", seed=3)
    decomposed = build_model("tiny", dtype=dtype, mode="decomposed", seed=3)
    tokens = random_tokens(fused.cfg, 2, 7, seed=4)
    with torch.no_grad():
        a, b = fused(tokens), decomposed(tokens)
    assert a.shape == (2, 7, fused.cfg.vocab_size) and a.dtype == getattr(torch, dtype)
    assert torch.isfinite(a.float()).all() and a.float().std() > 0.1
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
