"""Model checkpoints as safetensors, with the model config in the file's metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from ..core.atomic import atomic_write_bytes
from .model import MhcModel, ModelConfig, build_model

_CONFIG_KEY = "mhc_export.config"


def save_checkpoint(model: MhcModel, path: str | os.PathLike[str]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={_CONFIG_KEY: json.dumps(model.cfg.to_dict())}))


def read_config(path: str | os.PathLike[str]) -> ModelConfig:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; name the .safetensors file an "
                         "mhc-export model was saved to (an HF checkpoint folder goes to --hf)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own SafetensorError for bad headers
        raise ValueError(f"checkpoint {path} is not a readable safetensors file (corrupt or "
                         f"truncated: {str(e).splitlines()[0] if str(e) else type(e).__name__})"
                         ) from None
    if _CONFIG_KEY not in meta:
        raise ValueError(f"{path}: not an mhc-export checkpoint (no {_CONFIG_KEY} metadata)")
    try:
        return ModelConfig(**json.loads(meta[_CONFIG_KEY]))
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: its {_CONFIG_KEY} metadata is not a valid "
                         f"config ({e})") from None


def load_checkpoint(
    path: str | os.PathLike[str], *, mode: str = "fused", device: str | torch.device = "cpu"
) -> MhcModel:
    """Rebuild the model from the checkpoint's config and load its weights (strictly)."""
    path = Path(path)
    cfg = read_config(path)
    state: dict[str, torch.Tensor] = {}
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                state[key] = f.get_tensor(key)
    except Exception as e:  # a truncated body fails here, after a good header
        raise ValueError(f"checkpoint {path}: its tensors cannot be read (corrupt or truncated: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if "embed.weight" not in state:
        raise ValueError(f"checkpoint {path} has no embed.weight: not an mhc-export model")
    dtype = state["embed.weight"].dtype
    model = build_model(cfg, dtype=dtype, mode=mode)
    expected = model.state_dict()
    bad = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if bad:
        raise ValueError(f"{path}: tensors with the wrong shape for config {cfg.name}: {bad}")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"checkpoint {path} does not match config {cfg.name}: missing "
                         f"{missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(state, strict=True)
    return model.to(device)
