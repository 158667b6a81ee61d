"""Checks of the mHC ops' attributes and input tensors against the contract.

Every message names the offending input and what was expected. The eager
reference, the torch custom ops and the kernels' binding run the same checks,
so each layer refuses bad input with the same words.
"""

from __future__ import annotations

import math

import torch

from .spec import MAX_STREAMS, RESIDUAL_DTYPES, dtype_list, num_mixes

__all__ = [
    "check_attributes",
    "check_collapse_inputs",
    "check_head_inputs",
    "check_logits",
    "check_post_inputs",
    "check_pre_inputs",
]


def _check_eps(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"attribute {name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"attribute {name} must be a finite number >= 0, got {value}")


def _check_iters(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"attribute {name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"attribute {name} must be >= 1, got {value}")


def check_attributes(**attrs: float | int) -> None:
    """Validate attribute values by name (``*_eps``, ``post_mult``, ``*iters``)."""
    for name, value in attrs.items():
        if name.endswith("iters"):
            _check_iters(name, value)  # type: ignore[arg-type]
        elif name == "post_mult":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"attribute post_mult must be a float, got {type(value).__name__}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"attribute post_mult must be a finite number > 0, got {value}")
        else:
            _check_eps(name, value)  # type: ignore[arg-type]


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _check_residual(name: str, residual: torch.Tensor) -> tuple[int, int, int]:
    _check_tensor(name, residual)
    if residual.dim() != 3:
        raise ValueError(
            f"{name} must have rank 3 [T, n, d], got rank {residual.dim()} "
            f"with shape {tuple(residual.shape)}"
        )
    if residual.dtype not in RESIDUAL_DTYPES:
        raise TypeError(f"{name} dtype must be one of {dtype_list()}, got {residual.dtype}")
    t, n, d = residual.shape
    if not 1 <= n <= MAX_STREAMS:
        raise ValueError(f"{name} has n={n} streams; supported are 1..{MAX_STREAMS}")
    if d < 1:
        raise ValueError(f"{name} has hidden size d={d}; it must be >= 1")
    return t, n, d


def _check_f32(name: str, t: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor) -> None:
    _check_tensor(name, t)
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but residual is on {like.device}")


def _check_weights(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    rows: int, scales: int,
) -> None:
    _, n, d = residual.shape
    _check_tensor("hc_fn", hc_fn)
    if hc_fn.dim() != 2:
        raise ValueError(f"hc_fn must have rank 2 [{rows}, {n * d}], got shape {list(hc_fn.shape)}")
    if hc_fn.shape[1] != n * d:
        raise ValueError(
            f"hc_fn has {hc_fn.shape[1]} columns but residual has n*d = {n}*{d} = {n * d}"
        )
    _check_f32("hc_fn", hc_fn, (rows, n * d), residual)
    _check_f32("hc_scale", hc_scale, (scales,), residual)
    _check_f32("hc_base", hc_base, (rows,), residual)


def check_pre_inputs(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor
) -> tuple[int, int, int]:
    t, n, d = _check_residual("residual", residual)
    _check_weights(residual, hc_fn, hc_scale, hc_base, num_mixes(n), 3)
    return t, n, d


def check_head_inputs(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor
) -> tuple[int, int, int]:
    t, n, d = _check_residual("residual", residual)
    _check_weights(residual, hc_fn, hc_scale, hc_base, n, 1)
    return t, n, d


def check_post_inputs(
    x: torch.Tensor, residual: torch.Tensor, post_mix: torch.Tensor, comb_mix: torch.Tensor
) -> tuple[int, int, int]:
    t, n, d = _check_residual("residual", residual)
    _check_tensor("x", x)
    if tuple(x.shape) != (t, d):
        raise ValueError(f"x must have shape [T, d] = {[t, d]}, got {list(x.shape)}")
    if x.dtype != residual.dtype:
        raise TypeError(f"x dtype {x.dtype} must match residual dtype {residual.dtype}")
    _check_f32("post_mix", post_mix, (t, n), residual)
    _check_f32("comb_mix", comb_mix, (t, n, n), residual)
    if x.device != residual.device:
        raise ValueError(f"x is on {x.device} but residual is on {residual.device}")
    return t, n, d


def check_collapse_inputs(residual: torch.Tensor, pre_mix: torch.Tensor) -> tuple[int, int, int]:
    t, n, d = _check_residual("residual", residual)
    _check_f32("pre_mix", pre_mix, (t, n), residual)
    return t, n, d


def check_logits(logits: torch.Tensor) -> None:
    _check_tensor("logits", logits)
    if logits.dim() < 2 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(f"logits must have shape [..., n, n], got {list(logits.shape)}")
    if logits.dtype != torch.float32:
        raise TypeError(f"logits must be float32, got {logits.dtype}")
