"""Where the CMake builds put the native libraries: one place for every caller.

``scripts/dev/build_plugins.sh`` (and ``build_plugins_ci.sh``) build into
``build/plugins-trt<major>/`` for the TensorRT major of the headers used:
``kernels/libmhc_kernels.so`` (the CUDA kernels, independent of TensorRT),
``libmhc_trt_plugins_trt<major>.so`` and ``mhc_plugin_harness``. The plugin
library is named by its TensorRT major because TensorRT 10 and 11 differ in
the logger interfaces it is handed: load the one built for the TensorRT you run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_ROOT_ENV = "MHC_BUILD_ROOT"
TRT_MAJORS = (11, 10)
KERNELS_LIB = "libmhc_kernels.so"
HARNESS = "mhc_plugin_harness"
_PLUGIN_NAME = re.compile(r"libmhc_trt_plugins_trt(\d+)\.so$")


def build_root() -> Path:
    return Path(os.environ.get(BUILD_ROOT_ENV) or REPO_ROOT / "build")


def plugin_build_dir(major: int) -> Path:
    return build_root() / f"plugins-trt{major}"


def plugin_library_name(major: int) -> str:
    return f"libmhc_trt_plugins_trt{major}.so"


def plugin_library(major: int) -> Path:
    return plugin_build_dir(major) / plugin_library_name(major)


def plugin_library_major(path: str | os.PathLike[str]) -> int | None:
    """The TensorRT major a plugin library was built for, from its name (None if unnamed)."""
    m = _PLUGIN_NAME.search(Path(path).name)
    return int(m.group(1)) if m else None


def kernel_library() -> Path:
    """The default kernel library (the kernels do not depend on the TensorRT headers)."""
    for major in TRT_MAJORS:
        path = plugin_build_dir(major) / "kernels" / KERNELS_LIB
        if path.is_file():
            return path
    return plugin_build_dir(TRT_MAJORS[0]) / "kernels" / KERNELS_LIB
