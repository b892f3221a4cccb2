"""A pytest plugin (registered through the ``pytest11`` entry point) with the fixtures plugin authors share."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from matrix_core import plugins
from matrix_core.testing.ray import local_ray


@pytest.fixture(scope="session")
def matrix_ray() -> Iterator[int]:
    """One private local Ray for the whole test session, shared by the core's and every plugin's tests; the test
    directories pytest put on ``sys.path`` are importable in its workers. Yields the Prometheus metrics port."""
    environment = {Path(sys.prefix), Path(sys.base_prefix)}
    test_paths = [
        entry
        for entry in sys.path
        if entry and Path(entry).is_dir() and not any(Path(entry).is_relative_to(root) for root in environment)
    ]
    with local_ray(import_paths=test_paths) as metrics_port:
        yield metrics_port


@pytest.fixture
def matrix_strict_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Plugins load anew for the test, none disabled, and a broken one fails it rather than being skipped."""
    monkeypatch.setenv("MATRIX_STRICT_PLUGINS", "1")
    monkeypatch.delenv("MATRIX_DISABLE_PLUGINS", raising=False)
    plugins.load_plugins.cache_clear()
    yield
    plugins.load_plugins.cache_clear()
