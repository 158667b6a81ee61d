"""Checks of an HF DeepSeek-V4 checkpoint and its flags, before any weight is loaded.

Kept apart from the loader (:mod:`.hf_checkpoint`): a download can be cut short,
lose index entries, carry the wrong dtypes, or come with a config.json that
disagrees with its weights; transformers would fail with a raw error, or worse,
initialise the missing tensors at random. Each check names the file and tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..core.errors import MhcError
from ..core.preflight import safetensors_header

# What an HF export computes in: docs/HF.md. float16 overflows in the MoE/attention
# sums that HF runs in the model dtype, and the exporter's casts do not type-check.
HF_DTYPES = (torch.float32, torch.bfloat16)


class CheckpointMismatch(MhcError):
    """A checkpoint whose files do not hold what its config describes."""


def check_dtype(dtype: torch.dtype) -> None:
    if dtype not in HF_DTYPES:
        name = str(dtype).removeprefix("torch.")
        raise MhcError(f"--dtype {name}: HF exports are float32 or bfloat16 (docs/HF.md)")


def read_headers(files: set[Path]) -> dict[str, dict[str, Any]]:
    """tensor name -> its header entry (dtype, shape, and the file as "file"), every file
    checked for truncation."""
    entries: dict[str, dict[str, Any]] = {}
    for file in sorted(files):
        try:
            header = safetensors_header(file)
        except ValueError as e:
            raise CheckpointMismatch(str(e)) from None
        entries.update((k, {**v, "file": file}) for k, v in header.items()
                       if k != "__metadata__")
    return entries


def expected_tensors(config: Any) -> dict[str, torch.Tensor]:
    """The tensors save_pretrained writes for ``config``, named and shaped as on disk
    (transformers' own reverse key conversion), on the meta device: no memory used."""
    from transformers import DeepseekV4ForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    with torch.device("meta"):
        model = DeepseekV4ForCausalLM(config)
    state = dict(model.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        for tied in getattr(model, "_tied_weights_keys", None) or {}:
            state.pop(tied, None)
    return dict(revert_weight_conversion(model, state))


# Config keys that name where or how a checkpoint was saved, not the model it holds.
_NOT_THE_MODEL = ("_name_or_path", "transformers_version", "architectures", "dtype",
                  "torch_dtype", "_attn_implementation_autoset", "_experts_implementation",
                  "experts_implementation", "attn_implementation", "auto_map", "output_attentions",
                  "output_hidden_states", "use_cache", "return_dict")


def model_config(config: Any) -> dict[str, Any]:
    """The config keys that define the model (shapes, attributes), JSON-ready."""
    import json

    raw = json.loads(config.to_json_string(use_diff=False))
    return {k: v for k, v in raw.items() if k not in _NOT_THE_MODEL and not k.startswith("_")}


def check_same_model(recorded: dict[str, Any], config: Any, checkpoint: Path,
                     onnx_path: Path) -> None:
    """``validate --checkpoint``: the checkpoint holds the model the ONNX was exported from."""
    mine = model_config(config)
    diff = sorted(k for k in recorded if recorded[k] != mine.get(k))
    if diff:
        shown = ", ".join(f"{k} ({mine.get(k)!r} vs {recorded[k]!r})" for k in diff[:4])
        raise MhcError(f"--checkpoint {checkpoint} is not the model {onnx_path} was exported "
                       f"from; they differ in {shown}" + (" ..." if len(diff) > 4 else ""))
