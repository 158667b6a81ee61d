"""Run an ONNX model in ONNX Runtime on torch tensors, bfloat16 included.

numpy has no bfloat16, so bf16 tensors cross the boundary as raw 16-bit
buffers tagged with the ONNX element type (OrtValue), and come back by copying
the OrtValue's buffer into a torch tensor.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..core.dtypes import TORCH_FROM_ORT

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")



def available_providers() -> list[str]:
    have = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in have]


def provider_label(provider: str) -> str:
    return "onnxruntime-" + provider.removesuffix("ExecutionProvider").lower()


def session(path: str | os.PathLike[str], provider: str,
            fold_constants: bool = True) -> ort.InferenceSession:
    """``fold_constants=False`` for graphs that decode stored weights (--weights native):
    ORT's constant folding would materialise every decoded weight at session creation."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not fold_constants:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(os.fspath(path), opts, providers=[provider])


def _to_ortvalue(t: torch.Tensor) -> ort.OrtValue:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        raw = t.view(torch.int16).numpy().view(np.uint16)
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, onnx.TensorProto.BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(t.numpy())


def _from_ortvalue(v: ort.OrtValue) -> torch.Tensor:
    dtype = TORCH_FROM_ORT[v.data_type()]
    if dtype != torch.bfloat16:
        return torch.from_numpy(np.array(v.numpy()))
    out = torch.empty(v.shape(), dtype=dtype)
    ctypes.memmove(out.data_ptr(), v.data_ptr(), out.numel() * out.element_size())
    return out


def run(
    sess: ort.InferenceSession,
    inputs: Mapping[str, torch.Tensor],
    output_names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Feed ``inputs`` by graph input name; return outputs by name as CPU tensors."""
    expected = [i.name for i in sess.get_inputs()]
    missing = [n for n in expected if n not in inputs]
    extra = [n for n in inputs if n not in expected]
    if missing or extra:
        raise ValueError(f"inputs do not match the graph: missing {missing}, unexpected {extra}")
    names = list(output_names) if output_names else [o.name for o in sess.get_outputs()]
    feed = {k: _to_ortvalue(v) for k, v in inputs.items()}
    outs = sess.run_with_ort_values(names, feed)
    return {n: _from_ortvalue(v) for n, v in zip(names, outs, strict=True)}
