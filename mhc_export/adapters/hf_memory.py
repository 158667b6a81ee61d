"""Memory an HF export needs, from the safetensors headers of the tensors it selects.

Counted per selection (the slice's layers, or the whole model without MTP,
which is never loaded): FP4 bytes hold two values, FP8 one, scales are
counted as stored, and each value costs the export dtype's size (the stored
size for quantized tensors kept by ``--weights native``). The export holds
the weights in torch, in the ONNX proto and while serialising
(:data:`EXPORT_FACTOR`), plus the traced graph itself (:data:`EXPORT_OVERHEAD`), on top of
what the process already uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.spec import dtype_name
from .hf_checkpoint import CheckpointError, CheckpointInfo, available_memory
from .hf_layout import is_mtp, layer_of

# Weights are held about this many times while exporting (torch, ONNX proto, serialising):
# measured peak RSS / estimate in docs/HF.md "Your checkpoint".
EXPORT_FACTOR = 3.0
# Plus the traced program and the ONNX graph without its weights (torch.export, onnxscript):
# about 1 GiB whatever the weights, measured as the gap between peak RSS and base + 3 x
# weights on a real-width layer of 8 experts (docs/HF.md "Your checkpoint").
EXPORT_OVERHEAD = 1 << 30
_SIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
         "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}
WEIGHTS = ("dequantized", "native")


@dataclass
class Estimate:
    values: int  # model values the selection holds (FP4: 2 per byte; scales not included)
    weight_bytes: int  # what the export holds once
    base: int  # this process's resident memory before loading

    @property
    def need(self) -> int:
        return self.base + int(self.weight_bytes * EXPORT_FACTOR) + EXPORT_OVERHEAD


def _selected(info: CheckpointInfo, layers: range | None) -> list[str]:
    out = []
    for name in info.headers:
        if is_mtp(name):
            continue
        layer = layer_of(name)
        if layers is None or (layer is not None and layer in layers):
            out.append(name)
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _scale_names(info: CheckpointInfo, names: list[str]) -> set[str]:
    from .hf_layout import scale_names

    return {s for n in names if info.headers[n][0] in ("F8_E4M3", "I8", "U8")
            for s in scale_names(n) if s in info.headers}


def resident_memory() -> int:
    """This process's resident set size in bytes (VmRSS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def estimate(info: CheckpointInfo, layers: range | None, dtype: torch.dtype,
             weights: str = "dequantized") -> Estimate:
    """Values and bytes the export of ``layers`` (None: the full model) holds."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    names = _selected(info, layers)
    scales = _scale_names(info, names)
    values = nbytes = 0
    for name in names:
        dt, shape = info.headers[name]
        stored = _numel(shape) * _SIZE.get(dt, 4)
        if name in scales:
            nbytes += stored  # read beside its weight; kept as stored by native weights
            continue
        n = _numel(shape) * (2 if dt in ("I8", "U8") else 1)
        values += n
        if weights == "native" and dt in ("F8_E4M3", "I8", "U8"):
            nbytes += stored
        else:
            nbytes += n * (8 if dt in ("I64", "F64") else itemsize)
    return Estimate(values, nbytes, resident_memory())


def _describe(layers: range | None, dtype: torch.dtype, weights: str) -> str:
    what = "the full model" if layers is None else f"layers {layers.start}:{layers.stop}"
    return f"{what} in {dtype_name(dtype)}" + (" with --weights native" if weights == "native"
                                                else "")


def _flags(layers: range | None, dtype: torch.dtype, weights: str) -> str:
    parts = [] if layers is None else [f"--layers {layers.start}:{layers.stop}"]
    parts.append(f"--dtype {dtype_name(dtype)}")
    if weights == "native":
        parts.append("--weights native")
    return " ".join(parts)


def check_memory(info: CheckpointInfo, dtype: torch.dtype, layers: range | None,
                 weights: str = "dequantized", have: int | None = None) -> Estimate:
    """The estimate; raise naming options that fit (never one that would be refused)."""
    est = estimate(info, layers, dtype, weights)
    have = available_memory() if have is None else have
    if est.need - est.base <= have:
        return est
    one = range(layers.start, layers.start + 1) if layers is not None else range(0, 1)
    options = []
    for cand in ((layers, torch.bfloat16, weights), (layers, dtype, "native"),
                 (layers, torch.bfloat16, "native"), (one, dtype, weights),
                 (one, torch.bfloat16, weights), (one, dtype, "native"),
                 (one, torch.bfloat16, "native")):
        if cand == (layers, dtype, weights) or _flags(*cand) in options:
            continue
        if cand[2] == "native" and not _has_quantized(info):
            continue
        if estimate(info, *cand).need - est.base <= have:
            options.append(_flags(*cand))
    hint = (f" Options that fit: {'; '.join(options[:3])}." if options else
            " Nothing smaller fits: one layer needs at least "
            f"{_smallest(info, one) / 2**30:.1f} GiB.")
    raise CheckpointError(
        f"exporting {_describe(layers, dtype, weights)} of {info.path} needs about "
        f"{(est.need - est.base) / 2**30:.1f} GiB ({est.values / 1e9:.2f}B values, "
        f"{est.weight_bytes / 2**30:.1f} GiB of weights x{EXPORT_FACTOR:g} while exporting, "
        f"+{EXPORT_OVERHEAD / 2**30:g} GiB for the graph) "
        f"but only {have / 2**30:.1f} GiB is available.{hint}")


def _has_quantized(info: CheckpointInfo) -> bool:
    return any(dt in ("F8_E4M3", "I8", "U8") for dt, _ in info.headers.values())


def _smallest(info: CheckpointInfo, one: range) -> int:
    weights = "native" if _has_quantized(info) else "dequantized"
    est = estimate(info, one, torch.bfloat16, weights)
    return est.need - est.base
