"""The built-in ``inference`` workflow: its agent against the fake server, its task record and its config."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from matrix_core.agent import AgentContext
from matrix_core.backends import Sampling
from matrix_core.backends.openai import OpenAIBackend, OpenAIConfig
from matrix_core.config import AgentConfig, parse_overrides, resolve
from matrix_core.errors import MatrixError
from matrix_core.orchestrator import DONE
from matrix_core.plugins import load_plugins
from matrix_core.testing import FakeOpenAIServer
from matrix_core.workflows.inference import InferenceAgent, InferenceConfig, InferenceOrchestrator


def run_task(row: dict[str, Any], config: InferenceConfig | None = None) -> tuple[InferenceOrchestrator, list[dict]]:
    """One task through the model agent against a fresh server; the task and the messages the server got."""

    async def main() -> tuple[InferenceOrchestrator, list[dict]]:
        async with FakeOpenAIServer(output_tokens=4) as server:
            backend = OpenAIBackend(OpenAIConfig(base_url=server.base_url, model="fake-model"))
            context = AgentContext(
                role="model",
                config=AgentConfig(),
                workflow_config=config or InferenceConfig(),
                backends={"model": backend},
                logger=logging.getLogger("test"),
            )
            task = InferenceOrchestrator.from_row("t1", row, context.workflow_config)
            assert task.next_role() == "model"
            try:
                task = await InferenceAgent(context).step(task)
            finally:
                await backend.close()
            chats = [request for request in server.requests if request.path.endswith("/chat/completions")]
            return task, [request.body["messages"] for request in chats]

    task, sent = asyncio.run(main())
    return task, sent


def test_text_row_gets_the_system_prompt_and_a_record():
    task, sent = run_task({"text": "say hi now"}, InferenceConfig(system_prompt="be kind"))
    assert sent == [[{"role": "system", "content": "be kind"}, {"role": "user", "content": "say hi now"}]]
    assert task.next_role() is DONE
    assert task.to_record() == {
        "id": "t1",
        "status": "success",
        "reason": "",
        "response": "say hi now say",
        "usage": {"prompt_tokens": 5, "completion_tokens": 4},
        "finish_reason": "stop",
    }
    assert (task.prompt_tokens, task.completion_tokens) == (5, 4)


def test_prompt_row_without_system_prompt():
    _, sent = run_task({"prompt": "hello"})
    assert sent == [[{"role": "user", "content": "hello"}]]


def test_messages_row_is_sent_as_is_with_the_system_prompt_first():
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    task, sent = run_task({"messages": messages, "text": "ignored"}, InferenceConfig(system_prompt="sys"))
    assert sent == [[{"role": "system", "content": "sys"}, *messages]]
    assert task.response == "bye bye bye bye"
    assert messages[0] == {"role": "user", "content": "hi"}  # the row itself is left alone


def test_a_row_system_message_wins_over_the_configured_one():
    messages = [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]
    _, sent = run_task({"messages": messages}, InferenceConfig(system_prompt="default"))
    assert sent == [messages]


def test_sampling_from_config_and_every_choice_in_the_record():
    task, _ = run_task({"text": "a b c"}, InferenceConfig(sampling=Sampling(n=2, max_tokens=2)))
    record = task.to_record()
    assert record["choices"] == ["a b", "b c"]
    assert record["response"] == "a b"
    assert record["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"id": 3, "question": "?"}, "none of the prompt fields 'messages', 'text', 'prompt'"),
        ({"text": None}, "none of the prompt fields"),
        ({"messages": "hi"}, "'messages' must be a list"),
    ],
)
def test_a_row_without_a_prompt_is_a_matrix_error(row: dict[str, Any], match: str):
    with pytest.raises(MatrixError, match=match):
        run_task(row)


def test_registered_with_its_default_config():
    registry = load_plugins().registry
    workflow = registry.get("orchestrators", "inference")
    assert workflow.cls is InferenceOrchestrator
    assert registry.get("agents", "inference.model").cls is InferenceAgent
    overrides = parse_overrides(["backend.base_url=http://127.0.0.1:1/v1", "inference.sampling.temperature=0.2"])
    resolved = resolve(workflow, registry, overrides)
    assert resolved.config.backend.type == "openai"
    assert resolved.config.backend.timeout_s == OpenAIConfig.timeout_s
    assert resolved.config.inference.system_prompt is None
    assert resolved.config.inference.sampling.temperature == 0.2
