"""The public API: plugins import only what ``matrix_core`` exports; ``import matrix_core`` stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import matrix_core

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = [*sorted((ROOT / "plugins").glob("matrix-*")), ROOT / "tests" / "fixtures" / "matrix-hello"]
PUBLIC_MODULES = {"matrix_core"}
TEST_MODULES = PUBLIC_MODULES | {"matrix_core.testing", "matrix_core.cli"}
"""A plugin's tests may also use the test helpers and the ``matrix`` command itself (click's ``CliRunner``)."""


def imports_of(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every import of ``matrix_core`` in ``path``; name None for ``import module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names if alias.name.startswith("matrix_core")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("matrix_core"):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def private_imports(plugin: Path) -> list[str]:
    """Every import of a name ``matrix_core`` does not export, as ``file:line: from module import name`` (the file
    relative to the plugin's folder)."""
    wrong = []
    for path in sorted(plugin.rglob("*.py")):
        allowed = TEST_MODULES if "tests" in path.relative_to(plugin).parts else PUBLIC_MODULES
        for line, module, name in imports_of(path):
            public = module in allowed and (module != "matrix_core" or name in matrix_core.__all__)
            if not public:
                what = f"from {module} import {name}" if name else f"import {module}"
                wrong.append(f"{path.relative_to(plugin)}:{line}: {what}")
    return wrong


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda path: path.name)
def test_plugins_import_only_the_public_api(plugin: Path) -> None:
    assert private_imports(plugin) == []


def test_the_rule_catches_a_private_import(tmp_path: Path) -> None:
    package = tmp_path / "matrix_x"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from matrix_core import Orchestrator, hookimpl\n"
        "from matrix_core.engine.inputs import read_rows\n"
        "import matrix_core.engine.run\n"
        "from matrix_core import _LAZY\n"
    )
    assert private_imports(tmp_path) == [
        "matrix_x/__init__.py:2: from matrix_core.engine.inputs import read_rows",
        "matrix_x/__init__.py:3: import matrix_core.engine.run",
        "matrix_x/__init__.py:4: from matrix_core import _LAZY",
    ]


def test_every_exported_name_loads() -> None:
    for name in matrix_core.__all__:
        getattr(matrix_core, name)  # raises if a name is exported but missing


def test_import_matrix_core_loads_neither_ray_nor_an_http_client() -> None:
    code = "import sys, matrix_core; print(sorted({'ray', 'openai', 'httpx'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
