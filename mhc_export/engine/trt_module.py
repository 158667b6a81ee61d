"""Find a TensorRT Python API: full TensorRT (``tensorrt``) or TensorRT-RTX.

TensorRT-RTX ships its shared libraries in the ``tensorrt_rtx_libs`` package
and its bindings as ``tensorrt_rtx_bindings``; the bindings do not find the
libraries by themselves, so they are loaded first with RTLD_GLOBAL.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..core.errors import TensorRTNotAvailable

_RTX_LIBS = ("libtensorrt_rtx.so.1", "libtensorrt_onnxparser_rtx.so.1")


@dataclass(frozen=True)
class TensorRT:
    module: ModuleType
    flavour: str  # "tensorrt" | "tensorrt-rtx"
    version: str

    @property
    def is_rtx(self) -> bool:
        return self.flavour == "tensorrt-rtx"

    @property
    def major(self) -> int | None:
        """TensorRT's major version (the plugin library is built per major); None for
        TensorRT-RTX, whose versions count apart from TensorRT's."""
        if self.is_rtx:
            return None
        head = self.version.split(".")[0]
        return int(head) if head.isdigit() else None

    def imports_plugins_over_functions(self) -> bool:
        """onnx-tensorrt prefers a registered plugin to a local function of the same name
        only from TensorRT 10.7; older parsers always import the function."""
        if self.is_rtx:
            return True
        parts = [int(p) if p.isdigit() else 0 for p in self.version.split(".")[:2]]
        return tuple(parts + [0] * (2 - len(parts))) >= (10, 7)


def _rtx_search_dirs() -> list[Path]:
    dirs = []
    if env := os.environ.get("MHC_TRT_RTX_DIR"):
        dirs.append(Path(env))
    dirs += [Path(p) for p in sys.path if p]
    return dirs


def _load_rtx() -> ModuleType:
    for base in _rtx_search_dirs():
        libdir = base / "tensorrt_rtx_libs"
        if all((libdir / lib).exists() for lib in _RTX_LIBS):
            if str(base) not in sys.path:
                sys.path.insert(0, str(base))
            for lib in _RTX_LIBS:
                ctypes.CDLL(str(libdir / lib), mode=ctypes.RTLD_GLOBAL)
            return importlib.import_module("tensorrt_rtx_bindings")
    raise ImportError("tensorrt_rtx_libs not found (set MHC_TRT_RTX_DIR)")


def load_tensorrt(prefer: str | None = None) -> TensorRT:
    """Return the TensorRT API that is installed, or raise TensorRTNotAvailable.

    ``prefer`` ("tensorrt" or "tensorrt-rtx") tries that flavour first;
    ``MHC_TENSORRT`` in the environment does the same.
    """
    prefer = prefer or os.environ.get("MHC_TENSORRT") or "tensorrt"
    order = ["tensorrt", "tensorrt-rtx"]
    if prefer == "tensorrt-rtx":
        order.reverse()
    errors = []
    for flavour in order:
        try:
            mod = importlib.import_module("tensorrt") if flavour == "tensorrt" else _load_rtx()
            # The PyPI 'tensorrt' stub imports but has no Builder.
            if not hasattr(mod, "Builder"):
                raise ImportError(f"{mod.__name__} has no Builder (a stub package?)")
            return TensorRT(mod, flavour, getattr(mod, "__version__", "unknown"))
        except (ImportError, OSError) as e:
            errors.append(f"{flavour}: {e}")
    raise TensorRTNotAvailable(
        "no TensorRT Python API found (" + "; ".join(errors) + "). Full TensorRT comes from "
        "NVIDIA's own packages (the tar/deb install and its Python wheel; the PyPI 'tensorrt' "
        "packages download from NVIDIA's index at install time and fail where it cannot be "
        "reached). Without it: TensorRT-RTX (pip install 'mhc-export[rtx]') parses and builds, "
        "and runs engines on RTX-class GPUs only; the ONNX model itself runs in ONNX Runtime "
        "(mhc-export validate --onnx)."
    )
