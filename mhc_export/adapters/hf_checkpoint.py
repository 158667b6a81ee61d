"""Reading a DeepSeek-V4 checkpoint written by ``save_pretrained``, checked before any work.

:func:`inspect_checkpoint` validates the directory (config.json of model_type
``deepseek_v4``, an hc_mult the ops support, every safetensors file the index
names) and sizes the weights from the safetensors headers alone, so a
checkpoint too large for this machine fails in a second with a message
instead of after minutes of loading. :func:`load_model` loads the full model;
:func:`load_layers` builds only decoder layers A..B-1 and reads only their
tensors, which is how one layer of a 284B model fits on a small machine.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import MhcError
from ..spec import MAX_STREAMS
from .hf_deepseek_v41 import MODEL_TYPE as V41_MODEL_TYPE
from .hf_deepseek_v41 import require_transformers

MODEL_TYPE = "deepseek_v4"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Export holds the weights in torch, in the ONNX proto and while serialising.
EXPORT_MEMORY_FACTOR = 3.0
_ITEMSIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class CheckpointError(MhcError):
    """A checkpoint directory that is not a usable DeepSeek-V4 checkpoint."""


@dataclass
class CheckpointInfo:
    path: Path
    config: Any  # DeepseekV4Config
    weight_map: dict[str, Path]  # tensor name -> file
    numels: dict[str, int]  # tensor name -> element count

    def numel(self, prefix: str = "") -> int:
        return sum(n for k, n in self.numels.items() if k.startswith(prefix))

    def layer_numel(self, layers: range) -> int:
        """Elements a slice loads: its layers plus everything outside the decoder stack."""
        stack = self.numel("model.layers.")
        return self.numel() - stack + sum(self.numel(f"model.layers.{i}.") for i in layers)


def _read_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 1 << 30:
                raise ValueError("header too large")
            return json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Check ``path`` is a DeepSeek-V4 checkpoint; return its config and tensor index."""
    from transformers import DeepseekV4Config

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"--hf {path}: not a directory (expected a save_pretrained "
                              "checkpoint directory)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"--hf {path}: no config.json (not a save_pretrained checkpoint)")
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
    if isinstance(raw, dict) and raw.get("model_type") == V41_MODEL_TYPE:
        require_transformers(str(config_file))  # raises: V4.1 is not loadable yet
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        found = raw.get("model_type") if isinstance(raw, dict) else None
        raise CheckpointError(f"{config_file}: model_type is {found!r}, expected "
                              f"{MODEL_TYPE!r} (a DeepSeek-V4 checkpoint)")
    hc = raw.get("hc_mult", 4)
    if isinstance(hc, bool) or not isinstance(hc, int) or not 1 <= hc <= MAX_STREAMS:
        raise CheckpointError(f"{config_file}: hc_mult={hc!r}; the mhc ops support 1..{MAX_STREAMS}"
                              " streams")
    try:
        config = DeepseekV4Config.from_pretrained(path)
    except Exception as e:  # transformers raises many types for bad configs
        raise CheckpointError(f"{config_file}: not a valid DeepSeek-V4 config ({e})") from None
    weight_map = _weight_map(path)
    numels: dict[str, int] = {}
    for file in sorted(set(weight_map.values())):
        for name, meta in _read_header(file).items():
            if name == "__metadata__":
                continue
            n = 1
            for s in meta["shape"]:
                n *= int(s)
            numels[name] = n
    missing = sorted(set(weight_map) - set(numels))
    if missing:
        raise CheckpointError(f"{path / INDEX_FILE} names {len(missing)} tensors its files do not "
                              f"hold (first: {missing[0]})")
    return CheckpointInfo(path, config, weight_map, numels)


def _weight_map(path: Path) -> dict[str, Path]:
    index = path / INDEX_FILE
    if index.is_file():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files = {name: path / file for name, file in mapping.items()}
        for file in sorted(set(files.values())):
            if not file.is_file():
                raise CheckpointError(f"{index} names {file.name}, which is missing")
        return files
    single = path / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"--hf {path}: no {SINGLE_FILE} or {INDEX_FILE} (weights missing)")
    return {name: single for name in _read_header(single) if name != "__metadata__"}


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, used_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max":
                used = int(Path(used_file).read_text())
                avail = min(avail, int(limit) - used)
        except (OSError, ValueError):
            pass
    return avail


def check_memory(info: CheckpointInfo, dtype: torch.dtype, layers: range | None) -> int:
    """Bytes the export needs; raise with a --layers hint when the machine lacks them."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = info.numel() if layers is None else info.layer_numel(layers)
    need = int(numel * itemsize * EXPORT_MEMORY_FACTOR)
    have = available_memory()
    if need > have:
        what = "the full model" if layers is None else f"layers {layers.start}:{layers.stop}"
        hint = (" Export a slice of decoder layers instead, e.g. --layers 0:1 (one layer)."
                if layers is None or len(layers) > 1 else "")
        raise CheckpointError(
            f"exporting {what} of {info.path} needs about {need / 2**30:.1f} GiB "
            f"({numel / 1e9:.2f}B parameters in {str(dtype).removeprefix('torch.')}, x"
            f"{EXPORT_MEMORY_FACTOR:g} while exporting) but only {have / 2**30:.1f} GiB is "
            f"available.{hint}")
    return need


def parse_layers(text: str, num_layers: int) -> range:
    """``A:B`` -> range(A, B) within the model's decoder layers."""
    a, sep, b = text.partition(":")
    try:
        start, stop = int(a), int(b)
    except ValueError:
        raise MhcError(f"--layers {text!r}: expected A:B with integers, e.g. 0:1") from None
    if not sep or not 0 <= start < stop <= num_layers:
        raise MhcError(f"--layers {text!r}: need 0 <= A < B <= {num_layers} (the model's "
                       "num_hidden_layers)")
    return range(start, stop)


def _quiet_load(fn, *args, **kwargs):
    """from_pretrained without its per-tensor load report (the slice's skipped layers)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(level)


def load_model(info: CheckpointInfo, dtype: torch.dtype) -> torch.nn.Module:
    """The full DeepseekV4ForCausalLM, eval mode, HF's eager expert loop as reference."""
    from transformers import DeepseekV4ForCausalLM

    model = _quiet_load(DeepseekV4ForCausalLM.from_pretrained, info.path, dtype=dtype,
                        experts_implementation="eager")
    return model.eval()


def slice_config(info: CheckpointInfo, layers: range) -> Any:
    """The checkpoint's config cut to decoder layers A..B-1 (renumbered 0..B-A-1)."""
    import copy

    config = copy.deepcopy(info.config)
    config.num_hidden_layers = len(layers)
    config.layer_types = list(config.layer_types[layers.start:layers.stop])
    config.mlp_layer_types = list(config.mlp_layer_types[layers.start:layers.stop])
    return config


def load_layers(info: CheckpointInfo, layers: range, dtype: torch.dtype
                ) -> tuple[Any, torch.nn.ModuleList]:
    """(slice config, decoder layers A..B-1) and nothing else of the decoder stack.

    HF's own loader does the reading, so its checkpoint key conversions (V4's
    original names, merged experts) apply: a key mapping renumbers layers A..B-1
    to 0..B-A-1 and sends every other layer's tensors to unused names, which
    the loader skips. Embedding and head load too (small next to the layers of
    a real checkpoint) and are dropped on return.
    """
    from transformers import DeepseekV4ForCausalLM

    mapping = {}
    for i in range(info.config.num_hidden_layers):
        kept = layers.start <= i < layers.stop
        mapping[rf"^model\.layers\.{i}\."] = (f"model.layers.{i - layers.start}." if kept
                                                 else f"unused.layers.{i}.")
    config = slice_config(info, layers)
    model = _quiet_load(DeepseekV4ForCausalLM.from_pretrained, info.path, config=config,
                        key_mapping=mapping, dtype=dtype, experts_implementation="eager")
    # The model's own config: from_pretrained sets its attention implementation (eager).
    return model.config, model.model.layers.eval()
