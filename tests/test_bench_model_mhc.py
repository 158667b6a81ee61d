"""The whole-model mHC benchmark's call sequence and floor (CPU; the timing runs on the GPU).

The sequences are checked against the model itself: the plain sequence is the
mhc::* ops a fused-mode forward pass of the reference model calls, and the fused
sequence is what the ONNX fusion pass leaves of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mhc_export.core.spec import num_mixes
from mhc_export.reference import eager as reference
from mhc_export.reference import ops
from mhc_export.reference.model import MhcModel, get_config
from mhc_export.testing.scripts import load_script

_bench = load_script(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_model_mhc.py")
mhc_calls, run_reference = _bench.mhc_calls, _bench.run_reference
sequence_floor_bytes = _bench.sequence_floor_bytes


@pytest.mark.parametrize("layers", [1, 2, 5])
def test_plain_sequence_is_what_the_model_calls(layers, monkeypatch):
    cfg = get_config("tiny", layers=layers)
    model = MhcModel(cfg, mode="fused").eval()
    seen = []
    for name in ("pre", "post", "head"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _n=name, _r=real, **k: (seen.append(_n),
                                                                             _r(*a, **k))[1])
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (1, 3)))
    assert seen == mhc_calls(2 * layers, fused=False)


@pytest.mark.parametrize("sub", [1, 2, 4, 122])
def test_fused_sequence_replaces_every_boundary(sub):
    plain, fused = mhc_calls(sub, False), mhc_calls(sub, True)
    assert plain.count("pre") == sub and plain.count("post") == sub and plain[-1] == "head"
    # One MhcPre stays (the first); every later pre and every post fold into a boundary op.
    assert fused.count("pre") == 1 and fused.count("post_pre") == sub - 1
    assert fused[-1] == "post_head" and len(fused) == sub + 1


def test_sequence_floor_saves_one_residual_pass_per_boundary():
    t, n, d, e, sub = 64, 4, 7168, 2, 6
    plain = sequence_floor_bytes(mhc_calls(sub, False), t, n, d, e)
    fused = sequence_floor_bytes(mhc_calls(sub, True), t, n, d, e)
    residual = t * n * d * e
    # Each post->pre boundary skips re-reading the residual it wrote (sub - 1);
    # the post->head boundary skips that read and the residual write itself (2).
    assert plain - fused == (sub + 1) * residual


def test_sequence_rejects_no_sublayers():
    with pytest.raises(ValueError, match="sublayers"):
        mhc_calls(0, False)


def test_reference_sequence_matches_the_reference_ops():
    g = torch.Generator().manual_seed(3)
    t, n, d, sub = 2, 4, 16, 2
    k, m = n * d, num_mixes(n)
    s = {"x0": torch.randn(t, n, d, generator=g).bfloat16(),
         "sub_out": [torch.randn(t, d, generator=g).bfloat16() for _ in range(sub)],
         "pre_w": [(torch.randn(m, k, generator=g) / k**0.5, torch.rand(3, generator=g) + 0.5,
                    torch.randn(m, generator=g)) for _ in range(sub)],
         "head_w": (torch.randn(n, k, generator=g) / k**0.5, torch.rand(1, generator=g) + 0.5,
                    torch.randn(n, generator=g))}
    y = run_reference(s)
    x = s["x0"].float()
    for w, out in zip(s["pre_w"], s["sub_out"], strict=True):
        _, post, comb = reference.mhc_pre(x, *w)
        x = reference.mhc_post(out.float(), x, post, comb).bfloat16().float()
    assert torch.equal(y, reference.mhc_head(x, *s["head_w"]))
