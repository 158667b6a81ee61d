"""torch.library custom ops: V4's ``mhc::pre``, ``mhc::sinkhorn``, ``mhc::post``,
``mhc::head`` (and the fused ``mhc::post_pre``, ``mhc::post_head``), V4.1's ``mhc::mix``,
``mhc::collapse``, ``mhc::post_mix`` and ``mhc::post_collapse``.

Each op is one opaque node for torch.export, which is what lets the ONNX
exporter emit one ``mhc`` domain node per op (see :mod:`mhc_export.export.onnx_export`).
The eager implementation is the reference itself, so a model run "fused"
(through these ops) and "decomposed" (plain torch math) is bit-identical.
"""

from __future__ import annotations

import torch

from ..core import checks
from . import eager as reference

__all__ = ["collapse", "head", "kernel_backend", "mix", "post", "post_collapse", "post_head",
           "post_mix", "post_pre", "pre", "sinkhorn"]


@torch.library.custom_op("mhc::pre", mutates_args=())
def pre(
    residual: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    rms_eps: float,
    pre_eps: float,
    sinkhorn_eps: float,
    post_mult: float,
    sinkhorn_iters: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference.mhc_pre(
        residual, hc_fn, hc_scale, hc_base,
        rms_eps=rms_eps, pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps,
        post_mult=post_mult, sinkhorn_iters=sinkhorn_iters,
    )


@pre.register_fake
def _pre_fake(residual, hc_fn, hc_scale, hc_base, rms_eps, pre_eps, sinkhorn_eps, post_mult,
              sinkhorn_iters):
    checks.check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    t, n, d = residual.shape
    return (
        residual.new_empty((t, d)),
        residual.new_empty((t, n), dtype=torch.float32),
        residual.new_empty((t, n, n), dtype=torch.float32),
    )


@torch.library.custom_op("mhc::sinkhorn", mutates_args=())
def sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    return reference.sinkhorn(logits, iters, eps)


@sinkhorn.register_fake
def _sinkhorn_fake(logits, iters, eps):
    return torch.empty_like(logits)


@torch.library.custom_op("mhc::post", mutates_args=())
def post(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor
) -> torch.Tensor:
    return reference.mhc_post(x, residual, post_mix, comb_mix)


@post.register_fake
def _post_fake(x, residual, post_mix, comb_mix):
    checks.check_post_inputs(x, residual, post_mix, comb_mix)
    return torch.empty_like(residual)


@torch.library.custom_op("mhc::head", mutates_args=())
def head(
    residual: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    rms_eps: float,
    eps: float,
) -> torch.Tensor:
    return reference.mhc_head(residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, eps=eps)


@head.register_fake
def _head_fake(residual, hc_fn, hc_scale, hc_base, rms_eps, eps):
    checks.check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    t, _, d = residual.shape
    return residual.new_empty((t, d))


# ---- fused layer boundaries --------------------------------------------------------------


@torch.library.custom_op("mhc::post_pre", mutates_args=())
def post_pre(
    x: torch.Tensor,
    residual: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    rms_eps: float,
    pre_eps: float,
    sinkhorn_eps: float,
    post_mult: float,
    sinkhorn_iters: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference.mhc_post_pre(
        x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps=rms_eps,
        pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps, post_mult=post_mult,
        sinkhorn_iters=sinkhorn_iters)


@post_pre.register_fake
def _post_pre_fake(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, *attrs):
    checks.check_post_inputs(x, residual, post_mix, comb_mix)
    checks.check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    t, n, d = residual.shape
    return (torch.empty_like(residual), residual.new_empty((t, d)),
            residual.new_empty((t, n), dtype=torch.float32),
            residual.new_empty((t, n, n), dtype=torch.float32))


@torch.library.custom_op("mhc::post_head", mutates_args=())
def post_head(
    x: torch.Tensor,
    residual: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    rms_eps: float,
    eps: float,
) -> torch.Tensor:
    return reference.mhc_post_head(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base,
                                   rms_eps=rms_eps, eps=eps)


@post_head.register_fake
def _post_head_fake(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps, eps):
    checks.check_post_inputs(x, residual, post_mix, comb_mix)
    checks.check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    t, _, d = residual.shape
    return residual.new_empty((t, d))


# ---- DeepSeek-V4.1 (delayed pre) -----------------------------------------------------------


@torch.library.custom_op("mhc::mix", mutates_args=())
def mix(
    residual: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    rms_eps: float,
    pre_eps: float,
    sinkhorn_eps: float,
    post_mult: float,
    sinkhorn_iters: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference.mhc_mix(
        residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, pre_eps=pre_eps,
        sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)


def _mixes_like(residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t, n, _ = residual.shape
    return (residual.new_empty((t, n), dtype=torch.float32),
            residual.new_empty((t, n), dtype=torch.float32),
            residual.new_empty((t, n, n), dtype=torch.float32))


@mix.register_fake
def _mix_fake(residual, hc_fn, hc_scale, hc_base, *attrs):
    checks.check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    return _mixes_like(residual)


@torch.library.custom_op("mhc::collapse", mutates_args=())
def collapse(residual: torch.Tensor, pre_mix: torch.Tensor) -> torch.Tensor:
    return reference.mhc_collapse(residual, pre_mix)


@collapse.register_fake
def _collapse_fake(residual, pre_mix):
    t, _, d = checks.check_collapse_inputs(residual, pre_mix)
    return residual.new_empty((t, d))


@torch.library.custom_op("mhc::post_mix", mutates_args=())
def post_mix(
    x: torch.Tensor,
    residual: torch.Tensor,
    pre_mix: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    rms_eps: float,
    pre_eps: float,
    sinkhorn_eps: float,
    post_mult: float,
    sinkhorn_iters: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference.mhc_post_mix(
        x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps=rms_eps,
        pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps, post_mult=post_mult,
        sinkhorn_iters=sinkhorn_iters)


@post_mix.register_fake
def _post_mix_fake(x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base, *attrs):
    checks.check_post_inputs(x, residual, post_mix, comb_mix)
    t, _, d = checks.check_collapse_inputs(residual, pre_mix)
    checks.check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    return (torch.empty_like(residual), residual.new_empty((t, d)), *_mixes_like(residual))


@torch.library.custom_op("mhc::post_collapse", mutates_args=())
def post_collapse(
    x: torch.Tensor,
    residual: torch.Tensor,
    pre_mix: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
) -> torch.Tensor:
    return reference.mhc_post_collapse(x, residual, pre_mix, post_mix, comb_mix)


@post_collapse.register_fake
def _post_collapse_fake(x, residual, pre_mix, post_mix, comb_mix):
    checks.check_post_inputs(x, residual, post_mix, comb_mix)
    t, _, d = checks.check_collapse_inputs(residual, pre_mix)
    return residual.new_empty((t, d))


# ---------------------------------------------------------------------------
# CUDA: our kernels (libmhc_kernels.so) for CUDA tensors, through the dispatcher
# ---------------------------------------------------------------------------
# Registered as the ops' CUDA kernels, so eager mode, CUDA graphs and
# torch.compile (which keeps custom ops opaque) all run them. Where the kernel
# library cannot be loaded the CUDA kernel is the reference math on the GPU,
# and kernel_backend() says so.


def kernel_backend() -> str:
    """What the ops run on for CUDA tensors: "mhc-kernels" or "reference"."""
    from ..kernels import _lib

    return "mhc-kernels" if _lib.available() else "reference"


def _kernels():
    from .. import kernels

    return kernels if kernels.available() else None


def _kernel(name: str):
    """The kernel binding ``mhc_export.kernels.<name>`` where the library is loaded and
    binds that op, else None (the V4.1 ops fall back to the reference until then)."""
    k = _kernels()
    return getattr(k, name, None) if k is not None else None


@pre.register_kernel("cuda")
def _pre_cuda(residual, hc_fn, hc_scale, hc_base, rms_eps, pre_eps, sinkhorn_eps, post_mult,
              sinkhorn_iters):
    k = _kernels()
    if k is None:
        return reference.mhc_pre(residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps,
                                 pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps,
                                 post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)
    return k.pre(residual.contiguous(), hc_fn.contiguous(), hc_scale.contiguous(),
                 hc_base.contiguous(), rms_eps=rms_eps, pre_eps=pre_eps,
                 sinkhorn_eps=sinkhorn_eps, post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)


@sinkhorn.register_kernel("cuda")
def _sinkhorn_cuda(logits, iters, eps):
    k = _kernels()
    if k is None:
        return reference.sinkhorn(logits, iters, eps)
    return k.sinkhorn(logits.contiguous(), iters, eps)


@post.register_kernel("cuda")
def _post_cuda(x, residual, post_mix, comb_mix):
    k = _kernels()
    if k is None:
        return reference.mhc_post(x, residual, post_mix, comb_mix)
    return k.post(x.contiguous(), residual.contiguous(), post_mix.contiguous(),
                  comb_mix.contiguous())


@head.register_kernel("cuda")
def _head_cuda(residual, hc_fn, hc_scale, hc_base, rms_eps, eps):
    k = _kernels()
    if k is None:
        return reference.mhc_head(residual, hc_fn, hc_scale, hc_base, rms_eps=rms_eps, eps=eps)
    return k.head(residual.contiguous(), hc_fn.contiguous(), hc_scale.contiguous(),
                  hc_base.contiguous(), rms_eps=rms_eps, eps=eps)


@post_pre.register_kernel("cuda")
def _post_pre_cuda(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps, pre_eps,
                   sinkhorn_eps, post_mult, sinkhorn_iters):
    k = _kernels()
    if k is None:
        return reference.mhc_post_pre(
            x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps=rms_eps,
            pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps, post_mult=post_mult,
            sinkhorn_iters=sinkhorn_iters)
    c = [t.contiguous() for t in (x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base)]
    return k.post_pre(*c, rms_eps=rms_eps, pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps,
                      post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)


@post_head.register_kernel("cuda")
def _post_head_cuda(x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base, rms_eps, eps):
    k = _kernels()
    if k is None:
        return reference.mhc_post_head(x, residual, post_mix, comb_mix, hc_fn, hc_scale,
                                       hc_base, rms_eps=rms_eps, eps=eps)
    c = [t.contiguous() for t in (x, residual, post_mix, comb_mix, hc_fn, hc_scale, hc_base)]
    return k.post_head(*c, rms_eps=rms_eps, eps=eps)


_PRE_ATTRS = ("rms_eps", "pre_eps", "sinkhorn_eps", "post_mult", "sinkhorn_iters")


@mix.register_kernel("cuda")
def _mix_cuda(residual, hc_fn, hc_scale, hc_base, *attrs):
    a = dict(zip(_PRE_ATTRS, attrs, strict=True))
    kernel = _kernel("mix")
    if kernel is None:
        return reference.mhc_mix(residual, hc_fn, hc_scale, hc_base, **a)
    c = [t.contiguous() for t in (residual, hc_fn, hc_scale, hc_base)]
    return kernel(*c, **a)


@collapse.register_kernel("cuda")
def _collapse_cuda(residual, pre_mix):
    kernel = _kernel("collapse")
    if kernel is None:
        return reference.mhc_collapse(residual, pre_mix)
    return kernel(residual.contiguous(), pre_mix.contiguous())


@post_mix.register_kernel("cuda")
def _post_mix_cuda(x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base, *attrs):
    a = dict(zip(_PRE_ATTRS, attrs, strict=True))
    tensors = (x, residual, pre_mix, post_mix, comb_mix, hc_fn, hc_scale, hc_base)
    kernel = _kernel("post_mix")
    if kernel is None:
        return reference.mhc_post_mix(*tensors, **a)
    return kernel(*[t.contiguous() for t in tensors], **a)


@post_collapse.register_kernel("cuda")
def _post_collapse_cuda(x, residual, pre_mix, post_mix, comb_mix):
    tensors = (x, residual, pre_mix, post_mix, comb_mix)
    kernel = _kernel("post_collapse")
    if kernel is None:
        return reference.mhc_post_collapse(*tensors)
    return kernel(*[t.contiguous() for t in tensors])
