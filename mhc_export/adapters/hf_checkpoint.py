"""Reading a DeepSeek-V4 checkpoint directory, checked before any work.

:func:`inspect_checkpoint` validates the directory (config.json of model_type
``deepseek_v4``, an hc_mult the ops support, every safetensors file the index
names) and reads every tensor's dtype and shape from the safetensors headers
alone, so a checkpoint that cannot be exported fails in a second with a
message instead of after minutes of loading. Both layouts are read (the
published one with DeepSeek's names, and save_pretrained's):
:mod:`.hf_layout` maps the names, :mod:`.hf_loader` loads a selection,
:mod:`.hf_memory` sizes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import MhcError
from ..core.spec import MAX_STREAMS
from .hf_deepseek_v41 import MODEL_TYPE as V41_MODEL_TYPE
from .hf_deepseek_v41 import require_transformers
from .hf_layout import detect_layout
from .hf_preflight import CheckpointMismatch, read_headers

MODEL_TYPE = "deepseek_v4"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class CheckpointError(MhcError):
    """A checkpoint directory that is not a usable DeepSeek-V4 checkpoint."""


@dataclass
class CheckpointInfo:
    path: Path
    config: Any  # DeepseekV4Config
    weight_map: dict[str, Path]  # tensor name -> file
    headers: dict[str, tuple[str, tuple[int, ...]]]  # tensor name -> (safetensors dtype, shape)
    layout: str  # hf_layout.NATIVE or hf_layout.HF


def _read_header(path: Path) -> dict[str, Any]:
    # Preflight (hf_preflight): the header checked against the file's size, dtypes, shapes.
    return read_headers({path})


def inspect_checkpoint(path: str | os.PathLike[str], flag: str = "--hf") -> CheckpointInfo:
    """Check ``path`` is a DeepSeek-V4 checkpoint; return its config and tensor index.

    ``flag`` names where the path came from in messages (validate: --checkpoint).
    """
    from transformers import DeepseekV4Config

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{flag} {path}: not a directory (expected a DeepSeek-V4 "
                              "checkpoint directory)")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{flag} {path}: no config.json (not a DeepSeek-V4 checkpoint "
                              "directory)")
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
    headers: dict[str, tuple[str, tuple[int, ...]]] = {}
    unlisted: list[tuple[str, Path]] = []  # (tensor, its file) the index places elsewhere
    for file in sorted(set(weight_map.values())):
        for name, meta in _read_header(file).items():
            if weight_map.get(name) == file:
                headers[name] = (str(meta["dtype"]), tuple(int(s) for s in meta["shape"]))
            else:
                unlisted.append((name, file))
    missing = sorted(set(weight_map) - set(headers))
    if missing:
        raise CheckpointError(f"{path / INDEX_FILE} names {len(missing)} tensors its files do not "
                              f"hold (first: {missing[0]})")
    if unlisted:  # an index that disagrees with its files is a damaged download
        name, file = min(unlisted)
        raise CheckpointMismatch(f"{path}: {file.name} holds {name}, which the index does not "
                                 f"list there ({len(unlisted)} such tensors)")
    # Shapes, dtypes and missing tensors of the selected layers: hf_loader.plan.
    return CheckpointInfo(path, config, weight_map, headers, detect_layout(set(headers)))


def _weight_map(path: Path) -> dict[str, Path]:
    index = path / INDEX_FILE
    if index.is_file():
        try:
            mapping = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        if not isinstance(mapping, dict) or not all(isinstance(f, str) for f in mapping.values()):
            raise CheckpointError(f"{index}: not a valid safetensors index (weight_map is not "
                                  "a table of tensor name -> file name)")
        files = {name: path / file for name, file in mapping.items()}
        for file in sorted(set(files.values())):
            if not file.is_file():
                raise CheckpointError(f"{index} names {file.name}, which is missing")
        return files
    single = path / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} (weights missing)")
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
