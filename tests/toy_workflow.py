"""A 3-role toy workflow for the engine tests: agents a, b, c take turns appending to a trail; no I/O."""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from matrix_core import Bars, Conversation, Histogram, Lines, ReportSection, RunMetrics, Table, Text, hookimpl
from matrix_core.agent import Agent
from matrix_core.backends import Backend, BackendError, ContentFilterError
from matrix_core.config import AgentConfig
from matrix_core.engine.inputs import BadRowError
from matrix_core.orchestrator import DONE, Orchestrator


@dataclass
class ToyConfig:
    """``toy.*``."""

    hops: int = 6
    text_bytes: int = 0
    keep_errors: bool = True


@dataclass
class ToyAgentConfig(AgentConfig):
    """``agents.<role>.*`` of the toy agents."""

    sleep_s: float = 0.0
    fail_percent: int = 0
    always_fail_ids: list[str] = field(default_factory=list)
    refused_ids: list[str] = field(default_factory=list)
    die_on_id: str | None = None
    die_marker: str | None = None


@dataclass
class ToyOrchestrator(Orchestrator):
    """Visits a, b, c, a, ... ``hops`` times."""

    roles = {"a": "toy.agent", "b": "toy.agent", "c": "toy.agent"}
    config_key = "toy"
    config_schema = ToyConfig

    wanted: int = 6
    trail: list[str] = field(default_factory=list)
    attempts: int = 0
    failed_hops: list[int] = field(default_factory=list)
    keep_errors: bool = True

    @classmethod
    def expand_row(cls, id: str, row: dict[str, Any], config: Any) -> list[tuple[str, dict[str, Any]]]:
        """A row with ``copies`` runs that many times, as ``<id>/0``, ``<id>/1``, ..."""
        if "copies" not in row:
            return [(id, row)]
        if not isinstance(row["copies"], int):
            raise BadRowError(f"copies: not an integer: {row['copies']!r}")
        return [(f"{id}/{copy}", row) for copy in range(row["copies"])]

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: Any) -> ToyOrchestrator:
        return cls(id=id, row=row, wanted=row.get("hops", config.hops), keep_errors=config.keep_errors)

    def next_role(self) -> str | None:
        return "abc"[len(self.trail) % 3] if self.status is None else DONE

    def keep(self) -> bool:
        return self.keep_errors or self.status == "success"

    def metrics(self) -> dict[str, float]:
        return {"trail_length": len(self.trail)}

    @classmethod
    def report(cls, records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
        """Every kind of block, from the records: how long the trails got."""
        lengths = Counter(len(record["trail"]) for record in records)
        ordered = sorted(lengths.items())
        return [
            ReportSection(
                "Trails",
                [
                    Text(f"{sum(lengths.values())} trails <of any length>"),
                    Table(["length", "tasks"], ordered, "Trails by length"),
                    Bars([str(length) for length, _ in ordered], [count for _, count in ordered], "Trail lengths"),
                    Histogram([length for length, count in ordered for _ in range(count)], "Histogram", "length"),
                    Lines([1, 2, 3], {"one": [1, None, 3], "two": [2, 2, 2]}, "Lines", "x", "y"),
                    Conversation("an <example>", [("a", "x < y & z"), ("b", "done")]),
                ],
            )
        ]

    def to_record(self) -> dict[str, Any]:
        texts = [turn.text for turn in self.history]
        record = {
            **super().to_record(),
            "trail": self.trail,
            "texts": texts,
            "attempts": self.attempts,
            "seed": self.seed,
        }
        return {**record, "failed_hops": self.failed_hops}


class ToyAgent(Agent):
    """Appends its role to the trail; can sleep, fail, or kill its own actor, as configured."""

    config_schema = ToyAgentConfig

    async def step(self, task: ToyOrchestrator) -> ToyOrchestrator:
        config: ToyAgentConfig = self.context.config
        task.attempts += 1
        if config.die_on_id == task.id and config.die_marker and not Path(config.die_marker).exists():
            Path(config.die_marker).touch()
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
            await asyncio.sleep(60)
        if task.id in config.always_fail_ids:
            raise RuntimeError(f"{task.id} always fails")
        if task.id in config.refused_ids:
            raise ContentFilterError(f"{task.id} refused by the content filter")
        hop = len(task.trail)
        if hop not in task.failed_hops and zlib.crc32(f"{task.id}/{hop}".encode()) % 100 < config.fail_percent:
            task.failed_hops.append(hop)  # fails once at this hop: the retry succeeds
            raise ConnectionError("flaky backend")
        if config.sleep_s:
            await asyncio.sleep(config.sleep_s)
        task.trail.append(self.context.role)
        size = self.context.workflow_config.text_bytes
        if size:
            task.add_turn(self.context.role, f"{task.id}:{len(task.trail)}:" + "x" * size, 3, 5)
        else:
            task.count_tokens(3, 5)
        if len(task.trail) >= task.wanted:
            task.finish("success")
        return task


class NullBackend(Backend):
    """The toy agents call no model."""

    async def chat(self, messages, sampling, tools=None, *, task_id=None):
        raise AssertionError("the toy workflow calls no backend")


class SlowStartBackend(NullBackend):
    """Takes seconds to start, like a backend loading a model."""

    async def start(self):
        await asyncio.sleep(3)


class RefusingBackend(NullBackend):
    """Fails its start-up check, like a server that does not serve the configured model."""

    async def start(self):
        raise BackendError("toy server does not serve model 'nope'")


@hookimpl
def matrix_register_backends(register):
    register("toy.null", NullBackend)
    register("toy.slow_start", SlowStartBackend)
    register("toy.refusing", RefusingBackend)


@hookimpl
def matrix_register_orchestrators(register):
    register("toy", ToyOrchestrator)


@hookimpl
def matrix_register_agents(register):
    register("toy.agent", ToyAgent)
