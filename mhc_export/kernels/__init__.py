"""ctypes binding over libmhc_kernels.so (the C API of native/kernels/mhc_kernels.h).

Each op takes CUDA torch tensors, checks them with the same functions as the
eager reference (so the messages match everywhere), allocates outputs and
workspace with torch and launches on ``torch.cuda.current_stream()``.

Library lookup: ``$MHC_KERNELS_LIB``, then ``<repo>/build/plugins-trt11/kernels/``
(or ``plugins-trt10``; see mhc_export.core.build_layout), then next to this package.
"""

from __future__ import annotations

from ._lib import (
    DTYPE_CODES,
    STATUS_NAMES,
    available,
    check_shape,
    library_path,
    load,
    unavailable_reason,
    version,
)
from ._ops import head, post, post_head, post_pre, pre, sinkhorn
from ._ops_v41 import collapse, mix, post_collapse, post_mix

__all__ = [
    "DTYPE_CODES",
    "STATUS_NAMES",
    "available",
    "check_shape",
    "collapse",
    "head",
    "library_path",
    "load",
    "mix",
    "post",
    "post_collapse",
    "post_head",
    "post_mix",
    "post_pre",
    "pre",
    "sinkhorn",
    "unavailable_reason",
    "version",
]
