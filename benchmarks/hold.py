"""A workflow whose one agent holds each task for ``hold.seconds`` and ends it: with enough in flight, every task
sits in the engine at once, which is what the memory benchmark measures. The agent stamps each task with how many
tasks it held when that task arrived and its process's resident memory then, so one run gives the memory of one
more task held (the difference between the first arrival and the last, over the tasks between)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import psutil

from matrix_core import hookimpl
from matrix_core.agent import Agent, AgentContext
from matrix_core.orchestrator import DONE, Orchestrator


@dataclass
class HoldConfig:
    """``hold.*``."""

    seconds: float = 1.0


@dataclass
class HoldOrchestrator(Orchestrator):
    """One step, then done."""

    roles = {"holder": "hold.agent"}
    config_key = "hold"
    config_schema = HoldConfig

    held_at_arrival: int = 0
    rss_at_arrival: int = 0

    def next_role(self) -> str | None:
        return "holder" if self.status is None else DONE

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "held_at_arrival": self.held_at_arrival, "rss_at_arrival": self.rss_at_arrival}


class HoldAgent(Agent):
    """Waits, without I/O, then ends the task."""

    def __init__(self, context: AgentContext) -> None:
        super().__init__(context)
        self.held = 0
        self.process = psutil.Process()

    async def step(self, task: HoldOrchestrator) -> HoldOrchestrator:
        self.held += 1
        task.held_at_arrival, task.rss_at_arrival = self.held, self.process.memory_info().rss
        try:
            await asyncio.sleep(self.context.workflow_config.seconds)
        finally:
            self.held -= 1
        task.finish("success")
        return task


@hookimpl
def matrix_register_orchestrators(register):
    register("hold", HoldOrchestrator)


@hookimpl
def matrix_register_agents(register):
    register("hold.agent", HoldAgent)
