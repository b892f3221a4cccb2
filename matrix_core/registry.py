"""The components plugins register: workflows (orchestrators), agents, backends and sinks, by kind and name."""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass

from matrix_core.agent import Agent
from matrix_core.backends.base import Backend
from matrix_core.config import AgentConfig, BackendConfig
from matrix_core.errors import PluginError, UsageError
from matrix_core.orchestrator import Orchestrator
from matrix_core.sinks.base import Sink


@dataclass(frozen=True)
class Kind:
    """One kind of component: its plural name, its noun, the hook that registers it and its base class."""

    name: str
    noun: str
    hook: str
    base: type


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("orchestrators", "workflow", "matrix_register_orchestrators", Orchestrator),
        Kind("agents", "agent", "matrix_register_agents", Agent),
        Kind("backends", "backend", "matrix_register_backends", Backend),
        Kind("sinks", "sink", "matrix_register_sinks", Sink),
    )
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class RegistrationError(PluginError):
    """A plugin registered something the core cannot use, or a name another plugin already took."""


@dataclass(frozen=True)
class Component:
    """A registered class, with the plugin that registered it."""

    kind: str
    name: str
    cls: type
    plugin: str

    @property
    def target(self) -> str:
        """The ``module:qualname`` path Ray workers import the class by."""
        return f"{self.cls.__module__}:{self.cls.__qualname__}"

    @property
    def description(self) -> str:
        """The first line of the class's docstring."""
        return (self.cls.__doc__ or "").strip().split("\n", 1)[0]


def check_component(kind: Kind, name: object, cls: object) -> None:
    """Raise :class:`RegistrationError` unless ``cls`` is a usable ``kind`` component named ``name``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistrationError(f"{kind.noun} name must be a non-empty word of letters, digits, '_.-': {name!r}")
    if not isinstance(cls, type) or not issubclass(cls, kind.base):
        raise RegistrationError(
            f"{kind.noun} {name!r} must be a subclass of {kind.base.__module__}.{kind.base.__name__}, got {cls!r}"
        )
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise RegistrationError(f"{kind.noun} {name!r} ({cls.__qualname__}) does not implement {missing}")
    if _import(cls) is not cls:
        raise RegistrationError(
            f"{kind.noun} {name!r}: {cls.__module__}.{cls.__qualname__} is not importable by that name "
            "(define it at module level)"
        )
    schema_base = {Agent: AgentConfig, Backend: BackendConfig}.get(kind.base)
    schema = getattr(cls, "config_schema", None)
    if schema_base and not (dataclasses.is_dataclass(schema) and issubclass(schema, schema_base)):
        raise RegistrationError(
            f"{kind.noun} {name!r}: config_schema must be a dataclass extending {schema_base.__name__}"
        )


def _import(cls: type) -> object:
    if "<locals>" in cls.__qualname__:
        return None
    found: object = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found


class Registry:
    """Registered components by kind and name."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}

    def add(self, component: Component) -> None:
        """Add ``component``; a name already taken is an error naming both plugins."""
        self.check_free(component)
        self._components[component.kind][component.name] = component

    def check_free(self, component: Component) -> None:
        """Raise :class:`RegistrationError`, naming both plugins, if ``component``'s name is taken."""
        taken = self._components[component.kind].get(component.name)
        if taken is not None:
            noun = KINDS[component.kind].noun
            raise RegistrationError(
                f"plugin {component.plugin!r} registers {noun} {component.name!r}, "
                f"already registered by plugin {taken.plugin!r}"
            )

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; an unknown name is a usage error listing the known ones."""
        try:
            return self._components[kind][name]
        except KeyError:
            noun = KINDS[kind].noun
            known = ", ".join(self.names(kind)) or "none installed"
            raise UsageError(f"unknown {noun} {name!r} (known: {known})") from None

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``, sorted."""
        return sorted(self._components[kind])

    def components(self, kind: str) -> list[Component]:
        """Registered components of ``kind``, sorted by name."""
        return [self._components[kind][name] for name in self.names(kind)]
