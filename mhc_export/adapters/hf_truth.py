"""An independent float64 reading of a DeepSeek-V4 checkpoint, for validation only.

Nothing here is shared with the loader (:mod:`.hf_loader`, :mod:`.hf_layout`,
:mod:`.hf_quant`): the safetensors files are parsed by hand (header JSON, raw
bytes through numpy), FP8 E4M3, UE8M0 and FP4 E2M1 are decoded by their bit
formulas in float64, the block size comes straight from config.json, and
names are mapped through transformers' own conversion table
(``conversion_mapping["deepseek_v4"]``), which is what HF's loader applies to
the published checkpoints. A loader mistake (wrong layer, wrong tensor, wrong
decode) therefore shows as a difference instead of being repeated here.

Tensors are yielded one at a time (routed experts one expert at a time), so a
real-size layer is checked without holding it in float64.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_LAYER = re.compile(r"^(?:model\.)?layers\.(\d+)\.")
_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.w([123])\.weight$")
_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I8": "i1",
          "U8": "u1", "BF16": "<u2", "F8_E4M3": "u1", "F8_E8M0": "u1"}


def _files(path: Path) -> dict[str, Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return {k: path / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    single = path / "model.safetensors"
    return {k: single for k in _header(single)[0] if k != "__metadata__"}


def _header(file: Path) -> tuple[dict, int]:
    with open(file, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def e4m3(b: np.ndarray) -> np.ndarray:
    """FP8 E4M3FN bytes -> float64: sign, 4 exponent bits (bias 7), 3 mantissa bits."""
    b = b.astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e, m = (b >> 3) & 0xF, b & 0x7
    mag = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * np.exp2(e - 7.0))
    return np.where((e == 15) & (m == 7), np.nan, sign * mag)


def ue8m0(b: np.ndarray) -> np.ndarray:
    """UE8M0 bytes -> float64 powers of two 2**(b - 127); 255 is NaN."""
    b = b.astype(np.int64)
    return np.where(b == 255, np.nan, np.exp2(b - 127.0))


def e2m1_pairs(b: np.ndarray) -> np.ndarray:
    """Bytes of two FP4 E2M1 values (low nibble first) -> float64, last dim doubled."""
    b = b.astype(np.int64)
    codes = np.stack([b & 0xF, b >> 4], axis=-1).reshape(*b.shape[:-1], -1)
    sign = np.where(codes & 0x8, -1.0, 1.0)
    e, m = (codes >> 1) & 0x3, codes & 0x1
    return sign * np.where(e == 0, m * 0.5, (1 + m / 2.0) * np.exp2(e - 1.0))


class IndependentReader:
    """Float64 values of a checkpoint's tensors under transformers' HF names."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.files = _files(self.path)
        self.headers: dict[str, dict] = {}
        self.offsets: dict[Path, int] = {}
        for file in set(self.files.values()):
            header, start = _header(file)
            self.offsets[file] = start
            self.headers.update({k: v for k, v in header.items()
                                 if k != "__metadata__" and self.files.get(k) == file})
        config = json.loads((self.path / "config.json").read_text())
        quant = config.get("quantization_config") or {}
        self.block = tuple(quant.get("weight_block_size") or (128, 128))
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        self.rules = get_checkpoint_conversion_mapping("deepseek_v4")

    def raw(self, name: str) -> np.ndarray:
        meta, file = self.headers[name], self.files[name]
        start, stop = meta["data_offsets"]
        data = np.fromfile(file, dtype=np.uint8, count=stop - start,
                           offset=self.offsets[file] + start)
        return data.view(_NUMPY[meta["dtype"]]).reshape(meta["shape"])

    def value(self, name: str) -> np.ndarray:
        """One stored tensor decoded to float64 (scaled when a scale is stored beside it)."""
        dtype, raw = self.headers[name]["dtype"], self.raw(name)
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        if dtype in ("F8_E4M3", "I8", "U8"):
            scale_name = next((s for s in (name.removesuffix(".weight") + ".scale",
                                           name + "_scale_inv") if s in self.headers), None)
            if scale_name is None:
                return raw.astype(np.float64)
            s = self.raw(scale_name)
            s = ue8m0(s) if self.headers[scale_name]["dtype"] == "F8_E8M0" else s.astype(np.float64)
            if dtype == "F8_E4M3":
                w = e4m3(raw)
                r, c = w.shape[-2:]
                full = np.repeat(np.repeat(s, self.block[0], -2)[..., :r, :], self.block[1], -1)
                return w * full[..., :c]
            w = e2m1_pairs(raw)
            return w * np.repeat(s, w.shape[-1] // s.shape[-1], -1)
        return raw.astype(np.float64)

    def hf_name(self, name: str) -> str:
        """transformers' rename of a checkpoint name (its WeightRenaming rules, in order)."""
        from transformers.core_model_loading import WeightRenaming

        key = name.removeprefix("model.")
        for rule in self.rules:
            if isinstance(rule, WeightRenaming):
                key = re.sub(rule.source_patterns[0], rule.target_patterns[0], key)
        return key if key.startswith("lm_head.") else "model." + key

    def _expert_target(self, w: str) -> tuple[str, int]:
        """(merged HF suffix, position) of w1/w2/w3 from transformers' WeightConverters."""
        from transformers.core_model_loading import WeightConverter

        for rule in self.rules:
            if isinstance(rule, WeightConverter):
                for i, pattern in enumerate(rule.source_patterns):
                    if pattern.endswith(f"{w}.weight"):
                        return rule.target_patterns[0].replace("\\", "").lstrip("."), i
        raise KeyError(w)

    def tensors(self, layers: range | None, top: bool | None = None
                ) -> Iterator[tuple[str, int | None, np.ndarray]]:
        """(HF name, expert or None, float64 value) of every tensor of ``layers``.

        ``layers=None``: every decoder layer. ``top``: also the tensors outside the
        decoder stack (embedding, final norm, mHC head, LM head); default: only
        with ``layers=None``. MTP tensors (never loaded) are skipped,
        scales are folded into their weights. A routed expert is yielded as its
        row block of the merged tensor (``gate_up_proj[e]`` = [w1; w3]).
        """
        scales = {s for n in self.headers for s in (n.removesuffix(".weight") + ".scale",
                                                    n + "_scale_inv")
                  if s in self.headers and self.headers[n]["dtype"] in ("F8_E4M3", "I8", "U8")}
        experts: dict[tuple[str, int], dict[int, np.ndarray]] = {}
        for name in sorted(self.headers):
            if name in scales or name.startswith(("mtp.", "model.mtp.")):
                continue
            m = _LAYER.match(name)
            if m is None and not (layers is None if top is None else top):
                continue
            if m is not None and layers is not None and int(m.group(1)) not in layers:
                continue
            e = _EXPERT.match(name.removeprefix("model."))
            if e is None:
                yield self.hf_name(name), None, self.value(name)
                continue
            target, pos = self._expert_target("w" + e.group(3))
            hf = self.hf_name(e.group(1) + ".x").removesuffix(".x").rsplit(".", 1)[0]
            key = (f"{hf}.{target}", int(e.group(2)))
            experts.setdefault(key, {})[pos] = self.value(name)
            want = 2 if target.endswith("gate_up_proj") else 1
            if len(experts[key]) == want:
                parts = experts.pop(key)
                yield key[0], key[1], np.concatenate([parts[i] for i in range(want)])
        if experts:
            (hf, e), _ = next(iter(experts.items()))
            raise ValueError(f"{self.path}: expert {e} of {hf} is incomplete")
