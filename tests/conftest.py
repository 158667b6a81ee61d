"""Test-wide requirements: built artifacts and a CUDA device (see tests/builds.py)."""

from __future__ import annotations

import pytest
from builds import require

# Before a test module imports it: its asserts then report values as a test's own do.
pytest.register_assert_rewrite("support")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_build(*what): needs the native builds named ('kernels', 'harness'); "
        "skips without them, fails under MHC_REQUIRE_PLUGIN_BUILDS=1")


@pytest.fixture(autouse=True)
def _native_requirements(request: pytest.FixtureRequest) -> None:
    builds = [w for m in request.node.iter_markers("needs_build") for w in m.args]
    require(builds, needs_gpu=request.node.get_closest_marker("gpu") is not None)
