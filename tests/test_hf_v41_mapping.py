"""DeepSeek-V4.1's HF name mapping (mhc_export/adapters/hf_deepseek_v41.py) against a
V4.1-shaped module tree of our own, and ``--hf`` on a deepseek_v41 checkpoint.

No transformers release ships deepseek_v41, so the tree here is built from the spec's
"DeepSeek-V4.1 in HF transformers" section: the mix weights are raw float32 attributes
of each decoder layer (``model.layers.{l}.hc_attn_fn`` ...), the forward is written the
way HF's is (normalise the flattened stream, then ``F.linear``; a float32 one-hot seed;
each site collapsed with the previous site's pre; a final collapse and ``model.norm``;
no hc_head). Its sublayer bodies are our model's attention and FFN modules. Our V4.1
model, loaded through the mapping and exported to ONNX, must compute what it computes.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mhc_export.adapters import hf_deepseek_v41 as v41
from mhc_export.cli import main
from mhc_export.export.model_export import export_model
from mhc_export.reference.model import Attention, RMSNorm, SwiGLU, build_model, get_config
from mhc_export.testing.f64 import rel_err
from mhc_export.validation import ort_runner

CONFIG = SimpleNamespace(text_config=SimpleNamespace(
    hc_mult=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=96,
    intermediate_size=48, rms_norm_eps=1e-20, hc_eps=0.05, hc_sinkhorn_iters=7))


class HfV41Layer(nn.Module):
    def __init__(self, c) -> None:
        super().__init__()
        shapes = v41.mix_shapes(c.hc_mult, c.hidden_size)
        for site in v41.SITES:
            for param, shape in shapes.items():  # raw attributes, as in the checkpoint
                setattr(self, f"hc_{site}_{param}", nn.Parameter(torch.empty(shape)))
        self.attn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.ffn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c.hidden_size, c.num_attention_heads)
        self.mlp = SwiGLU(c.hidden_size, c.intermediate_size)


class HfV41Tree(nn.Module):
    """model.embed, model.layers, model.norm, lm_head: V4.1's top-level names."""

    def __init__(self, config) -> None:
        super().__init__()
        c = config.text_config
        self.config = config
        self.model = nn.Module()
        self.model.embed = nn.Embedding(c.vocab_size, c.hidden_size)
        self.model.layers = nn.ModuleList(HfV41Layer(c) for _ in range(c.num_hidden_layers))
        self.model.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def hc_mixes(self, streams, fn, scale, base):
        c = self.config.text_config
        n, t = c.hc_mult, streams.shape[0]
        x = streams.reshape(t, -1).float()
        x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + c.rms_norm_eps)
        mixes = F.linear(x, fn)
        pre = torch.sigmoid(mixes[:, :n] * scale[0] + base[:n]) + c.hc_eps
        post = 2 * torch.sigmoid(mixes[:, n : 2 * n] * scale[1] + base[n : 2 * n])
        comb = (mixes[:, 2 * n :] * scale[2] + base[2 * n :]).view(t, n, n).softmax(-1)
        comb = comb + c.hc_eps
        comb = comb / (comb.sum(-2, keepdim=True) + c.hc_eps)
        for _ in range(c.hc_sinkhorn_iters - 1):
            comb = comb / (comb.sum(-1, keepdim=True) + c.hc_eps)
            comb = comb / (comb.sum(-2, keepdim=True) + c.hc_eps)
        return pre, post, comb

    @staticmethod
    def hc_collapse(streams, pre):
        return (pre.unsqueeze(-1) * streams.float()).sum(1).to(streams.dtype)

    @staticmethod
    def hc_expand(x, residual, post, comb):
        mixed = comb.transpose(1, 2) @ residual.float()
        return (post.unsqueeze(-1) * x.float().unsqueeze(1) + mixed).to(residual.dtype)

    def forward(self, ids):
        c = self.config.text_config
        b = ids.shape[0]
        h = self.model.embed(ids).reshape(-1, c.hidden_size)
        streams = h.unsqueeze(1).expand(-1, c.hc_mult, -1).contiguous()
        pre = torch.zeros(streams.shape[0], c.hc_mult)
        pre[:, 0] = 1.0
        for layer in self.model.layers:
            for site, norm, body in (("attn", layer.attn_norm, layer.self_attn),
                                     ("ffn", layer.ffn_norm, layer.mlp)):
                w = [getattr(layer, f"hc_{site}_{p}") for p in ("fn", "scale", "base")]
                pre_next, post, comb = self.hc_mixes(streams, *w)
                y = norm(self.hc_collapse(streams, pre))
                y = (body(y.view(b, -1, c.hidden_size)).reshape(-1, c.hidden_size)
                     if site == "attn" else body(y))
                streams = self.hc_expand(y, streams, post, comb)
                pre = pre_next
        y = self.model.norm(self.hc_collapse(streams, pre))
        return self.lm_head(y).view(b, -1, c.vocab_size)


def _random_tree(seed: int) -> HfV41Tree:
    tree = HfV41Tree(CONFIG)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in tree.named_parameters():
            scale = 1 / p.shape[-1] ** 0.5 if p.dim() == 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if "norm" in name else 0))
    return tree


def _body_name(hf: str) -> str | None:
    """The tree's bodies are our modules: self_attn/mlp of layer l -> sublayers.2l/2l+1."""
    parts = hf.split(".")
    if parts[3] in ("self_attn", "mlp"):
        site = 2 * int(parts[2]) + (parts[3] == "mlp")
        return ".".join(["sublayers", str(site), "body", *parts[4:]])
    return None


def _ours(tree: HfV41Tree):
    c = CONFIG.text_config
    cfg = get_config("tiny-v41", vocab_size=c.vocab_size, hidden=c.hidden_size,
                     streams=c.hc_mult, layers=c.num_hidden_layers,
                     heads=c.num_attention_heads, ffn_hidden=c.intermediate_size,
                     norm_eps=c.rms_norm_eps, **v41.mix_attributes(CONFIG))
    model = build_model(cfg, seed=99)
    state = {}
    for name, p in tree.state_dict().items():
        target = v41.our_name(name) or _body_name(name)
        assert target is not None, name
        state[target] = p
    assert sorted(state) == sorted(model.state_dict())  # every parameter, once
    model.load_state_dict(state, strict=True)
    return model


def test_mapping_covers_the_v41_tree_with_the_spec_shapes():
    tree = _random_tree(0)
    model = _ours(tree)
    ours = model.state_dict()
    c = CONFIG.text_config
    mixes = [n for n in tree.state_dict() if ".hc_" in n]
    assert len(mixes) == 3 * 2 * c.num_hidden_layers
    for name in mixes:
        assert ours[v41.our_name(name)].shape == tree.state_dict()[name].shape
        assert ours[v41.our_name(name)].dtype == torch.float32
    assert v41.hf_name(1, "ffn", "base") == "model.layers.1.hc_ffn_base"
    assert v41.our_name("model.layers.1.hc_ffn_base") == "sublayers.3.mhc.hc_base"
    assert v41.our_name("model.layers.0.attn_norm.weight") == "sublayers.0.norm.weight"
    assert v41.checkpoint_name("model.layers.0.hc_attn_fn") == "layers.0.hc_attn_fn"
    assert v41.our_name("model.hc_head.fn") is None  # V4.1 has no head mix
    assert v41.mix_shapes(4, 5120)["fn"] == (24, 20480)
    assert v41.mix_attributes(CONFIG) == {"rms_eps": 1e-20, "pre_eps": 0.05,
                                          "sinkhorn_eps": 0.05, "post_mult": 2.0,
                                          "sinkhorn_iters": 7}
    with pytest.raises(ValueError, match="site must be one of"):
        v41.hf_name(0, "head", "fn")


def test_our_graph_computes_what_the_v41_tree_computes(tmp_path):
    tree = _random_tree(1)
    model = _ours(tree)
    ids = torch.randint(0, CONFIG.text_config.vocab_size, (2, 7),
                        generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = tree(ids)
        eager = model(ids)
    assert torch.isfinite(want).all() and want.std() > 0.1
    # HF normalises x before the projection, we scale the projection: float32 rounding.
    assert rel_err(eager, want) < 1e-4
    path = tmp_path / "v41.onnx"
    export_model(model, path)
    got = ort_runner.run(ort_runner.session(path, "CPUExecutionProvider"), {"tokens": ids})
    assert rel_err(got["logits"], want) < 1e-4
    # The V4 wiring (each site collapsed with its own pre) does not match the tree.
    with torch.no_grad():
        assert rel_err(_own_pre_forward(model, ids), want) > 1e-2


def _own_pre_forward(model, ids):
    """Our model's ops with V4's wiring, through the reference functions."""
    from mhc_export.reference import eager as reference

    cfg = model.cfg
    a = {k: getattr(cfg, k) for k in ("rms_eps", "pre_eps", "sinkhorn_eps", "post_mult",
                                      "sinkhorn_iters")}
    b = ids.shape[0]
    x = model.embed(ids).reshape(-1, cfg.hidden).unsqueeze(1).expand(-1, cfg.streams, -1)
    pre = None
    for sub in model.sublayers:
        pre, post, comb = reference.mhc_mix(x, sub.mhc.hc_fn, sub.mhc.hc_scale,
                                            sub.mhc.hc_base, **a)
        y = sub._body(reference.mhc_collapse(x, pre), b)
        x = reference.mhc_post(y, x, post, comb)
    y = reference.mhc_collapse(x, pre)
    return model.lm_head(model.final_norm(y)).view(b, -1, cfg.vocab_size)


def test_hf_flag_on_a_v41_checkpoint_says_what_is_missing(tmp_path, capsys):
    import transformers

    ckpt = tmp_path / "v41"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "deepseek_v41",
                                                  "text_config": {"hc_mult": 4}}))
    out = tmp_path / "x.onnx"
    assert main(["export", "--hf", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    if v41.transformers_has_v41():  # a future transformers: the --hf wiring is what's missing
        assert "exports DeepSeek-V4 only" in err
    else:
        assert f"transformers {transformers.__version__} has no deepseek_v41 model" in err
        assert "none does yet" in err and "--config tiny-v41" in err
    assert not out.exists()
