"""The stored weight forms of DeepSeek-V4 checkpoints and their dequantization (torch).

- FP8: ``float8_e4m3fn`` ``[out, in]`` with one scale per ``block`` (128 x 128
  as published), the scale grid ``[ceil(out/bo), ceil(in/bi)]`` in UE8M0
  (``float8_e8m0fnu``: a power of two, ``2**(byte - 127)``) or float32.
- FP4: ``int8`` ``[out, in/2]``, two E2M1 values per byte, low nibble first,
  one scale per 32 values of a row ``[out, in/32]`` (UE8M0 or float32).

Our own decode, forced on every host: transformers keeps its FP8 modules on a
GPU of compute capability >= 8.9, and its dequantizer infers the block size
from the scale grid (wrong for ragged shapes). The float64 check of these
decodes is :mod:`.hf_truth`, written separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP4_GROUP = 32  # values per FP4 scale (one row)
# E2M1 code -> value (sign bit 3, exponent bits 2..1, mantissa bit 0).
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def scale_values(scale: torch.Tensor) -> torch.Tensor:
    """A UE8M0 or float scale tensor as float32 (UE8M0 byte 255 is NaN)."""
    if scale.dtype == torch.float8_e8m0fnu:
        return scale.float()
    if scale.dtype == torch.uint8:  # UE8M0 bytes read without their dtype
        return scale.view(torch.float8_e8m0fnu).float()
    return scale.float()


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """``[..., k/2]`` int8/uint8 -> ``[..., k]`` float32 E2M1 values (low nibble first)."""
    b = packed.view(torch.uint8).to(torch.int64)
    codes = torch.stack([b & 0xF, b >> 4], dim=-1).flatten(-2)
    return torch.tensor(FP4_VALUES, dtype=torch.float32)[codes]


def expand_blocks(scale: torch.Tensor, shape: tuple[int, ...], block: tuple[int, int]
                  ) -> torch.Tensor:
    """A ``[..., ceil(r/br), ceil(c/bc)]`` scale grid -> ``[..., r, c]`` (ragged edges cut)."""
    r, c = shape[-2:]
    rows = scale.repeat_interleave(block[0], -2)[..., :r, :]
    return rows.repeat_interleave(block[1], -1)[..., :c]


@dataclass
class Stored:
    """One model tensor as the checkpoint stores it: ``kind`` dense, fp8 or fp4.

    ``data`` is the stored tensor (experts stacked ``[E, ...]`` when merged);
    ``scale`` the scale grid (fp8: per ``block``; fp4: per 32 values of a row).
    ``shape`` is the model tensor's shape after decoding.
    """

    kind: str
    data: torch.Tensor
    shape: tuple[int, ...]
    scale: torch.Tensor | None = None
    block: tuple[int, int] = (128, 128)
    source: str = ""  # checkpoint name(s), for messages

    def dense(self, dtype: torch.dtype) -> torch.Tensor:
        """The decoded tensor in ``dtype`` (float math in float32, one rounding)."""
        if self.kind == "dense":
            return self.data if self.data.dtype == dtype or not self.data.is_floating_point() \
                else self.data.to(dtype)
        assert self.scale is not None
        scale = scale_values(self.scale)
        if self.kind == "fp8":
            w = self.data.view(torch.float8_e4m3fn).float()
            out = w * expand_blocks(scale, tuple(w.shape), self.block)
        else:
            w = unpack_fp4(self.data)
            out = w * scale.repeat_interleave(FP4_GROUP, -1)[..., : w.shape[-1]]
        return out.reshape(self.shape).to(dtype)

    def part(self, expert: int) -> Stored:
        """Expert ``expert`` of a stacked ``[E, ...]`` tensor."""
        scale = None if self.scale is None else self.scale[expert]
        return Stored(self.kind, self.data[expert], self.shape[1:], scale, self.block,
                      self.source)

    def nbytes(self) -> int:
        s = 0 if self.scale is None else self.scale.numel() * self.scale.element_size()
        return self.data.numel() * self.data.element_size() + s
