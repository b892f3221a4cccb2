"""The ``openai`` backend against the fake server over real sockets: requests sent, answers read, retries, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from matrix_core.backends import BackendError, ChatResponse, Sampling
from matrix_core.backends.openai import OpenAIBackend, OpenAIConfig
from matrix_core.errors import ConfigError
from matrix_core.plugins import load_plugins
from matrix_core.testing import FakeOpenAIServer

T = TypeVar("T")
HELLO = [{"role": "user", "content": "hello there"}]


@asynccontextmanager
async def backend_for(server: FakeOpenAIServer, **options: Any) -> AsyncIterator[OpenAIBackend]:
    options.setdefault("model", "fake-model")
    backend = OpenAIBackend(OpenAIConfig(base_url=server.base_url, **options))
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


def serve(scenario: Callable[[FakeOpenAIServer], Awaitable[T]], **server_options: Any) -> tuple[T, FakeOpenAIServer]:
    """Run ``scenario`` against a fresh server; return its result and the (stopped) server to inspect."""

    async def main() -> tuple[T, FakeOpenAIServer]:
        async with FakeOpenAIServer(**server_options) as server:
            return await scenario(server), server

    return asyncio.run(main())


def chat_once(
    sampling: Sampling | None = None, tools: list[dict[str, Any]] | None = None, messages: list[dict] = HELLO, **options
) -> Callable[[FakeOpenAIServer], Awaitable[ChatResponse]]:
    async def scenario(server: FakeOpenAIServer) -> ChatResponse:
        async with backend_for(server, **options) as backend:
            return await backend.chat(messages, sampling or Sampling(), tools)

    return scenario


def chat_bodies(server: FakeOpenAIServer) -> list[dict[str, Any]]:
    return [request.body for request in server.requests if request.path == "/v1/chat/completions"]


def test_chat_round_trip_with_usage():
    response, server = serve(chat_once(), output_tokens=3)
    assert response == ChatResponse(
        text="hello there hello",
        finish_reason="stop",
        usage=response.usage,
        tool_calls=[],
        choices=["hello there hello"],
    )
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 3)
    [body] = chat_bodies(server)
    assert body["model"] == "fake-model"
    assert body["messages"] == HELLO


def test_sampling_fields_are_sent_and_none_ones_left_out():
    sampling = Sampling(temperature=0.3, top_p=0.9, max_tokens=2, stop=["END"], seed=7)
    response, server = serve(chat_once(sampling, extra_body={"top_k": 5}), output_tokens=4)
    [body] = chat_bodies(server)
    expected = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 2, "n": 1, "stop": ["END"], "seed": 7, "top_k": 5}
    assert {key: body[key] for key in expected} == expected
    assert (response.text, response.finish_reason) == ("hello there", "length")

    _, server = serve(chat_once(Sampling(temperature=0.0)))
    [body] = chat_bodies(server)
    assert body["temperature"] == 0.0
    assert not {"top_p", "max_tokens", "stop", "seed", "top_k", "tools"} & body.keys()


def test_n_returns_every_choice():
    response, server = serve(chat_once(Sampling(n=3)), output_tokens=2)
    assert response.choices == ["hello there", "there hello", "hello there"]
    assert response.text == response.choices[0]
    assert response.usage.completion_tokens == 6
    assert chat_bodies(server)[0]["n"] == 3


def test_tools_give_tool_calls():
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
        },
    }
    messages = [{"role": "user", "content": "call the tool"}]
    response, server = serve(chat_once(tools=[tool], messages=messages))
    assert response.finish_reason == "tool_calls"
    assert response.text is None
    [call] = response.tool_calls
    assert set(call) == {"id", "type", "function"}
    assert call["type"] == "function"
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"id": 1}
    assert chat_bodies(server)[0]["tools"] == [tool]


def test_rate_limits_are_retried_after_retry_after():
    response, server = serve(chat_once(), script=[429, 429], retry_after_s=0.01)
    assert response.finish_reason == "stop"
    assert server.stats()["rate_limited"] == 2
    assert server.stats()["requests"] == 3


def test_server_errors_are_retried():
    response, server = serve(chat_once(), script=[500])
    assert response.finish_reason == "stop"
    assert (server.stats()["failures"], server.stats()["requests"]) == (1, 2)


def test_persistent_failure_raises_after_max_retries():
    with pytest.raises(BackendError, match="HTTP 429") as limited:
        serve(chat_once(max_retries=2), rate_limit_rate=1.0, retry_after_s=0.01)
    assert "\n" not in str(limited.value)

    async def count_requests(server: FakeOpenAIServer) -> int:
        with pytest.raises(BackendError, match="HTTP 500"):
            await chat_once(max_retries=0)(server)
        return server.stats()["requests"]

    requests, _ = serve(count_requests, failure_rate=1.0)
    assert requests == 1


def test_persistent_rate_limit_uses_every_retry():
    async def scenario(server: FakeOpenAIServer) -> int:
        with pytest.raises(BackendError):
            await chat_once(max_retries=3)(server)
        return server.stats()["requests"]

    requests, _ = serve(scenario, rate_limit_rate=1.0, retry_after_s=0.01)
    assert requests == 4


def test_unreachable_server_is_a_backend_error_with_a_hint():
    async def stopped_url() -> str:
        async with FakeOpenAIServer() as server:
            return server.base_url

    base_url = asyncio.run(stopped_url())

    async def scenario() -> None:
        backend = OpenAIBackend(OpenAIConfig(base_url=base_url, model="m", max_retries=0))
        try:
            await backend.chat(HELLO, Sampling())
        finally:
            await backend.close()

    with pytest.raises(BackendError, match=base_url) as error:
        asyncio.run(scenario())
    assert "base_url" in error.value.hint


def authorization(**options: Any) -> str:
    _, server = serve(chat_once(**options))
    return server.requests[-1].headers["Authorization"]


def test_api_key_resolution_and_the_authorization_header(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MATRIX_TEST_KEY", "from-env")
    assert authorization(api_key_env="MATRIX_TEST_KEY") == "Bearer from-env"
    assert authorization(api_key="literal", api_key_env="MATRIX_TEST_KEY") == "Bearer literal"
    assert authorization() == "Bearer EMPTY"


def test_unset_api_key_env_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MATRIX_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"backend\.api_key_env.*MATRIX_UNSET_KEY"):
        OpenAIBackend(OpenAIConfig(base_url="http://127.0.0.1:1/v1", api_key_env="MATRIX_UNSET_KEY"))


def test_missing_base_url_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^backend\.base_url is not set$"):
        OpenAIBackend(OpenAIConfig())


def test_model_defaults_to_the_first_served_model():
    async def scenario(server: FakeOpenAIServer) -> None:
        async with backend_for(server, model=None) as backend:
            await asyncio.gather(backend.chat(HELLO, Sampling()), backend.chat(HELLO, Sampling()))

    _, server = serve(scenario, models=["served-model", "other"])
    assert [body["model"] for body in chat_bodies(server)] == ["served-model", "served-model"]
    assert [request.path for request in server.requests].count("/v1/models") == 1


def test_no_served_model_is_a_backend_error():
    with pytest.raises(BackendError, match="lists no models"):
        serve(chat_once(model=None), models=[])


def test_config_is_typed_by_omegaconf():
    config = OmegaConf.merge(OmegaConf.structured(OpenAIConfig), {"max_retries": "3", "extra_body": {"top_k": 5}})
    assert OmegaConf.to_object(config).max_retries == 3
    with pytest.raises(ValidationError):
        OmegaConf.merge(OmegaConf.structured(OpenAIConfig), {"timeout_s": "soon"})


def test_registered_as_the_builtin_openai_backend():
    component = load_plugins().registry.get("backends", "openai")
    assert component.cls is OpenAIBackend
    assert component.plugin == "backends"
