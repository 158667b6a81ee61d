"""Export the reference model: token ids [batch, seq] -> logits, batch and seq dynamic."""

from __future__ import annotations

import os

import torch

from ..core.spec import DEFAULT_OPSET
from ..reference.model import MhcModel, random_tokens
from .onnx_export import ExportResult, export

INPUT_NAMES = ("tokens",)
OUTPUT_NAMES = ("logits",)


def export_model(
    model: MhcModel,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    external_data: bool | None = None,
    metadata: dict[str, str] | None = None,
    verbose: bool = False,
    fuse: bool = True,
    target: str = "mhc",
) -> ExportResult:
    # Example sizes > 1: torch.export specialises dims of size 0 and 1.
    tokens = random_tokens(model.cfg, batch=2, seq=5)
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("seq", min=1)}
    with torch.no_grad():
        return export(
            model, (tokens,), path, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_shapes=(dims,), opset=opset, external_data=external_data,
            metadata=metadata, verbose=verbose, fuse=fuse, target=target,
        )
