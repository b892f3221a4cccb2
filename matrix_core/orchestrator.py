"""The Orchestrator: the message that carries one task through the agents, and the workflow it belongs to.

A workflow plugin subclasses :class:`Orchestrator` and registers the subclass under the workflow's name. Class
attributes describe the workflow (its roles, its config schema and default config); instance fields are the
state of one task, which travels between agent actors, so it stays plain, typed data.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

DONE = None
"""What :meth:`Orchestrator.next_role` returns when the task has ended."""


@dataclass
class Orchestrator(ABC):
    """One task: its id, input row, state and routing. Subclass it to define a workflow.

    Class attributes a workflow sets:

    - ``roles``: role name -> registered agent name, e.g. ``{"teacher": "coral.teacher"}``.
    - ``config_key`` and ``config_schema``: the workflow's own config section (``coral.*``) and the dataclass
      that types it; ``None`` when the workflow has no options of its own.
    - ``default_config``: ``"package:file.yaml"``, the defaults shipped with the plugin, lowest in precedence.
    """

    roles: ClassVar[Mapping[str, str]] = {}
    config_key: ClassVar[str | None] = None
    config_schema: ClassVar[type | None] = None
    default_config: ClassVar[str | None] = None

    id: str
    row: dict[str, Any]
    status: str | None = None
    reason: str = ""
    turns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @abstractmethod
    def next_role(self) -> str | None:
        """The role that acts next, or ``DONE`` (None) once ``status`` is set."""

    def finish(self, status: str, reason: str = "") -> None:
        """End the task with a terminal ``status`` (``success``, ``error``, ``filtered``, ...) and a reason."""
        self.status = status
        self.reason = reason

    def to_record(self) -> dict[str, Any]:
        """The output record of a finished task; workflows extend it with their own fields."""
        return {"id": self.id, "status": self.status, "reason": self.reason}
