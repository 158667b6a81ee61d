"""Exit codes and the errors the command line maps onto them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_VALIDATION_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_TENSORRT = 3
EXIT_NO_KERNELS = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class MhcError(Exception):
    """A user-facing error: the message names the problem and, where it can, the fix."""

    exit_code = EXIT_USAGE


class TensorRTNotAvailable(MhcError):
    exit_code = EXIT_NO_TENSORRT


class KernelsNotAvailable(MhcError):
    exit_code = EXIT_NO_KERNELS
