"""Checks made before any work starts, so bad input costs one clear line, not a traceback.

Every command runs these on what the user named (sizes, files, output paths,
the memory a run will need) and turns a failure into ``ValueError`` /
``FileNotFoundError``, which the command line maps to exit 2 with the message.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .build_layout import REPO_ROOT
from .spec import MAX_STREAMS

STREAMS_HELP = f"1..{MAX_STREAMS}"
# The one rule for default output names of every export (own model, single op, HF):
# the checkout's engines/ folder (beside mhc_export/), whatever the current directory.
OUTPUT_DIR = REPO_ROOT / "engines"


def default_output(name: str) -> Path:
    """Where an export goes when --out is not given: ``OUTPUT_DIR / name``."""
    return OUTPUT_DIR / name


def check_streams(n: int, flag: str = "--streams") -> int:
    """The one rule for n everywhere (ops, kernels, plugins, commands): 1..MAX_STREAMS."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_STREAMS:
        raise ValueError(f"{flag} must be in {STREAMS_HELP} (the mHC ops support n = "
                         f"{STREAMS_HELP} streams), got {n}")
    return n


def check_output_path(path: Path, flag: str = "--out") -> Path:
    """``path`` can be written: not a directory, under a folder that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; name a file (e.g. "
                         f"{path / ('model' + (path.suffix or '.onnx'))})")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {parent} (read-only)")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: the existing file cannot be replaced (read-only)")
    return path


def check_outputs(outputs: dict[str, Path | None]) -> None:
    """Every file a command will write ({flag: path}, None = not written), checked up front:
    each writable, and no two the same file."""
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        check_output_path(path, flag)
        key = Path(os.path.abspath(path))
        if key in seen:
            raise ValueError(f"{flag} {path} is also the {seen[key]} file; name another file")
        seen[key] = flag


def load_onnx(path: Path, *, flag: str = "--onnx", external_data: bool = False
              ) -> onnx.ModelProto:
    """Read an ONNX file the user named, with one line saying what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{flag} {path} is not a file")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except (DecodeError, RuntimeError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{flag} {path} is not a readable ONNX model (corrupt or truncated: "
                         f"{first})") from None


# safetensors dtype -> bytes per element (the format's names).
SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2,
                        "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                        "U16": 2, "U32": 4, "U64": 8}


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor table of a safetensors file, checked against the file's size.

    A download cut short keeps a good header over missing data, so every tensor's
    byte range, dtype and shape are checked here, before any loader reads them.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, shorter than a header")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, 1 << 30):
                raise ValueError(f"header of {length} bytes in a file of {size}")
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as e:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or truncated: "
                         f"{e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a readable safetensors file (header is not a table)")
    data = size - 8 - length
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        _check_entry(path, name, meta, data)
        end = max(end, meta["data_offsets"][1])
    if end != data:
        raise ValueError(f"{path} is truncated or corrupt: its header describes {end} bytes of "
                         f"tensor data, the file holds {data}")
    return header


def _check_entry(path: Path, name: str, meta: object, data: int) -> None:
    try:
        dtype, shape, (begin, end) = meta["dtype"], meta["shape"], meta["data_offsets"]
        numel = 1
        for s in shape:
            numel *= int(s)
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{path}: tensor {name} has a malformed header entry") from None
    if dtype not in SAFETENSORS_ITEMSIZE:
        raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype!r}")
    if not 0 <= begin <= end <= data:
        raise ValueError(f"{path} is truncated or corrupt: tensor {name} lies at bytes "
                         f"{begin}..{end}, the file holds {data}")
    if end - begin != numel * SAFETENSORS_ITEMSIZE[dtype]:
        raise ValueError(f"{path}: tensor {name} ({dtype} {list(shape)}) should take "
                         f"{numel * SAFETENSORS_ITEMSIZE[dtype]} bytes, its entry says "
                         f"{end - begin}")


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable), or a large number."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def check_memory(needed: int, what: str, advice: str) -> None:
    """Refuse early when ``what`` needs more memory than is available."""
    have = available_memory()
    if needed > have:
        raise ValueError(f"{what} needs about {_gib(needed)} of memory and {_gib(have)} is "
                         f"available; {advice}")


def validation_bytes(*, batch: int, seq: int, hidden: int, streams: int, heads: int,
                     layers: int, vocab: int, elem: int) -> int:
    """Peak memory of validating a full model: eager and ONNX Runtime each hold the
    causal attention scores (float32, [batch, heads, seq, seq], with the mask and softmax
    alongside), the residual streams and the logits."""
    scores = 3 * batch * heads * seq * seq * 4
    streams_b = 4 * batch * seq * streams * hidden * max(elem, 4)
    logits = 2 * batch * seq * vocab * 4
    return 2 * (scores + streams_b + logits) + layers * batch * seq * hidden * 4


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.0f} MiB"


def check_export_outputs(args: argparse.Namespace, out: Path) -> None:
    """Every file an export will write, checked before any work (own model, op, HF)."""
    plan = out.with_suffix(".plan") if args.build_engine else None
    check_outputs({
        "--out": out,
        "--out weights (<out>.data)": (None if args.external_data == "never"
                                       else out.with_name(out.name + ".data")),
        "--report" if args.report else "report (<out>.report.json)":
            None if args.no_validate else args.report or out.with_suffix(".report.json"),
        "--save-checkpoint": getattr(args, "save_checkpoint", None),
        "--build-engine plan": plan,
        "--build-engine sidecar": plan.with_name(plan.name + ".json") if plan else None,
    })
