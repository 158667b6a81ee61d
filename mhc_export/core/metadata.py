"""What an export records in the ONNX model's ``metadata_props``, written and read here only.

Each key is ``mhc_export.<name>`` with a JSON value. A full-model export records
what rebuilds its eager model for validation (config, dtype, mode, seed, fused,
the export target where one is chosen, checkpoint); an HF export records its
source, the checkpoint path, dtype, layer slice, hc_mult, the weight form and, where
given, the
model config that ``validate --checkpoint`` compares. Single-op fixtures record
nothing: their one node says it all.
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
TARGET = "target"
CHECKPOINT = "checkpoint"
# Keys of an HF export (and DTYPE).
SOURCE = "source"
HF_CHECKPOINT = "hf_checkpoint"
LAYERS = "layers"
HC_MULT = "hc_mult"
HF_CONFIG = "hf_config"
WEIGHTS = "weights"  # "dequantized" or "native" (--weights)

SOURCE_HF = "hf_deepseek_v4"
"""The SOURCE value of an export of an HF transformers DeepSeek-V4 checkpoint."""


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {PREFIX + k: json.dumps(v) for k, v in fields.items()}


def model_metadata(config: dict[str, Any], dtype: str, mode: str, seed: int, fused: bool,
                   checkpoint: str | None, target: str | None = None) -> dict[str, str]:
    """The metadata of a full-model export (the model's own config and weights);
    ``target``: the export target, recorded when the exporter has a choice of them."""
    fields: dict[str, Any] = {CONFIG: config, DTYPE: dtype, MODE: mode, SEED: seed,
                              FUSED: fused}
    if target is not None:
        fields[TARGET] = target
    return _encode({**fields, CHECKPOINT: checkpoint})


def hf_metadata(checkpoint: str, dtype: str, layers: range | None, hc_mult: int,
                hf_config: dict[str, Any] | None = None,
                weights: str = "dequantized") -> dict[str, str]:
    """The metadata of an HF export (``layers``: the exported slice, None for the whole
    model; ``hf_config``: the model config that validation with another checkpoint checks;
    ``weights``: how the weights are stored in the graph)."""
    fields: dict[str, Any] = {SOURCE: SOURCE_HF, HF_CHECKPOINT: checkpoint, DTYPE: dtype,
                              LAYERS: [layers.start, layers.stop] if layers else None,
                              HC_MULT: hc_mult, WEIGHTS: weights}
    if hf_config is not None:
        fields[HF_CONFIG] = hf_config
    return _encode(fields)


def read_metadata(proto: onnx.ModelProto) -> dict[str, Any]:
    """The recorded fields by key (prefix removed, values decoded); {} for other models.
    A value that is not JSON raises ValueError naming the key."""
    meta = {}
    for p in proto.metadata_props:
        if p.key.startswith(PREFIX):
            try:
                meta[p.key.removeprefix(PREFIX)] = json.loads(p.value)
            except ValueError as e:
                raise ValueError(f"metadata {p.key} of the model is not valid JSON ({e}); "
                                 "re-export it") from None
    return meta


def is_hf_export(proto: onnx.ModelProto) -> bool:
    return read_metadata(proto).get(SOURCE) == SOURCE_HF
