"""The DeepSeek-V4.1 ops over the C API (mhc_v41.cu): MhcMix, MhcCollapse,
MhcPostMix and MhcPostCollapse, taking and returning CUDA torch tensors."""

from __future__ import annotations

import ctypes

import torch

from ..core.checks import check_collapse_inputs, check_post_inputs, check_pre_inputs
from ..core.spec import POST_MULT, PRE_EPS, RMS_EPS, SINKHORN_EPS, SINKHORN_ITERS
from ._lib import DTYPE_CODES, load, raise_for_status
from ._ops import new_output, new_workspace, pre_params, ptr, require_cuda, stream


def mix(
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
    """MhcMix: (pre_mix [T, n], post_mix [T, n], comb_mix [T, n, n]), all float32."""
    lib = load()
    t, n, d = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    params = pre_params(rms_eps, pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters)
    require_cuda(residual=residual, hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    dev = residual.device
    o = out if out is not None else (None, None, None)
    pre = new_output("pre_mix", o[0], (t, n), torch.float32, dev)
    post = new_output("post_mix", o[1], (t, n), torch.float32, dev)
    comb = new_output("comb_mix", o[2], (t, n, n), torch.float32, dev)
    code = DTYPE_CODES[residual.dtype]
    ws_bytes = int(lib.mhcMixWorkspaceSize(t, n, d, code))
    ws = new_workspace(ws_bytes, dev)
    with torch.cuda.device(dev):
        status = lib.mhcMix(
            ptr(residual), ptr(hc_fn), ptr(hc_scale), ptr(hc_base), ptr(pre), ptr(post),
            ptr(comb), t, n, d, code, ctypes.byref(params), ptr(ws), ws_bytes, stream(dev))
    raise_for_status(status, "mhcMix")
    return pre, post, comb


def collapse(
    residual: torch.Tensor, pre_mix: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """MhcCollapse: layer_input [T, d] = sum_i pre_mix[:, i] * residual[:, i]."""
    lib = load()
    t, n, d = check_collapse_inputs(residual, pre_mix)
    require_cuda(residual=residual, pre_mix=pre_mix)
    y = new_output("layer_input", out, (t, d), residual.dtype, residual.device)
    with torch.cuda.device(residual.device):
        status = lib.mhcCollapse(ptr(residual), ptr(pre_mix), ptr(y), t, n, d,
                                 DTYPE_CODES[residual.dtype], stream(residual.device))
    raise_for_status(status, "mhcCollapse")
    return y


def post_mix(
    x: torch.Tensor,
    residual: torch.Tensor,
    pre_mix: torch.Tensor,
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPostMix: (residual_out, layer_input, next_pre_mix, next_post_mix, next_comb_mix)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    check_collapse_inputs(residual, pre_mix)
    params = pre_params(rms_eps, pre_eps, sinkhorn_eps, post_mult, sinkhorn_iters)
    require_cuda(x=x, residual=residual, pre_mix=pre_mix, post_mix=post_mix, comb_mix=comb_mix,
                  hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    dev = residual.device
    o = out if out is not None else (None,) * 5
    res_out = new_output("residual_out", o[0], (t, n, d), residual.dtype, dev)
    layer_input = new_output("layer_input", o[1], (t, d), residual.dtype, dev)
    pre2 = new_output("next_pre_mix", o[2], (t, n), torch.float32, dev)
    post2 = new_output("next_post_mix", o[3], (t, n), torch.float32, dev)
    comb2 = new_output("next_comb_mix", o[4], (t, n, n), torch.float32, dev)
    code = DTYPE_CODES[residual.dtype]
    ws_bytes = int(lib.mhcPostMixWorkspaceSize(t, n, d, code))
    ws = new_workspace(ws_bytes, dev)
    with torch.cuda.device(dev):
        status = lib.mhcPostMix(
            ptr(x), ptr(residual), ptr(pre_mix), ptr(post_mix), ptr(comb_mix), ptr(hc_fn),
            ptr(hc_scale), ptr(hc_base), ptr(res_out), ptr(layer_input), ptr(pre2),
            ptr(post2), ptr(comb2), t, n, d, code, ctypes.byref(params), ptr(ws), ws_bytes,
            stream(dev))
    raise_for_status(status, "mhcPostMix")
    return res_out, layer_input, pre2, post2, comb2


def post_collapse(
    x: torch.Tensor,
    residual: torch.Tensor,
    pre_mix: torch.Tensor,
    post_mix: torch.Tensor,
    comb_mix: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcPostCollapse: y [T, d] = MhcCollapse(MhcPost(x, residual, post, comb), pre_mix)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_collapse_inputs(residual, pre_mix)
    require_cuda(x=x, residual=residual, pre_mix=pre_mix, post_mix=post_mix, comb_mix=comb_mix)
    y = new_output("y", out, (t, d), residual.dtype, residual.device)
    with torch.cuda.device(residual.device):
        status = lib.mhcPostCollapse(
            ptr(x), ptr(residual), ptr(pre_mix), ptr(post_mix), ptr(comb_mix), ptr(y), t,
            n, d, DTYPE_CODES[residual.dtype], stream(residual.device))
    raise_for_status(status, "mhcPostCollapse")
    return y
