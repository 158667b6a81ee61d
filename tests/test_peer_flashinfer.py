"""The FlashInfer benchmark peer (benchmarks/peers/flashinfer_mhc.py).

On CPU: the loader says why it cannot run, the correctness gate refuses wrong
outputs, the projection handed to FlashInfer is the raw hc_fn @ x and sum of
squares, and the wrappers map our attributes onto FlashInfer's arguments (k,
eps names, post_mult whose default differs, output order and shapes), checked
through a stand-in that has FlashInfer 0.7.2's signatures and the math of its
kernels (csrc/mhc/mhc_pre_big_fuse.cu). On the GPU machine with the bundle
(.peers/flashinfer; marker `peer`, run by scripts/gpu/run.sh stream peer and
scripts/gpu/run.sh kernels): the real kernels against the float64 reference.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mhc_export.testing.f64 import ODD_ATTRS, pre_f64, rel_err
from mhc_export.testing.scripts import load_script

flashinfer_mhc = load_script(
    Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "flashinfer_mhc.py")


def _fi_pre_big_fuse(dot_mix, sqrsum, residual, mhc_scale, mhc_base, k, rms_eps=1e-6,
                     mhc_pre_eps=1e-6, mhc_sinkhorn_eps=1e-6, mhc_post_mult_value=1.0,
                     sinkhorn_repeat=20, num_splits=1, block_size=0):
    """FlashInfer 0.7.2's mhc_pre_big_fuse (signature, shapes, kernel math) in float64."""
    t, hc, h = residual.shape
    assert hc == 4 and h % 8 == 0 and residual.dtype == torch.bfloat16
    assert dot_mix.shape == (t, 24) and sqrsum.shape == (t,) and mhc_scale.shape == (3,)
    y, s, b = dot_mix.double(), mhc_scale.double(), mhc_base.double()
    rstd = (sqrsum.double() / k + rms_eps).rsqrt()[:, None]
    pre = torch.sigmoid(y[:, :4] * rstd * s[0] + b[:4]) + mhc_pre_eps
    post = torch.sigmoid(y[:, 4:8] * rstd * s[1] + b[4:8]) * mhc_post_mult_value
    cm = (y[:, 8:] * rstd * s[2] + b[8:]).reshape(t, 4, 4)
    cm = torch.softmax(cm, dim=-1) + mhc_sinkhorn_eps
    cm = cm / (cm.sum(-2, keepdim=True) + mhc_sinkhorn_eps)
    for _ in range(1, sinkhorn_repeat):
        cm = cm / (cm.sum(-1, keepdim=True) + mhc_sinkhorn_eps)
        cm = cm / (cm.sum(-2, keepdim=True) + mhc_sinkhorn_eps)
    layer_input = (pre[:, :, None] * residual.double()).sum(1)
    return post.float().unsqueeze(-1), cm.float(), layer_input.bfloat16()


STAND_IN = SimpleNamespace(mhc_pre_big_fuse=_fi_pre_big_fuse)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_load_without_a_gpu_says_why():
    mod, why = flashinfer_mhc.load()
    assert mod is None and why == "no CUDA GPU"


def test_bundle_site_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv(flashinfer_mhc.BUNDLE_ENV, raising=False)
    site, why = flashinfer_mhc.bundle_site(tmp_path / "nothing")
    assert site is None and str(tmp_path / "nothing") in why
    # an --out folder of flashinfer_bundle.py, or its site/, are both accepted
    (tmp_path / "site" / "flashinfer").mkdir(parents=True)
    (tmp_path / "site" / "tvm_ffi").mkdir()
    (tmp_path / "site" / "flashinfer" / "mhc.py").write_text("")
    assert flashinfer_mhc.bundle_site(tmp_path) == (tmp_path / "site", "")
    monkeypatch.setenv(flashinfer_mhc.BUNDLE_ENV, str(tmp_path / "site"))
    assert flashinfer_mhc.bundle_site(tmp_path / "ignored") == (tmp_path / "site", "")


def test_gate_accepts_rounding_and_refuses_wrong_outputs():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(8, 64, generator=g, dtype=torch.float64)
    mixes = torch.rand(8, 4, generator=g, dtype=torch.float64)
    errs = flashinfer_mhc.gate((ref.bfloat16(), mixes.float()), (ref, mixes))
    assert 1e-4 < errs[0] < 1e-2 and errs[1] < 1e-6
    with pytest.raises(AssertionError, match="output 1 rel err"):
        flashinfer_mhc.gate((ref.bfloat16(), (mixes * 1.01).float()), (ref, mixes))
    with pytest.raises(AssertionError, match="output 0 shape"):
        flashinfer_mhc.gate((mixes.float().unsqueeze(-1),), (mixes,))
    nan = mixes.float()
    nan[3, 2] = math.nan
    with pytest.raises(AssertionError, match="output 0 rel err inf"):
        flashinfer_mhc.gate((nan,), (mixes,))


def test_projection_is_the_raw_dot_and_sum_of_squares():
    g = torch.Generator().manual_seed(2)
    t, n, d = 3, 4, 16
    residual = torch.randn(t, n, d, generator=g).bfloat16()
    hc_fn = torch.randn(24, n * d, generator=g)
    dot, sq = flashinfer_mhc.projection(residual, hc_fn)
    x = residual.double().reshape(t, n * d)
    assert dot.dtype == sq.dtype == torch.float32
    assert dot.shape == (t, 24) and sq.shape == (t,)
    assert rel_err(dot, x @ hc_fn.double().t()) < 1e-5
    assert rel_err(sq, (x * x).sum(-1)) < 1e-6


@pytest.mark.parametrize("attrs", [{}, ODD_ATTRS["pre"]], ids=["defaults", "odd"])
def test_pre_maps_our_attributes_onto_flashinfers(attrs):
    """Through the stand-in, the wrapper must reproduce MhcPre in float64: a wrong k,
    a swapped eps, FlashInfer's post_mult default (1.0, ours 2.0) or a mixed-up
    output order moves an output far past the gate's tolerances."""
    inputs = flashinfer_mhc.random_inputs("pre", 5, 64, torch.Generator().manual_seed(3), "cpu")
    got = flashinfer_mhc.pre(STAND_IN, *inputs, attrs)
    exp = pre_f64(*inputs, **attrs)[:3]
    assert [o.shape for o in got] == [e.shape for e in exp]
    errs = flashinfer_mhc.gate(got, exp)
    assert errs[0] < 1e-2 and max(errs[1:]) < 1e-5, errs
    assert flashinfer_mhc.check(STAND_IN, "pre", inputs, attrs) == errs


@pytest.mark.peer
def test_flashinfer_matches_the_float64_reference():
    """The real kernels, attributes far from the defaults: what the benchmark's
    self-check runs before it times the peer."""
    fi, why = flashinfer_mhc.load()
    if fi is None:
        pytest.skip(f"FlashInfer peer unavailable: {why}")
    assert flashinfer_mhc.self_check(fi) == ""
