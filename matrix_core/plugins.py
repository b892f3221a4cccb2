"""Finding and loading plugins, each in isolation, once per process.

Load order (later plugins cannot take a name an earlier one registered):

1. the built-ins in :data:`BUILTIN_PLUGINS`, in that order;
2. the ``matrix`` entry points of installed distributions, sorted by distribution name, then entry-point name;
3. plugins added in-process with :func:`matrix_core.testing.register_plugin`, in the order added.

A plugin that fails to import, to validate against the hookspecs, or inside a hook, or that registers an
unusable component or a taken name, is recorded with status ``error`` and all of its components are dropped;
the others load as usual. ``MATRIX_STRICT_PLUGINS=1`` turns the first such failure into a
:class:`~matrix_core.errors.PluginError`; ``MATRIX_DISABLE_PLUGINS=a,b`` skips plugins by name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from matrix_core import __version__, hookspecs
from matrix_core.errors import PluginError
from matrix_core.registry import KINDS, Component, Registry, check_component

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "matrix"
BUILTIN_PLUGINS = (
    "matrix_core.default_plugins.sinks",
    "matrix_core.default_plugins.backends",
    "matrix_core.default_plugins.inference",
)
"""Modules of the built-in plugins, loaded first, through the same hooks as any other plugin."""

_in_process: list[tuple[str, object]] = []


@dataclass
class PluginInfo:
    """What ``matrix plugins list`` shows about one plugin."""

    name: str
    version: str | None
    source: str
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Plugins:
    """The outcome of loading: every plugin's record and the components of those that loaded."""

    infos: list[PluginInfo]
    registry: Registry


@dataclass(frozen=True)
class _Candidate:
    name: str
    version: str | None
    source: str
    load: Callable[[], object]


def _flag(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in {"1", "true", "yes", "on"}


def _candidates() -> list[_Candidate]:
    found = [
        _Candidate(
            module.rsplit(".", 1)[-1], __version__, "builtin", functools.partial(importlib.import_module, module)
        )
        for module in BUILTIN_PLUGINS
    ]
    installed = entry_points(group=ENTRY_POINT_GROUP)
    for point in sorted(installed, key=lambda p: ((p.dist.name if p.dist else "").lower(), p.name)):
        found.append(_Candidate(point.name, point.dist.version if point.dist else None, "entry point", point.load))
    for name, plugin in _in_process:
        found.append(_Candidate(name, getattr(plugin, "__version__", None), "in-process", lambda plugin=plugin: plugin))
    return found


@functools.cache
def load_plugins() -> Plugins:
    """Load every plugin once per process (see the module docstring for order and failure handling)."""
    strict = _flag("MATRIX_STRICT_PLUGINS")
    disabled = {name.strip() for name in os.environ.get("MATRIX_DISABLE_PLUGINS", "").split(",") if name.strip()}
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = Registry()
    infos = []
    for candidate in _candidates():
        info = PluginInfo(candidate.name, candidate.version, candidate.source)
        infos.append(info)
        if candidate.name in disabled:
            info.status = "disabled"
            continue
        try:
            _load_one(manager, registry, candidate, info)
        except Exception as error:  # a plugin's bug must not break the CLI: record it and go on
            info.status, info.error = "error", f"{type(error).__name__}: {error}"
            info.components = {}
            logger.debug("plugin %s failed", candidate.name, exc_info=True)
            if strict:
                raise PluginError(f"plugin {candidate.name!r} failed: {info.error}") from error
            logger.warning("plugin %r skipped: %s", candidate.name, info.error)
    return Plugins(infos, registry)


def _load_one(manager: pluggy.PluginManager, registry: Registry, candidate: _Candidate, info: PluginInfo) -> None:
    plugin = candidate.load()
    manager.register(plugin, name=candidate.name)
    try:
        info.hooks = _implemented_hooks(manager, plugin)
        staged = _call_hooks(manager, plugin, candidate.name)
        scratch = Registry()  # a name twice inside this plugin, then a name an earlier plugin took
        for component in staged:
            scratch.add(component)
            registry.check_free(component)
    except Exception:
        manager.unregister(plugin)
        raise
    for component in staged:
        registry.add(component)
        info.components.setdefault(component.kind, []).append(component.name)


def _implemented_hooks(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    hooks = []
    for caller in manager.get_hookcallers(plugin) or []:
        if caller.spec is None:
            known = [kind.hook for kind in KINDS.values()]
            close = difflib.get_close_matches(caller.name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PluginError(f"unknown hook {caller.name!r}{hint}")
        hooks.append(caller.name)
    return sorted(hooks)


def _call_hooks(manager: pluggy.PluginManager, plugin: object, plugin_name: str) -> list[Component]:
    staged: list[Component] = []
    for kind in KINDS.values():
        for impl in getattr(manager.hook, kind.hook).get_hookimpls():
            if impl.plugin is plugin:

                def register(name: str, component: type, kind=kind) -> None:
                    check_component(kind, name, component)
                    staged.append(Component(kind.name, name, component, plugin_name))

                impl.function(register=register)
    return staged
