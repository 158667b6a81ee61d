"""``--weights native``: FP8 and FP4 weights stay as stored; the graph decodes them.

Each quantized weight becomes a parametrization whose buffers are the stored
codes and scales, so the traced graph holds them as initializers and decodes
with standard ops:

- FP8: a FLOAT8E4M3FN initializer ``[out, in]``, decoded by ``DequantizeLinear``
  with scale 1 (traced as a ``Cast``, rewritten by :func:`fp8_casts_to_dequantize`:
  TensorRT's builder takes an FP8 tensor only into a dequantize layer), times its
  128 x 128 block scales (``Reshape`` to blocks, ``Mul``
  by ``[rows/128, 1, cols/128, 1]``, ``Reshape`` back; ragged edges padded then cut).
- FP4: a uint8 initializer ``[out, in/2]`` (two E2M1 codes per byte, low nibble
  first), split by ``Div``/``Sub`` in int32, a 16-entry ``Gather`` lookup, times
  one scale per 32 values.
- Scales: UE8M0 as uint8 exponents, ``2 ** (e - 127)`` in the graph (exact);
  float32 scales as they are.

One V4-Flash layer is then about 3.5 GB in the ONNX instead of 13 GB (bf16).
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import torch
from torch.nn.utils import parametrize

from .hf_quant import FP4_GROUP, FP4_VALUES, Stored


def keep_stored(hf_name: str, stored: Stored) -> bool:
    """Which tensors native weights keep as stored: every FP8 and FP4 one."""
    return stored.kind in ("fp8", "fp4")


class _Decode(torch.nn.Module):
    """Stored codes and scales -> the weight, in torch ops the exporter translates."""

    def __init__(self, s: Stored, dtype: torch.dtype):
        super().__init__()
        assert s.scale is not None
        self.kind, self.shape, self.dtype, self.block = s.kind, tuple(s.shape), dtype, s.block
        codes = s.data.view(torch.uint8) if s.kind == "fp4" else s.data
        self.register_buffer("codes", codes.contiguous())
        ue8m0 = s.scale.dtype == torch.float8_e8m0fnu
        self.ue8m0 = ue8m0
        self.register_buffer("scale", s.scale.view(torch.uint8) if ue8m0 else s.scale.float())
        if s.kind == "fp4":
            self.register_buffer("lut", torch.tensor(FP4_VALUES, dtype=torch.float32))

    def _scales(self) -> torch.Tensor:
        if self.ue8m0:
            return torch.pow(2.0, self.scale.to(torch.float32) - 127.0)
        return self.scale

    def forward(self, _unused: torch.Tensor) -> torch.Tensor:
        scale = self._scales()
        if self.kind == "fp4":
            # int32 arithmetic: ONNX BitShift takes unsigned types only, and torch's
            # uint8 shift exports through int16.
            b = self.codes.to(torch.int32)
            high = torch.div(b, 16, rounding_mode="floor")
            codes = torch.stack([b - high * 16, high], dim=-1).flatten(-2)
            w = self.lut.index_select(0, codes.flatten()).reshape(codes.shape)  # Gather
            *lead, r, c = w.shape
            w = w.reshape(*lead, r, c // FP4_GROUP, FP4_GROUP) * scale.unsqueeze(-1)
            return w.reshape(self.shape).to(self.dtype)
        w = self.codes.to(torch.float32)
        *lead, r, c = w.shape
        br, bc = self.block
        pr, pc = -r % br, -c % bc
        if pr or pc:
            w = torch.nn.functional.pad(w, (0, pc, 0, pr))
        gr, gc = (r + pr) // br, (c + pc) // bc
        w = w.reshape(*lead, gr, br, gc, bc) * scale.reshape(*lead, gr, 1, gc, 1)
        w = w.reshape(*lead, gr * br, gc * bc)
        if pr or pc:
            w = w[..., :r, :c]
        return w.reshape(self.shape).to(self.dtype)


def bind_stored(modules: torch.nn.Module, kept: dict[str, Stored]) -> None:
    """Make every kept tensor a parametrization decoding its stored form."""
    for key, s in kept.items():
        path, _, attr = key.rpartition(".")
        owner = modules.get_submodule(path)
        dtype = getattr(owner, attr).dtype
        # The placeholder the loader left (meta) is never read: the decode ignores it.
        setattr(owner, attr, torch.nn.Parameter(torch.empty(0, dtype=dtype),
                                                requires_grad=False))
        parametrize.register_parametrization(owner, attr, _Decode(s, dtype), unsafe=True)


def is_native(graph: torch.nn.Module) -> bool:
    return any(isinstance(m, _Decode) for m in graph.modules())


@contextlib.contextmanager
def stored_forms_kept():
    """Keep the exporter's constant folding off the decode chains.

    onnxscript folds any op whose inputs are all initializers (below 8192
    elements), which would turn small stored weights back into float ones.
    Every decode chain starts with a ``Cast`` of a stored initializer; adding
    ``Cast`` to the folder's keep-list for the export leaves the chains as
    they are (other constant casts stay unfolded too: a handful of nodes).
    """
    from onnxscript.optimizer import _constant_folding as folding

    keep = folding.DEFAULT_CONSTANT_FOLD_BLACKLIST
    added = "Cast" not in keep
    if added:
        keep.append("Cast")
    try:
        yield
    finally:
        if added:
            keep.remove("Cast")


FP8_UNIT_SCALE = "mhc_export_fp8_unit_scale"
FP8_MIN_OPSET = 19  # DequantizeLinear takes float8 inputs from opset 19


def fp8_casts_to_dequantize(proto: onnx.ModelProto) -> int:
    """Rewrite each ``Cast`` of a FLOAT8E4M3FN initializer to float into
    ``DequantizeLinear(codes, 1.0)``; returns how many.

    The values are the same (scale 1, no zero point). TensorRT needs this form: its
    builder refuses an FP8 tensor consumed by anything but a dequantize, plugin,
    concatenation, shuffle, shape or identity layer ("has datatype FP8 but is not
    consumed by ... IDequantizeLayer"), seen with TensorRT-RTX 1.7's builder on the
    Cast form. ONNX Runtime and onnx.reference run either.
    """
    fp8 = {t.name for t in proto.graph.initializer
           if t.data_type == onnx.TensorProto.FLOAT8E4M3FN}
    count = 0
    for node in proto.graph.node:
        if node.domain or node.op_type != "Cast" or not node.input or node.input[0] not in fp8:
            continue
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if to != onnx.TensorProto.FLOAT:
            continue
        node.op_type = "DequantizeLinear"
        del node.attribute[:]
        node.input.append(FP8_UNIT_SCALE)
        count += 1
    if count:
        proto.graph.initializer.append(
            onnx.numpy_helper.from_array(np.array(1.0, dtype=np.float32), FP8_UNIT_SCALE))
    return count
