"""The ``openai`` backend against the fake server over real sockets: requests sent, answers read, retries, errors."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from matrix_core.backends import BackendError, ChatResponse, Sampling
from matrix_core.backends.openai import MAX_RETRY_AFTER_S, OpenAIBackend, OpenAIConfig, retry_after
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


def failure(**server_options: Any) -> tuple[BackendError, FakeOpenAIServer]:
    """The error one chat raises against a server set up to fail it, and the server."""

    async def scenario(server: FakeOpenAIServer) -> BackendError:
        with pytest.raises(BackendError) as error:
            await chat_once()(server)
        return error.value

    return serve(scenario, **server_options)


def test_one_request_per_chat_the_engine_retries():
    """The SDK's own retries are off: one failing chat is one request, whatever the failure."""
    for options in ({"script": [500]}, {"script": [429]}, {"failure_rate": 1.0}, {"rate_limit_rate": 1.0}):
        _, server = failure(**options)
        assert server.stats()["requests"] == 1, options


def test_failures_say_whether_to_retry_and_how_long_to_wait():
    error, _ = failure(script=[429], retry_after_s=2.5)
    assert (error.retryable, error.unavailable, error.retry_after_s) == (True, True, 2.5)
    assert "HTTP 429" in str(error) and "\n" not in str(error)
    error, _ = failure(script=[429], retry_after_s=0.25, retry_after_headers=["retry-after-ms"])
    assert error.retry_after_s == 0.25, "Azure's retry-after-ms"
    error, _ = failure(script=[500])
    assert (error.retryable, error.unavailable, error.retry_after_s) == (True, True, None)
    error, _ = failure(script=[400])
    assert (error.retryable, error.unavailable) == (False, False), "a request the server will never take"
    error, _ = failure(script=[408])
    assert (error.retryable, error.unavailable) == (True, False)


def test_retry_after_headers_in_seconds_milliseconds_or_a_date():
    assert retry_after({"retry-after": "3"}) == 3.0
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({}) is None and retry_after({"retry-after": "soon"}) is None
    assert retry_after({"retry-after": "-1"}) is None
    assert retry_after({"retry-after": "100000"}) == MAX_RETRY_AFTER_S
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < retry_after({"retry-after": in_a_minute}) <= 60


def test_probe_is_one_token_chat_answered_apart_by_the_test_server():
    async def scenario(server: FakeOpenAIServer) -> None:
        async with backend_for(server) as backend:
            await backend.probe()
            server.outage = True
            with pytest.raises(BackendError, match="HTTP 503"):
                await backend.probe()

    _, server = serve(scenario, failure_rate=1.0)
    assert (server.stats()["probes"], server.stats()["requests"]) == (1, 0)
    assert chat_bodies(server) == [], "a probe is not recorded: tests see the requests they are about"


def test_unreachable_server_is_a_backend_error_with_a_hint():
    async def stopped_url() -> str:
        async with FakeOpenAIServer() as server:
            return server.base_url

    base_url = asyncio.run(stopped_url())

    async def scenario() -> None:
        backend = OpenAIBackend(OpenAIConfig(base_url=base_url, model="m"))
        try:
            await backend.chat(HELLO, Sampling())
        finally:
            await backend.close()

    with pytest.raises(BackendError, match=base_url) as error:
        asyncio.run(scenario())
    assert "base_url" in error.value.hint
    assert error.value.unavailable and error.value.retryable


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
    config = OmegaConf.merge(OmegaConf.structured(OpenAIConfig), {"max_connections": "3", "extra_body": {"top_k": 5}})
    assert OmegaConf.to_object(config).max_connections == 3
    with pytest.raises(ValidationError):
        OmegaConf.merge(OmegaConf.structured(OpenAIConfig), {"timeout_s": "soon"})


def test_registered_as_the_builtin_openai_backend():
    component = load_plugins().registry.get("backends", "openai")
    assert component.cls is OpenAIBackend
    assert component.plugin == "backends"
