"""Fixtures shared by the core tests."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matrix_core import plugins
from matrix_core.testing import register_plugin

HELLO_PLUGIN = Path(__file__).parent / "fixtures" / "matrix-hello"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the commands the tests interrupt, even when the suite was started in the background.

    A shell without job control starts background commands with SIGINT ignored, and their children inherit that;
    a handler here is reset to the default in each child, where Python raises KeyboardInterrupt again.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test loads plugins anew, with no plugin toggles from the outer environment."""
    monkeypatch.delenv("MATRIX_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("MATRIX_DISABLE_PLUGINS", raising=False)
    plugins.load_plugins.cache_clear()
    yield
    plugins.load_plugins.cache_clear()


@pytest.fixture
def hello() -> Iterator[plugins.Plugins]:
    """The example plugin (tests/fixtures/matrix-hello) registered in-process."""
    sys.path.insert(0, str(HELLO_PLUGIN))
    try:
        import matrix_hello

        with register_plugin(matrix_hello, name="hello") as loaded:
            yield loaded
    finally:
        sys.path.remove(str(HELLO_PLUGIN))


@pytest.fixture
def make_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Install a tiny distribution on ``sys.path``: its modules and a ``matrix`` entry point, like pip would."""

    def make(name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0") -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        points = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[matrix]\n{points}")
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return root

    return make


@pytest.fixture(scope="session")
def ray_session(matrix_ray: int) -> int:
    """The session's private local Ray (see matrix_core.testing.pytest_plugin); its Prometheus metrics port."""
    return matrix_ray


@pytest.fixture
def toy(ray_session: int) -> Iterator[plugins.Plugins]:
    """The 3-role toy workflow of tests/toy_workflow.py registered in-process, on the shared Ray."""
    import toy_workflow

    with register_plugin(toy_workflow, name="toy") as loaded:
        yield loaded


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only): the disk that fills."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)
