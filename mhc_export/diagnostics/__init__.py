"""mHC diagnostics (seed 003) on the project's reference ops, and the width sweep."""

from . import gauge, measures, sweep
from .gauge import *  # noqa: F403
from .measures import *  # noqa: F403
from .sweep import *  # noqa: F403

# Each module's __all__ is the one list of its public names; the package re-exports them.
__all__ = [*gauge.__all__, *measures.__all__, *sweep.__all__]
