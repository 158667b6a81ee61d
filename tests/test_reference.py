"""The eager reference against the independent float64 implementation, and its properties."""

from __future__ import annotations

import re

import pytest
import torch

from mhc_export.core.spec import num_mixes
from mhc_export.reference import eager as reference
from mhc_export.testing.f64 import ODD_ATTRS, head_f64, post_f64, pre_f64, rel_err, sinkhorn_f64

# (T, n, d): n != 4, odd d, T = 1 included.
SHAPES = [(1, 4, 64), (5, 4, 256), (17, 2, 33), (3, 8, 40), (9, 3, 7), (2, 1, 16), (64, 4, 512)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Outputs in the residual dtype carry one rounding: bf16 lands between 1e-3
# and 1e-2, fp16 near 1e-3; float32 stays far under 1e-4.
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def random_pre_inputs(t: int, n: int, d: int, dtype: torch.dtype, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    m, k = num_mixes(n), n * d
    residual = (torch.randn(t, n, d, generator=g) * scale).to(dtype)
    hc_fn = torch.randn(m, k, generator=g) / k**0.5
    hc_scale = 0.5 + torch.rand(3, generator=g)
    hc_base = torch.randn(m, generator=g) * 0.5
    return residual, hc_fn, hc_scale, hc_base


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("t", "n", "d"), SHAPES)
def test_pre_matches_float64(t, n, d, dtype):
    seed = t * 1009 + n * 101 + d + DTYPES.index(dtype)
    args = random_pre_inputs(t, n, d, dtype, seed)
    layer_input, post, comb = reference.mhc_pre(*args)
    ref_li, ref_post, ref_comb, _ = pre_f64(*args)
    assert layer_input.dtype == dtype and layer_input.shape == (t, d)
    assert post.dtype == comb.dtype == torch.float32
    assert rel_err(post, ref_post) < 2e-6
    assert rel_err(comb, ref_comb) < 2e-6
    assert rel_err(layer_input, ref_li) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("t", "n", "d"), [(1, 4, 64), (17, 2, 33), (9, 3, 7), (33, 4, 256)])
def test_every_op_with_odd_attributes_matches_float64(t, n, d, dtype):
    """Large, distinct attributes: a lost or misplaced eps/post_mult/iters is a 1e-2 error."""
    a = ODD_ATTRS["pre"]
    args = random_pre_inputs(t, n, d, dtype, seed=4242 + t + d)
    got = reference.mhc_pre(*args, **a)
    exp = pre_f64(*args, **a)
    for name, g, e in zip(("layer_input", "post_mix", "comb_mix"), got, exp, strict=False):
        tol = TOL[dtype] if name == "layer_input" else 2e-6
        assert rel_err(g, e) < tol, name
    # The attributes matter: the default-attribute float64 result is far away.
    default = pre_f64(*args)
    for i, (g, e) in enumerate(zip(got, default, strict=False)):
        if i or dtype != torch.bfloat16:  # a bf16 layer_input is too coarse to tell
            assert rel_err(g, e) > max(1e-2, 2 * TOL[dtype])
    pre, _, _ = reference.pre_mixes(*args, **a)
    assert rel_err(pre, exp[3]) < 2e-6
    residual, hc_fn, hc_scale, hc_base = args
    h = ODD_ATTRS["head"]
    y = reference.mhc_head(residual, hc_fn[:n], hc_scale[:1], hc_base[:n], **h)
    y_exp = head_f64(residual, hc_fn[:n], hc_scale[:1], hc_base[:n], **h)
    assert rel_err(y, y_exp) < TOL[dtype]
    assert rel_err(y, head_f64(residual, hc_fn[:n], hc_scale[:1], hc_base[:n])) > 2 * TOL[dtype]
    sk = ODD_ATTRS["sinkhorn"]
    logits = torch.randn(t, n, n, generator=torch.Generator().manual_seed(t)) * 2
    assert rel_err(reference.sinkhorn(logits, **sk), sinkhorn_f64(logits, **sk)) < 2e-6


@pytest.mark.parametrize("rms_eps", [0.0, 1e-3, 0.1, 10.0])
@pytest.mark.parametrize("scale", [1e-2, 1.0, 30.0])
def test_rms_eps_against_input_scale(rms_eps, scale):
    """rms_eps comparable to mean(x^2) in either direction, float32, tight."""
    args = random_pre_inputs(7, 4, 48, torch.float32, seed=17, scale=scale)
    got = reference.mhc_pre(*args, rms_eps=rms_eps)
    exp = pre_f64(*args, rms_eps=rms_eps)
    for g, e in zip(got, exp, strict=False):
        assert rel_err(g, e) < 4e-6


@pytest.mark.parametrize("eps", [0.0, 1e-4, 1e-2, 0.3])
@pytest.mark.parametrize("iters", [1, 2, 3, 7])
def test_sinkhorn_eps_and_iters_match_float64(iters, eps):
    logits = torch.randn(40, 4, 4, generator=torch.Generator().manual_seed(iters)) * 3
    assert rel_err(reference.sinkhorn(logits, iters, eps), sinkhorn_f64(logits, iters, eps)) < 2e-6


@pytest.mark.parametrize("iters", [1, 2, 20, 50])
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_sinkhorn_matches_float64(n, iters):
    g = torch.Generator().manual_seed(n * 100 + iters)
    logits = torch.randn(33, n, n, generator=g) * 3
    assert rel_err(reference.sinkhorn(logits, iters), sinkhorn_f64(logits, iters)) < 2e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("t", "n", "d"), SHAPES)
def test_post_matches_float64(t, n, d, dtype):
    g = torch.Generator().manual_seed(t * 7 + n * 3 + d)
    x = torch.randn(t, d, generator=g).to(dtype)
    residual = torch.randn(t, n, d, generator=g).to(dtype)
    post = 2 * torch.rand(t, n, generator=g)
    comb = reference.sinkhorn(torch.randn(t, n, n, generator=g) * 2)
    out = reference.mhc_post(x, residual, post, comb)
    assert out.dtype == dtype and out.shape == (t, n, d)
    assert rel_err(out, post_f64(x, residual, post, comb)) < TOL[dtype]


def test_post_reads_columns_of_comb():
    """Stream j of the output reads column j of comb (out = comb^T @ residual)."""
    t, n, d = 1, 3, 4
    residual = torch.arange(t * n * d, dtype=torch.float32).reshape(t, n, d)
    comb = torch.zeros(t, n, n)
    comb[0, 2, 0] = 1.0  # output stream 0 takes input stream 2
    comb[0, 0, 1] = 1.0
    comb[0, 1, 2] = 1.0
    out = reference.mhc_post(torch.zeros(t, d), residual, torch.zeros(t, n), comb)
    assert torch.equal(out[0, 0], residual[0, 2])
    assert torch.equal(out[0, 1], residual[0, 0])
    assert torch.equal(out[0, 2], residual[0, 1])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("t", "n", "d"), SHAPES)
def test_head_matches_float64(t, n, d, dtype):
    g = torch.Generator().manual_seed(t + 11 * n + d)
    residual = torch.randn(t, n, d, generator=g).to(dtype)
    hc_fn = torch.randn(n, n * d, generator=g) / (n * d) ** 0.5
    hc_scale = 0.5 + torch.rand(1, generator=g)
    hc_base = torch.randn(n, generator=g)
    y = reference.mhc_head(residual, hc_fn, hc_scale, hc_base)
    assert y.dtype == dtype and y.shape == (t, d)
    assert rel_err(y, head_f64(residual, hc_fn, hc_scale, hc_base)) < TOL[dtype]


@pytest.mark.parametrize("n", [2, 4, 8])
def test_gate_ranges_and_doubly_stochastic(n):
    args = random_pre_inputs(200, n, 96, torch.float32, seed=n)
    pre, post, comb = reference.pre_mixes(*args, pre_eps=1e-6, post_mult=2.0)
    assert (pre > 1e-6).all() and (pre < 1 + 1e-6).all()
    assert (post > 0).all() and (post < 2.0).all()
    assert (comb > 0).all()
    assert (comb.sum(-1) - 1).abs().max() < 1e-3
    assert (comb.sum(-2) - 1).abs().max() < 1e-5  # the last pass normalises columns


def test_batch_prefill_equals_token_by_token():
    args = random_pre_inputs(12, 4, 128, torch.bfloat16, seed=3)
    residual, *w = args
    batch = reference.mhc_pre(residual, *w)
    single = [reference.mhc_pre(residual[i : i + 1], *w) for i in range(residual.shape[0])]
    for k in range(3):
        stacked = torch.cat([s[k] for s in single])
        torch.testing.assert_close(batch[k], stacked, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("magnitude", [1e2, 1e3, 1e4])
def test_extreme_logits_stay_finite(magnitude):
    g = torch.Generator().manual_seed(int(magnitude))
    logits = torch.randn(64, 4, 4, generator=g) * magnitude
    comb = reference.sinkhorn(logits)
    assert torch.isfinite(comb).all()
    assert (comb.sum(-2) - 1).abs().max() < 1e-5
    # Whole MhcPre with huge mixes: sigmoids saturate, Sinkhorn stays finite.
    residual, hc_fn, _, hc_base = random_pre_inputs(8, 4, 32, torch.float32, seed=1,
                                                    scale=magnitude)
    hc_scale = torch.full((3,), magnitude)
    outs = reference.mhc_pre(residual, hc_fn, hc_scale, hc_base * magnitude)
    assert all(torch.isfinite(o).all() for o in outs)


def test_sinkhorn_inits_differ_and_converge():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, 4, generator=g)
    results = {init: reference.sinkhorn(logits, 30, init=init) for init in
               ("softmax_row", "exp", "softmax_col")}
    for c in results.values():
        assert (c.sum(-1) - 1).abs().max() < 1e-4 and (c.sum(-2) - 1).abs().max() < 1e-4
    # Same fixed point (Sinkhorn's limit is unique), different finite-iteration paths.
    assert (results["exp"] - results["softmax_row"]).abs().max() < 1e-4
    assert not torch.equal(results["exp"], results["softmax_col"])


# --- bad input: every rejection names the problem ---------------------------------------

def _good():
    return random_pre_inputs(4, 4, 16, torch.float32, seed=0)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda a: (a[0][0], *a[1:]), ValueError, "rank 3"),
        (lambda a: (a[0].to(torch.float64), *a[1:]), TypeError, "residual dtype"),
        (lambda a: (a[0].to(torch.int32), *a[1:]), TypeError, "residual dtype"),
        (lambda a: (a[0], a[1][:, :-1], *a[2:]), ValueError, "n*d = 4*16 = 64"),
        (lambda a: (a[0], a[1][:-1], *a[2:]), ValueError, "hc_fn must have shape [24, 64]"),
        (lambda a: (a[0], a[1].double(), *a[2:]), TypeError, "hc_fn must be float32"),
        (lambda a: (*a[:2], a[2][:2], a[3]), ValueError, "hc_scale must have shape [3]"),
        (lambda a: (*a[:3], a[3][:5]), ValueError, "hc_base must have shape [24]"),
        (lambda a: (torch.zeros(2, 9, 4), *a[1:]), ValueError, "n=9 streams"),
        (lambda a: ("x", *a[1:]), TypeError, "residual must be a torch.Tensor"),
    ],
)
def test_pre_rejects_bad_inputs(mutate, error, message):
    with pytest.raises(error, match=re.escape(message)):
        reference.mhc_pre(*mutate(_good()))


@pytest.mark.parametrize(
    ("attrs", "error", "message"),
    [
        ({"sinkhorn_iters": 0}, ValueError, "sinkhorn_iters must be >= 1"),
        ({"sinkhorn_iters": 2.5}, TypeError, "sinkhorn_iters must be an int"),
        ({"rms_eps": float("nan")}, ValueError, "rms_eps must be a finite number"),
        ({"pre_eps": float("inf")}, ValueError, "pre_eps must be a finite number"),
        ({"sinkhorn_eps": -1e-6}, ValueError, "sinkhorn_eps must be a finite number >= 0"),
        ({"post_mult": 0.0}, ValueError, "post_mult must be a finite number > 0"),
    ],
)
def test_pre_rejects_bad_attributes(attrs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        reference.mhc_pre(*_good(), **attrs)


def test_other_ops_reject_bad_inputs():
    residual = torch.randn(3, 4, 8)
    comb = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match=r"x must have shape \[T, d\] = \[3, 8\]"):
        reference.mhc_post(torch.randn(3, 9), residual, torch.rand(3, 4), comb)
    with pytest.raises(TypeError, match=r"x dtype torch\.float16 must match residual dtype"):
        reference.mhc_post(torch.randn(3, 8).half(), residual, torch.rand(3, 4), comb)
    with pytest.raises(ValueError, match=r"comb_mix must have shape \[3, 4, 4\]"):
        reference.mhc_post(torch.randn(3, 8), residual, torch.rand(3, 4), comb[:, :3])
    with pytest.raises(ValueError, match=r"logits must have shape \[..., n, n\]"):
        reference.sinkhorn(torch.randn(3, 4, 5))
    with pytest.raises(TypeError, match="logits must be float32"):
        reference.sinkhorn(torch.randn(3, 4, 4).double())
    with pytest.raises(ValueError, match="unknown Sinkhorn init 'log'"):
        reference.sinkhorn(torch.randn(3, 4, 4), init="log")
    with pytest.raises(ValueError, match=r"hc_fn must have shape \[4, 32\]"):
        reference.mhc_head(residual, torch.randn(24, 32), torch.ones(1), torch.zeros(4))
    with pytest.raises(ValueError, match="attribute eps must be a finite number"):
        reference.mhc_head(residual, torch.randn(4, 32), torch.ones(1), torch.zeros(4),
                           eps=float("nan"))
