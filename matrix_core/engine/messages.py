"""What the engine's parts hand each other: the driver's spec of an agent actor, a finished task's summary for the
writer, an actor's counters for the driver, a partition's counts. Typed, so that a key is never misread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matrix_core.config import RunConfig
from matrix_core.engine.actor_logs import ActorLogLine


@dataclass(frozen=True)
class AgentSpec:
    """Everything an agent actor is built from, as importable names plus plain config (Ray workers rebuild the
    components; nothing registered in the driver travels)."""

    role: str
    agent: str
    """The agent class, ``module:qualname``."""
    agent_config: dict[str, Any]
    """``agents.<role>.*``."""
    workflow: str
    """The workflow's orchestrator class, ``module:qualname``."""
    workflow_config: dict[str, Any] | None
    """The workflow's own section (``coral.*``), None when it has none."""
    backend: str
    """The backend class, ``module:qualname``."""
    backend_config: dict[str, Any]
    """The role's backend section: ``backend.*`` overlaid with ``agents.<role>.backend``."""
    run: RunConfig
    controller: Any = None
    """The role's server's :class:`~matrix_core.engine.concurrency.ConcurrencyController` (a Ray actor), None when
    nothing limits the server's requests but the run's tasks in flight."""

    @property
    def backend_name(self) -> str:
        """How messages name the role's backend: its URL, else its type."""
        config = self.backend_config
        return config.get("base_url") or config.get("endpoint") or config["type"]


@dataclass(frozen=True)
class TaskSummary:
    """What the writer counts of a finished task (its record, if kept, travels beside it)."""

    id: str
    status: str | None
    reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    hops: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def minimal_record(self) -> dict[str, Any]:
        """The record reduced to ``id``, ``status`` and ``reason``: for dropped tasks, and in place of a record that
        could not be made or encoded."""
        return {"id": self.id, "status": self.status, "reason": self.reason}


@dataclass
class ActorStats:
    """An agent actor's counters since it started, and its warnings since the driver last asked."""

    backend: str
    """The role's backend, as messages name it."""
    steps: int = 0
    retries: int = 0
    errors: int = 0
    max_in_step: int = 0
    """Most steps this actor ran at once."""
    offloaded: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rerouted: int = 0
    outages: int = 0
    down_since: float | None = None
    """Wall-clock time (``time.time()``) the backend stopped answering; None while it answers."""
    down_error: str | None = None
    log: list[ActorLogLine] = field(default_factory=list)
    step_times: dict[int, int] = field(default_factory=dict)
    """Its steps' durations since the driver last asked, as :mod:`~matrix_core.engine.step_times` buckets."""

    @property
    def tokens(self) -> int:
        """Tokens its steps used, in and out."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class PartitionCounts:
    """What one collector did with its partition's rows."""

    admitted: int = 0
    skipped_finished: int = 0
    readmitted: int = 0
    peak_in_flight: int = 0
