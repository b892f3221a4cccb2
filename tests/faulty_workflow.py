"""The toy workflow with plugin code that fails on purpose: a hook that raises for some ids, an agent that hangs
or logs a warning, a summary that raises. For the tests of plugin faults and the watchdog."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toy_workflow import ToyAgent, ToyAgentConfig, ToyConfig, ToyOrchestrator

from matrix_core import RunMetrics, hookimpl


@dataclass
class FaultyConfig(ToyConfig):
    """``faulty.*``: which hook raises, and for which ids."""

    fault: str = ""
    bad_ids: list[str] = field(default_factory=list)


@dataclass
class FaultyAgentConfig(ToyAgentConfig):
    """``agents.<role>.*``: ids whose step hangs while ``hang_marker`` exists, ids whose step logs a warning."""

    hang_ids: list[str] = field(default_factory=list)
    hang_marker: str | None = None
    warn_ids: list[str] = field(default_factory=list)


@dataclass
class FaultyOrchestrator(ToyOrchestrator):
    """A toy task whose ``fault`` hook raises ``KeyError('x')`` (or, for ``undeclared_role``, whose ``next_role``
    names a role the workflow lacks) when its id is in ``faulty.bad_ids``; task hooks fail only after one hop."""

    roles = {"a": "faulty.agent", "b": "faulty.agent", "c": "faulty.agent"}
    config_key = "faulty"
    config_schema = FaultyConfig

    fault: str = ""

    @classmethod
    def expand_row(cls, id: str, row: dict[str, Any], config: Any) -> list[tuple[str, dict[str, Any]]]:
        cls._maybe_raise(config, "expand_row", id)
        return super().expand_row(id, row, config)

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: Any) -> FaultyOrchestrator:
        cls._maybe_raise(config, "from_row", id)
        task = super().from_row(id, row, config)
        task.fault = config.fault if id in config.bad_ids else ""
        return task

    @staticmethod
    def _maybe_raise(config: Any, hook: str, id: str) -> None:
        if config.fault == hook and id in config.bad_ids:
            raise KeyError("x")

    def _raises(self, hook: str) -> None:
        if self.fault == hook and self.trail:
            raise KeyError("x")

    def next_role(self) -> str | None:
        self._raises("next_role")
        if self.fault == "undeclared_role" and self.trail and self.status is None:
            return "z"
        return super().next_role()

    def keep(self) -> bool:
        self._raises("keep")
        return super().keep()

    def metrics(self) -> dict[str, float]:
        self._raises("metrics")
        return super().metrics()

    def to_record(self) -> dict[str, Any]:
        self._raises("to_record")
        return super().to_record()

    def step_failed(self, role: str, status: str, reason: str) -> None:
        self._raises("step_failed")
        super().step_failed(role, status, reason)


@dataclass
class BrokenSummaryOrchestrator(FaultyOrchestrator):
    """A workflow whose summary line raises."""

    @classmethod
    def summary(cls, metrics: RunMetrics) -> str | None:
        raise KeyError("x")


class FaultyAgent(ToyAgent):
    """The toy agent, which can also hang or log a warning for some ids."""

    config_schema = FaultyAgentConfig

    async def step(self, task: FaultyOrchestrator) -> FaultyOrchestrator:
        config: FaultyAgentConfig = self.context.config
        if task.id in config.warn_ids:
            self.context.logger.warning("task %s looks odd", task.id)
        while task.id in config.hang_ids and config.hang_marker and Path(config.hang_marker).exists():
            await asyncio.sleep(0.05)  # hangs as long as the test wants it to
        return await super().step(task)


@hookimpl
def matrix_register_orchestrators(register):
    register("faulty", FaultyOrchestrator)
    register("faulty_summary", BrokenSummaryOrchestrator)


@hookimpl
def matrix_register_agents(register):
    register("faulty.agent", FaultyAgent)
