"""Finding, loading and declaring the C API of libmhc_kernels.so."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from ..core.build_layout import KERNELS_LIB, kernel_library
from ..core.dtypes import C_API_CODES
from ..core.errors import KernelsNotAvailable

LIB_NAME = KERNELS_LIB
ENV_VAR = "MHC_KERNELS_LIB"

# mhcDtype_t and mhcStatus_t of mhc_kernels.h.
DTYPE_CODES: dict[torch.dtype, int] = C_API_CODES
STATUS_SUCCESS = 0
STATUS_INVALID_VALUE = 1
STATUS_NOT_SUPPORTED = 2
STATUS_WORKSPACE_TOO_SMALL = 3
STATUS_CUDA_ERROR = 4
STATUS_NAMES = {
    0: "MHC_STATUS_SUCCESS",
    1: "MHC_STATUS_INVALID_VALUE",
    2: "MHC_STATUS_NOT_SUPPORTED",
    3: "MHC_STATUS_WORKSPACE_TOO_SMALL",
    4: "MHC_STATUS_CUDA_ERROR",
}


class PreParams(ctypes.Structure):
    _fields_ = [
        ("rms_eps", ctypes.c_float),
        ("pre_eps", ctypes.c_float),
        ("sinkhorn_eps", ctypes.c_float),
        ("post_mult", ctypes.c_float),
        ("sinkhorn_iters", ctypes.c_int32),
    ]


class HeadParams(ctypes.Structure):
    _fields_ = [
        ("rms_eps", ctypes.c_float),
        ("eps", ctypes.c_float),
    ]


_lib: ctypes.CDLL | None = None
_path: Path | None = None
_reason: str | None = None


def _candidates() -> list[Path]:
    env = os.environ.get(ENV_VAR)
    if env:
        # An explicit choice is the only candidate: a silent fallback would hide a typo.
        return [Path(env)]
    return [kernel_library(), Path(__file__).resolve().parent / LIB_NAME]


def _declare(lib: ctypes.CDLL) -> None:
    vp, fp, i64, i32, sz = (
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_size_t,
    )
    st = ctypes.c_int
    lib.mhcGetStatusString.argtypes = [st]
    lib.mhcGetStatusString.restype = ctypes.c_char_p
    lib.mhcGetLastErrorMessage.argtypes = []
    lib.mhcGetLastErrorMessage.restype = ctypes.c_char_p
    lib.mhcGetVersion.argtypes = []
    lib.mhcGetVersion.restype = ctypes.c_char_p
    lib.mhcCheckShape.argtypes = [i64, i32, i32, st]
    lib.mhcCheckShape.restype = st
    for name in ("mhcPreWorkspaceSize", "mhcHeadWorkspaceSize"):
        getattr(lib, name).argtypes = [i64, i32, i32, st]
        getattr(lib, name).restype = sz
    lib.mhcPre.argtypes = [vp, fp, fp, fp, vp, fp, fp, i64, i32, i32, st,
                           ctypes.POINTER(PreParams), vp, sz, vp]
    lib.mhcPre.restype = st
    lib.mhcSinkhorn.argtypes = [fp, fp, i64, i32, i32, ctypes.c_float, vp]
    lib.mhcSinkhorn.restype = st
    lib.mhcPost.argtypes = [vp, vp, fp, fp, vp, i64, i32, i32, st, vp]
    lib.mhcPost.restype = st
    lib.mhcHead.argtypes = [vp, fp, fp, fp, vp, i64, i32, i32, st,
                            ctypes.POINTER(HeadParams), vp, sz, vp]
    lib.mhcHead.restype = st
    for name in ("mhcPostPreWorkspaceSize", "mhcPostHeadWorkspaceSize"):
        getattr(lib, name).argtypes = [i64, i32, i32, st]
        getattr(lib, name).restype = sz
    lib.mhcPostPre.argtypes = [vp, vp, fp, fp, fp, fp, fp, vp, vp, fp, fp, i64, i32, i32, st,
                               ctypes.POINTER(PreParams), vp, sz, vp]
    lib.mhcPostPre.restype = st
    lib.mhcPostHead.argtypes = [vp, vp, fp, fp, fp, fp, fp, vp, i64, i32, i32, st,
                                ctypes.POINTER(HeadParams), vp, sz, vp]
    lib.mhcPostHead.restype = st
    _declare_v41(lib)


def _declare_v41(lib: ctypes.CDLL) -> None:
    """The DeepSeek-V4.1 entry points (mhc_v41.cu)."""
    vp, fp, i64, i32, sz, st = (
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_size_t,
        ctypes.c_int,
    )
    pp = ctypes.POINTER(PreParams)
    for name in ("mhcMixWorkspaceSize", "mhcPostMixWorkspaceSize"):
        getattr(lib, name).argtypes = [i64, i32, i32, st]
        getattr(lib, name).restype = sz
    lib.mhcMix.argtypes = [vp, fp, fp, fp, fp, fp, fp, i64, i32, i32, st, pp, vp, sz, vp]
    lib.mhcCollapse.argtypes = [vp, fp, vp, i64, i32, i32, st, vp]
    lib.mhcPostMix.argtypes = [vp, vp, fp, fp, fp, fp, fp, fp, vp, vp, fp, fp, fp, i64, i32, i32,
                               st, pp, vp, sz, vp]
    lib.mhcPostCollapse.argtypes = [vp, vp, fp, fp, fp, vp, i64, i32, i32, st, vp]
    for name in ("mhcMix", "mhcCollapse", "mhcPostMix", "mhcPostCollapse"):
        getattr(lib, name).restype = st


def _try_load() -> None:
    global _lib, _path, _reason
    if _lib is not None or _reason is not None:
        return
    tried = []
    for cand in _candidates():
        if not cand.is_file():
            tried.append(f"{cand} (missing)")
            continue
        try:
            lib = ctypes.CDLL(str(cand))
            _declare(lib)
        except (OSError, AttributeError) as exc:
            tried.append(f"{cand} ({exc})")
            continue
        _lib, _path = lib, cand
        return
    _reason = (
        f"{LIB_NAME} could not be loaded; tried: " + "; ".join(tried)
        + ". Build it with scripts/dev/build_plugins.sh or point $" + ENV_VAR + " at it."
    )


def available() -> bool:
    """True if the kernel library loads (it may still find no GPU at launch time)."""
    _try_load()
    return _lib is not None


def unavailable_reason() -> str:
    """Why the library did not load ("" if it did)."""
    _try_load()
    return _reason or ""


def library_path() -> Path | None:
    """The loaded library's path, or None."""
    _try_load()
    return _path


def load() -> ctypes.CDLL:
    """The loaded library; raises KernelsNotAvailable with the reason otherwise."""
    _try_load()
    if _lib is None:
        raise KernelsNotAvailable(_reason or f"{LIB_NAME} is not available")
    return _lib


def version() -> str:
    return load().mhcGetVersion().decode()


def last_message() -> str:
    return load().mhcGetLastErrorMessage().decode(errors="replace")


def raise_for_status(status: int, what: str) -> None:
    """Turn a non-success status into ValueError (bad input) or RuntimeError."""
    if status == STATUS_SUCCESS:
        return
    msg = f"{what}: {STATUS_NAMES.get(status, status)}: {last_message()}"
    if status in (STATUS_INVALID_VALUE, STATUS_NOT_SUPPORTED):
        raise ValueError(msg)
    raise RuntimeError(msg)


def check_shape(t: int, n: int, d: int, dtype: torch.dtype) -> tuple[int, str]:
    """mhcCheckShape: (status, message) without launching anything (no GPU needed)."""
    lib = load()
    status = int(lib.mhcCheckShape(t, n, d, DTYPE_CODES[dtype]))
    return status, (last_message() if status else "")
