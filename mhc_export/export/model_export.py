"""Export the reference model: token ids [batch, seq] -> logits, batch and seq dynamic."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from ..reference.model import MhcModel, random_tokens
from .onnx_export import ExportOptions, ExportResult, export

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations stay strings
    from typing import Unpack

INPUT_NAMES = ("tokens",)
OUTPUT_NAMES = ("logits",)


def export_model(
    model: MhcModel, path: str | os.PathLike[str], **options: Unpack[ExportOptions]
) -> ExportResult:
    """Export ``model`` to ``path``; ``options`` and their defaults are :func:`export`'s."""
    # Example sizes > 1: torch.export specialises dims of size 0 and 1.
    tokens = random_tokens(model.cfg, batch=2, seq=5)
    dims = {0: torch.export.Dim("batch", min=1), 1: torch.export.Dim("seq", min=1)}
    with torch.no_grad():
        return export(
            model, (tokens,), path, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
            dynamic_shapes=(dims,), **options,
        )
