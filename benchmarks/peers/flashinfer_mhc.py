"""FlashInfer 0.7.2's mHC kernels as a benchmark peer (hc = 4, bf16 residual).

FlashInfer's `mhc_pre_big_fuse` is the finish pass of MhcPre: it takes the raw
projection `dot_mix = hc_fn @ x` and the sum of squares from a projection GEMM
that runs before it, and computes the gates, Sinkhorn and layer_input. The peer
times that pass alone and with a projection in front (a float32 torch matmul
on the upcast residual, TF32 off: what a user without DeepGEMM would write).
`mhc_post` equals our MhcPost.

The wheel is too big to carry whole: `../shared/tools/flashinfer_bundle.py`
makes a slim bundle (its docstring has the commands) in `.peers/flashinfer`
(git-ignored); carry `.peers` to the GPU machine. FlashInfer compiles its mhc
JIT module with nvcc on first use (about 12 s there).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / ".peers" / "flashinfer" / "site"
VERSION = "0.7.2.post1"


def load(bundle: Path | None = None) -> tuple[ModuleType | None, str]:
    """(flashinfer.mhc, "") or (None, why not)."""
    site = Path(os.environ.get("MHC_FLASHINFER_BUNDLE", "") or bundle or DEFAULT_BUNDLE)
    if not torch.cuda.is_available():
        return None, "no CUDA GPU"
    if torch.cuda.get_device_capability()[0] < 9:
        return None, "FlashInfer's mhc kernels need sm_90 or newer"
    if not (site / "flashinfer").is_dir():
        return None, (f"no FlashInfer bundle at {site} "
                      "(make it with ../shared/tools/flashinfer_bundle.py)")
    work = Path(tempfile.gettempdir()) / "mhc_flashinfer"
    os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", str(work / "workspace"))
    os.environ.setdefault("TVM_FFI_CACHE_DIR", str(work / "tvm_ffi"))
    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    _libcuda_link(work)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    try:
        import flashinfer.mhc as fi_mhc
    except Exception as exc:  # a missing dependency, a JIT or loader failure: say which
        return None, f"import flashinfer.mhc failed: {type(exc).__name__}: {exc}"[:300]
    return fi_mhc, ""


def _libcuda_link(work: Path) -> None:
    """FlashInfer's JIT links -lcuda; point it at the driver's library when the
    toolkit has only a stub elsewhere."""
    if os.environ.get("FLASHINFER_EXTRA_LDFLAGS"):
        return
    for cand in ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/local/nvidia/lib64/libcuda.so.1",
                 "/usr/lib64/libcuda.so.1"):
        if Path(cand).exists():
            d = work / "libcuda"
            d.mkdir(parents=True, exist_ok=True)
            link = d / "libcuda.so"
            if not link.exists():
                link.symlink_to(cand)
            os.environ["FLASHINFER_EXTRA_LDFLAGS"] = f"-L{d}"
            return


def projection(residual: torch.Tensor, hc_fn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dot_mix [T, 24], sqrsum [T]): the raw projection and sum of squares, float32."""
    x = residual.reshape(residual.shape[0], -1).float()
    return x @ hc_fn.t(), (x * x).sum(-1)


def pre_finish(fi: ModuleType, dot_mix: torch.Tensor, sqrsum: torch.Tensor,
               residual: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
               attrs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(layer_input, post_mix [T, n], comb_mix) from FlashInfer's finish pass."""
    t, n, d = residual.shape
    post, comb, layer_input = fi.mhc_pre_big_fuse(
        dot_mix, sqrsum, residual, hc_scale, hc_base, n * d,
        rms_eps=attrs.get("rms_eps", 1e-6), mhc_pre_eps=attrs.get("pre_eps", 1e-6),
        mhc_sinkhorn_eps=attrs.get("sinkhorn_eps", 1e-6),
        mhc_post_mult_value=attrs.get("post_mult", 2.0),
        sinkhorn_repeat=attrs.get("sinkhorn_iters", 20))
    return layer_input, post.reshape(t, n), comb


def pre(fi: ModuleType, residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor,
        hc_base: torch.Tensor, attrs: dict | None = None):
    """MhcPre through the projection and FlashInfer's finish pass."""
    dot_mix, sqrsum = projection(residual, hc_fn)
    return pre_finish(fi, dot_mix, sqrsum, residual, hc_scale, hc_base, attrs or {})


def post(fi: ModuleType, x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor,
         comb_mix: torch.Tensor) -> torch.Tensor:
    return fi.mhc_post(x, residual, post_mix, comb_mix)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64; NaN anywhere fails."""
    a64, b64 = a.double(), b.double()
    if not torch.isfinite(a64).all():
        return float("inf")
    return float((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-30))


# Tolerances of the correctness gate: bf16 outputs, float32 gates.
TOL = {"bfloat16": 1e-2, "float32": 1e-4}


def gate(outputs: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> list[float]:
    """Relative errors of the peer's outputs; raises AssertionError when one is
    past its dtype's tolerance (the peer is then reported wrong, not timed)."""
    errs = []
    for i, (o, e) in enumerate(zip(outputs, expected, strict=True)):
        err = rel_err(o, e)
        tol = TOL["bfloat16" if o.dtype == torch.bfloat16 else "float32"]
        errs.append(err)
        if not err <= tol:
            raise AssertionError(f"peer output {i} rel err {err:.3g} > {tol:g}")
    return errs


def calls(fi: ModuleType, op: str, sets: list[tuple]) -> dict[str, list[Callable[[], object]]]:
    """The timed variants for one op: {"fi": [...], "fi_finish": [...]} (pre) or {"fi": [...]}."""
    if op == "post":
        return {"fi": [lambda s=s: post(fi, *s) for s in sets]}
    pre_sets = [(s, projection(s[0], s[1])) for s in sets]  # finish-only inputs, made once
    return {"fi": [lambda s=s: pre(fi, *s) for s in sets],
            "fi_finish": [lambda s=s, p=p: pre_finish(fi, p[0], p[1], s[0], s[2], s[3], {})
                          for s, p in pre_sets]}
