"""Fixtures of matrix-naturalreasoning's tests: the installed plugin, loaded strictly, and one private Ray for the
runs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from matrix_core import plugins


@pytest.fixture(autouse=True)
def strict_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Plugins load anew for every test, and a broken one fails it rather than being skipped."""
    monkeypatch.setenv("MATRIX_STRICT_PLUGINS", "1")
    monkeypatch.delenv("MATRIX_DISABLE_PLUGINS", raising=False)
    plugins.load_plugins.cache_clear()
    yield
    plugins.load_plugins.cache_clear()


@pytest.fixture(scope="session")
def ray_session(matrix_ray: int) -> int:
    """The session's private local Ray, shared with the core's tests (matrix_core.testing.pytest_plugin)."""
    return matrix_ray
