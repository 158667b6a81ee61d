"""The ``mhc-export`` command: one subcommand per pipeline stage.

Each subcommand lives in its own module with ``configure(parser)`` and
``run(args) -> int``; they are imported only when chosen so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from .core.errors import EXIT_INTERRUPTED, EXIT_USAGE, MhcError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "export": ("mhc_export.commands.export",
               "export a model or a single op to ONNX and validate it"),
    "validate": ("mhc_export.commands.validate", "validate an ONNX model or a TensorRT engine"),
    "build": ("mhc_export.commands.build", "build a TensorRT engine from an ONNX model"),
    "diagnose": ("mhc_export.commands.diagnose", "mHC diagnostics: width sweep, Sinkhorn error"),
    "check": ("mhc_export.commands.check",
              "check an ONNX model's mhc nodes against the plugin contract (before trtexec)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (the usage is one --help away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="mhc-export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(only=chosen).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    with _InterruptWatch() as watch:
        try:
            return int(module.run(args))
        except BaseException as e:
            # A Ctrl-C can surface as another exception when a library (torch.export)
            # catches KeyboardInterrupt and fails while handling it: the watch knows.
            if watch.interrupted or isinstance(e, KeyboardInterrupt):
                # Outputs are written atomically, so nothing is left half-written.
                print(f"mhc-export {args.command}: interrupted; nothing was left half-written",
                      file=sys.stderr)
                return EXIT_INTERRUPTED
            if isinstance(e, MhcError):
                print(f"mhc-export {args.command}: error: {_one_line(e)}", file=sys.stderr)
                return e.exit_code
            if isinstance(e, (ValueError, TypeError, FileNotFoundError)):
                print(f"mhc-export {args.command}: error: {_one_line(e)}", file=sys.stderr)
                return EXIT_USAGE
            raise


def _one_line(e: BaseException) -> str:
    """The message on one line: a library's text quoted in it (transformers' config
    validation) may hold newlines."""
    return " ".join(str(e).split())


class _InterruptWatch:
    """Records a SIGINT (then raises KeyboardInterrupt as Python's own handler does)."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None

    def _handler(self, signum, frame) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def __enter__(self) -> _InterruptWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


if __name__ == "__main__":
    sys.exit(main())
