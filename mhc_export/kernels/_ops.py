"""The four ops over the C API, taking and returning CUDA torch tensors."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..core.checks import check_attributes, check_head_inputs, check_post_inputs, check_pre_inputs
from ..core.spec import (
    HEAD_EPS,
    MHC_HEAD,
    MHC_POST,
    MHC_POST_PRE,
    MHC_PRE,
    MHC_SINKHORN,
    RMS_EPS,
    SINKHORN_EPS,
    SINKHORN_ITERS,
    OpContract,
    OutputSpec,
    PreAttrs,
    output_spec,
    pre_attributes,
)
from ._lib import DTYPE_CODES, HeadParams, PreParams, load, raise_for_status

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations stay strings
    from typing import Unpack


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


def pre_params(attrs: PreAttrs) -> PreParams:
    """MhcPre's attributes (spec defaults for the missing ones), checked, as the C struct
    (MhcPostPre, MhcMix and MhcPostMix share them)."""
    full = pre_attributes(attrs)
    check_attributes(**full)
    return PreParams(**full)


def head_params(rms_eps: float, eps: float) -> HeadParams:
    """MhcHead's attributes, checked, as the C struct (MhcPostHead shares them)."""
    check_attributes(rms_eps=rms_eps, eps=eps)
    return HeadParams(rms_eps, eps)


def launch(
    lib: ctypes.CDLL, symbol: str, inputs: dict[str, torch.Tensor], outputs: Sequence[OutputSpec],
    out: Sequence[torch.Tensor | None] | None, dims: tuple[int, int, int],
    params: PreParams | HeadParams | None = None,
) -> tuple[torch.Tensor, ...]:
    """Call ``lib.<symbol>`` the way every residual op of mhc_kernels.h is called.

    ``inputs`` are in the C API's order, named for the error messages; ``outputs`` are
    spec.output_spec's; ``out`` gives tensors to write into (None entries are allocated).
    The C argument order is the inputs, the outputs, T, n, d, the residual dtype code,
    then (ops with attributes only) the params struct and the workspace, and the stream.
    Callers load the library, then check shapes and attributes, then launch: that order
    decides which error a caller sees first.
    """
    require_cuda(**inputs)
    residual = inputs["residual"]
    dev, code = residual.device, DTYPE_CODES[residual.dtype]
    given = out if out is not None else (None,) * len(outputs)
    outs = tuple(new_output(name, given[i], shape, dtype, dev)
                 for i, (name, shape, dtype) in enumerate(outputs))
    args = [*(ptr(t) for t in inputs.values()), *(ptr(o) for o in outs), *dims, code]
    if params is not None:
        # Only the ops with a params struct (the mixes and the heads) take a workspace.
        ws_bytes = int(getattr(lib, symbol + "WorkspaceSize")(*dims, code))
        # Held until the launch is enqueued, so the allocator cannot hand the block out
        # before the kernel that uses it is in the stream.
        ws = new_workspace(ws_bytes, dev)
        args += [ctypes.byref(params), ptr(ws), ws_bytes]
    with torch.cuda.device(dev):
        status = getattr(lib, symbol)(*args, stream(dev))
    raise_for_status(status, symbol)
    return outs


def pre(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    **attrs: Unpack[PreAttrs],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPre: (layer_input [T, d], post_mix [T, n], comb_mix [T, n, n]).

    ``out`` optionally gives the three output tensors to write into.
    """
    lib = load()
    li, post_mix, comb_mix = launch_mixes(lib, "mhcPre", MHC_PRE, residual, hc_fn, hc_scale,
                                          hc_base, out, attrs)
    return li, post_mix, comb_mix


def launch_mixes(
    lib: ctypes.CDLL, symbol: str, contract: OpContract, residual: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    out: Sequence[torch.Tensor | None] | None, attrs: PreAttrs,
) -> tuple[torch.Tensor, ...]:
    """MhcPre and MhcMix once the library is loaded: the same inputs, checks and
    attributes; only their outputs (the contract's) differ."""
    t, n, d = check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    params = pre_params(attrs)
    inputs = dict(residual=residual, hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    outputs = output_spec(contract, (t, n, d), residual.dtype)
    return launch(lib, symbol, inputs, outputs, out, (t, n, d), params)


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
    ((name, shape, dtype),) = output_spec(MHC_SINKHORN, logits.shape, logits.dtype)
    comb = new_output(name, out, shape, dtype, logits.device)
    with torch.cuda.device(logits.device):
        status = lib.mhcSinkhorn(ptr(logits), ptr(comb), t, n, iters, eps,
                                 stream(logits.device))
    raise_for_status(status, "mhcSinkhorn")
    return comb


def post(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcPost: out [T, n, d] = post * x + comb^T @ residual."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    inputs = dict(x=x, residual=residual, post_mix=post_mix, comb_mix=comb_mix)
    return launch(lib, "mhcPost", inputs, output_spec(MHC_POST, (t, n, d), residual.dtype),
                  (out,), (t, n, d))[0]


def head(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS, eps: float = HEAD_EPS,  # MhcHead's attributes
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcHead: y [T, d] = sum_i w_i * residual[:, i]."""
    lib = load()
    dims = check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    inputs = dict(residual=residual, hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    return _launch_head(lib, "mhcHead", inputs, dims, rms_eps, eps, out)


def _launch_head(lib: ctypes.CDLL, symbol: str, inputs: dict[str, torch.Tensor],
                 dims: tuple[int, int, int], rms_eps: float, eps: float,
                 out: torch.Tensor | None) -> torch.Tensor:
    """MhcHead and MhcPostHead after their input checks: MhcHead's attributes, checked,
    and MhcHead's one output y."""
    params = head_params(rms_eps, eps)
    y = output_spec(MHC_HEAD, dims, inputs["residual"].dtype)
    return launch(lib, symbol, inputs, y, (out,), dims, params)[0]


def post_pre(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    out: tuple[torch.Tensor, ...] | None = None,
    **attrs: Unpack[PreAttrs],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPostPre: (residual_out [T,n,d], layer_input [T,d], next_post_mix, next_comb_mix)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    params = pre_params(attrs)
    inputs = dict(x=x, residual=residual, post_mix=post_mix, comb_mix=comb_mix, hc_fn=hc_fn,
                  hc_scale=hc_scale, hc_base=hc_base)
    outputs = output_spec(MHC_POST_PRE, (t, n, d), residual.dtype)
    res_out, li, post2, comb2 = launch(lib, "mhcPostPre", inputs, outputs, out, (t, n, d),
                                       params)
    return res_out, li, post2, comb2


def post_head(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    rms_eps: float = RMS_EPS, eps: float = HEAD_EPS,  # MhcHead's attributes
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcPostHead: y [T, d] = MhcHead(MhcPost(x, residual, post_mix, comb_mix), ...)."""
    lib = load()
    dims = check_post_inputs(x, residual, post_mix, comb_mix)
    check_head_inputs(residual, hc_fn, hc_scale, hc_base)
    inputs = dict(x=x, residual=residual, post_mix=post_mix, comb_mix=comb_mix, hc_fn=hc_fn,
                  hc_scale=hc_scale, hc_base=hc_base)
    return _launch_head(lib, "mhcPostHead", inputs, dims, rms_eps, eps, out)
