"""The environments of the tasks one tool-executor actor owns: built at a task's first tool call, dropped when it
ends, and rebuilt from its recorded tool calls when it is missing (its first actor died, or it was evicted)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from matrix_tau2 import catalog

if TYPE_CHECKING:
    from tau2.data_model.message import Message, ToolMessage
    from tau2.environment.environment import Environment


class EnvironmentStore:
    """Per-task tau2 environments, at most ``capacity`` (least recently used dropped first). Thread-safe for
    different tasks; a task has one step in flight at a time."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._environments: OrderedDict[str, Environment] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"built": 0, "rebuilt": 0, "replayed_calls": 0, "dropped": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._environments)

    def run_calls(self, task_key: str, domain: str, task_id: str, trajectory: list[Message]) -> list[ToolMessage]:
        """Run the tool calls of the trajectory's last message against the task's environment, as tau2's
        orchestrator does (each call through ``Environment.get_response``, which turns a failure into an
        ``Error: ...`` result; then ``sync_tools``); returns one tool message per call."""
        pending = trajectory[-1]
        environment = self._environment(task_key, domain, task_id, trajectory[:-1])
        results = [environment.get_response(call) for call in pending.tool_calls]
        environment.sync_tools()
        return results

    def drop(self, task_key: str) -> Environment | None:
        """Forget a finished task's environment; returns it, None when this actor no longer holds it."""
        with self._lock:
            environment = self._environments.pop(task_key, None)
            if environment is not None:
                self.stats["dropped"] += 1
            return environment

    def _environment(self, task_key: str, domain: str, task_id: str, history: list[Message]) -> Environment:
        with self._lock:
            environment = self._environments.get(task_key)
            if environment is not None:
                self._environments.move_to_end(task_key)
                return environment
        environment = build(domain, task_id, history)
        recorded = _tool_calls(history) - _tool_calls(_initial_history(domain, task_id))
        self.stats["rebuilt" if recorded else "built"] += 1
        self.stats["replayed_calls"] += recorded
        with self._lock:
            self._environments[task_key] = environment
            while len(self._environments) > self.capacity:
                self._environments.popitem(last=False)
                self.stats["evicted"] += 1
        return environment


def build(domain: str, task_id: str, history: list[Message]) -> Environment:
    """A task's environment as tau2 sets it up: a fresh database, the task's ``initialization_data`` and
    ``initialization_actions``, then every tool call of ``history`` replayed (tau2 checks each result against the
    recorded one)."""
    spec = catalog.task(domain, task_id)
    initial = spec.initial_state
    environment = catalog.new_environment(domain)
    environment.set_state(
        initialization_data=initial.initialization_data if initial is not None else None,
        initialization_actions=initial.initialization_actions if initial is not None else None,
        message_history=history,
    )
    return environment


def _initial_history(domain: str, task_id: str) -> list[Any]:
    initial = catalog.task(domain, task_id).initial_state
    return (initial.message_history or []) if initial is not None else []


def _tool_calls(messages: list[Any]) -> int:
    return sum(len(message.tool_calls or []) for message in messages if getattr(message, "tool_calls", None))
