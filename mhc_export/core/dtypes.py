"""The element types the project handles, in every naming it meets: one table.

Each row names one type as torch, ONNX (the ``TensorProto`` element type, its
lower-case name as ``onnx`` and the engine sidecars spell it, and ONNX
Runtime's ``tensor(...)`` string), numpy (None for bfloat16, which numpy lacks),
TensorRT (the ``DataType`` member name, shared by TensorRT 10/11 and
TensorRT-RTX) and the kernels' C API (``mhcDtype_t`` of mhc_kernels.h, residual
dtypes only). The lookups below are built from the table, so the mappings
cannot disagree. The ONNX numbers are those of the ONNX standard; importing
onnx here is avoided so that the eager ops and the kernel binding load without
it (tests/test_contract.py checks the numbers against ``onnx.TensorProto``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class DType:
    torch: torch.dtype
    onnx: int  # TensorProto.DataType value
    onnx_name: str  # TensorProto.DataType name, lower case: "float", "bfloat16"
    numpy: np.dtype | None
    trt: str | None  # TensorRT DataType member name
    c_api: int | None  # mhcDtype_t
    aliases: tuple[str, ...] = ()  # other names a user may type (--dtype)

    @property
    def ort(self) -> str:
        """ONNX Runtime's name of the type, e.g. "tensor(float)"."""
        return f"tensor({self.onnx_name})"

    @property
    def name(self) -> str:
        """torch's name without the prefix: "float32", "bfloat16"."""
        return str(self.torch).removeprefix("torch.")


TABLE: tuple[DType, ...] = (
    DType(torch.float32, 1, "float", np.dtype(np.float32), "FLOAT", 0, ("fp32", "float")),
    DType(torch.float16, 10, "float16", np.dtype(np.float16), "HALF", 1, ("fp16", "half")),
    DType(torch.bfloat16, 16, "bfloat16", None, "BF16", 2, ("bf16",)),
    DType(torch.float64, 11, "double", np.dtype(np.float64), None, None),
    DType(torch.int64, 7, "int64", np.dtype(np.int64), "INT64", None),
    DType(torch.int32, 6, "int32", np.dtype(np.int32), "INT32", None),
    DType(torch.int8, 3, "int8", np.dtype(np.int8), "INT8", None),
    DType(torch.uint8, 2, "uint8", np.dtype(np.uint8), "UINT8", None),
    DType(torch.bool, 9, "bool", np.dtype(np.bool_), "BOOL", None),
)

BY_TORCH: dict[torch.dtype, DType] = {d.torch: d for d in TABLE}
TORCH_FROM_ONNX: dict[int, torch.dtype] = {d.onnx: d.torch for d in TABLE}
ONNX_FROM_TORCH: dict[torch.dtype, int] = {d.torch: d.onnx for d in TABLE}
TORCH_FROM_ONNX_NAME: dict[str, torch.dtype] = {d.onnx_name: d.torch for d in TABLE}
TORCH_FROM_ORT: dict[str, torch.dtype] = {d.ort: d.torch for d in TABLE}
TORCH_FROM_TRT: dict[str, torch.dtype] = {d.trt: d.torch for d in TABLE if d.trt}
C_API_CODES: dict[torch.dtype, int] = {d.torch: d.c_api for d in TABLE if d.c_api is not None}
# The residual dtypes, by every name a user may give (the torch name and the aliases).
RESIDUAL_NAMES: dict[str, torch.dtype] = {
    name: d.torch for d in TABLE if d.c_api is not None for name in (d.name, *d.aliases)
}


def onnx_type_name(elem_type: int) -> str:
    """The lower-case TensorProto name of any ONNX element type ("float", "float8e4m3fn"),
    or the number as text for one onnx does not know."""
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return str(elem_type)
