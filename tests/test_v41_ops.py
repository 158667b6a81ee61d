"""DeepSeek-V4.1's ops (MhcMix, MhcCollapse, MhcPostMix, MhcPostCollapse): the eager
reference and the torch custom ops against mhc_export/testing/f64.py, at attributes far
from their defaults and at V4.1-Flash's rms_eps = 1e-20."""

from __future__ import annotations

import re

import pytest
import torch
from test_reference import random_pre_inputs

from mhc_export.core.spec import V41_FLASH_RMS_EPS, V41_OPS, num_mixes
from mhc_export.reference import eager as reference
from mhc_export.reference import ops
from mhc_export.testing.f64 import (
    ODD_ATTRS,
    collapse_f64,
    mix_f64,
    post_collapse_f64,
    post_mix_f64,
    pre_f64,
    rel_err,
)
from mhc_export.validation.report import tolerance_for

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 4, 64), (7, 3, 45), (5, 8, 8), (3, 1, 17), (33, 4, 256)]
ODD = ODD_ATTRS["mix"]


def _tol(dtype: torch.dtype) -> float:
    return 2e-5 if dtype == torch.float32 else tolerance_for(dtype)


def boundary_inputs(t, n, d, dtype, seed=0, scale=1.0):
    """x, residual, pre_mix, post_mix, comb_mix of site k and site k+1's weights, with
    pre_mix in (pre_eps, 1 + pre_eps) as an MhcMix makes it."""
    g = torch.Generator().manual_seed(seed)
    k = n * d
    return [
        (torch.randn(t, d, generator=g) * scale).to(dtype),
        (torch.randn(t, n, d, generator=g) * scale).to(dtype),
        torch.rand(t, n, generator=g) + 1e-6,
        2 * torch.rand(t, n, generator=g),
        reference.sinkhorn(torch.randn(t, n, n, generator=g) * 2),
        torch.randn(num_mixes(n), k, generator=g) / k**0.5,
        0.5 + torch.rand(3, generator=g),
        torch.randn(num_mixes(n), generator=g) * 0.5,
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("t", "n", "d"), SHAPES)
def test_mix_and_collapse_match_float64(t, n, d, dtype):
    args = random_pre_inputs(t, n, d, dtype, seed=t * 31 + n * 7 + d)
    got = reference.mhc_mix(*args, **ODD)
    via_op = ops.mix(*args, *ODD.values())
    exp = mix_f64(*args, **ODD)
    for name, a, b, e in zip(("pre", "post", "comb"), got, via_op, exp, strict=True):
        assert a.dtype == torch.float32 and a.shape == e.shape, name
        assert rel_err(a, e) < 2e-6, name
        assert torch.equal(a, b), name
    # The attributes reach the op: at the defaults the float64 mixes are far away.
    for a, e in zip(got, mix_f64(*args), strict=True):
        assert rel_err(a, e) > 5e-3  # n = 1: comb is 1/(1 + eps)
    residual = args[0]
    pre = got[0]
    y = reference.mhc_collapse(residual, pre)
    assert y.dtype == dtype and y.shape == (t, d)
    assert rel_err(y, collapse_f64(residual, pre)) < _tol(dtype)
    assert torch.equal(ops.collapse(residual, pre), y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_eps_1e_20_reaches_the_mixes(dtype):
    """V4.1-Flash's rms_eps = 1e-20 is accepted and used: on inputs whose mean square
    (1e-8) is far under the 1e-6 default, the two values give different mixes."""
    args = random_pre_inputs(9, 4, 40, dtype, seed=5, scale=1e-4)
    a = {**ODD, "rms_eps": V41_FLASH_RMS_EPS}
    got = ops.mix(*args, *a.values())
    exp = mix_f64(*args, **a)
    for g, e in zip(got, exp, strict=True):
        assert rel_err(g, e) < 2e-5
    default_eps = mix_f64(*args, **{**a, "rms_eps": 1e-6})
    assert rel_err(got[0], default_eps[0]) > 1e-2
    v = boundary_inputs(9, 4, 40, dtype, seed=6, scale=1e-4)
    out = ops.post_mix(*v, *a.values())
    for name, g, e in zip(V41_OPS["post_mix"].outputs, out, post_mix_f64(*v, **a), strict=True):
        assert rel_err(g, e) < _tol(g.dtype), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("t", "n", "d"), SHAPES)
def test_post_mix_and_post_collapse_match_float64(t, n, d, dtype):
    v = boundary_inputs(t, n, d, dtype, seed=t * 13 + n + d)
    got = reference.mhc_post_mix(*v, **ODD)
    via_op = ops.post_mix(*v, *ODD.values())
    exp = post_mix_f64(*v, **ODD)
    outputs = V41_OPS["post_mix"].outputs
    for name, a, b, e in zip(outputs, got, via_op, exp, strict=True):
        want = dtype if name in ("residual_out", "layer_input") else torch.float32
        assert a.dtype == want and a.shape == e.shape, name
        assert rel_err(a, e) < _tol(a.dtype), name
        assert torch.equal(a, b), name
    y = reference.mhc_post_collapse(*v[:5])
    assert y.dtype == dtype and y.shape == (t, d)
    assert rel_err(y, post_collapse_f64(*v[:5])) < _tol(dtype)
    assert torch.equal(ops.post_collapse(*v[:5]), y)


def test_fused_ops_are_exactly_their_compositions():
    """MhcPostMix = MhcPost, then MhcCollapse and MhcMix on the rounded residual_out;
    MhcPre = (MhcCollapse(X, own pre), post, comb): bit for bit (same float32 math)."""
    v = boundary_inputs(6, 4, 32, torch.bfloat16, seed=1)
    r = reference.mhc_post(v[0], v[1], v[3], v[4])
    parts = [r, reference.mhc_collapse(r, v[2]), *reference.mhc_mix(r, *v[5:], **ODD)]
    for a, b in zip(reference.mhc_post_mix(*v, **ODD), parts, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(reference.mhc_post_collapse(*v[:5]), parts[1])
    pre, post, comb = reference.mhc_mix(r, *v[5:], **ODD)
    for a, b in zip(reference.mhc_pre(r, *v[5:], **ODD),
                    (reference.mhc_collapse(r, pre), post, comb), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_own_pre_is_the_v4_behaviour_and_fails(dtype):
    """The V4.1 bug to catch: collapsing with the site's OWN pre (next_pre_mix, what
    V4's MhcPostPre does) instead of the previous site's. The float64 V4.1 check must
    reject it, so a kernel or graph with that wiring cannot pass the tests above."""
    v = boundary_inputs(16, 4, 64, dtype, seed=11)
    want = post_mix_f64(*v, **ODD)
    r, layer_input, own_pre, *_ = reference.mhc_post_mix(*v, **ODD)
    assert rel_err(layer_input, want[1]) < _tol(dtype)  # the right wiring passes
    v4_input = reference.mhc_collapse(r, own_pre)  # the V4 wiring
    assert torch.equal(v4_input, reference.mhc_post_pre(v[0], v[1], *v[3:], **ODD)[1])
    assert rel_err(v4_input, want[1]) > 10 * _tol(dtype)
    # ... and the V4 float64 formula (pre_f64 on the same residual) is what it matches.
    assert rel_err(v4_input, pre_f64(r, *v[5:], **ODD)[0]) < _tol(dtype)


def _op_samples():
    v = boundary_inputs(5, 4, 24, torch.bfloat16, seed=9)
    a = tuple(ODD.values())
    return {
        ops.mix: (v[1], *v[5:], *a),
        ops.collapse: (v[1], v[2]),
        ops.post_mix: (*v, *a),
        ops.post_collapse: tuple(v[:5]),
    }


@pytest.mark.parametrize("op", list(_op_samples()), ids=lambda o: o._name)
def test_custom_op_registration(op):
    """torch.library.opcheck: schema, fake (meta) implementation and dispatch agree."""
    torch.library.opcheck(op, _op_samples()[op], test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs_are_named():
    v = boundary_inputs(3, 4, 16, torch.float32)
    with pytest.raises(ValueError, match=re.escape("pre_mix must have shape [3, 4]")):
        reference.mhc_collapse(v[1], v[2][:, :3])
    with pytest.raises(TypeError, match="pre_mix must be float32"):
        reference.mhc_collapse(v[1], v[2].double())
    with pytest.raises(ValueError, match=re.escape("pre_mix must have shape [3, 4]")):
        reference.mhc_post_mix(v[0], v[1], v[2][:2], *v[3:])
    with pytest.raises(ValueError, match=re.escape("hc_fn must have shape [24, 64]")):
        reference.mhc_post_mix(*v[:5], v[5][:-1], *v[6:])
    with pytest.raises(ValueError, match="rms_eps must be a finite number >= 0"):
        reference.mhc_mix(v[1], *v[5:], rms_eps=-1e-20)
    with pytest.raises(TypeError, match=re.escape("x dtype torch.float16 must match")):
        reference.mhc_post_collapse(v[0].half(), *v[1:5])


def test_pre_mix_invariant_bounds():
    """V4.1's pre_mix range check: MhcMix outputs pass, a pre_mix off by 1e-3 fails."""
    from mhc_export.validation.invariants import add_output_invariants
    from mhc_export.validation.report import Report

    args = random_pre_inputs(64, 4, 32, torch.float32, seed=21)
    pre, post, comb = reference.mhc_mix(*args, **ODD)
    name = "pre_mix outside [pre_eps, 1+pre_eps]"
    eps = ODD["pre_eps"]
    for value, ok in ((None, True), (eps - 1e-3, False), (1 + eps + 1e-3, False)):
        bad = pre.clone()
        if value is not None:
            bad[5, 2] = value
        report = Report("t")
        add_output_invariants(report, "x", pre_mix=bad, post_mix=post, comb_mix=comb,
                              pre_eps=eps, post_mult=ODD["post_mult"],
                              sinkhorn_iters=ODD["sinkhorn_iters"],
                              sinkhorn_eps=ODD["sinkhorn_eps"])
        (inv,) = [i for i in report.invariants if i.name == name]
        assert inv.passed is ok, (value, inv)
