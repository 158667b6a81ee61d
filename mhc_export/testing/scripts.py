"""Import a checkout's script (scripts/, benchmarks/) as a module, for the tests.

Those folders are not packages and are not installed; importing one of their files
by path keeps them out of ``sys.path``. The module is registered in ``sys.modules``
under its file stem first, because dataclasses look their module up there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_script(path: str | Path) -> ModuleType:
    """The Python file at ``path`` imported as the module named after its stem."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod
