"""FlashInfer 0.7.2's mHC kernels as a benchmark peer (hc = 4, bf16 residual, d % 8 == 0).

FlashInfer's `mhc_pre_big_fuse` is the finish pass of MhcPre: it takes the raw
projection `dot_mix = x @ hc_fn^T` ([T, 24], our row order: pre, post, comb)
and the raw sum of squares of x from a projection GEMM that runs before it, and
computes the gates, Sinkhorn and layer_input (`k` = n*d, the RMS divisor). The
peer times that pass alone ("finish") and behind a projection: a float32 torch
matmul on the upcast residual (TF32 off, as the benchmark sets it) plus a
float32 norm of the bf16 residual for the sum of squares, which is what a user
without DeepGEMM's fused prenorm GEMM would write. `mhc_post` is our MhcPost.

FlashInfer's `mhc_post_mult_value` defaults to 1.0; ours (post_mult, V4) to 2.0:
the wrappers always pass our value. Before a peer is timed its outputs are
checked against the float64 reference (mhc_export/testing/f64.py), once with
attributes far from the defaults (`self_check`: a swapped or dropped argument
shows there) and once per benchmark row on the inputs that are timed (`check`).

The wheel (62 MB) is too big to carry whole: `../shared/tools/flashinfer_bundle.py
--out .peers/flashinfer` makes a slim bundle (30 MB, its docstring has the commands)
in `.peers/flashinfer` (git-ignored); carry `.peers` to the GPU machine.
FlashInfer compiles its mhc JIT module with nvcc on first use (about 12 s
there); `load` does that up front.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from mhc_export.core.spec import MHC_PRE
from mhc_export.testing.f64 import ODD_ATTRS, post_f64, pre_f64, rel_err

ROOT = Path(__file__).resolve().parents[2]

VERSION = "0.7.2.post1"
BUNDLE_ENV = "MHC_FLASHINFER_BUNDLE"
# Where flashinfer_bundle.py --out puts it unless $MHC_FLASHINFER_BUNDLE says otherwise.
DEFAULT_BUNDLES = (ROOT / ".peers" / "flashinfer",)
HC = 4
# Correctness gate of a peer output, by its dtype: bf16 tensors, float32 mixes.
TOL = {torch.bfloat16: 1e-2, torch.float32: 1e-3}


def bundle_site(bundle: Path | str | None = None) -> tuple[Path | None, str]:
    """(the folder to put on sys.path, "") or (None, why not). `bundle` (or $MHC_FLASHINFER_BUNDLE)
    is a flashinfer_bundle.py --out folder or its site/; without either, the defaults."""
    explicit = os.environ.get(BUNDLE_ENV) or bundle
    candidates = [Path(explicit)] if explicit else list(DEFAULT_BUNDLES)
    for c in candidates:
        for site in (c / "site", c):
            if (site / "flashinfer" / "mhc.py").is_file() and (site / "tvm_ffi").is_dir():
                return site, ""
    where = " or ".join(str(c) for c in candidates)
    return None, (f"no FlashInfer bundle at {where} (make it with ../shared/tools/"
                  f"flashinfer_bundle.py --out .peers/flashinfer, or set {BUNDLE_ENV})")


def load(bundle: Path | str | None = None) -> tuple[ModuleType | None, str]:
    """(flashinfer.mhc with its JIT module built, "") or (None, why not)."""
    if not torch.cuda.is_available():
        return None, "no CUDA GPU"
    if torch.cuda.get_device_capability()[0] < 9:
        return None, "FlashInfer's mhc kernels are built here for sm_90 or newer"
    site, why = bundle_site(bundle)
    if site is None:
        return None, why
    work = Path(tempfile.gettempdir()) / "mhc_flashinfer"
    os.environ.setdefault("FLASHINFER_NO_DOWNLOAD", "1")
    os.environ.setdefault("FLASHINFER_WORKSPACE_BASE", str(work / "workspace"))
    os.environ.setdefault("TVM_FFI_CACHE_DIR", str(work / "tvm_ffi"))
    # FlashInfer otherwise derives CUDA_HOME from the nvcc on PATH, a wrapper there.
    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    _libcuda_link(work)
    # The bundle is a site folder (flashinfer with its tvm_ffi and friends), not an installed
    # package: it goes on this process's path so that flashinfer finds its own dependencies.
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    try:
        import flashinfer
        import flashinfer.mhc as fi_mhc

        fi_mhc.get_mhc_module()  # the nvcc JIT build, here rather than inside a timed call
    except Exception as exc:  # a missing dependency, a JIT or loader failure: say which
        return None, f"flashinfer.mhc from {site} failed: {type(exc).__name__}: {exc}"[:400]
    if getattr(flashinfer, "__version__", VERSION) != VERSION:
        return None, f"FlashInfer {flashinfer.__version__} at {site}, expected {VERSION}"
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


def supports(op: str, n: int, d: int, dtype: torch.dtype) -> bool:
    """Whether FlashInfer has this op at this shape and dtype."""
    return op in ("pre", "post") and n == HC and d % 8 == 0 and dtype == torch.bfloat16


def projection(residual: torch.Tensor, hc_fn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dot_mix [T, 24], sqrsum [T]): the raw projection and sum of squares, float32."""
    x = residual.reshape(residual.shape[0], -1)
    sqrsum = torch.linalg.vector_norm(x, dim=-1, dtype=torch.float32).square()
    return x.float() @ hc_fn.t(), sqrsum


def _pre_attrs(attrs: dict | None) -> dict:
    """MhcPre's attributes: the spec's defaults, overridden by `attrs`."""
    return {**MHC_PRE.defaults(), **(attrs or {})}


def pre_finish(fi: ModuleType, dot_mix: torch.Tensor, sqrsum: torch.Tensor,
               residual: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
               attrs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(layer_input, post_mix [T, n], comb_mix) from FlashInfer's finish pass; `attrs`
    are MhcPre's (spec names, the spec's defaults for those left out)."""
    a = _pre_attrs(attrs)
    t, n, d = residual.shape
    post, comb, layer_input = fi.mhc_pre_big_fuse(
        dot_mix, sqrsum, residual, hc_scale, hc_base, n * d,
        rms_eps=a["rms_eps"], mhc_pre_eps=a["pre_eps"], mhc_sinkhorn_eps=a["sinkhorn_eps"],
        mhc_post_mult_value=a["post_mult"], sinkhorn_repeat=a["sinkhorn_iters"])
    return layer_input, post.reshape(t, n), comb


def pre(fi: ModuleType, residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor,
        hc_base: torch.Tensor, attrs: dict | None = None):
    """MhcPre: the projection, then FlashInfer's finish pass."""
    dot_mix, sqrsum = projection(residual, hc_fn)
    return pre_finish(fi, dot_mix, sqrsum, residual, hc_scale, hc_base, attrs)


def post(fi: ModuleType, x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor,
         comb_mix: torch.Tensor) -> torch.Tensor:
    """MhcPost (comb_mix[i, j] mixes stream i into stream j, as ours)."""
    return fi.mhc_post(x, residual, post_mix, comb_mix)


def gate(outputs: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> list[float]:
    """Relative errors of the peer's outputs; raises AssertionError when a shape
    differs or an error is past its dtype's tolerance (the peer is then reported
    wrong, not timed)."""
    errs = []
    for i, (o, e) in enumerate(zip(outputs, expected, strict=True)):
        if o.shape != e.shape:
            raise AssertionError(f"peer output {i} shape {tuple(o.shape)} != {tuple(e.shape)}")
        tol = TOL.get(o.dtype)
        if tol is None:
            raise AssertionError(f"peer output {i} dtype {o.dtype}, expected bf16 or float32")
        err = rel_err(o, e)
        errs.append(err)
        if not err <= tol:
            raise AssertionError(f"peer output {i} rel err {err:.3g} > {tol:g}")
    return errs


def expected(op: str, inputs: tuple, attrs: dict | None = None) -> tuple[torch.Tensor, ...]:
    """The float64 reference's outputs in the order the wrappers return them."""
    if op == "pre":
        return pre_f64(*inputs, **_pre_attrs(attrs))[:3]
    return (post_f64(*inputs),)


def run(fi: ModuleType, op: str, inputs: tuple, attrs: dict | None = None) -> tuple:
    return pre(fi, *inputs, attrs) if op == "pre" else (post(fi, *inputs),)


def check(fi: ModuleType, op: str, inputs: tuple, attrs: dict | None = None) -> list[float]:
    """The peer's relative errors on `inputs` (AssertionError past tolerance)."""
    return gate(run(fi, op, inputs, attrs), expected(op, inputs, attrs))


def random_inputs(op: str, t: int, d: int, gen: torch.Generator, device: str = "cuda") -> tuple:
    """Fresh random inputs at n = 4, bf16 activations, float32 weights and mixes
    (not an init that makes the gates or Sinkhorn trivial)."""
    k = HC * d

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(device)

    residual = randn(t, HC, d).bfloat16()
    if op == "pre":
        return residual, randn(2 * HC + HC * HC, k) / k**0.5, 0.5 + rand(3), randn(2 * HC + HC * HC)
    return randn(t, d).bfloat16(), residual, 2 * rand(t, HC), rand(t, HC, HC)


def self_check(fi: ModuleType, device: str = "cuda") -> str:
    """"" when both wrappers match the float64 reference on fresh inputs with
    MhcPre's attributes far from the defaults, else what failed."""
    gen = torch.Generator().manual_seed(20261124)
    for op in ("pre", "post"):
        attrs = ODD_ATTRS["pre"] if op == "pre" else None
        try:
            check(fi, op, random_inputs(op, 67, 264, gen, device), attrs)
        except Exception as exc:  # wrong numbers or a refused call: the peer is not usable
            return f"{op}: {type(exc).__name__}: {exc}"[:300]
    return ""


def calls(fi: ModuleType, op: str, sets: list[tuple]) -> dict[str, list[Callable[[], object]]]:
    """The timed variants for one op, each a rotation over `sets`: {"fi": [...]} and,
    for pre, "fi_finish" (the finish pass alone, its projection made once here)."""
    if op == "post":
        return {"fi": [lambda s=s: post(fi, *s) for s in sets]}
    finish_inputs = [(projection(s[0], s[1]), s) for s in sets]
    return {"fi": [lambda s=s: pre(fi, *s) for s in sets],
            "fi_finish": [lambda p=p, s=s: pre_finish(fi, p[0], p[1], s[0], s[2], s[3])
                          for p, s in finish_inputs]}
