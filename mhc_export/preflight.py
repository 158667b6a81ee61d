"""Checks made before any work starts, so bad input costs one clear line, not a traceback.

Every command runs these on what the user named (sizes, files, output paths,
the memory a run will need) and turns a failure into ``ValueError`` /
``FileNotFoundError``, which the command line maps to exit 2 with the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from .spec import MAX_STREAMS

STREAMS_HELP = f"1..{MAX_STREAMS}"


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
        raise ValueError(f"{flag} {path} is a directory; name a file (e.g. {path / 'model.onnx'})")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {parent}")
    return path


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
