"""A workflow whose one agent holds each task for ``hold.seconds`` and ends it: with enough in flight, every task
sits in the engine at once, which is what the memory benchmark measures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from matrix_core import hookimpl
from matrix_core.agent import Agent
from matrix_core.orchestrator import DONE, Orchestrator


@dataclass
class HoldConfig:
    """``hold.*``."""

    seconds: float = 1.0


@dataclass
class HoldTask(Orchestrator):
    """One step, then done."""

    roles = {"holder": "hold.agent"}
    config_key = "hold"
    config_schema = HoldConfig

    def next_role(self) -> str | None:
        return "holder" if self.status is None else DONE


class HoldAgent(Agent):
    """Waits, without I/O, then ends the task."""

    async def step(self, task: HoldTask) -> HoldTask:
        await asyncio.sleep(self.context.workflow_config.seconds)
        task.finish("success")
        return task


@hookimpl
def matrix_register_orchestrators(register):
    register("hold", HoldTask)


@hookimpl
def matrix_register_agents(register):
    register("hold.agent", HoldAgent)
