"""The ``inference`` workflow: one chat call per row, its answer written beside the row's id.

A row carries its prompt as ``messages`` (a chat list), else ``text`` or ``prompt`` (one user message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matrix_core.agent import Agent
from matrix_core.backends import Sampling
from matrix_core.errors import MatrixError
from matrix_core.orchestrator import DONE, Orchestrator

PROMPT_FIELDS = ("messages", "text", "prompt")
"""The row fields a prompt is read from, first present wins."""


@dataclass
class InferenceConfig:
    """``inference.*``: the system prompt and sampling of every call."""

    system_prompt: str | None = None
    """Prepended to every prompt, unless the row's ``messages`` bring their own system message."""
    sampling: Sampling = field(default_factory=Sampling)


@dataclass
class InferenceOrchestrator(Orchestrator):
    """Plain batch inference: one model call per row."""

    roles = {"model": "inference.model"}
    config_key = "inference"
    config_schema = InferenceConfig
    default_config = "matrix_core.workflows:inference.yaml"

    response: str | None = None
    choices: list[str | None] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None

    def next_role(self) -> str | None:
        return "model" if self.status is None else DONE

    def to_record(self) -> dict[str, Any]:
        record = {
            **super().to_record(),
            "response": self.response,
            "usage": self.usage,
            "finish_reason": self.finish_reason,
        }
        if len(self.choices) > 1:
            record["choices"] = self.choices
        return record


class InferenceAgent(Agent):
    """Sends the row's prompt to the backend and keeps the answer."""

    async def step(self, task: InferenceOrchestrator) -> InferenceOrchestrator:
        config: InferenceConfig = self.context.workflow_config
        messages = build_messages(task.row, config.system_prompt)
        response = await self.context.backend.chat(messages, config.sampling, task_id=task.id)
        task.response = response.text
        task.choices = response.choices
        task.finish_reason = response.finish_reason
        task.usage = {
            "prompt_tokens": response.usage.prompt_tokens,
            "completion_tokens": response.usage.completion_tokens,
        }
        task.count_tokens(response.usage.prompt_tokens, response.usage.completion_tokens)
        task.finish("success")
        return task


def build_messages(row: dict[str, Any], system_prompt: str | None) -> list[dict[str, Any]]:
    """The chat messages of ``row``, with ``system_prompt`` first unless the row has a system message."""
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
            raise MatrixError("row field 'messages' must be a list of chat messages ({'role': ..., 'content': ...})")
        messages = list(messages)
    else:
        content = next((row[name] for name in PROMPT_FIELDS[1:] if row.get(name) is not None), None)
        if content is None:
            fields = ", ".join(repr(name) for name in PROMPT_FIELDS)
            raise MatrixError(f"row has none of the prompt fields {fields}", hint=f"its fields: {sorted(row)}")
        messages = [{"role": "user", "content": str(content)}]
    if system_prompt is not None and not any(message.get("role") == "system" for message in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages
