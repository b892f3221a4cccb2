"""Every hook of the contract is documented, and exercised by the tests (datasette's habit)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from matrix_core import hookspecs
from matrix_core.registry import KINDS

ROOT = Path(__file__).parent.parent
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("matrix_"))


def test_every_kind_has_its_hook():
    assert sorted(kind.hook for kind in KINDS.values()) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_with_its_parameters(hook):
    function = getattr(hookspecs, hook)
    doc = inspect.getdoc(function) or ""
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"{hook} does not document {parameter}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_plugin_guide(hook):
    assert hook in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    tests = "".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py") if path.name != Path(__file__).name)
    assert hook in tests
