"""torch.library custom ops ``mhc::pre``, ``mhc::sinkhorn``, ``mhc::post``, ``mhc::head``.

Each op is one opaque node for torch.export, which is what lets the ONNX
exporter emit one ``mhc`` domain node per op (see :mod:`mhc_export.onnx_export`).
The eager implementation is the reference itself, so a model run "fused"
(through these ops) and "decomposed" (plain torch math) is bit-identical.
"""

from __future__ import annotations

import torch

from . import reference

__all__ = ["head", "kernel_backend", "post", "post_head", "post_pre", "pre", "sinkhorn"]


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
    reference.check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
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
    reference.check_post_inputs(x, residual, post_mix, comb_mix)
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
    reference.check_head_inputs(residual, hc_fn, hc_scale, hc_base)
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
    reference.check_post_inputs(x, residual, post_mix, comb_mix)
    reference.check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
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
    reference.check_post_inputs(x, residual, post_mix, comb_mix)
    reference.check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    t, _, d = residual.shape
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
    from .kernels import _lib

    return "mhc-kernels" if _lib.available() else "reference"


def _kernels():
    from . import kernels

    return kernels if kernels.available() else None


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
