"""A ``tau2`` workflow whose tool executors tell the test their process id, so that the test can kill the one
holding a task's environment while the task waits elsewhere (at the assistant)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from matrix_tau2.agents import ToolExecutor
from matrix_tau2.config import ToolExecutorConfig
from matrix_tau2.workflow import Tau2Orchestrator

from matrix_core import Register, hookimpl


@dataclass
class ReportingConfig(ToolExecutorConfig):
    pid_file: str = ""
    """Where an actor writes its process id when it runs a tool call of ``task_id``."""
    task_id: str = ""


class ReportingToolExecutor(ToolExecutor):
    """The plugin's tool executor, unchanged, plus the process-id note."""

    config_schema = ReportingConfig

    async def step(self, task: Tau2Orchestrator) -> Tau2Orchestrator:
        config: ReportingConfig = self.context.config
        if task.task_id == config.task_id and task.termination_reason is None:
            Path(config.pid_file).write_text(str(os.getpid()))
        return await super().step(task)


@dataclass(kw_only=True)
class ReportingTau2Orchestrator(Tau2Orchestrator):
    roles = {**Tau2Orchestrator.roles, "tool": "tau2test.tool"}


@hookimpl
def matrix_register_orchestrators(register: Register) -> None:
    register("tau2test", ReportingTau2Orchestrator)


@hookimpl
def matrix_register_agents(register: Register) -> None:
    register("tau2test.tool", ReportingToolExecutor)
