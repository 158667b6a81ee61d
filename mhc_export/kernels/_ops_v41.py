"""The DeepSeek-V4.1 ops over the C API (mhc_v41.cu): MhcMix, MhcCollapse,
MhcPostMix and MhcPostCollapse, taking and returning CUDA torch tensors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..core.checks import check_collapse_inputs, check_post_inputs, check_pre_inputs
from ..core.spec import (
    MHC_COLLAPSE,
    MHC_MIX,
    MHC_POST_COLLAPSE,
    MHC_POST_MIX,
    PreAttrs,
    output_spec,
)
from ._lib import load
from ._ops import launch, launch_mixes, pre_params

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations stay strings
    from typing import Unpack


def mix(
    residual: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    **attrs: Unpack[PreAttrs],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcMix: (pre_mix [T, n], post_mix [T, n], comb_mix [T, n, n]), all float32."""
    lib = load()
    pre, post, comb = launch_mixes(lib, "mhcMix", MHC_MIX, residual, hc_fn, hc_scale, hc_base,
                                   out, attrs)
    return pre, post, comb


def collapse(
    residual: torch.Tensor, pre_mix: torch.Tensor, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """MhcCollapse: layer_input [T, d] = sum_i pre_mix[:, i] * residual[:, i]."""
    lib = load()
    t, n, d = check_collapse_inputs(residual, pre_mix)
    return launch(lib, "mhcCollapse", dict(residual=residual, pre_mix=pre_mix),
                  output_spec(MHC_COLLAPSE, (t, n, d), residual.dtype), (out,), (t, n, d))[0]


def post_mix(
    x: torch.Tensor, residual: torch.Tensor, pre_mix: torch.Tensor,
    post_mix: torch.Tensor, comb_mix: torch.Tensor,
    hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
    *,
    out: tuple[torch.Tensor, ...] | None = None,
    **attrs: Unpack[PreAttrs],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MhcPostMix: (residual_out, layer_input, next_pre_mix, next_post_mix, next_comb_mix)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_pre_inputs(residual, hc_fn, hc_scale, hc_base)
    check_collapse_inputs(residual, pre_mix)
    params = pre_params(attrs)
    inputs = dict(x=x, residual=residual, pre_mix=pre_mix, post_mix=post_mix,
                  comb_mix=comb_mix, hc_fn=hc_fn, hc_scale=hc_scale, hc_base=hc_base)
    outputs = output_spec(MHC_POST_MIX, (t, n, d), residual.dtype)
    res_out, li, pre2, post2, comb2 = launch(lib, "mhcPostMix", inputs, outputs, out,
                                             (t, n, d), params)
    return res_out, li, pre2, post2, comb2


def post_collapse(
    x: torch.Tensor, residual: torch.Tensor, pre_mix: torch.Tensor,
    post_mix: torch.Tensor, comb_mix: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """MhcPostCollapse: y [T, d] = MhcCollapse(MhcPost(x, residual, post, comb), pre_mix)."""
    lib = load()
    t, n, d = check_post_inputs(x, residual, post_mix, comb_mix)
    check_collapse_inputs(residual, pre_mix)
    inputs = dict(x=x, residual=residual, pre_mix=pre_mix, post_mix=post_mix,
                  comb_mix=comb_mix)
    return launch(lib, "mhcPostCollapse", inputs,
                  output_spec(MHC_POST_COLLAPSE, (t, n, d), residual.dtype), (out,), (t, n, d))[0]
