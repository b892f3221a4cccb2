"""Fixtures of matrix-naturalreasoning's tests: the installed plugin, loaded strictly, and one private Ray for the
runs."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def strict_plugins(matrix_strict_plugins: None) -> None:
    """Every test loads the plugins anew, strictly (matrix_core.testing.pytest_plugin)."""


@pytest.fixture(scope="session")
def ray_session(matrix_ray: int) -> int:
    """The session's private local Ray, shared with the core's tests (matrix_core.testing.pytest_plugin)."""
    return matrix_ray
