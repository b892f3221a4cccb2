"""The plugin contract: the hooks a Matrix plugin implements.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match the specs below, declared
under the ``matrix`` entry-point group::

    [project.entry-points.matrix]
    hello = "matrix_hello"

Each hook receives a ``register`` callable owned by the core. ``register(name, cls)`` adds one component under a
name that is unique across all plugins of its kind; registering a taken name is an error naming both plugins.
Components are classes, importable by their module and qualified name, so that Ray workers rebuild them from
that name and their config instead of receiving objects from the driver.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

PROJECT_NAME = "matrix"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callable a ``matrix_register_*`` hook receives."""

    def __call__(self, name: str, component: type) -> None: ...


# --- workflows -------------------------------------------------------------------------------------------------


@hookspec
def matrix_register_orchestrators(register: Register) -> None:
    """Register workflows: ``register(name, OrchestratorSubclass)``; ``matrix run NAME`` runs it.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of
        :class:`matrix_core.orchestrator.Orchestrator` that names its roles, its config schema and its default
        config file.
    """


@hookspec
def matrix_register_agents(register: Register) -> None:
    """Register agent roles' logic: ``register(name, AgentSubclass)``; orchestrators refer to agents by name.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`matrix_core.agent.Agent`.
    """


# --- infrastructure --------------------------------------------------------------------------------------------


@hookspec
def matrix_register_backends(register: Register) -> None:
    """Register LLM backends: ``register(name, BackendSubclass)``; chosen in config with ``backend.type=NAME``.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`matrix_core.backends.Backend`
        whose ``config_schema`` (a dataclass extending :class:`matrix_core.config.BackendConfig`) lists its
        options.
    """


@hookspec
def matrix_register_sinks(register: Register) -> None:
    """Register output writers: ``register(name, SinkSubclass)``; chosen in config with ``output.sink=NAME``.

    :param register: ``register(name, cls)`` with ``cls`` a subclass of :class:`matrix_core.sinks.Sink`.
    """
