"""The CUDA kernels and their Python binding with large, distinct attribute values.

At the default attributes (eps 1e-6) a kernel that ignored rms_eps, pre_eps,
sinkhorn_eps or head eps would move its outputs by ~1e-6, inside the float32
tolerance; with mhc_export/testing/f64.py's ODD_ATTRS it moves them by 1e-2.

The GPU tests compare against the independent float64 reference. The binding
tests run anywhere: a stand-in for libmhc_kernels.so records what the binding
hands the C API, and the ctypes structs are checked against mhc_kernels.h.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from pathlib import Path

import pytest
import torch

from mhc_export import kernels
from mhc_export.core.spec import ALL_OPS, num_mixes
from mhc_export.export.single_op import SingleOp
from mhc_export.kernels import _lib, _ops, _ops_v41
from mhc_export.testing.f64 import ODD_ATTRS, head_f64, pre_f64, rel_err, sinkhorn_f64

ROOT = Path(__file__).resolve().parents[1]
TOL_OUT = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 2e-5}
TOL_GATE = 2e-5


def _weights(n: int, d: int, rows: int, scales: int, g: torch.Generator, dev: str):
    k = n * d
    return (torch.randn(rows, k, generator=g, device=dev) / k**0.5,
            0.5 + torch.rand(scales, generator=g, device=dev),
            torch.randn(rows, generator=g, device=dev) * 0.5)


def _nan(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device="cuda")


@pytest.mark.gpu
@pytest.mark.needs_build("kernels")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize(("t", "d"), [(1, 7168), (37, 1280), (200, 2056)])
def test_kernel_pre_and_head_with_odd_attributes(t, d, dtype):
    from mhc_export import kernels

    n, a, h = 4, ODD_ATTRS["pre"], ODD_ATTRS["head"]
    g = torch.Generator(device="cuda").manual_seed(t + d)
    residual = torch.randn(t, n, d, generator=g, device="cuda").to(dtype)
    w = _weights(n, d, num_mixes(n), 3, g, "cuda")
    out = (_nan((t, d), dtype), _nan((t, n), torch.float32), _nan((t, n, n), torch.float32))
    got = kernels.pre(residual, *w, out=out, **a)
    torch.cuda.synchronize()
    exp = pre_f64(residual, *w, **a)
    for name, g_, e, tol in zip(("layer_input", "post_mix", "comb_mix"), got, exp,
                                (TOL_OUT[dtype], TOL_GATE, TOL_GATE), strict=False):
        assert torch.isfinite(g_).all(), f"{name}: unwritten (NaN) elements"
        assert rel_err(g_, e) < tol, f"{name} rel err {rel_err(g_, e):.3g} (T={t} d={d})"
    hw = _weights(n, d, n, 1, g, "cuda")
    y = kernels.head(residual, *hw, out=_nan((t, d), dtype), **h)
    torch.cuda.synchronize()
    assert rel_err(y, head_f64(residual, *hw, **h)) < TOL_OUT[dtype]


@pytest.mark.gpu
@pytest.mark.needs_build("kernels")
@pytest.mark.parametrize("n", [2, 4, 8])
def test_kernel_sinkhorn_with_odd_attributes(n):
    from mhc_export import kernels

    sk = ODD_ATTRS["sinkhorn"]
    g = torch.Generator(device="cuda").manual_seed(n)
    logits = torch.randn(257, n, n, generator=g, device="cuda") * 2
    got = kernels.sinkhorn(logits, sk["iters"], sk["eps"], out=_nan((257, n, n), torch.float32))
    torch.cuda.synchronize()
    assert rel_err(got, sinkhorn_f64(logits, sk["iters"], sk["eps"])) < TOL_GATE


# ---- the binding, without a GPU -------------------------------------------------------


class _FakeLib:
    """Records each C call's arguments; every call succeeds and writes nothing."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple] = {}

    def __getattr__(self, name: str):
        if name.endswith("WorkspaceSize"):
            return lambda *args: 64

        def call(*args):
            self.calls[name] = args
            return 0

        return call


@pytest.fixture
def fake_lib(monkeypatch):
    lib = _FakeLib()
    monkeypatch.setattr(_ops, "load", lambda: lib)
    monkeypatch.setattr(_ops_v41, "load", lambda: lib)
    monkeypatch.setattr(_ops, "require_cuda", lambda **tensors: None)
    monkeypatch.setattr(_ops, "stream", lambda device: ctypes.c_void_p(0))
    monkeypatch.setattr(_ops.torch.cuda, "device", lambda device: contextlib.nullcontext())
    return lib


def _struct(arg) -> ctypes.Structure:
    return arg._obj  # ctypes.byref(struct)


def test_binding_hands_every_attribute_to_the_c_api(fake_lib):
    n, d, t = 4, 8, 3
    g = torch.Generator().manual_seed(0)
    residual = torch.randn(t, n, d, generator=g)
    a = ODD_ATTRS["pre"]
    w = _weights(n, d, num_mixes(n), 3, g, "cpu")
    li, post, comb = _ops.pre(residual, *w, **a)
    assert (li.shape, post.shape, comb.shape) == ((t, d), (t, n), (t, n, n))
    args = fake_lib.calls["mhcPre"]
    assert [p.value for p in args[:7]] == [x.data_ptr() for x in (residual, *w, li, post, comb)]
    assert args[7:11] == (t, n, d, _lib.DTYPE_CODES[torch.float32])
    params = _struct(args[11])
    for name, value in a.items():
        assert getattr(params, name) == pytest.approx(value, rel=1e-7), name
    h = ODD_ATTRS["head"]
    _ops.head(residual, *_weights(n, d, n, 1, g, "cpu"), **h)
    params = _struct(fake_lib.calls["mhcHead"][9])
    assert (params.rms_eps, params.eps) == pytest.approx((h["rms_eps"], h["eps"]), rel=1e-7)
    sk = ODD_ATTRS["sinkhorn"]
    _ops.sinkhorn(torch.randn(5, n, n), sk["iters"], sk["eps"])
    args = fake_lib.calls["mhcSinkhorn"]
    assert args[2:6] == (5, n, sk["iters"], sk["eps"])
    x, pm, cm = torch.randn(t, d), torch.rand(t, n), torch.rand(t, n, n)
    out = _ops.post(x, residual, pm, cm)
    args = fake_lib.calls["mhcPost"]
    assert [p.value for p in args[:5]] == [v.data_ptr() for v in (x, residual, pm, cm, out)]
    assert args[5:9] == (t, n, d, _lib.DTYPE_CODES[torch.float32])


@pytest.mark.parametrize("op", sorted(ALL_OPS))
def test_binding_allocates_the_outputs_the_reference_returns(fake_lib, op):
    """Every binding hands the C API outputs of the eager reference's shapes and dtypes
    (spec.output_spec's), caller-given ones of another shape refused by name."""
    dtype = torch.float32 if op == "sinkhorn" else torch.bfloat16
    one = SingleOp.create(op, streams=3, hidden=5, dtype=dtype)
    v = one.random_inputs(4, seed=2)
    got = getattr(kernels, op)(*v.values())
    got = got if isinstance(got, tuple) else (got,)
    want = one.reference(v)
    assert [(g.shape, g.dtype) for g in got] == [(w.shape, w.dtype) for w in want]
    wrong = [torch.empty(0, dtype=w.dtype) for w in want]
    name = ALL_OPS[op].outputs[0]
    with pytest.raises(ValueError, match=f"out {name} must be"):
        getattr(kernels, op)(*v.values(), out=wrong if len(wrong) > 1 else wrong[0])


def test_binding_rejects_bad_attributes_before_the_c_api(fake_lib):
    g = torch.Generator().manual_seed(1)
    residual = torch.randn(2, 4, 8, generator=g)
    with pytest.raises(ValueError, match="pre_eps must be a finite number >= 0"):
        _ops.pre(residual, *_weights(4, 8, 24, 3, g, "cpu"), pre_eps=-0.1)
    with pytest.raises(ValueError, match="attribute eps must be a finite number"):
        _ops.head(residual, *_weights(4, 8, 4, 1, g, "cpu"), eps=float("nan"))
    with pytest.raises(ValueError, match="iters must be >= 1"):
        _ops.sinkhorn(torch.randn(2, 4, 4), 0)
    assert fake_lib.calls == {}


def _c_struct_fields(header: str, name: str) -> list[tuple[str, str]]:
    body = re.search(rf"typedef struct {name} \{{(.*?)\}} {name};", header, re.S)
    assert body, name
    return re.findall(r"^\s*(float|int32_t)\s+(\w+);", body.group(1), re.M)


def test_ctypes_structs_match_the_c_header():
    header = (ROOT / "native" / "kernels" / "mhc_kernels.h").read_text()
    ctype = {"float": ctypes.c_float, "int32_t": ctypes.c_int32}
    for cls, c_name in ((_lib.PreParams, "mhcPreParams"), (_lib.HeadParams, "mhcHeadParams")):
        want = [(field, ctype[kind]) for kind, field in _c_struct_fields(header, c_name)]
        assert cls._fields_ == want, c_name
