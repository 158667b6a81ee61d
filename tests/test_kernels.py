"""GPU tests of the CUDA kernels (mhc_export.kernels) against the float64 reference.

Skip with the reason where there is no CUDA GPU or no built libmhc_kernels.so.
Every output is poisoned with NaN before each launch and every element is
checked afterwards; inputs are fresh random draws per case.
"""

from __future__ import annotations

import pytest
import support
import torch

from mhc_export import kernels
from mhc_export.core.spec import num_mixes
from mhc_export.testing.f64 import head_f64, post_f64, pre_f64, rel_err, sinkhorn_f64

# tests/builds.py decides: skip with the reason on CI, fail under MHC_REQUIRE_* switches.
pytestmark = [pytest.mark.gpu, pytest.mark.needs_build("kernels")]

DEV = torch.device("cuda")
# Output tolerances (max abs error / max |ref|) per residual dtype: the output
# rounding of the dtype dominates; the float32 gates stay far tighter.
TOL_OUT = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 2e-5}
TOL_GATE = 2e-5
ALL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device=DEV)
    g.manual_seed(seed)
    return g


def make_weights(n: int, d: int, rows: int, scales: int, g: torch.Generator):
    k = n * d
    hc_fn = torch.randn(rows, k, device=DEV, generator=g) / k**0.5
    hc_scale = 0.5 + torch.rand(scales, device=DEV, generator=g) * 1.5
    hc_base = torch.randn(rows, device=DEV, generator=g) * 0.5
    return hc_fn, hc_scale, hc_base


def make_residual(t: int, n: int, d: int, dtype: torch.dtype, g: torch.Generator, scale=1.0):
    return (torch.randn(t, n, d, device=DEV, generator=g) * scale).to(dtype)


def nan_like(shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


def run_pre(residual, hc_fn, hc_scale, hc_base, **attrs):
    t, n, d = residual.shape
    out = (nan_like((t, d), residual.dtype), nan_like((t, n), torch.float32),
           nan_like((t, n, n), torch.float32))
    got = kernels.pre(residual, hc_fn, hc_scale, hc_base, out=out, **attrs)
    torch.cuda.synchronize()
    for name, o in zip(("layer_input", "post_mix", "comb_mix"), got, strict=True):
        assert torch.isfinite(o).all(), f"{name} has unwritten (NaN) or non-finite elements"
    return got


def check_pre(t, n, d, dtype, seed, **attrs):
    g = _gen(seed)
    hc_fn, hc_scale, hc_base = make_weights(n, d, num_mixes(n), 3, g)
    residual = make_residual(t, n, d, dtype, g)
    li, post, comb = run_pre(residual, hc_fn, hc_scale, hc_base, **attrs)
    ref_li, ref_post, ref_comb, _ = pre_f64(residual, hc_fn, hc_scale, hc_base, **attrs)
    e_li, e_post, e_comb = rel_err(li, ref_li), rel_err(post, ref_post), rel_err(comb, ref_comb)
    assert e_li < TOL_OUT[dtype], f"layer_input rel err {e_li:.3g} (T={t} n={n} d={d} {dtype})"
    assert e_post < TOL_GATE, f"post_mix rel err {e_post:.3g}"
    assert e_comb < TOL_GATE, f"comb_mix rel err {e_comb:.3g}"
    return residual, (hc_fn, hc_scale, hc_base), (li, post, comb)


# --- MhcPre -----------------------------------------------------------------

@pytest.mark.parametrize("t", [1, 2, 3, 17, 64, 1000, 4099])
def test_pre_v4_all_t(t):
    check_pre(t, 4, 7168, torch.bfloat16, seed=100 + t)


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("d", [1000, 1280, 2056, 4096, 7168])
@pytest.mark.parametrize("t", [3, 64])
def test_pre_sweep_n_d(t, n, d):
    check_pre(t, n, d, torch.bfloat16, seed=1000 * n + d + t)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("t", [1, 17, 1000])
def test_pre_dtypes(t, dtype):
    check_pre(t, 4, 2056, dtype, seed=7 + t)
    check_pre(t, 4, 7168, dtype, seed=9 + t)


@pytest.mark.parametrize("n", [1, 3, 5, 6, 7])
def test_pre_other_n(n):
    for dtype in ALL_DTYPES:
        check_pre(5, n, 1000, dtype, seed=40 + n)


@pytest.mark.parametrize("n", [1, 3, 4, 8])
@pytest.mark.parametrize("d", [1000, 2056, 7168])
def test_pre_fused_tiles(n, d):
    # T >= 128 bf16 takes the one-pass cluster kernel on sm_90+: partial token
    # tiles, column slices that do not divide d, every n.
    check_pre(131, n, d, torch.bfloat16, seed=500 + 10 * n + d)


def test_pre_attributes():
    check_pre(33, 4, 1280, torch.bfloat16, seed=5, rms_eps=1e-3, pre_eps=0.01,
              sinkhorn_eps=1e-4, post_mult=1.5, sinkhorn_iters=1)
    check_pre(33, 4, 1280, torch.float32, seed=6, sinkhorn_iters=50)


def test_pre_deterministic():
    for t in (1, 64, 4099):
        residual, w, first = check_pre(t, 4, 7168, torch.bfloat16, seed=77 + t)
        for _ in range(3):
            again = run_pre(residual, *w)
            for a, b in zip(first, again, strict=True):
                assert torch.equal(a, b), f"T={t}: results differ between runs"


def test_pre_extreme_inputs():
    g = _gen(11)
    n, d = 4, 2056
    hc_fn, hc_scale, hc_base = make_weights(n, d, num_mixes(n), 3, g)
    for scale in (1e-4, 1e4):
        residual = make_residual(50, n, d, torch.bfloat16, g, scale=scale)
        li, post, comb = run_pre(residual, hc_fn, hc_scale, hc_base)
        ref_li, ref_post, ref_comb, _ = pre_f64(residual, hc_fn, hc_scale, hc_base)
        assert rel_err(li, ref_li) < 1e-2
        assert rel_err(comb, ref_comb) < 1e-4
    # Saturated gates and Sinkhorn logits spanning hundreds: still finite and exact.
    residual = make_residual(50, n, d, torch.float32, g)
    big_scale = torch.tensor([300.0, 300.0, 300.0], device=DEV)
    li, post, comb = run_pre(residual, hc_fn, big_scale, hc_base)
    ref_li, ref_post, ref_comb, _ = pre_f64(residual, hc_fn, big_scale, hc_base)
    assert rel_err(li, ref_li) < 1e-4
    assert rel_err(post, ref_post) < 1e-4
    assert rel_err(comb, ref_comb) < 1e-4
    # One dominant element per token: a near-zero rms elsewhere must not blow up.
    residual = torch.zeros(8, n, d, device=DEV, dtype=torch.bfloat16)
    residual[:, 0, 0] = 3.0e4
    residual[:, 1, 5] = -1.0e-3
    run_pre(residual, hc_fn, hc_scale, hc_base)


def test_pre_t0_is_noop():
    g = _gen(1)
    hc_fn, hc_scale, hc_base = make_weights(4, 64, num_mixes(4), 3, g)
    li, post, comb = kernels.pre(make_residual(0, 4, 64, torch.bfloat16, g),
                                 hc_fn, hc_scale, hc_base)
    assert li.shape == (0, 64) and post.shape == (0, 4) and comb.shape == (0, 4, 4)


@pytest.mark.parametrize("n", [1, 2, 4, 5, 7, 8])
@pytest.mark.parametrize("t", [1, 2, 4, 5, 8, 31, 63, 64, 65])
def test_pre_decode_t(t, n):
    # T <= 64 takes the decode path (split-K mixes kernel + PDL finish kernel);
    # every tokens-per-CTA variant, partial tiles, T=65 just past it, and a d
    # whose vectors do not fill the last CTA.
    for d in (1000, 7168):
        check_pre(t, n, d, torch.bfloat16, seed=3000 + 100 * n + t + d)


def test_pre_garbage_workspace(monkeypatch):
    # The TensorRT plugin hands over an uninitialised workspace: poison it
    # with 0xFF bytes (NaN floats, 0xFFFFFFFF counters) before every call.
    from mhc_export.kernels import _ops

    real = _ops.new_workspace

    def poisoned(nbytes, device):
        ws = real(nbytes, device)
        ws.fill_(0xFF)
        return ws

    monkeypatch.setattr(_ops, "new_workspace", poisoned)
    for t in (1, 3, 64, 200):
        for dtype in ALL_DTYPES:
            residual, w, first = check_pre(t, 4, 7168, dtype, seed=900 + t)
            again = run_pre(residual, *w)
            for a, b in zip(first, again, strict=True):
                assert torch.equal(a, b), f"T={t} {dtype}: results differ with a poisoned workspace"


@pytest.mark.parametrize("t", [1, 8, 64, 2100])
def test_pre_cuda_graph_replays(t):
    # Several calls captured in one CUDA graph, replayed several times with new
    # inputs copied in: every replay matches the reference and the eager call.
    n, d = 4, 7168
    g = _gen(4000 + t)
    calls = 3
    static_in = [make_residual(t, n, d, torch.bfloat16, g) for _ in range(calls)]
    weights = [make_weights(n, d, num_mixes(n), 3, g) for _ in range(calls)]
    outs = [(nan_like((t, d), torch.bfloat16), nan_like((t, n), torch.float32),
             nan_like((t, n, n), torch.float32)) for _ in range(calls)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(calls):
            kernels.pre(static_in[i], *weights[i], out=outs[i])
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            kernels.pre(static_in[i], *weights[i], out=outs[i])
    for rep in range(3):
        fresh = [make_residual(t, n, d, torch.bfloat16, g) for _ in range(calls)]
        for i in range(calls):
            static_in[i].copy_(fresh[i])
            for o in outs[i]:
                o.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        for i in range(calls):
            li, post, comb = outs[i]
            ref_li, ref_post, ref_comb, _ = pre_f64(fresh[i], *weights[i])
            assert rel_err(li, ref_li) < TOL_OUT[torch.bfloat16], f"replay {rep} call {i}"
            assert rel_err(post, ref_post) < TOL_GATE, f"replay {rep} call {i}"
            assert rel_err(comb, ref_comb) < TOL_GATE, f"replay {rep} call {i}"
            eager = run_pre(fresh[i], *weights[i])
            for a, b in zip(outs[i], eager, strict=True):
                assert torch.equal(a, b), f"replay {rep} call {i}: graph and eager differ"


# --- MhcSinkhorn -----------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 9))
def test_sinkhorn(n):
    g = _gen(200 + n)
    for t, iters, eps in ((1, 20, 1e-6), (17, 1, 1e-6), (4099, 20, 1e-6), (300, 7, 1e-3)):
        logits = torch.randn(t, n, n, device=DEV, generator=g) * 3
        out = nan_like((t, n, n), torch.float32)
        got = kernels.sinkhorn(logits, iters, eps, out=out)
        torch.cuda.synchronize()
        assert torch.isfinite(got).all()
        err = rel_err(got, sinkhorn_f64(logits, iters, eps))
        assert err < TOL_GATE, f"n={n} T={t} iters={iters}: rel err {err:.3g}"


def test_sinkhorn_extreme_logits():
    g = _gen(3)
    logits = torch.randn(64, 4, 4, device=DEV, generator=g) * 1e4
    got = kernels.sinkhorn(logits, out=nan_like((64, 4, 4), torch.float32))
    torch.cuda.synchronize()
    assert torch.isfinite(got).all()
    assert rel_err(got, sinkhorn_f64(logits)) < 1e-4


# --- MhcPost ----------------------------------------------------------------

def _assert_written_close(op, name, got, want, where):
    """A poisoned (NaN) output fully written, within the output tolerance of float64."""
    torch.cuda.synchronize()
    assert torch.isfinite(got).all(), f"{name} has unwritten (NaN) elements"
    err = rel_err(got, want)
    assert err < TOL_OUT[got.dtype], f"{op} rel err {err:.3g} ({where})"


def check_post(t, n, d, dtype, seed):
    g = _gen(seed)
    x = make_residual(t, 1, d, dtype, g).reshape(t, d)
    residual = make_residual(t, n, d, dtype, g)
    post_mix = torch.rand(t, n, device=DEV, generator=g) * 2
    comb_mix = torch.rand(t, n, n, device=DEV, generator=g)
    out = kernels.post(x, residual, post_mix, comb_mix, out=nan_like((t, n, d), dtype))
    _assert_written_close("post", "out", out, post_f64(x, residual, post_mix, comb_mix),
                          f"T={t} n={n} d={d} {dtype}")
    again = kernels.post(x, residual, post_mix, comb_mix)
    assert torch.equal(out, again)


# --- MhcHead ----------------------------------------------------------------

def check_head(t, n, d, dtype, seed):
    g = _gen(seed)
    hc_fn, hc_scale, hc_base = make_weights(n, d, n, 1, g)
    residual = make_residual(t, n, d, dtype, g)
    y = kernels.head(residual, hc_fn, hc_scale, hc_base, out=nan_like((t, d), dtype))
    _assert_written_close("head", "y", y, head_f64(residual, hc_fn, hc_scale, hc_base),
                          f"T={t} n={n} d={d} {dtype}")
    assert torch.equal(y, kernels.head(residual, hc_fn, hc_scale, hc_base))


# Per op: its check, the base seed of the V4 sweep over T, the seed step per n and the
# (T, d) shapes of the n x dtype sweep (each op draws its own inputs).
_POST_HEAD = {
    "post": (check_post, 300, 10, ((3, 1000), (64, 2056), (17, 4096))),
    "head": (check_head, 500, 100, ((3, 1000), (64, 2056))),
}


@pytest.mark.parametrize("t", [1, 2, 3, 17, 64, 1000, 4099])
@pytest.mark.parametrize("op", list(_POST_HEAD))
def test_post_head_v4_all_t(op, t):
    check, seed, _, _ = _POST_HEAD[op]
    check(t, 4, 7168, torch.bfloat16, seed=seed + t)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("op", list(_POST_HEAD))
def test_post_head_n_dtypes(op, n, dtype):
    check, _, seed_step, shapes = _POST_HEAD[op]
    for t, d in shapes:
        check(t, n, d, dtype, seed=n * seed_step + t)


# --- Errors -----------------------------------------------------------------

def test_bad_d_is_rejected_naming_d():
    g = _gen(2)
    n, d = 4, 1004
    hc_fn, hc_scale, hc_base = make_weights(n, d, num_mixes(n), 3, g)
    residual = make_residual(3, n, d, torch.bfloat16, g)
    with pytest.raises(ValueError, match=r"MHC_STATUS_NOT_SUPPORTED.*d=1004"):
        kernels.pre(residual, hc_fn, hc_scale, hc_base)
    with pytest.raises(ValueError, match=r"d=1004"):
        kernels.post(residual[:, 0].contiguous(), residual, torch.rand(3, n, device=DEV),
                     torch.rand(3, n, n, device=DEV))


def test_bad_inputs_raise_clear_errors():
    g = _gen(4)
    n, d = 4, 64
    hc_fn, hc_scale, hc_base = make_weights(n, d, num_mixes(n), 3, g)
    residual = make_residual(3, n, d, torch.bfloat16, g)
    with pytest.raises(ValueError, match="CUDA tensor"):
        kernels.pre(residual.cpu(), hc_fn.cpu(), hc_scale.cpu(), hc_base.cpu())
    with pytest.raises(ValueError, match="contiguous"):
        kernels.pre(residual.transpose(0, 1).contiguous().transpose(0, 1), hc_fn, hc_scale,
                    hc_base)
    with pytest.raises(ValueError, match="hc_fn has"):
        kernels.pre(residual, hc_fn[:, :-8], hc_scale, hc_base)
    with pytest.raises(ValueError, match="sinkhorn_iters"):
        kernels.pre(residual, hc_fn, hc_scale, hc_base, sinkhorn_iters=0)


# --- process-wide state: capture and threads (issue: kernel caches per device) ---
_COLD_PROCESS = r"""
import threading, torch
from mhc_export.testing.f64 import pre_f64, rel_err
from mhc_export import kernels
dev = torch.device("cuda")
g = torch.Generator(device=dev).manual_seed(5)
n, d = 4, 7168
def weights():
    k = n * d
    return (torch.randn(24, k, device=dev, generator=g) / k**0.5,
            0.5 + torch.rand(3, device=dev, generator=g),
            torch.randn(24, device=dev, generator=g) * 0.5)
def check(out, res, w, what):
    ref = pre_f64(res, *w)
    assert rel_err(out[0], ref[0]) < 1e-2 and rel_err(out[1], ref[1]) < 2e-5 \
        and rel_err(out[2], ref[2]) < 2e-5, what
# 1. The very first launches of the fused (T=512) and decode (T=8, T=1) paths happen
#    inside a CUDA graph capture: attributes are set and the cluster checked without a
#    failed launch.
cases = []
for t in (512, 8, 1):
    res = torch.randn(t, n, d, device=dev, generator=g).to(torch.bfloat16)
    w = weights()
    out = (torch.full((t, d), float("nan"), device=dev, dtype=torch.bfloat16),
           torch.full((t, n), float("nan"), device=dev),
           torch.full((t, n, n), float("nan"), device=dev))
    cases.append((t, res, w, out))
graph = torch.cuda.CUDAGraph()
with torch.cuda.graph(graph):
    for t, res, w, out in cases:
        kernels.pre(res, *w, out=out)
graph.replay()
torch.cuda.synchronize()
for t, res, w, out in cases:
    check(out, res, w, f"captured first launch T={t}")
# 2. Two threads, each with its own stream, launch both paths concurrently: the
#    same bits as one thread.
jobs = [(t, torch.randn(t, n, d, device=dev, generator=g).to(torch.bfloat16), weights())
        for t in (2048, 4, 1024, 16, 1, 1)]
serial = [kernels.pre(r, *w) for _, r, w in jobs]
torch.cuda.synchronize()
results, errors = {}, []
def worker(idx):
    try:
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            for _ in range(20):
                for j in idx:
                    results[j] = kernels.pre(jobs[j][1], *jobs[j][2])
        s.synchronize()
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=worker, args=(ix,)) for ix in ([0, 1, 4], [2, 3, 5])]
for th in threads: th.start()
for th in threads: th.join()
assert not errors, errors
for j, ref in enumerate(serial):
    for a, b in zip(results[j], ref):
        assert torch.equal(a, b), f"thread result {j} differs"
print("COLD-PROCESS-OK")
"""


def test_first_launch_in_capture_and_two_threads():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _COLD_PROCESS], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "COLD-PROCESS-OK" in proc.stdout, proc.stderr[-3000:]


# --- MhcPostPre / MhcPostHead (the fused layer boundaries) ---------------------------
_FUSED_PRE = {"rms_eps": 0.1, "pre_eps": 0.05, "sinkhorn_eps": 1e-2, "post_mult": 1.3,
              "sinkhorn_iters": 7}


def _boundary_inputs(t, n, d, dtype, head, g):
    x = make_residual(t, 1, d, dtype, g).reshape(t, d)
    residual = make_residual(t, n, d, dtype, g)
    post_mix = 2 * torch.rand(t, n, device=DEV, generator=g)
    comb_mix = sinkhorn_f64(torch.randn(t, n, n, device=DEV, generator=g) * 2).float()
    w = make_weights(n, d, n if head else num_mixes(n), 1 if head else 3, g)
    return x, residual, post_mix, comb_mix, *w


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(("t", "n", "d"), [(1, 4, 7168), (8, 4, 4096), (67, 3, 40), (300, 8, 64),
                                           (2, 1, 8), (131, 4, 7168), (1000, 4, 4096),
                                           (4099, 4, 7168), (260, 3, 1000), (3, 5, 1000),
                                           (64, 8, 520)])
def test_post_pre_and_post_head_match_float64(dtype, t, n, d):
    g = _gen(7000 + t + n)
    v = _boundary_inputs(t, n, d, dtype, False, g)
    outs = (nan_like((t, n, d), dtype), nan_like((t, d), dtype), nan_like((t, n), torch.float32),
            nan_like((t, n, n), torch.float32))
    got = kernels.post_pre(*v, out=outs, **_FUSED_PRE)
    torch.cuda.synchronize()
    # residual_out against the float64 post; the pre half against the float64 pre of the
    # residual_out the kernel wrote (the contract: it reads those rounded bits).
    exp = (post_f64(*v[:4]), *pre_f64(got[0], *v[4:], **_FUSED_PRE)[:3])
    for name, a, e in zip(("residual_out", "layer_input", "post", "comb"), got, exp, strict=True):
        assert not torch.isnan(a).any(), f"{name}: unwritten elements"
        tol = TOL_OUT[dtype] if name in ("residual_out", "layer_input") else TOL_GATE
        assert rel_err(a, e) < tol, name
    again = kernels.post_pre(*v, **_FUSED_PRE)
    for a, b in zip(got, again, strict=True):
        assert torch.equal(a, b), "not bit-identical run to run"
    # Equal to the two separate kernels, bit for bit.
    sep_r = kernels.post(*v[:4])
    sep = kernels.pre(sep_r, *v[4:], **_FUSED_PRE)
    assert torch.equal(got[0], sep_r)
    assert all(torch.equal(a, b) for a, b in zip(got[1:], sep, strict=True))
    vh = _boundary_inputs(t, n, d, dtype, True, g)
    y = nan_like((t, d), dtype)
    kernels.post_head(*vh, rms_eps=0.1, eps=0.05, out=y)
    torch.cuda.synchronize()
    assert not torch.isnan(y).any()
    sep_r = kernels.post(*vh[:4])
    e = head_f64(sep_r, *vh[4:], rms_eps=0.1, eps=0.05)
    assert rel_err(y, e) < TOL_OUT[dtype]
    assert torch.equal(y, kernels.head(sep_r, *vh[4:], rms_eps=0.1, eps=0.05))


def test_post_pre_refuses_aliasing_and_mismatched_n():
    g = _gen(99)
    v = _boundary_inputs(4, 4, 64, torch.bfloat16, False, g)
    with pytest.raises(ValueError, match="hc_fn"):
        kernels.post_pre(*v[:4], torch.randn(num_mixes(3), 3 * 64, device=DEV), *v[5:])
    res = v[1].clone()
    with pytest.raises(Exception, match="alias"):
        kernels.post_pre(*v[:1], res, *v[2:], out=(res, None, None, None))


# --- The streaming cluster kernel against the other paths ------------------------
# Each path is chosen by environment switches read once per process, so each
# runs in its own process on the same inputs; every path must match float64.
_PATHS = {"stream": {"MHC_STREAM": "1"}, "v5-cluster": {"MHC_STREAM": "0"},
          "two-pass": {"MHC_STREAM": "0", "MHC_FUSED": "0"}}
_PATH_SCRIPT = r"""
import sys, torch
from mhc_export import kernels
inp = torch.load(sys.argv[1])
out = {}

def nan(*shape, dtype):  # poisoned outputs: an unwritten element stays NaN
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")

for key, v in inp.items():
    cuda = [a.cuda() for a in v]
    res = cuda[1] if key.startswith("postpre") else cuda[0]
    t, n, d = res.shape
    if key.startswith("pre"):
        o = (nan(t, d, dtype=res.dtype), nan(t, n, dtype=torch.float32),
             nan(t, n, n, dtype=torch.float32))
        out[key] = [r.cpu() for r in kernels.pre(*cuda, out=o)]
    elif key.startswith("head"):
        out[key] = [kernels.head(*cuda, out=nan(t, d, dtype=res.dtype)).cpu()]
    else:
        o = (nan(t, n, d, dtype=res.dtype), nan(t, d, dtype=res.dtype),
             nan(t, n, dtype=torch.float32), nan(t, n, n, dtype=torch.float32))
        out[key] = [r.cpu() for r in kernels.post_pre(*cuda, out=o)]
torch.save(out, sys.argv[2])
"""


def _path_inputs(shapes, g):
    """pre / head / postpre inputs (bf16) for each (t, n, d)."""
    inp = {}
    for t, n, d in shapes:
        w = make_weights(n, d, num_mixes(n), 3, g)
        key = f"{t}-{n}-{d}"
        inp[f"pre-{key}"] = [make_residual(t, n, d, torch.bfloat16, g), *w]
        inp[f"head-{key}"] = [make_residual(t, n, d, torch.bfloat16, g),
                              *make_weights(n, d, n, 1, g)]
        inp[f"postpre-{key}"] = list(_boundary_inputs(t, n, d, torch.bfloat16, False, g))
    return inp


def _run_paths(tmp_path, inp, paths):
    """{path: {key: outputs}}, each path in its own process; every output of every
    path is checked against float64 (the pre half of a boundary against the pre of
    the residual_out that path wrote)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = tmp_path / "inp.pt"
    torch.save({k: [a.cpu() for a in v] for k, v in inp.items()}, src)
    root = Path(__file__).resolve().parents[1]
    got = {}
    for name, env in paths.items():
        dst = tmp_path / f"{name}.pt"
        proc = subprocess.run([sys.executable, "-c", _PATH_SCRIPT, str(src), str(dst)], cwd=root,
                              env={**os.environ, **env, "PYTHONPATH": str(root)},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got[name] = torch.load(dst)
    for key, v in inp.items():
        for name in paths:
            if key.startswith("pre"):
                exp = pre_f64(*v)[:3]
                tols = (TOL_OUT[torch.bfloat16], TOL_GATE, TOL_GATE)
            elif key.startswith("head"):
                exp = (head_f64(*v),)
                tols = (TOL_OUT[torch.bfloat16],)
            else:
                res_out = got[name][key][0].cuda()
                exp = (post_f64(*v[:4]), *pre_f64(res_out, *v[4:])[:3])
                tols = (TOL_OUT[torch.bfloat16],) * 2 + (TOL_GATE,) * 2
            errs = []
            for i, (a, e, tol) in enumerate(zip(got[name][key], exp, tols, strict=True)):
                assert torch.isfinite(a).all(), f"{name} {key} output {i}: unwritten elements"
                errs.append(rel_err(a.cuda(), e))
                assert errs[-1] < tol, f"{name} {key} output {i}: rel err {errs[-1]:.3g}"
            print(f"{name:10s} {key:16s} rel err vs float64: " + " ".join(f"{e:.2e}" for e in errs))
    return got


def _assert_post_halves_equal(got, inp, paths, ref):
    """MhcPostPre's residual_out on each of ``paths`` bit-equal to ``ref``'s: the post half
    is the MhcPost kernel's arithmetic on every path."""
    for key in (k for k in inp if k.startswith("postpre")):
        for name in paths:
            assert torch.equal(got[name][key][0], got[ref][key][0]), (name, key)


def test_streaming_kernel_matches_the_other_paths(tmp_path):
    # n=4 at the V4 widths and an odd d; n=1, 3, 8 (other fragment row counts).
    inp = _path_inputs(((300, 4, 7168), (133, 4, 4096), (517, 4, 1000), (150, 3, 1000),
                        (131, 8, 64), (140, 1, 520)), _gen(4242))
    got = _run_paths(tmp_path, inp, _PATHS)
    _assert_post_halves_equal(got, inp, ("stream",), "two-pass")


def test_decode_kernels_match_the_large_t_paths(tmp_path):
    """Small T (the decode kernels; the boundary's post folded into the mixes
    kernel) against the same calls with the decode path switched off, each
    against float64, on the same inputs."""
    inp = _path_inputs(((1, 4, 7168), (1, 4, 4096), (1, 3, 1000), (1, 2, 520), (1, 1, 64),
                        (1, 8, 64), (3, 4, 4096), (64, 4, 7168), (5, 3, 1000), (2, 8, 520),
                        (9, 1, 64)), _gen(4343))
    got = _run_paths(tmp_path, inp, {"decode": {}, "no-decode": {"MHC_DECODE_MAX_T": "0"}})
    _assert_post_halves_equal(got, inp, ("decode",), "no-decode")


def test_decode_chain_with_and_without_pdl_first_is_bit_identical(tmp_path):
    """The decode mixes kernel launched with PDL after an L2 prefetch of hc_fn and of
    its inputs (the default) against a plain launch (MHC_PDL_FIRST=0), against no
    input prefetch (MHC_DECODE_PREFETCH_MAX_BYTES=0) and against the finish's Sinkhorn
    on one thread (MHC_SINKHORN_LANES=0): every output of MhcPre, MhcHead and
    MhcPostPre equal bit for bit, and each against float64 (in _run_paths)."""
    inp = _path_inputs(((1, 4, 7168), (8, 4, 4096), (3, 3, 1000), (64, 4, 7168), (2, 8, 520)),
                       _gen(4646))
    got = _run_paths(tmp_path, inp, {"pdl": {}, "plain": {"MHC_PDL_FIRST": "0"},
                                     "no-prefetch": {"MHC_DECODE_PREFETCH_MAX_BYTES": "0"},
                                     "one-thread": {"MHC_SINKHORN_LANES": "0"}})
    for other in ("plain", "no-prefetch", "one-thread"):
        for key in inp:
            for i, (a, b) in enumerate(zip(got["pdl"][key], got[other][key], strict=True)):
                assert torch.equal(a, b), f"{key} output {i}: default and {other} differ"


def test_decode_chain_reads_inputs_written_just_before():
    """Under PDL the mixes kernel starts before the kernel that writes its inputs has
    ended, and the pre finish loads x before its own wait: MhcPre at T=1 must still
    read every call's own inputs."""
    g = _gen(4747)
    sets = [[make_residual(1, 4, 7168, torch.bfloat16, g), *make_weights(4, 7168, 24, 3, g)]
            for _ in range(2)]
    support.assert_reads_inputs_written_just_before(kernels.pre, sets)


# --- The prefill paths (issue 22: mhc_prefill.cuh) -----------------------------------
# Forced by MHC_PREFILL in their own processes; the chunked path with a small
# l2_frac, so that a T=4099 call has ~130 chunks (partial last chunk, partial
# tiles, every partial buffer reused many times), with and without PDL.
_PREFILL_PATHS = {
    "chunked": {"MHC_PREFILL": "chunked", "MHC_PREFILL_L2_FRAC": "0.04"},
    "chunked-nopdl": {"MHC_PREFILL": "chunked", "MHC_PREFILL_L2_FRAC": "0.04",
                      "MHC_PREFILL_PDL": "0"},
    "chunked-kr2": {"MHC_PREFILL": "chunked", "MHC_PREFILL_KR": "2", "MHC_PREFILL_TT": "64"},
    "twopass": {"MHC_PREFILL": "twopass"},
    "legacy": {"MHC_PREFILL": "legacy"},
}


def test_prefill_paths_match_float64(tmp_path):
    # n=4 at the V4 widths, n=1, 2 (other slice layouts) and n=8 (head only; the
    # pre falls back), T past chunk and tile boundaries.
    inp = _path_inputs(((4099, 4, 7168), (1000, 4, 4096), (333, 4, 1024), (150, 2, 512),
                        (131, 1, 1536), (77, 8, 64)), _gen(4545))
    got = _run_paths(tmp_path, inp, _PREFILL_PATHS)
    _assert_post_halves_equal(got, inp, ("chunked", "chunked-kr2", "twopass"), "legacy")
    for key in inp:
        # PDL changes when launches start, never what they compute.
        for a, b in zip(got["chunked"][key], got["chunked-nopdl"][key], strict=True):
            assert torch.equal(a, b), f"{key}: chunked with and without PDL differ"


def test_prefill_garbage_workspace(monkeypatch):
    # Whatever the table picks at T=2100, d=7168 and T=1000, d=4096 (the forced
    # paths run in test_prefill_paths_match_float64), on a workspace poisoned with
    # 0xFF bytes: the same results as on a fresh one.
    from mhc_export.kernels import _ops

    real = _ops.new_workspace
    for t, d in ((2100, 7168), (1000, 4096)):
        residual, w, first = check_pre(t, 4, d, torch.bfloat16, seed=950 + t)
        g = _gen(960 + t)
        hw = make_weights(4, d, 4, 1, g)
        y = kernels.head(residual, *hw)
        v = _boundary_inputs(t, 4, d, torch.bfloat16, False, g)
        pp = kernels.post_pre(*v)
        monkeypatch.setattr(_ops, "new_workspace",
                            lambda nbytes, device: real(nbytes, device).fill_(0xFF))
        for a, b in zip(first, run_pre(residual, *w), strict=True):
            assert torch.equal(a, b), f"T={t}: pre differs with a poisoned workspace"
        assert torch.equal(y, kernels.head(residual, *hw)), f"T={t}: head differs"
        for a, b in zip(pp, kernels.post_pre(*v), strict=True):
            assert torch.equal(a, b), f"T={t}: post_pre differs"
        monkeypatch.setattr(_ops, "new_workspace", real)
