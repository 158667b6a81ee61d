"""The two-pass torch baseline for MhcPre and MhcHead (issue 22): what a plain
two-pass design costs with library pieces, next to ours in the same run.

Pass 1 is two torch calls on the bf16 residual: `torch.mm` against hc_fn split
into three bf16 terms (hi, mid, lo: the same ~24-bit split our tensor-core
projection uses), float32 out, and a float32 norm for the sum of squares. Pass
2 is our finish kernel alone (`mhcPreFinish` / `mhcHeadFinish`: gates,
Sinkhorn, the weighted stream sum), which reads the residual again. So it reads
the residual from DRAM three times; each design's gain over it shows in `x tp`.
Before it is timed, its outputs are checked against our kernels' on the same
inputs (`check`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch

from mhc_export.core.spec import MHC_HEAD, MHC_PRE
from mhc_export.kernels._lib import DTYPE_CODES, HeadParams, PreParams, load

# Agreement with our kernel's outputs (both are ~1e-6 from float64 in the gates).
TOL = {torch.bfloat16: 1e-2, torch.float32: 1e-4}


def _lib() -> ctypes.CDLL:
    lib = load()
    vp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    lib.mhcPreFinish.argtypes = [vp, vp, vp, vp, vp, vp, vp, i64, i32, i32, ctypes.c_int,
                                 ctypes.POINTER(PreParams), vp]
    lib.mhcPreFinish.restype = ctypes.c_int
    lib.mhcHeadFinish.argtypes = [vp, vp, vp, vp, vp, i64, i32, i32, ctypes.c_int,
                                  ctypes.POINTER(HeadParams), vp]
    lib.mhcHeadFinish.restype = ctypes.c_int
    return lib


def split3(hc_fn: torch.Tensor) -> torch.Tensor:
    """[3 * rows, K] bf16: hi, mid, lo with hi + mid + lo ~ hc_fn to ~24 bits."""
    hi = hc_fn.bfloat16()
    r = hc_fn - hi.float()
    mid = r.bfloat16()
    lo = (r - mid.float()).bfloat16()
    return torch.cat([hi, mid, lo], 0).contiguous()


def mixes(residual: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """[T, rows + 1] float32: the projection (sum of the three terms) and sum(x^2)."""
    t = residual.shape[0]
    x = residual.reshape(t, -1)
    rows = w3.shape[0] // 3
    p = torch.mm(x, w3.t(), out_dtype=torch.float32)
    ss = torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).square()
    return torch.cat([p[:, :rows] + p[:, rows:2 * rows] + p[:, 2 * rows:], ss[:, None]], 1)


def _stream(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def pre(lib: ctypes.CDLL, residual, w3, hc_scale, hc_base) -> tuple[torch.Tensor, ...]:
    t, n, d = residual.shape
    m = mixes(residual, w3)
    li = torch.empty(t, d, dtype=residual.dtype, device=residual.device)
    post = torch.empty(t, n, device=residual.device)
    comb = torch.empty(t, n, n, device=residual.device)
    a = MHC_PRE.defaults()
    prm = PreParams(a["rms_eps"], a["pre_eps"], a["sinkhorn_eps"], a["post_mult"],
                    a["sinkhorn_iters"])
    st = lib.mhcPreFinish(_p(residual), _p(m), _p(hc_scale), _p(hc_base), _p(li), _p(post),
                          _p(comb), t, n, d, DTYPE_CODES[residual.dtype], ctypes.byref(prm),
                          _stream(residual))
    if st != 0:
        raise RuntimeError(f"mhcPreFinish failed: status {st}")
    return li, post, comb


def head(lib: ctypes.CDLL, residual, w3, hc_scale, hc_base) -> tuple[torch.Tensor, ...]:
    t, n, d = residual.shape
    m = mixes(residual, w3)
    y = torch.empty(t, d, dtype=residual.dtype, device=residual.device)
    a = MHC_HEAD.defaults()
    prm = HeadParams(a["rms_eps"], a["eps"])
    st = lib.mhcHeadFinish(_p(residual), _p(m), _p(hc_scale), _p(hc_base), _p(y), t, n, d,
                           DTYPE_CODES[residual.dtype], ctypes.byref(prm), _stream(residual))
    if st != 0:
        raise RuntimeError(f"mhcHeadFinish failed: status {st}")
    return (y,)


def calls(op: str, sets: list[tuple]) -> list[Callable[[], object]]:
    """One call per input set (hc_fn split once per set, outside the timed calls)."""
    lib = _lib()
    f = pre if op == "pre" else head
    out = []
    for residual, hc_fn, hc_scale, hc_base in sets:
        w3 = split3(hc_fn)
        out.append(lambda r=residual, w=w3, s=hc_scale, b=hc_base: f(lib, r, w, s, b))
    return out


def check(op: str, inputs: tuple, ours: tuple[torch.Tensor, ...]) -> list[float]:
    """Relative errors against our kernels' outputs on the same inputs; AssertionError
    past TOL (the baseline is then reported wrong, not timed)."""
    got = calls(op, [inputs])[0]()
    errs = []
    for i, (g, o) in enumerate(zip(got, ours, strict=True)):
        err = float((g.double() - o.double()).abs().max() / o.double().abs().max())
        errs.append(err)
        if not err <= TOL[g.dtype]:
            raise AssertionError(f"two-pass baseline output {i}: rel err {err:.3g} vs ours")
    return errs
