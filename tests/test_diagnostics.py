"""mHC diagnostics (seed 003): constructed cases with known answers, the sweep, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import sys

import pytest
import torch
from torch.func import jacrev

from mhc_export.cli import main
from mhc_export.diagnostics import (
    SweepConfig,
    comb_logits,
    dynamic_sensitivity,
    fit_power_law,
    gate_stats,
    gauge_perp_basis,
    logit_update,
    project_gauge_perp,
    quotient_jacobian,
    random_mhc_weights,
    run_sweep,
    sinkhorn_error,
    spectral_stats,
)
from mhc_export.reference.eager import pre_mixes, sinkhorn
from mhc_export.testing.f64 import pre_f64, sinkhorn_f64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- 1, 2: Sinkhorn error and spectral statistics ---------------------------


@pytest.mark.parametrize("n", [2, 4, 7])
def test_permutation_has_zero_error_unit_norm_and_condition(n: int) -> None:
    perm = torch.randperm(n, generator=_gen(n))
    p = torch.eye(n)[perm]
    assert float(sinkhorn_error(p)) == 0.0
    smax, cond = spectral_stats(p)
    assert float(smax) == pytest.approx(1.0, abs=1e-12)
    assert float(cond) == pytest.approx(1.0, abs=1e-12)


def test_sinkhorn_error_reads_the_worst_row_or_column() -> None:
    c = torch.full((3, 3), 1 / 3)
    c[0, 0] += 0.02  # row 0 and column 0 both sum to 1.02
    c[2, 1] -= 0.05  # row 2 and column 1 sum to 0.95
    assert float(sinkhorn_error(c)) == pytest.approx(0.05, abs=1e-7)
    # A rank-one matrix: norm 1, condition number at the float64 limit or inf.
    smax, cond = spectral_stats(torch.ones(3, 3, dtype=torch.float64) / 3)
    assert float(smax) == pytest.approx(1.0, abs=1e-12)
    assert float(cond) > 1e12


def _constant_logit_fixed_point(n: int, iters: int, eps: float) -> float:
    # For constant logits every entry stays equal, c -> c / (n c + eps), i.e.
    # u = 1/c obeys u -> n + eps u: after softmax + eps (u0 = n / (1 + n eps)) the
    # V4 Sinkhorn applies m = 2 iters - 1 normalisations, so
    # u_m = n (1 - eps^m) / (1 - eps) + eps^m u0, with fixed point c* = (1 - eps) / n.
    m = 2 * iters - 1
    u0 = n / (1 + n * eps)
    return 1.0 / (n * (1 - eps**m) / (1 - eps) + eps**m * u0)


@pytest.mark.parametrize("iters", [1, 2, 5, 50])
@pytest.mark.parametrize("n", [3, 4])
def test_constant_logits_reach_the_exact_eps_fixed_point(n: int, iters: int) -> None:
    eps = 1e-2  # large enough that the eps shift is far above float32 rounding
    value = float(torch.randn(1, generator=_gen(iters)))
    comb = sinkhorn(torch.full((n, n), value), iters, eps)
    expected = _constant_logit_fixed_point(n, iters, eps)
    torch.testing.assert_close(comb, torch.full((n, n), expected), rtol=1e-6, atol=0)
    # Every row and column sums to n c, so eps_K = |n c - 1| (-> eps at large K).
    assert float(sinkhorn_error(comb)) == pytest.approx(abs(n * expected - 1), rel=1e-4)
    if iters == 50:
        assert expected == pytest.approx((1 - eps) / n, rel=1e-12)
        assert float(sinkhorn_error(comb)) == pytest.approx(eps, rel=1e-4)


# --- 3: gauge space and quotient Jacobian ----------------------------------


@pytest.mark.parametrize("n", [2, 3, 4])
def test_gauge_projector_matches_the_span_construction(n: int) -> None:
    # The seed builds G from the 2n matrices e_i 1^T, 1 e_j^T; its complement
    # projector must equal double centring.
    span = []
    for i in range(n):
        r = torch.zeros(n, n, dtype=torch.float64)
        r[i, :] = 1
        c = torch.zeros(n, n, dtype=torch.float64)
        c[:, i] = 1
        span += [r.flatten(), c.flatten()]
    q, rr = torch.linalg.qr(torch.stack(span, 1))
    q = q[:, rr.diag().abs() > 1e-10]
    assert q.shape[1] == 2 * n - 1
    p_perp = torch.eye(n * n, dtype=torch.float64) - q @ q.T
    z = torch.randn(5, n, n, generator=_gen(n), dtype=torch.float64)
    torch.testing.assert_close(project_gauge_perp(z).reshape(5, -1), z.reshape(5, -1) @ p_perp.T)
    u = gauge_perp_basis(n)
    assert u.shape == (n * n, (n - 1) ** 2)
    torch.testing.assert_close(u.T @ u, torch.eye((n - 1) ** 2, dtype=torch.float64))
    torch.testing.assert_close(u @ u.T, p_perp)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("iters", [1, 2, 5, 20])
def test_quotient_jacobian_at_zero_logits_is_identity_over_n(n: int, iters: int) -> None:
    # At Z = 0 the row softmax gives (1/n)(1 + Z H) to first order and the
    # column pass (1/n)(1 + H Z H); later passes keep it. So J = (1/n) H (x) H and
    # on G^perp it is I / n: every singular value 1/n, condition number 1, any K.
    sv = quotient_jacobian(torch.zeros(2, n, n), iters, eps=0.0)
    assert sv.shape == (2, (n - 1) ** 2)
    torch.testing.assert_close(sv, torch.full_like(sv, 1.0 / n), rtol=1e-5, atol=0)


def test_quotient_jacobian_matches_an_independent_float64_jacobian() -> None:
    n, iters = 4, 10
    z = torch.randn(3, n, n, generator=_gen(3)) * 1.5
    sv = quotient_jacobian(z, iters, 1e-6)
    u = gauge_perp_basis(n)
    for k in range(3):
        jac = jacrev(lambda m: sinkhorn_f64(m, iters, 1e-6))(z[k].double())
        ref = torch.linalg.svdvals(u.T @ jac.reshape(n * n, n * n) @ u)
        torch.testing.assert_close(sv[k], ref, rtol=2e-4, atol=1e-6)
    # Standard normal logits: far from the uniform point, so spread singular values.
    assert (sv[:, 0] / sv[:, -1] > 1.5).all()


# --- 4: dynamic sensitivity -------------------------------------------------


def test_dynamic_sensitivity_matches_float64_jacobian_per_token() -> None:
    n, d, t = 4, 24, 3
    w = random_mhc_weights(n, d, _gen(4), init_std=0.2, scale=0.5)
    x = torch.randn(t, n, d, generator=_gen(5))
    sens = dynamic_sensitivity(x, *w)
    for k in range(t):
        def gates(r: torch.Tensor) -> torch.Tensor:
            _, post, comb, pre = pre_f64(r.reshape(1, n, d), *w)
            return torch.cat([pre.flatten(), post.flatten(), comb.flatten()])

        xk = x[k].double()
        jac = torch.autograd.functional.jacobian(gates, xk).reshape(2 * n + n * n, n * d)
        xn = float(xk.norm())
        for got, rows in ((sens.pre, slice(0, n)), (sens.post, slice(n, 2 * n)),
                          (sens.comb, slice(2 * n, None))):
            expected = float(torch.linalg.matrix_norm(jac[rows], ord=2)) * xn
            assert float(got[k]) == pytest.approx(expected, rel=1e-4)


def test_dynamic_sensitivity_is_invariant_to_input_scale() -> None:
    # The gates see x only through x / rms(x): scaling x by lam scales D by 1/lam.
    n, d = 4, 32
    w = random_mhc_weights(n, d, _gen(6), init_std=0.1, scale=0.3)
    x = torch.randn(2, n, d, generator=_gen(7))
    a, b = dynamic_sensitivity(x, *w), dynamic_sensitivity(x * 8.0, *w)
    for u, v in ((a.comb, b.comb), (a.pre, b.pre), (a.post, b.post)):
        assert (u > 0).all()
        torch.testing.assert_close(u, v, rtol=1e-4, atol=0)


# --- 5: gauge component of the logit update ----------------------------------


def test_logit_update_known_answer_at_the_uniform_point() -> None:
    # Comb rows of hc_fn = 0 and a pure-gauge base make Z a gauge, so comb is
    # uniform (for large K) and dL/dZ = J^T 2 (C - I) = -(2/n) H: entirely outside
    # the gauge space. With W = 0 the scale gradient vanishes, the W step
    # -lr s dL/dZ xhat^T enters Z through s again, so
    # dZ = lr (s^2 ||xhat||^2 + 1)(2/n) H, and ||H||_F = sqrt(n - 1).
    n, d, lr, s = 4, 16, 1e-3, 0.1
    hc_fn, hc_scale, hc_base = random_mhc_weights(n, d, _gen(8), scale=s)
    hc_fn[2 * n :] = 0
    r, c = torch.randn(n, 1, generator=_gen(9)), torch.randn(1, n, generator=_gen(10))
    hc_base[2 * n :] = (r + c).flatten()
    x = torch.randn(2, n, d, generator=_gen(11))
    upd = logit_update(x, hc_fn, hc_scale, hc_base, lr=lr, sinkhorn_eps=0.0, sinkhorn_iters=50)
    xf = x.reshape(2, -1).double()
    xhat2 = (xf.square().sum(-1) / (xf.square().mean(-1) + 1e-6))
    expected = lr * (s * s * xhat2 + 1) * (2 / n) * math.sqrt(n - 1)
    torch.testing.assert_close(upd.total_norm, expected, rtol=1e-3, atol=0)
    torch.testing.assert_close(upd.perp_ratio, torch.ones(2, dtype=torch.float64),
                               rtol=0, atol=1e-4)


def test_logit_update_has_a_gauge_part_when_the_scale_moves() -> None:
    # With random comb rows the hc_scale gradient adds dZ along W xhat, which has
    # a gauge component: the ratio drops below 1 but stays dominated by G^perp.
    n, d = 4, 32
    w = random_mhc_weights(n, d, _gen(12), init_std=0.05, scale=0.5)
    upd = logit_update(torch.randn(4, n, d, generator=_gen(13)), *w)
    assert ((upd.perp_ratio > 0.5) & (upd.perp_ratio < 1 - 1e-6)).all()
    torch.testing.assert_close(upd.perp_ratio, upd.perp_norm / upd.total_norm)


def test_comb_logits_feed_the_same_comb_as_pre_mixes() -> None:
    n, d = 4, 20
    w = random_mhc_weights(n, d, _gen(14), init_std=0.3, scale=1.0)
    x = torch.randn(5, n, d, generator=_gen(15))
    torch.testing.assert_close(sinkhorn(comb_logits(x, *w), 20, 1e-6), pre_mixes(x, *w)[2])


# --- 6: gate statistics -------------------------------------------------------


def test_gate_stats_on_known_gates() -> None:
    pre = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    post = torch.tensor([[1.0, 1.5, 0.5, 0.2], [0.1, 0.2, 1.9, 0.3]])
    g = gate_stats(pre, post)
    assert g.pre_mean == pytest.approx(0.375)
    assert g.pre_l1_mean == pytest.approx(1.5)
    assert (g.pre_min, g.pre_max) == pytest.approx((0.1, 0.5))
    assert g.post_mean == pytest.approx(5.7 / 8)
    assert g.post_linf_mean == pytest.approx((1.5 + 1.9) / 2)
    assert (g.post_min, g.post_max) == pytest.approx((0.1, 1.9))


# --- the sweep ---------------------------------------------------------------


def test_fit_power_law_recovers_exponent_and_prefactor() -> None:
    x = [16.0, 64.0, 256.0, 1000.0]
    alpha, c = fit_power_law(x, [3.0 * v**1.5 for v in x])
    assert alpha == pytest.approx(1.5, abs=1e-12)
    assert c == pytest.approx(3.0, rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1.0, 2.0], [1.0, 0.0])


@pytest.fixture(scope="module")
def small_sweep():  # type: ignore[no-untyped-def]
    return run_sweep(SweepConfig(widths=(32, 64, 128), samples=4, seed=1))


def test_sweep_shape_and_trends(small_sweep) -> None:  # type: ignore[no-untyped-def]
    res = small_sweep
    assert sorted(res.per_width) == [32, 64, 128]
    # Measured here: ||DC|| ||x|| ~ d^0.96..0.98 (mixes grow like sqrt(n d) times a
    # Jacobian growing like sqrt(n d) in the small-logit regime), so the band is tight.
    assert 0.85 < res.exponent < 1.1
    dc = [res.per_width[d]["dc_x"]["mean"] for d in (32, 64, 128)]
    assert dc[0] < dc[1] < dc[2]
    for r in res.per_width.values():
        assert r["sinkhorn_error"]["max"] < 3e-6  # the eps floor at K = 20
        assert r["spectral_norm"]["max"] <= 1 + 1e-5
        assert 0.9 < r["logit_update"]["perp_ratio_mean"] <= 1
        assert 0.45 < r["gates"]["pre_mean"] < 0.55  # sigmoid of small mixes
    curve = res.error_curve
    errs = curve["standard normal logits"]["max"]
    iters = curve["iters"]
    # Geometric decrease until the eps floor, then flat at ~eps.
    above = [e for e in errs if e > 10 * curve["eps"]]
    assert len(above) >= 5 and all(a > b for a, b in itertools.pairwise(above))
    assert errs[iters.index(50)] < 2e-6
    q = res.quotient_jacobian
    assert set(q) == {1, 2, 5, 10, 20, 50}
    assert all(v["sigma_min_mean"] > 0 and v["kappa_mean"] >= 1 for v in q.values())


def test_sweep_is_reproducible_by_seed(small_sweep) -> None:  # type: ignore[no-untyped-def]
    again = run_sweep(SweepConfig(widths=(32, 64, 128), samples=4, seed=1))
    assert again.to_dict() == small_sweep.to_dict()
    other = run_sweep(SweepConfig(widths=(32, 64), samples=2, seed=2))
    assert other.per_width[32]["dc_x"] != small_sweep.per_width[32]["dc_x"]


@pytest.mark.parametrize(("kw", "msg"), [
    ({"widths": (64, 0)}, "widths must be positive"),
    ({"iters": 0}, "iters must be >= 1"),
    ({"samples": 0}, "samples"),
    ({"streams": 1}, "streams"),
])
def test_sweep_rejects_bad_config(kw, msg) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=msg):
        run_sweep(SweepConfig(**kw))


# --- the CLI -----------------------------------------------------------------


def test_cli_writes_json_and_png(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("matplotlib")
    js, png = tmp_path / "out" / "d.json", tmp_path / "d.png"
    rc = main(["diagnose", "--widths", "16", "32", "--samples", "2", "--iters", "10",
               "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "fitted exponents" in out and "||DC||·||x||" in out
    data = json.loads(js.read_text())
    assert data["config"]["widths"] == [16, 32] and data["config"]["iters"] == 10
    assert set(data["per_width"]) == {"16", "32"}
    assert math.isfinite(data["exponents"]["dc_x"])
    assert 10 in data["sinkhorn_error_vs_iters"]["iters"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.rglob("*.tmp")]  # atomic writes leave no debris


@pytest.mark.parametrize(("argv", "msg"), [
    (["--widths", "64", "0"], "--widths must be positive"),
    (["--widths", "-8"], "--widths must be positive"),
    (["--iters", "0"], "--iters must be >= 1"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--streams", "9"], "--streams must be in 1..8"),
    (["--streams", "1"], "with one stream the Sinkhorn comb is the constant 1"),
])
def test_cli_rejects_bad_arguments(argv, msg, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["diagnose", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_cli_plot_without_matplotlib_says_how_to_install(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    assert main(["diagnose", "--widths", "16", "--plot", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "mhc-export[plot]" in err
    assert not (tmp_path / "p.png").exists()
