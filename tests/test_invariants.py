"""Output-level invariants: correct outputs pass, each kind of broken output fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mhc_export.diagnostics import random_mhc_weights, sinkhorn_error
from mhc_export.invariants import add_output_invariants, recover_pre, sinkhorn_error_bound
from mhc_export.reference import mhc_pre, pre_mixes, sinkhorn
from mhc_export.report import Report


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _case(dtype: torch.dtype, seed: int, t: int = 48, n: int = 4, d: int = 64,  # type: ignore[no-untyped-def]
          peaked: bool = False):
    # The seed's initialisation gives well-mixed gates; "peaked" gives comb logits
    # with a spread of several units, where 20 iterations are far from converged.
    w = random_mhc_weights(n, d, _gen(seed), init_std=0.2 if peaked else 0.02,
                           scale=3.0 if peaked else 0.1)
    x = torch.randn(t, n, d, generator=_gen(seed + 1)).to(dtype)
    y, post, comb = mhc_pre(x, *w)
    pre = pre_mixes(x, *w)[0]
    return x, y, post, comb, pre, w


def _by_name(rep: Report) -> dict[str, object]:
    return {i.name: i for i in rep.invariants}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("peaked", [False, True])
def test_correct_outputs_pass_every_invariant(dtype: torch.dtype, peaked: bool) -> None:
    x, y, post, comb, _, _ = _case(dtype, 1, peaked=peaked)
    rep = Report("t")
    add_output_invariants(rep, "eager", comb_mix=comb, post_mix=post, layer_input=y,
                          residual=x, label="L0.attn")
    names = [i.name for i in rep.invariants]
    assert names == ["L0.attn comb entries <0 or non-finite", "L0.attn sinkhorn error",
                     "L0.attn comb spectral norm", "L0.attn post_mix outside [0, post_mult]",
                     "L0.attn pre outside [pre_eps, 1+pre_eps]"]
    assert all(i.passed for i in rep.invariants), rep.format()


def test_numpy_outputs_as_onnx_runtime_returns_them() -> None:
    x, y, post, comb, _, _ = _case(torch.float32, 2)
    rep = Report("t")
    add_output_invariants(rep, "ort", comb_mix=comb.numpy(), post_mix=post.numpy(),
                          layer_input=y.numpy(), residual=x.numpy())
    assert len(rep.invariants) == 5 and all(i.passed for i in rep.invariants), rep.format()
    ml_dtypes = pytest.importorskip("ml_dtypes")
    xb = torch.randn(8, 4, 32, generator=_gen(3)).bfloat16()
    w = random_mhc_weights(4, 32, _gen(4))
    yb = mhc_pre(xb, *w)[0]
    to_np = lambda t: t.float().numpy().astype(ml_dtypes.bfloat16)
    rep = Report("t")
    add_output_invariants(rep, "ort", layer_input=to_np(yb), residual=to_np(xb))
    (inv,) = rep.invariants
    assert inv.passed and "bfloat16" in inv.detail


def test_rows_not_summing_to_one_fail_the_sinkhorn_error() -> None:
    _, _, _, comb, _, _ = _case(torch.float32, 5)
    bad = comb.clone()
    bad[7, 2, :] *= 1.01  # one token's row sums to 1.01
    rep = Report("t")
    add_output_invariants(rep, "broken", comb_mix=bad)
    inv = _by_name(rep)["sinkhorn error"]
    assert not inv.passed and inv.value == pytest.approx(0.01, rel=0.01)
    assert inv.limit < 1e-4  # the bound for converged, well-mixed logits is ~eps


def test_scaled_comb_fails_the_spectral_norm() -> None:
    _, _, _, comb, _, _ = _case(torch.float32, 6)
    rep = Report("t")
    add_output_invariants(rep, "broken", comb_mix=comb * 1.001)
    inv = _by_name(rep)
    assert not inv["comb spectral norm"].passed
    assert inv["comb spectral norm"].value == pytest.approx(1.001, abs=1e-5)
    assert not inv["sinkhorn error"].passed


def test_too_few_iterations_fail_against_the_declared_iterations() -> None:
    # A backend that ran 2 Sinkhorn iterations where the model says 20.
    z = torch.randn(64, 4, 4, generator=_gen(7))
    rep = Report("t")
    add_output_invariants(rep, "broken", comb_mix=sinkhorn(z, 2), sinkhorn_iters=20)
    assert not _by_name(rep)["sinkhorn error"].passed
    rep = Report("t")
    add_output_invariants(rep, "ok", comb_mix=sinkhorn(z, 2), sinkhorn_iters=2)
    assert _by_name(rep)["sinkhorn error"].passed


def test_negative_or_nan_comb_entries_fail() -> None:
    _, _, _, comb, _, _ = _case(torch.float32, 8)
    for value in (-1e-3, float("nan")):
        bad = comb.clone()
        bad[0, 1, 1] = value
        rep = Report("t")
        add_output_invariants(rep, "broken", comb_mix=bad)
        (inv,) = rep.invariants  # nothing else is judged on a malformed matrix
        assert not inv.passed and inv.value == 1


@pytest.mark.parametrize(("index", "value"), [((3, 1), 2.01), ((5, 0), -0.01)])
def test_post_outside_its_range_fails(index: tuple[int, int], value: float) -> None:
    _, _, post, _, _, _ = _case(torch.float32, 9)
    bad = post.clone()
    bad[index] = value
    rep = Report("t")
    add_output_invariants(rep, "broken", post_mix=bad)
    (inv,) = rep.invariants
    assert not inv.passed and inv.value == pytest.approx(0.01, rel=1e-4)
    # The range follows post_mult.
    rep = Report("t")
    add_output_invariants(rep, "a", post_mix=torch.tensor([[0.2, 1.4]]), post_mult=1.5)
    add_output_invariants(rep, "b", post_mix=torch.tensor([[0.2, 1.6]]), post_mult=1.5)
    assert [i.passed for i in rep.invariants] == [True, False]
    assert rep.invariants[1].value == pytest.approx(0.1, rel=1e-6)


def test_saturated_post_at_exactly_post_mult_passes() -> None:
    post = torch.tensor([[2.0, 0.0, 1.0, 1.5]])  # float32 sigmoid saturates to 0 and 1
    rep = Report("t")
    add_output_invariants(rep, "eager", post_mix=post)
    assert rep.invariants[0].passed


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_layer_input_with_wrong_pre_fails(dtype: torch.dtype) -> None:
    x, _, _, _, pre, _ = _case(dtype, 10)
    wrong = pre.clone()
    wrong[11, 2] = 1.05  # outside (pre_eps, 1 + pre_eps) by 0.05
    y = torch.einsum("tn,tnd->td", wrong, x.float()).to(dtype)
    rep = Report("t")
    add_output_invariants(rep, "broken", layer_input=y, residual=x)
    (inv,) = rep.invariants
    assert not inv.passed
    assert inv.value == pytest.approx(0.05, abs=0.02 if dtype == torch.bfloat16 else 1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_recover_pre_returns_the_true_pre_within_its_bound(dtype: torch.dtype) -> None:
    x, y, _, _, pre, _ = _case(dtype, 11, t=200, d=96)
    got, tol = recover_pre(y, x)
    err = (got - pre.double()).abs().amax(-1)
    assert (err <= tol).all()
    # The bound is worst-case but not vacuous: well under the gates' range.
    assert float(tol.median()) < {torch.bfloat16: 0.05, torch.float16: 5e-3,
                                  torch.float32: 1e-5}[dtype]
    if dtype == torch.float32:
        torch.testing.assert_close(got, pre.double(), rtol=0, atol=1e-5)


def test_collinear_streams_are_not_judged() -> None:
    # First layer: every stream is a copy of the embedding, so only sum(pre) is known.
    h = torch.randn(6, 1, 32, generator=_gen(12))
    x = h.expand(6, 4, 32).contiguous()
    w = random_mhc_weights(4, 32, _gen(13))
    y = mhc_pre(x, *w)[0]
    rep = Report("t")
    add_output_invariants(rep, "eager", layer_input=y, residual=x)
    assert rep.invariants == []
    assert "collinear" in rep.notes[0]


@pytest.mark.parametrize("iters", [3, 5, 20])
@pytest.mark.parametrize("std", [0.1, 1.0, 4.0])
def test_sinkhorn_bound_holds_for_correct_outputs(iters: int, std: float) -> None:
    z = torch.randn(500, 4, 4, generator=_gen(iters)) * std
    z = z + torch.randn(500, 1, 4, generator=_gen(iters + 1)) * 2 * std  # column offsets
    comb = sinkhorn(z, iters)
    err, bound = sinkhorn_error(comb), sinkhorn_error_bound(comb, iters)
    # Measured: err / bound <= 0.16 for these; 0.5 leaves margin without going slack.
    assert float((err / bound).max()) < 0.5


def test_bad_arguments_are_named() -> None:
    rep = Report("t")
    with pytest.raises(ValueError, match="layer_input and residual must be given together"):
        add_output_invariants(rep, "x", layer_input=torch.zeros(2, 8))
    with pytest.raises(ValueError, match="layer_input must be"):
        add_output_invariants(rep, "x", layer_input=torch.zeros(2, 8),
                              residual=torch.ones(2, 4, 9))
    with pytest.raises(ValueError, match="comb_mix must be"):
        add_output_invariants(rep, "x", comb_mix=torch.ones(2, 4, 3))
    with pytest.raises(TypeError, match=r"comb_mix must be a torch\.Tensor or numpy array"):
        add_output_invariants(rep, "x", comb_mix=[[1.0]])
    with pytest.raises(ValueError, match="post_mult"):
        add_output_invariants(rep, "x", post_mix=torch.ones(2, 4), post_mult=0.0)
    with pytest.raises(ValueError, match="sinkhorn_iters"):
        add_output_invariants(rep, "x", comb_mix=torch.eye(4)[None], sinkhorn_iters=0)


def test_np_and_torch_give_the_same_values() -> None:
    x, y, post, comb, _, _ = _case(torch.float32, 14)
    a, b = Report("a"), Report("b")
    add_output_invariants(a, "t", comb_mix=comb, post_mix=post, layer_input=y, residual=x)
    add_output_invariants(b, "t", comb_mix=np.asarray(comb), post_mix=np.asarray(post),
                          layer_input=np.asarray(y), residual=np.asarray(x))
    assert [i.value for i in a.invariants] == [i.value for i in b.invariants]
