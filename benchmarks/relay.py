"""A workflow that does no I/O: three roles pass each task around ``relay.hops`` times. It measures the engine
alone (routing, sends, admission, output), which is what the hop-rate benchmark wants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matrix_core import hookimpl
from matrix_core.agent import Agent
from matrix_core.backends import Backend
from matrix_core.orchestrator import DONE, Orchestrator


@dataclass
class RelayConfig:
    """``relay.*``."""

    hops: int = 20


@dataclass
class RelayOrchestrator(Orchestrator):
    """Visits a, b, c, a, ... ``hops`` times."""

    roles = {"a": "relay.agent", "b": "relay.agent", "c": "relay.agent"}
    config_key = "relay"
    config_schema = RelayConfig

    wanted: int = 20
    done: int = 0

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: Any) -> RelayOrchestrator:
        return cls(id=id, row=row, wanted=config.hops)

    def next_role(self) -> str | None:
        return "abc"[self.done % 3] if self.status is None else DONE


class RelayAgent(Agent):
    """Counts the hop; finishes the task after the last one."""

    async def step(self, task: RelayOrchestrator) -> RelayOrchestrator:
        task.done += 1
        if task.done >= task.wanted:
            task.finish("success")
        return task


class NoBackend(Backend):
    """The relay calls no model."""

    async def chat(self, messages, sampling, tools=None, *, task_id=None):
        raise AssertionError("the relay calls no backend")


@hookimpl
def matrix_register_orchestrators(register):
    register("relay", RelayOrchestrator)


@hookimpl
def matrix_register_agents(register):
    register("relay.agent", RelayAgent)


@hookimpl
def matrix_register_backends(register):
    register("relay.none", NoBackend)
