"""Where the tests find the native builds, and what a missing one means: one place.

Paths come from mhc_export.core.build_layout (the build scripts' layout). Whether a
missing artifact or a missing CUDA device skips or fails is decided here:

* ``MHC_REQUIRE_PLUGIN_BUILDS=1`` (scripts/test.sh, .ci/run, the GPU scripts,
  after building): a test that needs the kernel library, the plugin library or
  the harness FAILS when it was not built, instead of skipping.
* ``MHC_REQUIRE_GPU=1`` (set only by scripts/gpu/run.sh, in every mode that runs
  GPU tests): a test that needs a CUDA device fails without one.
  CI leaves it unset, so GPU tests skip there with the reason.

Tests declare what they need with markers, which tests/conftest.py enforces:
``@pytest.mark.needs_build("kernels" | "harness")`` and ``@pytest.mark.gpu``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mhc_export.core import build_layout as layout

REQUIRE_BUILDS_ENV = "MHC_REQUIRE_PLUGIN_BUILDS"
REQUIRE_GPU_ENV = "MHC_REQUIRE_GPU"
HARNESS = layout.HARNESS


def missing(reason: str, switch: str) -> None:
    """Fail when ``switch`` (an env var) is 1, else skip; the same reason either way."""
    if os.environ.get(switch) == "1":
        pytest.fail(f"{reason} (and {switch}=1 makes that a failure)", pytrace=False)
    pytest.skip(reason)


def harness_build_dirs() -> list[tuple[Path, str]]:
    """(folder, plugin library name): $MHC_PLUGIN_BUILD_DIR first, then the build layout's."""
    dirs = []
    if env := os.environ.get("MHC_PLUGIN_BUILD_DIR"):
        dirs += [(Path(env), layout.plugin_library_name(m)) for m in layout.TRT_MAJORS]
    dirs += [(layout.plugin_build_dir(m), layout.plugin_library_name(m))
             for m in layout.TRT_MAJORS]
    return dirs


def find_harness() -> tuple[Path, Path] | tuple[None, None]:
    """(build folder holding the harness, plugin library next to it), or (None, None)."""
    for d, name in harness_build_dirs():
        if (d / HARNESS).is_file() and (d / name).is_file():
            return d, d / name
    return None, None


def harness_missing_reason() -> str | None:
    if find_harness()[0] is not None:
        return None
    looked = ", ".join(str(d) for d, _ in harness_build_dirs())
    return (f"{HARNESS} and the plugin library not built (run scripts/dev/build_plugins.sh or "
            f"scripts/dev/build_plugins_ci.sh; looked in {looked})")


def kernels_missing_reason() -> str | None:
    from mhc_export import kernels

    if kernels.available():
        return None
    return f"kernel library not built: {kernels.unavailable_reason()}"


def gpu_missing_reason() -> str | None:
    import torch

    if torch.cuda.is_available():
        return None
    return "needs a CUDA GPU (torch.cuda.is_available() is False); runs on the GPU machine"


BUILD_CHECKS = {"kernels": kernels_missing_reason, "harness": harness_missing_reason}


def require(marks_build: list[str], needs_gpu: bool) -> None:
    """Skip or fail the current test for its needs (builds first: CI has the builds)."""
    for what in marks_build:
        if what not in BUILD_CHECKS:
            raise ValueError(f"unknown needs_build({what!r}); expected one of {list(BUILD_CHECKS)}")
        if reason := BUILD_CHECKS[what]():
            missing(reason, REQUIRE_BUILDS_ENV)
    if needs_gpu and (reason := gpu_missing_reason()):
        missing(reason, REQUIRE_GPU_ENV)
