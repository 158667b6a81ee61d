"""What an export records in the ONNX model's ``metadata_props``, written and read here only.

Each key is ``mhc_export.<name>`` with a JSON value. A full-model export records
what rebuilds its eager model for validation (config, dtype, mode, seed, fused,
checkpoint); an HF export records its source, the checkpoint path, dtype, layer
slice and hc_mult. Single-op fixtures record nothing: their one node says it all.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

PREFIX = "mhc_export."

# Keys (without the prefix) of a full-model export.
CONFIG = "config"
DTYPE = "dtype"
MODE = "mode"
SEED = "seed"
FUSED = "fused"
CHECKPOINT = "checkpoint"
# Keys of an HF export (and DTYPE).
SOURCE = "source"
HF_CHECKPOINT = "hf_checkpoint"
LAYERS = "layers"
HC_MULT = "hc_mult"

SOURCE_HF = "hf_deepseek_v4"
"""The SOURCE value of an export of an HF transformers DeepSeek-V4 checkpoint."""


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {PREFIX + k: json.dumps(v) for k, v in fields.items()}


def model_metadata(config: dict[str, Any], dtype: str, mode: str, seed: int, fused: bool,
                   checkpoint: str | None) -> dict[str, str]:
    """The metadata of a full-model export (the model's own config and weights)."""
    return _encode({CONFIG: config, DTYPE: dtype, MODE: mode, SEED: seed, FUSED: fused,
                    CHECKPOINT: checkpoint})


def hf_metadata(checkpoint: str, dtype: str, layers: range | None, hc_mult: int
                ) -> dict[str, str]:
    """The metadata of an HF export (``layers``: the exported slice, None for the whole model)."""
    return _encode({SOURCE: SOURCE_HF, HF_CHECKPOINT: checkpoint, DTYPE: dtype,
                    LAYERS: [layers.start, layers.stop] if layers else None, HC_MULT: hc_mult})


def read_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    """The recorded fields by key (prefix removed, values decoded); {} for other models."""
    return {
        p.key.removeprefix(PREFIX): json.loads(p.value)
        for p in proto.metadata_props if p.key.startswith(PREFIX)
    }


def is_hf_export(proto: onnx.ModelProto) -> bool:
    return read_metadata(proto).get(SOURCE) == SOURCE_HF
