"""The V4.1 reference model (delayed pre) against a float64 forward written from the spec's
"Model around the ops (V4.1 block structure)", and its configs and checkpoints."""

from __future__ import annotations

import pytest
import torch

from mhc_export.core.spec import V41_FLASH
from mhc_export.reference.checkpoint import load_checkpoint, read_config, save_checkpoint
from mhc_export.reference.model import build_model, get_config, random_tokens
from mhc_export.testing.f64 import collapse_f64, mix_f64, post_f64, rel_err

ODD_V41 = {"rms_eps": 0.1, "pre_eps": 0.05, "sinkhorn_eps": 1e-2, "post_mult": 1.3,
           "sinkhorn_iters": 7}


def forward_f64_v41(model, tokens: torch.Tensor, *, own_pre: bool = False) -> torch.Tensor:
    """The model's forward with every mHC op from mhc_export/testing/f64.py (no code shared
    with mhc_export.reference.eager or .ops): n copies of the embedding, the one-hot seed, each
    site collapsed with the previous site's pre, a final collapse, no head mix. The
    attention/FFN modules are the model's own. ``own_pre`` wires V4's collapse (each site
    with its own pre, the final one with the last pre): the bug the tests must catch."""
    cfg = model.cfg
    a = dict(rms_eps=cfg.rms_eps, pre_eps=cfg.pre_eps, sinkhorn_eps=cfg.sinkhorn_eps,
             post_mult=cfg.post_mult, sinkhorn_iters=cfg.sinkhorn_iters)
    batch = tokens.shape[0]
    h = model.embed(tokens).reshape(-1, cfg.hidden)
    x = h.unsqueeze(1).expand(-1, cfg.streams, -1).to(model.dtype)
    p = torch.zeros(x.shape[0], cfg.streams, dtype=torch.float64)
    p[:, 0] = 1.0  # the one-hot seed, no eps
    for i, sub in enumerate(model.sublayers):
        if i % 2 == 0 and str(i // 2) in model.engrams:  # the model's own engram stand-in
            x = model.engrams[str(i // 2)](x)
        w = sub.mhc
        p_next, post, comb = mix_f64(x, w.hc_fn, w.hc_scale, w.hc_base, **a)
        y = collapse_f64(x, p_next if own_pre else p)
        z = sub.norm(y.to(model.dtype))
        if sub.kind == "attention":
            z = sub.body(z.view(batch, -1, cfg.hidden)).reshape(-1, cfg.hidden)
        else:
            z = sub.body(z)
        x = post_f64(z, x, post, comb).to(model.dtype)  # rounded at every post
        p = p_next
    y = collapse_f64(x, p)
    return model.lm_head(model.final_norm(y.to(model.dtype))).view(batch, -1, cfg.vocab_size)


@pytest.mark.parametrize("engram", [(), (1,), (0, 1)], ids=str)
@pytest.mark.parametrize("mode", ["fused", "decomposed"])
def test_v41_model_matches_a_float64_forward_with_odd_attributes(mode, engram):
    cfg = get_config("tiny-v41", engram_layers=engram, **ODD_V41)
    model = build_model(cfg, mode=mode, seed=3)
    tokens = random_tokens(cfg, 2, 7, seed=4)
    with torch.no_grad():
        got, exp = model(tokens), forward_f64_v41(model, tokens)
        v4_wiring = forward_f64_v41(model, tokens, own_pre=True)
        default = forward_f64_v41(
            build_model(get_config("tiny-v41", engram_layers=engram), mode=mode, seed=3), tokens)
    assert got.shape == (2, 7, cfg.vocab_size)
    assert torch.isfinite(got).all() and got.std() > 0.1
    assert rel_err(got, exp) < 2e-5
    assert rel_err(got, default) > 1e-2  # the config's attributes reach every op
    # Collapsing with the site's own pre (V4) is caught: far outside the tolerance.
    assert rel_err(v4_wiring, exp) > 100 * 2e-5


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_v41_flash_eps_model_matches_float64(dtype):
    """tiny-v41 as configured: rms_eps = norm eps = 1e-20 (V4.1-Flash's rms_norm_eps)."""
    model = build_model("tiny-v41", dtype=dtype, seed=8)
    assert model.cfg.rms_eps == model.cfg.norm_eps == 1e-20
    tokens = random_tokens(model.cfg, 2, 6, seed=1)
    with torch.no_grad():
        got, exp = model(tokens), forward_f64_v41(model, tokens)
        decomposed = build_model("tiny-v41", dtype=dtype, mode="decomposed", seed=8)(tokens)
    assert got.dtype == getattr(torch, dtype)
    assert rel_err(got, exp) < (2e-5 if dtype == "float32" else 2e-2)
    assert torch.equal(got, decomposed)


def test_v41_configs_and_weights():
    flash = get_config("v41-flash-layer")
    assert (flash.hidden, flash.streams, flash.layers, flash.family) == (
        V41_FLASH["hidden"], V41_FLASH["streams"], 1, "V4.1")
    assert flash.rms_eps == flash.norm_eps == 1e-20
    assert {get_config(c).family for c in ("tiny-v41", "small-v41")} == {"V4.1"}
    model = build_model("tiny-v41", dtype="bfloat16")
    assert model.head_mhc is None
    assert not any(k.startswith("head_mhc") for k in model.state_dict())
    assert model.sublayers[0].mhc.hc_fn.dtype == torch.float32
    with pytest.raises(ValueError, match="family must be one of"):
        get_config("tiny", family="V5")
    assert get_config("small-v41").engram_layers == (1,)
    with pytest.raises(ValueError, match=r"engram_layers are a V4\.1 feature"):
        get_config("tiny", engram_layers=(1,))
    with pytest.raises(ValueError, match=r"engram_layers \[2\] outside 0..1"):
        get_config("tiny-v41", engram_layers=(2,))


def test_v41_prefill_equals_incremental_and_checkpoint_roundtrip(tmp_path):
    model = build_model(get_config("tiny-v41", engram_layers=(1,)), dtype="float16", seed=2)
    tokens = random_tokens(model.cfg, 1, 9, seed=2)
    path = tmp_path / "v41.safetensors"
    save_checkpoint(model, path)
    assert read_config(path) == model.cfg
    loaded = load_checkpoint(path)
    with torch.no_grad():
        full = model(tokens)
        assert torch.equal(loaded(tokens), full)
        for k in (1, 5):
            torch.testing.assert_close(model(tokens[:, :k]), full[:, :k], rtol=2e-3, atol=2e-3)
