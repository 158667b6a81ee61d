"""GPU tests of DeepSeek-V4.1's CUDA kernels (mhcMix, mhcCollapse, mhcPostMix,
mhcPostCollapse; native/kernels/mhc_v41.cu) against the float64 reference.

Every output is poisoned with NaN before the launch and every element checked;
inputs are fresh random draws. Besides float64, each fused op must equal the
unfused composition of our kernels bit for bit (the spec's "exactly the
composition": residual_out = MhcPost's bits, layer_input = MhcCollapse of those
bits, the next mixes = MhcMix of those bits), and the mixes must be bit-identical
run to run. Skips with the reason where there is no GPU or no library.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import support
import torch

from mhc_export import kernels
from mhc_export.core.spec import V41_FLASH_RMS_EPS, num_mixes
from mhc_export.reference import ops
from mhc_export.testing.f64 import (
    collapse_f64,
    mix_f64,
    post_collapse_f64,
    post_f64,
    rel_err,
    sinkhorn_f64,
)

pytestmark = [pytest.mark.gpu, pytest.mark.needs_build("kernels")]

DEV = torch.device("cuda")
TOL_OUT = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 2e-5}
TOL_GATE = 2e-5
ALL_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ODD = {"rms_eps": 0.1, "pre_eps": 0.05, "sinkhorn_eps": 1e-2, "post_mult": 1.3,
       "sinkhorn_iters": 7}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device=DEV).manual_seed(seed)


def _nan(shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=DEV)


def boundary_inputs(t, n, d, dtype, g, scale=1.0):
    """x, residual, pre_mix (as an MhcMix makes it), post_mix, comb_mix, then site
    k+1's hc_fn, hc_scale, hc_base."""
    k = n * d
    return [
        (torch.randn(t, d, device=DEV, generator=g) * scale).to(dtype),
        (torch.randn(t, n, d, device=DEV, generator=g) * scale).to(dtype),
        torch.rand(t, n, device=DEV, generator=g) + 1e-6,
        2 * torch.rand(t, n, device=DEV, generator=g),
        sinkhorn_f64(torch.randn(t, n, n, device=DEV, generator=g) * 2).float(),
        torch.randn(num_mixes(n), k, device=DEV, generator=g) / k**0.5,
        0.5 + torch.rand(3, device=DEV, generator=g) * 1.5,
        torch.randn(num_mixes(n), device=DEV, generator=g) * 0.5,
    ]


def run_post_mix(v, **attrs):
    t, n, d = v[1].shape
    dt = v[1].dtype
    out = (_nan((t, n, d), dt), _nan((t, d), dt), _nan((t, n), torch.float32),
           _nan((t, n), torch.float32), _nan((t, n, n), torch.float32))
    got = kernels.post_mix(*v, out=out, **attrs)
    torch.cuda.synchronize()
    names = ("residual_out", "layer_input", "next_pre_mix", "next_post_mix", "next_comb_mix")
    for name, o in zip(names, got, strict=True):
        assert torch.isfinite(o).all(), f"{name}: unwritten (NaN) or non-finite elements"
    return got


def check_boundary(t, n, d, dtype, seed, **attrs):
    """MhcPostMix against float64 and against the unfused kernels (bit for bit), and
    MhcPostCollapse against float64 and MhcPost + MhcCollapse (bit for bit)."""
    v = boundary_inputs(t, n, d, dtype, _gen(seed))
    got = run_post_mix(v, **attrs)
    res_out, li = got[0], got[1]
    # residual_out against float64's post; layer_input and the mixes against float64
    # on the residual_out the kernel wrote (the contract: they read those bits).
    assert rel_err(res_out, post_f64(*v[:2], *v[3:5])) < TOL_OUT[dtype], "residual_out"
    assert rel_err(li, collapse_f64(res_out, v[2])) < TOL_OUT[dtype], "layer_input"
    exp = mix_f64(res_out, *v[5:], **attrs)
    for name, a, e in zip(("pre", "post", "comb"), got[2:], exp, strict=True):
        err = rel_err(a, e)
        assert err < TOL_GATE, f"next_{name}_mix rel err {err:.3g} (T={t} n={n} d={d} {dtype})"
    # The unfused composition of our kernels: the same bits.
    assert torch.equal(res_out, kernels.post(v[0], v[1], v[3], v[4])), "residual_out != MhcPost"
    assert torch.equal(li, kernels.collapse(res_out, v[2])), "layer_input != MhcCollapse"
    mix = kernels.mix(res_out, *v[5:], **attrs)
    for name, a, b in zip(("pre", "post", "comb"), got[2:], mix, strict=True):
        assert torch.equal(a, b), f"next_{name}_mix != MhcMix(residual_out)"
    y = _nan((t, d), dtype)
    kernels.post_collapse(*v[:5], out=y)
    torch.cuda.synchronize()
    assert torch.isfinite(y).all(), "post_collapse: unwritten elements"
    assert rel_err(y, post_collapse_f64(*v[:5])) < TOL_OUT[dtype], "post_collapse"
    assert torch.equal(y, li), "MhcPostCollapse != MhcCollapse(MhcPost(...))"
    return v, got


# --- MhcPostMix / MhcPostCollapse, every path --------------------------------------

@pytest.mark.parametrize("t", [1, 2, 3, 64, 65, 512, 4096])
@pytest.mark.parametrize("d", [5120, 7168])
def test_post_mix_v41_flash_widths(t, d):
    # T <= 64: decode kernels; above: the bf16 stream kernel (partial tiles at 65).
    check_boundary(t, 4, d, torch.bfloat16, seed=100 + t + d, rms_eps=V41_FLASH_RMS_EPS)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("t", [1, 37, 300])
def test_post_mix_every_n_and_dtype(t, n, dtype):
    # d = 1000: no multiple of the 32-column warp group nor of the 256-column CTA.
    check_boundary(t, n, 1000, dtype, seed=1000 * n + t, **ODD)


@pytest.mark.parametrize(("t", "n", "d"), [(2, 4, 8), (129, 4, 24), (4099, 4, 264),
                                           (67, 3, 40), (300, 1, 520)])
def test_post_mix_small_and_odd_d(t, n, d):
    for dtype in ALL_DTYPES:
        check_boundary(t, n, d, dtype, seed=7 * t + d)


def test_mix_rms_eps_1e20_and_tiny_inputs():
    # V4.1-Flash's rms_eps with a residual of 1e-15: the eps must not dominate.
    for t in (1, 300):
        v = boundary_inputs(t, 4, 5120, torch.float32, _gen(5 + t), scale=1e-15)
        got = kernels.mix(v[1], *v[5:], rms_eps=V41_FLASH_RMS_EPS)
        exp = mix_f64(v[1], *v[5:], rms_eps=V41_FLASH_RMS_EPS)
        for a, e in zip(got, exp, strict=True):
            assert rel_err(a, e) < TOL_GATE


def test_post_mix_uses_the_given_pre_not_its_own():
    """The V4 wiring (collapse with the site's own new pre) must not pass for V4.1."""
    v = boundary_inputs(300, 4, 1024, torch.bfloat16, _gen(11))
    got = run_post_mix(v)
    own = kernels.collapse(got[0], got[2])
    assert rel_err(own, collapse_f64(got[0], v[2])) > 10 * TOL_OUT[torch.bfloat16]
    assert rel_err(got[1], collapse_f64(got[0], v[2])) < TOL_OUT[torch.bfloat16]


def test_deterministic_run_to_run():
    for t in (1, 64, 4099):
        v, first = check_boundary(t, 4, 5120, torch.bfloat16, seed=77 + t)
        for _ in range(2):
            again = kernels.post_mix(*v)
            for a, b in zip(first, again, strict=True):
                assert torch.equal(a, b), f"T={t}: not bit-identical run to run"


@pytest.mark.parametrize("t", [1, 600])
def test_cuda_graph_replays(t):
    v = boundary_inputs(t, 4, 5120, torch.bfloat16, _gen(21 + t))
    ref = kernels.post_mix(*v)
    outs = tuple(torch.empty_like(r) for r in ref)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        kernels.post_mix(*v, out=outs)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kernels.post_mix(*v, out=outs)
    for _ in range(3):
        for o in outs:
            o.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert all(torch.equal(a, b) for a, b in zip(outs, ref, strict=True))


def test_torch_ops_dispatch_to_the_kernels():
    v = boundary_inputs(70, 4, 512, torch.bfloat16, _gen(3))
    attrs = (1e-6, 1e-6, 1e-6, 2.0, 20)
    via_op = ops.post_mix(*v, *attrs)
    direct = kernels.post_mix(*v)
    assert all(torch.equal(a, b) for a, b in zip(via_op, direct, strict=True))
    assert torch.equal(ops.collapse(v[1], v[2]), kernels.collapse(v[1], v[2]))
    assert torch.equal(ops.post_collapse(*v[:5]), kernels.post_collapse(*v[:5]))
    assert all(torch.equal(a, b) for a, b in
               zip(ops.mix(v[1], *v[5:], *attrs), kernels.mix(v[1], *v[5:]), strict=True))


def test_t0_and_bad_inputs():
    v = boundary_inputs(0, 4, 64, torch.bfloat16, _gen(1))
    assert kernels.post_mix(*v)[0].shape == (0, 4, 64)
    v = boundary_inputs(4, 4, 64, torch.bfloat16, _gen(2))
    res = v[1].clone()
    with pytest.raises(ValueError, match="alias"):
        kernels.post_mix(v[0], res, *v[2:], out=(res, None, None, None, None))
    with pytest.raises(ValueError, match="pre_mix"):
        kernels.collapse(v[1], v[2][:, :3].contiguous())
    bad_d = boundary_inputs(2, 4, 12, torch.bfloat16, _gen(3))
    with pytest.raises(ValueError, match="d=12"):
        kernels.post_mix(*bad_d)


_IN_PROCESS = r"""
import sys, torch
from mhc_export import kernels
calls = torch.load(sys.argv[1])
torch.save([[r.cpu() for r in getattr(kernels, op)(*[a.cuda() for a in v], **kw)]
            for op, v, kw in calls], sys.argv[2])
"""


def _in_process(calls, env: dict[str, str], tmp_path: Path) -> list[list[torch.Tensor]]:
    """[kernels.<op>(*v, **attrs) for op, v[, attrs] in calls], in a process of its own
    with `env` (path switches are read once per process)."""
    src, dst = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save([(c[0], [a.cpu() for a in c[1]], c[2] if len(c) > 2 else {}) for c in calls], src)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _IN_PROCESS, str(src), str(dst)], cwd=root,
                          env={**os.environ, **env, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [[a.cuda() for a in out] for out in torch.load(dst)]


def _post_mix_in_process(v, env: dict[str, str], tmp_path: Path) -> list[torch.Tensor]:
    return _in_process([("post_mix", v)], env, tmp_path)[0]


def test_stream_kernel_matches_the_two_pass_path(tmp_path):
    """The bf16 stream kernel (tensor cores) against the two-pass FFMA path
    (MHC_V41_STREAM=0): residual_out and layer_input bit for bit, both paths' mixes
    within the float64 tolerance."""
    v = boundary_inputs(517, 4, 1000, torch.bfloat16, _gen(4242))
    two_pass = _post_mix_in_process(v, {"MHC_V41_STREAM": "0"}, tmp_path)
    stream = kernels.post_mix(*v)
    assert torch.equal(stream[0], two_pass[0]) and torch.equal(stream[1], two_pass[1])
    exp = mix_f64(stream[0], *v[5:])
    for a, b, e in zip(stream[2:], two_pass[2:], exp, strict=True):
        assert rel_err(a, e) < TOL_GATE and rel_err(b, e) < TOL_GATE


@pytest.mark.parametrize(("t", "d"), [(517, 1000), (4099, 5120), (300, 7168)])
def test_balanced_schedule_is_bit_identical(t, d, tmp_path):
    """MHC_V41_BALANCE=1 (every SM, CTAs crossing column splits) computes each partial
    as the grid schedule does: every output equal bit for bit."""
    v = boundary_inputs(t, 4, d, torch.bfloat16, _gen(t + d))
    balanced = _post_mix_in_process(v, {"MHC_V41_BALANCE": "1"}, tmp_path)
    grid = kernels.post_mix(*v)
    for i, (a, b) in enumerate(zip(grid, balanced, strict=True)):
        assert torch.equal(a, b), f"output {i} differs"


def test_pdl_first_launch_is_bit_identical(tmp_path):
    """The first kernel of each path (the decode mixes kernel, the stream kernel)
    launched with PDL after an L2 prefetch of hc_fn, against plain launches
    (MHC_PDL_FIRST=0): MhcPostMix and MhcMix equal bit for bit."""
    calls = []
    for t, d in ((1, 5120), (7, 7168), (64, 1000), (600, 5120), (4099, 7168)):
        v = boundary_inputs(t, 4, d, torch.bfloat16, _gen(t * 3 + d))
        calls += [("post_mix", v), ("mix", [v[1], *v[5:]])]
    plain = _in_process(calls, {"MHC_PDL_FIRST": "0"}, tmp_path)
    for (op, v), other in zip(calls, plain, strict=True):
        for i, (a, b) in enumerate(zip(getattr(kernels, op)(*v), other, strict=True)):
            assert torch.equal(a, b), f"{op} T={v[0].shape[0]}: output {i} differs"


@pytest.mark.parametrize("groups", ["1", "9"])
def test_stream_grid_groups_switch_is_bit_identical(groups, tmp_path):
    """MHC_V41_GROUPS (how many token groups the stream kernel's grid takes, for
    A/B runs) changes which CTA computes a partial, never its value."""
    v = boundary_inputs(1000, 4, 5120, torch.bfloat16, _gen(31 + int(groups)))
    other = _post_mix_in_process(v, {"MHC_V41_GROUPS": groups}, tmp_path)
    for i, (a, b) in enumerate(zip(kernels.post_mix(*v), other, strict=True)):
        assert torch.equal(a, b), f"output {i} differs"


@pytest.mark.parametrize("env", [{"MHC_V41_STAGES": "4"}, {"MHC_V41_STAGES": "2"},
                                 {"MHC_V41_FINISH16": "1"}],
                         ids=["4-stages", "2-stages", "finish-16-tokens"])
def test_stream_depth_and_finish_switches_are_bit_identical(env, tmp_path):
    """The stream kernel's pipeline depth (default 3 since run 9) and the large-T finish's
    block shape (8 tokens and one batch of split loads where they fit one wave, as at
    T = 77-517 here; MHC_V41_FINISH16=1 run 2's 16 tokens in batches of 8) change when
    bytes move, never a value: MhcPostMix and MhcMix equal bit for bit, at partial
    tiles, d=7168's 28 splits and n = 2, 3."""
    calls = []
    for t, n, d in ((517, 4, 1000), (4099, 4, 7168), (300, 3, 2056), (77, 2, 5120)):
        v = boundary_inputs(t, n, d, torch.bfloat16, _gen(t + 2 * n + d))
        calls += [("post_mix", v), ("mix", [v[1], *v[5:]])]
    other = _in_process(calls, env, tmp_path)
    for (op, v), got in zip(calls, other, strict=True):
        for i, (a, b) in enumerate(zip(getattr(kernels, op)(*v), got, strict=True)):
            where = f"{op} T={v[0].shape[0]} n={v[1].shape[1]}"
            assert torch.equal(a, b), f"{where}: output {i} differs"


def test_stream_coefficient_copies_ignore_alignment():
    """The stream kernel assumes no alignment of the pre / post / comb rows beyond a float's
    (run 7 copied them in 16-byte chunks where aligned; run 8 copies them float by float):
    pre_mix, post_mix and comb_mix 4 bytes past a 16-byte boundary give every output bit
    for bit."""
    v = boundary_inputs(300, 4, 1280, torch.bfloat16, _gen(77))

    def shifted(t: torch.Tensor) -> torch.Tensor:
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        out = buf[1:].view_as(t)
        out.copy_(t)
        return out

    w = [*v[:2], *map(shifted, v[2:5]), *v[5:]]
    assert all(t.data_ptr() % 16 == 4 for t in w[2:5])
    for i, (a, b) in enumerate(zip(kernels.post_mix(*v), kernels.post_mix(*w), strict=True)):
        assert torch.equal(a, b), f"output {i} differs"


def test_sinkhorn_on_lanes_is_bit_identical(tmp_path):
    """The finishes' Sinkhorn on N lanes of a warp (the default since issue 23's run 6:
    the decode finish, T <= 64, and the large-T finish) against one thread
    (MHC_SINKHORN_LANES=0): MhcPostMix and MhcMix equal bit for bit, n = 1..8, every
    dtype, ragged last token blocks, at non-default Sinkhorn attributes (one iteration,
    eps = 0, many iterations, a large eps)."""
    cases = ((1, 4, 5120, torch.bfloat16, {}),
             (1, 4, 7168, torch.bfloat16, {"sinkhorn_iters": 1}),
             (3, 3, 1000, torch.float16, {"sinkhorn_eps": 0.0, "sinkhorn_iters": 37}),
             (64, 8, 520, torch.bfloat16, {"sinkhorn_eps": 0.1}),
             (2, 1, 64, torch.float32, {}),
             (7, 2, 256, torch.float32, {"sinkhorn_iters": 2, "rms_eps": 1e-20}),
             (517, 4, 1000, torch.bfloat16, {}),
             (130, 8, 256, torch.float32, {"sinkhorn_iters": 3}),
             (99, 3, 520, torch.float16, {"sinkhorn_eps": 0.0}))
    calls = []
    for t, n, d, dtype, kw in cases:
        v = boundary_inputs(t, n, d, dtype, _gen(900 + t * n + d))
        calls += [("post_mix", v, kw), ("mix", [v[1], *v[5:]], kw)]
    one_thread = _in_process(calls, {"MHC_SINKHORN_LANES": "0"}, tmp_path)
    for (op, v, kw), other in zip(calls, one_thread, strict=True):
        for i, (a, b) in enumerate(zip(getattr(kernels, op)(*v, **kw), other, strict=True)):
            assert torch.equal(a, b), f"{op} T={v[0].shape[0]} {kw}: output {i} differs"


@pytest.mark.parametrize("t", [1, 600])
def test_post_mix_reads_inputs_written_just_before(t):
    """The first kernel starts before the kernel writing its inputs has ended (PDL)
    and prefetches hc_fn meanwhile; the finish kernel loads pre_mix before its wait.
    All eight inputs rewritten right before every call: each call reads its own."""
    sets = [boundary_inputs(t, 4, 5120, torch.bfloat16, _gen(500 + t + k)) for k in range(2)]
    support.assert_reads_inputs_written_just_before(kernels.post_mix, sets)
