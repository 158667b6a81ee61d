"""CPU checks of the built kernel library: exported C API and shape validation.

Needs no GPU (mhcCheckShape and the workspace queries launch nothing); skips
with the reason when libmhc_kernels.so has not been built.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from mhc_export import kernels

# Skips without the library; fails under MHC_REQUIRE_PLUGIN_BUILDS=1 (tests/builds.py).
pytestmark = pytest.mark.needs_build("kernels")

API = (
    "mhcGetStatusString", "mhcGetLastErrorMessage", "mhcGetVersion", "mhcCheckShape",
    "mhcPreWorkspaceSize", "mhcHeadWorkspaceSize", "mhcPre", "mhcSinkhorn", "mhcPost",
    "mhcHead",
)


def test_every_api_symbol_is_exported():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not installed")
    out = subprocess.run([nm, "-D", "--defined-only", str(kernels.library_path())],
                         capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    missing = [name for name in API if name not in exported]
    assert not missing, f"not exported: {missing}"
    # The kernels' internal helpers (namespace mhc) stay hidden behind the C API.
    leaked = sorted(name for name in exported if name.startswith("_ZN3mhc"))
    assert not leaked, leaked


def test_version():
    assert kernels.version() == "0.1.0"


@pytest.mark.parametrize(
    ("t", "n", "d", "status", "needle"),
    [
        (1, 4, 1004, 2, "d=1004"),
        (1, 4, 4, 2, "d=4"),
        (1, 4, 0, 1, "d must be >= 1"),
        (1, 0, 64, 1, "n must be >= 1"),
        (1, 9, 64, 2, "n=9"),
        (-1, 4, 64, 1, "T must be >= 0"),
        (2**31, 4, 64, 2, "T=2147483648"),
    ],
)
def test_check_shape_rejects(t, n, d, status, needle):
    got, msg = kernels.check_shape(t, n, d, torch.bfloat16)
    assert got == status, (got, msg)
    assert kernels.STATUS_NAMES[got] != "MHC_STATUS_SUCCESS"
    assert needle in msg, msg


@pytest.mark.parametrize(("t", "n", "d"), [(0, 4, 8), (1, 1, 8), (4099, 4, 7168), (3, 8, 1000)])
def test_check_shape_accepts(t, n, d):
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert kernels.check_shape(t, n, d, dtype) == (0, "")


def test_bad_dtype_code():
    lib = kernels.load()
    assert lib.mhcCheckShape(1, 4, 64, 7) == 1
    assert "dtype=7" in lib.mhcGetLastErrorMessage().decode()


def test_workspace_size_is_monotone_upper_bound():
    # A TensorRT plugin sizes the workspace from the profile's max T: the query
    # must never shrink as T grows.
    lib = kernels.load()
    for n, d in ((4, 7168), (2, 1000), (8, 4096)):
        prev_pre = prev_head = 0
        for t in [*range(0, 70), 255, 256, 1000, 4099, 8192, 8193, 100000]:
            pre = lib.mhcPreWorkspaceSize(t, n, d, 2)
            head = lib.mhcHeadWorkspaceSize(t, n, d, 2)
            assert pre >= prev_pre and head >= prev_head, (n, d, t)
            assert (pre > 0) == (t > 0)
            prev_pre, prev_head = pre, head
    assert lib.mhcPreWorkspaceSize(1, 4, 1004, 2) == 0  # invalid shape: no size


def test_status_strings():
    lib = kernels.load()
    for code, name in kernels.STATUS_NAMES.items():
        assert lib.mhcGetStatusString(code).decode() == name
