"""Model sources: where an export's eager model comes from, and how validation gets it back.

A source is one kind of model the tool exports: the own reference model
(``--config``/``--checkpoint``), a single mHC op (``--op``) or an HF
DeepSeek-V4 checkpoint (``--hf``). Each builds the eager model, exports it with
its metadata, and rebuilds the eager model from an ONNX file for validation.
:func:`source_for` picks the source of ``mhc-export export``'s flags,
:func:`source_of` the source an ONNX file came from. The commands only parse
flags, pick the source and print.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import MhcError
from .base import ValidateOptions

if TYPE_CHECKING:  # the commands import this package: keep it light for --help
    import onnx
    import torch

    from ..validation.report import Report
    from ..validation.runners import Runner


class ModelSource(Protocol):
    """One kind of exported model: build, export (metadata included), rebuild, validate."""

    kind: str  # "model", "op" or "hf"

    def claims(self, proto: onnx.ModelProto) -> bool:
        """Whether this source exported ``proto`` (from its metadata or its one node)."""
        ...

    def build(self, args: argparse.Namespace, dtype: torch.dtype) -> Any:
        """The eager model the export flags describe (flags checked first)."""
        ...

    def metadata(self, eager: Any, args: argparse.Namespace,
                 dtype: torch.dtype) -> dict[str, str]:
        """What the export records in the ONNX model to rebuild ``eager`` later."""
        ...

    def export(self, args: argparse.Namespace, dtype: torch.dtype,
               external: bool | None) -> tuple[Path, Report | None]:
        """``mhc-export export``: checks, build, export, validation unless --no-validate."""
        ...

    def rebuild(self, proto: onnx.ModelProto, path: str | os.PathLike[str],
                checkpoint: Path | None = None) -> Any:
        """The eager model ``proto`` was exported from (``checkpoint``: other weights)."""
        ...

    def runner(self, eager: Any) -> Runner:
        """``eager`` as a runner (inputs and outputs by the graph's names)."""
        ...

    def validate(self, path: Path, proto: onnx.ModelProto, opts: ValidateOptions) -> Report:
        """``mhc-export validate --onnx``: the export against its rebuilt eager model."""
        ...


def _sources() -> tuple[ModelSource, ...]:
    from .hf import HfSource
    from .own_model import OwnModelSource
    from .single_op import SingleOpSource

    # Order matters for source_of: an HF export and a full model carry metadata; a
    # single op is recognised by its one node.
    return HfSource(), OwnModelSource(), SingleOpSource()


def source_for(args: argparse.Namespace) -> ModelSource:
    """The source ``mhc-export export``'s flags ask for: --hf, --op, else the own model."""
    kind = "hf" if getattr(args, "hf", None) else "op" if getattr(args, "op", None) else "model"
    return next(s for s in _sources() if s.kind == kind)


def source_of(proto: onnx.ModelProto, path: str | os.PathLike[str] = "the model"
              ) -> ModelSource:
    """The source an ONNX model was exported from; MhcError where it is none of them."""
    for source in _sources():
        if source.claims(proto):
            return source
    raise MhcError(f"{path} was not exported by mhc-export (no model metadata and not a "
                   "single mhc node)")


def validate_onnx_file(path: Path, opts: ValidateOptions) -> Report:
    """Validate any ONNX file this tool exported, rebuilding its eager reference.

    Flags that do not apply to the kind of model found (``tokens`` for a full
    model; ``batch``, ``seq``, ``checkpoint`` for a single op) are refused.
    """
    from ..core.preflight import load_onnx
    from ..validation.onnx_check import check_mhc_nodes

    proto = load_onnx(path)
    check_mhc_nodes(proto, str(path))
    return source_of(proto, path).validate(path, proto, opts)
