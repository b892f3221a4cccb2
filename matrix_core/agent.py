"""The Agent: stateless logic for one role of a workflow."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from matrix_core.config import AgentConfig

if TYPE_CHECKING:
    from matrix_core.backends import Backend
    from matrix_core.orchestrator import Orchestrator


@dataclass(frozen=True)
class AgentContext:
    """What an agent gets from the engine: its role, its config (``agents.<role>``), the workflow's own section
    (``coral.*``; None when it has none), the backend clients and a logger."""

    role: str
    config: AgentConfig
    workflow_config: Any
    backends: Mapping[str, Backend]
    logger: logging.Logger

    @property
    def backend(self) -> Backend:
        """The role's own backend (``agents.<role>.backend``, else the global ``backend``)."""
        return self.backends[self.role]


class Agent(ABC):
    """Role logic: takes a task's orchestrator, does one step (usually one LLM call), returns it.

    Agents keep no per-task state: everything a step needs travels in the orchestrator. ``config_schema`` is
    the dataclass typing ``agents.<role>.*``; subclasses extend :class:`AgentConfig` to add options.
    """

    config_schema: ClassVar[type[AgentConfig]] = AgentConfig

    def __init__(self, context: AgentContext) -> None:
        self.context = context

    @abstractmethod
    async def step(self, task: Orchestrator) -> Orchestrator:
        """Do this role's step on ``task`` and return it."""
