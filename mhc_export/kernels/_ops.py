"""The four ops over the C API, taking and returning CUDA torch tensors."""

from __future__ import annotations

import ctypes

import torch

from ..core.checks import check_attributes, check_head_inputs, check_post_inputs, check_pre_inputs
from ..core.spec import HEAD_EPS, POST_MULT, PRE_EPS, RMS_EPS, SINKHORN_EPS, SINKHORN_ITERS
from ._lib import DTYPE_CODES, HeadParams, PreParams, load, raise_for_status


def require_cuda(**tensors: torch.Tensor) -> None:
    device = None
    for name, t in tensors.items():
        if not t.is_cuda:
            raise ValueError(f"{name} must be a CUDA tensor, got device {t.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (call .contiguous() first)")
        if device is None:
            device = t.device
        elif t.device != device:
            raise ValueError(f"{name} is on {t.device} but the other inputs are on {device}")


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def stream(device: torch.device) -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)


def new_workspace(nbytes: int, device: torch.device) -> torch.Tensor:
    return torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device)


def new_output(
    name: str, given: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """A caller's output tensor (checked) or a fresh one; callers pass their own to poison it."""
    if given is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(given.shape) != shape or given.dtype != dtype or given.device != device:
        raise ValueError(
            f"out {name} must be {dtype} {list(shape)} on {device}, got {given.dtype} "
            f"{list(given.shape)} on {given.device}"
        )
    if not given.is_contiguous():
        raise ValueError(f"out {name} must be contiguous")
    return given


def pre_params(rms_eps: float, pre_eps: float, sinkhorn_eps: float, post_mult: float,
                sinkhorn_iters: int) -> PreParams:
    """MhcPre's attributes, checked, as the C struct (MhcPostPre shares them)."""
    check_attributes(rms_eps=rms_eps, pre_eps=pre_eps, sinkhorn_eps=sinkhorn_eps,
                     post_mult=post_mult, sinkhorn_iters=sinkhorn_iters)
    return PreParams(rms_eps, pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters)


def _head_params(rms_eps: float, eps: float) -> HeadParams:
    """MhcHead's attributes, checked, as the C struct (MhcPostHead shares them)."""
    check_attributes(rms_eps=rms_eps, eps=eps)
    return HeadParams(rms_eps, eps)


def pre(
    residual: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    pre_eps: float = PRE_EPS,
    sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT,
    sinkhorn_iters: int = SINKHORN_ITERS,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPre: (layer_input [T, d], post_mix [T, n], comb_mix [T, n, n]).

    ``out`` optionally gives the three output tensors to write into.
    """
    lib = load()
    t, n, d = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    params = pre_params(rms_eps, pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters)
    require_cuda(residual=residual, hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    dev = residual.device
    o = out if out is not None else (None, None, None)
    layer_input = new_output("layer_input", o[0], (t, d), residual.dtype, dev)
    post_mix = new_output("post_mix", o[1], (t, n), torch.float32, dev)
    comb_mix = new_output("comb_mix", o[2], (t, n, n), torch.float32, dev)
    code = DTYPE_CODES[residual.dtype]
    ws_bytes = int(lib.mhcPreWorkspaceSize(t, n, d, code))
    ws = new_workspace(ws_bytes, dev)
    with torch.cuda.device(dev):
        status = lib.mhcPre(
            ptr(residual), ptr(hc_fn), ptr(hc_scale), ptr(hc_base), ptr(layer_input),
            ptr(post_mix), ptr(comb_mix), t, n, d, code, ctypes.byref(params), ptr(ws),
            ws_bytes, stream(dev),
        )
    raise_for_status(status, "mhcPre")
    return layer_input, post_mix, comb_mix


def sinkhorn(
    logits: torch.Tensor, iters: int = SINKHORN_ITERS, eps: float = SINKHORN_EPS, *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcSinkhorn on [..., n, n] float32 logits (any leading dims, flattened to T)."""
    lib = load()
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() < 2 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"logits must have shape [..., n, n], got {list(logits.shape)}")
    if logits.dtype != torch.float32:
        raise TypeError(f"logits must be float32, got {logits.dtype}")
    check_attributes(iters=iters, eps=eps)
    require_cuda(logits=logits)
    n = logits.shape[-1]
    t = logits.numel() // (n * n) if n else 0
    comb = new_output("comb", out, tuple(logits.shape), torch.float32, logits.device)
    with torch.cuda.device(logits.device):
        status = lib.mhcSinkhorn(ptr(logits), ptr(comb), t, n, iters, eps,
                                 stream(logits.device))
    raise_for_status(status, "mhcSinkhorn")
    return comb


def post(
    x: torch.Tensor,
    residual: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcPost: out [T, n, d] = post * x + comb^T @ residual."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    require_cuda(x=x, residual=residual, post_mix=post_mix, comb_mix=comb_mix)
    res = new_output("out", out, (t, n, d), residual.dtype, residual.device)
    with torch.cuda.device(residual.device):
        status = lib.mhcPost(ptr(x), ptr(residual), ptr(post_mix), ptr(comb_mix), ptr(res),
                             t, n, d, DTYPE_CODES[residual.dtype], stream(residual.device))
    raise_for_status(status, "mhcPost")
    return res


def head(
    residual: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    eps: float = HEAD_EPS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcHead: y [T, d] = sum_i w_i * residual[:, i]."""
    lib = load()
    t, n, d = check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    params = _head_params(rms_eps, eps)
    require_cuda(residual=residual, hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    dev = residual.device
    y = new_output("y", out, (t, d), residual.dtype, dev)
    code = DTYPE_CODES[residual.dtype]
    ws_bytes = int(lib.mhcHeadWorkspaceSize(t, n, d, code))
    ws = new_workspace(ws_bytes, dev)
    with torch.cuda.device(dev):
        status = lib.mhcHead(ptr(residual), ptr(hc_fn), ptr(hc_scale), ptr(hc_base), ptr(y),
                             t, n, d, code, ctypes.byref(params), ptr(ws), ws_bytes,
                             stream(dev))
    raise_for_status(status, "mhcHead")
    return y


def post_pre(
    x: torch.Tensor,
    residual: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    pre_eps: float = PRE_EPS,
    sinkhorn_eps: float = SINKHORN_EPS,
    post_mult: float = POST_MULT,
    sinkhorn_iters: int = SINKHORN_ITERS,
    out: tuple[torch.Tensor, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPostPre: (residual_out [T,n,d], layer_input [T,d], next_post_mix, next_comb_mix)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    params = pre_params(rms_eps, pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters)
    require_cuda(x=x, residual=residual, post_mix=post_mix, comb_mix=comb_mix, hc_fn=hc_fn,
                  hc_scale=hc_scale, hc_base=hc_base)
    dev = residual.device
    o = out if out is not None else (None,) * 4
    res_out = new_output("residual_out", o[0], (t, n, d), residual.dtype, dev)
    layer_input = new_output("layer_input", o[1], (t, d), residual.dtype, dev)
    post2 = new_output("next_post_mix", o[2], (t, n), torch.float32, dev)
    comb2 = new_output("next_comb_mix", o[3], (t, n, n), torch.float32, dev)
    code = DTYPE_CODES[residual.dtype]
    ws_bytes = int(lib.mhcPostPreWorkspaceSize(t, n, d, code))
    ws = new_workspace(ws_bytes, dev)
    with torch.cuda.device(dev):
        status = lib.mhcPostPre(
            ptr(x), ptr(residual), ptr(post_mix), ptr(comb_mix), ptr(hc_fn),
            ptr(hc_scale), ptr(hc_base), ptr(res_out), ptr(layer_input), ptr(post2),
            ptr(comb2), t, n, d, code, ctypes.byref(params), ptr(ws), ws_bytes, stream(dev))
    raise_for_status(status, "mhcPostPre")
    return res_out, layer_input, post2, comb2


def post_head(
    x: torch.Tensor,
    residual: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    hc_fn: torch.Tensor,
    hc_scale: torch.Tensor,
    hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS,
    eps: float = HEAD_EPS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcPostHead: y [T, d] = MhcHead(MhcPost(x, residual, post_mix, comb_mix), ...)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    params = _head_params(rms_eps, eps)
    require_cuda(x=x, residual=residual, post_mix=post_mix, comb_mix=comb_mix, hc_fn=hc_fn,
                  hc_scale=hc_scale, hc_base=hc_base)
    dev = residual.device
    y = new_output("y", out, (t, d), residual.dtype, dev)
    code = DTYPE_CODES[residual.dtype]
    ws_bytes = int(lib.mhcPostHeadWorkspaceSize(t, n, d, code))
    ws = new_workspace(ws_bytes, dev)
    with torch.cuda.device(dev):
        status = lib.mhcPostHead(
            ptr(x), ptr(residual), ptr(post_mix), ptr(comb_mix), ptr(hc_fn),
            ptr(hc_scale), ptr(hc_base), ptr(y), t, n, d, code, ctypes.byref(params),
            ptr(ws), ws_bytes, stream(dev))
    raise_for_status(status, "mhcPostHead")
    return y
