"""The Orchestrator: the message that carries one task through the agents, and the workflow it belongs to.

A workflow plugin subclasses :class:`Orchestrator` and registers the subclass under the workflow's name. Class
attributes describe the workflow (its roles, its config schema and default config); instance fields are the
state of one task, which travels between agent actors, so it stays plain, typed data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from matrix_core.config import Origin
    from matrix_core.metrics import RunMetrics
    from matrix_core.report.sections import ReportSection

DONE = None
"""What :meth:`Orchestrator.next_role` returns when the task has ended."""


@dataclass
class Turn:
    """One entry of a task's history. Long texts travel in Ray's object store: then ``text`` is None between
    steps and ``ref`` holds the reference; the engine puts the text back before each step."""

    role: str
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    ref: Any = None


@dataclass
class Orchestrator(ABC):
    """One task: its id, input row, history, state and routing. Subclass it to define a workflow.

    Class attributes a workflow sets:

    - ``roles``: role name -> registered agent name, e.g. ``{"teacher": "coral.teacher"}``.
    - ``config_key`` and ``config_schema``: the workflow's own config section (``coral.*``) and the dataclass
      that types it; ``None`` when the workflow has no options of its own.
    - ``default_config``: ``"package:file.yaml"``, the defaults shipped with the plugin, lowest in precedence.
    - ``default_input``: ``"package:data/file.jsonl"``, rows shipped with the plugin, read when no input is given.
    - ``profiles``: profile name -> ``"package:file.yaml"``, named sets of values laid over the defaults. The
      defaults are the workflow's reference settings; a ``demo`` profile holds the cuts that make a first run on a
      laptop quick, and applies by itself with the built-in ``local`` backend (or with ``--profile demo``).

    How input rows become tasks, both class methods a workflow may override: :meth:`expand_row` gives the tasks one
    row makes (by default one, with the row's id), then :meth:`from_row` builds each.
    """

    roles: ClassVar[Mapping[str, str]] = {}
    config_key: ClassVar[str | None] = None
    config_schema: ClassVar[type | None] = None
    default_config: ClassVar[str | None] = None
    default_input: ClassVar[str | None] = None
    profiles: ClassVar[Mapping[str, str]] = {}

    id: str
    row: dict[str, Any]
    history: list[Turn] = field(default_factory=list)
    status: str | None = None
    reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    hops: int = 0
    partition: int = 0
    seed: int = 0
    """Derived from ``run.seed`` and the task id: stable across runs and ``--resume``, for agents' random choices."""

    @classmethod  # noqa: B027 - optional hook
    def check_config(cls, config: Any, origins: Mapping[str, Origin]) -> None:
        """Refuse, with a :class:`~matrix_core.errors.ConfigError` naming the key and where it was set, a setting
        this workflow cannot honour in the run's mode, rather than ignore it. ``config`` is the whole resolved
        configuration; ``origins`` tells where each dotted key's value came from. By default nothing is refused."""

    @classmethod
    def expand_row(cls, id: str, row: dict[str, Any], config: Any) -> list[tuple[str, dict[str, Any]]]:
        """The tasks one input row makes, each as (task id, row); by default the row itself. A workflow that runs a
        row several times (tau2's trials) returns one entry per run, each with its own id."""
        return [(id, row)]

    @classmethod
    def from_row(cls, id: str, row: dict[str, Any], config: Any) -> Orchestrator:
        """A new task for an input row; ``config`` is the workflow's own section (None if it has none)."""
        return cls(id=id, row=row)

    @abstractmethod
    def next_role(self) -> str | None:
        """The role that acts next, or ``DONE`` (None) once ``status`` is set."""

    def finish(self, status: str, reason: str = "") -> None:
        """End the task with a terminal ``status`` (``success``, ``error``, ``filtered``, ...) and a reason."""
        self.status = status
        self.reason = reason

    def step_failed(self, role: str, status: str, reason: str) -> None:
        """End the task after its ``role`` step failed for good (not retryable, or its ``run.max_retries`` spent).
        By default ``finish(status, reason)``; a workflow may instead record the failure and route the task on
        (tau2 ends the conversation as ``agent_error`` and still scores it)."""
        self.finish(status, reason)

    def add_turn(
        self, role: str, text: str | None, prompt_tokens: int = 0, completion_tokens: int = 0, **extra: Any
    ) -> Turn:
        """Append a turn to the history and count its tokens into the task's totals."""
        turn = Turn(role, text, prompt_tokens, completion_tokens, extra)
        self.history.append(turn)
        self.count_tokens(prompt_tokens, completion_tokens)
        return turn

    def count_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Add one LLM call's usage to the task's totals (what the run's tokens/s is made of)."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def keep(self) -> bool:
        """Whether the finished task's record goes to the output; others are only marked finished for resume."""
        return True

    def metrics(self) -> dict[str, float]:
        """Numbers this finished task adds to the run's workflow metrics (averaged over kept and dropped tasks)."""
        return {}

    @classmethod
    def summary(cls, metrics: RunMetrics) -> str | None:
        """A line the CLI prints after the run, from the run's metrics (as in ``<output stem>.metrics.json``)."""
        return None

    @classmethod
    def report(cls, records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
        """The workflow's own sections of ``matrix report``, drawn after the engine's: ``records`` are the run's
        output records, each once, read as you iterate (an output may hold millions: keep counts and a few
        examples, not the records); ``metrics`` are the run's (``metrics.json``), whose ``status_reason`` also
        counts the tasks that were not kept. By default none."""
        return []

    def to_record(self) -> dict[str, Any]:
        """The output record of a finished task; workflows extend it with their own fields."""
        return {"id": self.id, "status": self.status, "reason": self.reason}
