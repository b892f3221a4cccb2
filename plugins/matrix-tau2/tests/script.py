"""A scripted model for both sides of tau2 conversations, served by the project's test server.

The user simulator opens with ``task:<domain>:<task id>`` (after its own gold tool calls, in telecom); the assistant
reads it, makes the task's gold tool calls one per turn and closes with what the task expects it to say; the user
then stops. ``plans`` give some tasks another behaviour, to reach every way a conversation ends.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from matrix_tau2 import catalog
from trajectories import closing_text, gold_steps

GOLD, AGENT_STOP, CHATTY, BAD_TOOL, FAIL_ASSISTANT = "gold", "agent_stop", "chatty", "bad_tool", "fail_assistant"


class Script:
    """``reply`` for :class:`FakeOpenAIServer`: plays the user simulator and the assistant of each task."""

    def __init__(self, tasks: list[tuple[str, str]], plans: dict[str, str] | None = None) -> None:
        self.scenarios = {str(catalog.task(*task).user_scenario): task for task in tasks}
        assert len(self.scenarios) == len(tasks), "the user side tells tasks apart by their scenarios"
        self.plans = plans or {}
        self.calls: Counter[tuple[str, str]] = Counter()
        """Requests per (task id, side)."""
        self.before_assistant: Callable[[str, int], None] | None = None
        """Called with (task id, tool results the assistant has seen) before each assistant reply."""
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str | list[dict[str, Any]]:
        messages = body["messages"]
        if messages[0]["content"].startswith("<instructions>"):
            return self.assistant(messages)
        return self.user(messages)

    def user(self, messages: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        system = messages[0]["content"]
        domain, task_id = next(found for scenario, found in self.scenarios.items() if scenario in system)
        self._count(task_id, "user")
        own = [m for m in messages if m["role"] == "assistant"]  # roles are flipped: the user's turns
        opened = any(f"task:{domain}:{task_id}" == (m.get("content") or "") for m in own)
        if not opened:
            done = sum(1 for m in own if m.get("tool_calls"))
            todo = [step for step in gold_steps(domain, task_id) if step.requestor == "user"]
            if done < len(todo):
                return [{"name": todo[done].name, "arguments": todo[done].arguments}]
            return f"task:{domain}:{task_id}"
        if "All set." in (messages[-1].get("content") or ""):
            return "Thank you, that is all. ###STOP###"
        return "Could you tell me more about that?"

    def assistant(self, messages: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        opening = next(m["content"] for m in messages if m["role"] == "user" and m["content"].startswith("task:"))
        _, domain, task_id = opening.split(":", 2)
        self._count(task_id, "assistant")
        after = messages[next(i for i, m in enumerate(messages) if m.get("content") == opening) :]
        results = sum(1 for m in after if m["role"] == "tool")
        if self.before_assistant is not None:
            self.before_assistant(task_id, results)
        plan = self.plans.get(task_id, GOLD)
        if plan == FAIL_ASSISTANT:
            raise RuntimeError("the assistant's model is down")
        if plan == AGENT_STOP:
            return "###STOP###"
        if plan == CHATTY:
            return "Let me check something for you."
        if plan == BAD_TOOL:
            return [{"name": "no_such_tool", "arguments": {}}]
        todo = [step for step in gold_steps(domain, task_id) if step.requestor == "assistant"]
        if results < len(todo):
            return [{"name": todo[results].name, "arguments": todo[results].arguments}]
        return closing_text(domain, task_id)

    def _count(self, task_id: str, side: str) -> None:
        with self._lock:
            self.calls[(task_id, side)] += 1
