"""What the model sources and the commands share: default sizes, validate options, progress."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

# Sizes of validation and of single-op exports when the flags leave them out.
DEFAULT_STREAMS, DEFAULT_HIDDEN = 4, 256
DEFAULT_BATCH, DEFAULT_SEQ, DEFAULT_TOKENS = 2, 16, 37


@dataclass(frozen=True)
class ValidateOptions:
    """``mhc-export validate --onnx`` flags (None: not given)."""

    checkpoint: Path | None = None
    batch: int | None = None
    seq: int | None = None
    tokens: int | None = None
    seed: int = 1234


def progress(msg: str) -> None:
    """A progress line of the export command."""
    print(f"[mhc-export] {msg}", flush=True)


def done(t0: float) -> None:
    """The progress line closing a step that started at ``t0`` (time.perf_counter())."""
    progress(f"  done in {time.perf_counter() - t0:.1f}s")
