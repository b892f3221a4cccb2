"""The ``azure`` backend against the test server speaking Azure's URL scheme, over real sockets: the exact requests
sent, the start-up check, 429s waited out as told, the content filter, and the key kept secret."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from matrix_azure.backend import AzureBackend, AzureConfig

from matrix_core import BackendError, ConfigError, ContentFilterError, Sampling
from matrix_core.testing import FakeOpenAIServer, RecordedRequest, typed_config

T = TypeVar("T")
KEY = "azure-test-key-1c0ffee"
DEPLOYMENT = "gpt-4o-test"
HELLO = [{"role": "user", "content": "hello there"}]
PROBE = {"model": DEPLOYMENT, "messages": [], "max_tokens": 1}
"""The start-up check's request: no messages, so that Azure refuses it without generating anything."""


def serve(scenario: Callable[[FakeOpenAIServer], Awaitable[T]], **server_options: Any) -> tuple[T, FakeOpenAIServer]:
    """Run ``scenario`` against a fresh server serving the deployment, answering two words; return its result and the
    server."""
    server_options.setdefault("models", [DEPLOYMENT])
    server_options.setdefault("output_tokens", 2)

    async def main() -> tuple[T, FakeOpenAIServer]:
        async with FakeOpenAIServer(**server_options) as server:
            return await scenario(server), server

    return asyncio.run(main())


def backend_for(server: FakeOpenAIServer, **options: Any) -> AzureBackend:
    options.setdefault("deployment", DEPLOYMENT)
    options.setdefault("api_key", KEY)
    return AzureBackend(AzureConfig(type="azure", endpoint=server.azure_endpoint, **options))


def chat_once(
    messages: list[dict[str, Any]] = HELLO, sampling: Sampling | None = None, **options: Any
) -> Callable[[FakeOpenAIServer], Awaitable[Any]]:
    """Start a backend, send one chat, close it; the result is the response or the error raised."""

    async def scenario(server: FakeOpenAIServer) -> Any:
        backend = backend_for(server, **options)
        try:
            await backend.start()
            return await backend.chat(messages, sampling or Sampling())
        except BackendError as error:
            return error
        finally:
            await backend.close()

    return scenario


def chats(server: FakeOpenAIServer) -> list[RecordedRequest]:
    """The chat requests after the start-up check."""
    assert server.requests[0].body == PROBE
    return server.requests[1:]


def test_requests_follow_azure_url_scheme_with_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    response, server = serve(chat_once(sampling=Sampling(temperature=0.2, max_tokens=3), api_key=None), output_tokens=3)
    assert (response.text, response.finish_reason) == ("hello there hello", "stop")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2, 3)
    assert [request.body for request in server.requests] == [
        PROBE,
        {"model": DEPLOYMENT, "messages": HELLO, "temperature": 0.2, "max_tokens": 3, "n": 1},
    ]
    for request in server.requests:
        assert (request.method, request.path) == ("POST", f"/openai/deployments/{DEPLOYMENT}/chat/completions")
        assert request.query == {"api-version": "2024-10-21"}
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers


def test_deployment_model_api_version_and_key_variable_options(monkeypatch):
    monkeypatch.setenv("MY_AZURE_KEY", "other-key")
    options = {"deployment": "prod-4o", "model": "gpt-4o", "api_version": "2025-01-01-preview"}
    response, server = serve(chat_once(api_key=None, api_key_env="MY_AZURE_KEY", **options), models=["prod-4o"])
    assert response.text
    [chat] = server.requests[1:]
    assert chat.path == "/openai/deployments/prod-4o/chat/completions"
    assert chat.query == {"api-version": "2025-01-01-preview"}
    assert chat.headers["api-key"] == "other-key"
    assert chat.body["model"] == "gpt-4o"


def test_the_deployment_defaults_to_the_model():
    response, server = serve(chat_once(deployment=None, model=DEPLOYMENT))
    assert response.text
    assert {request.path for request in server.requests} == {f"/openai/deployments/{DEPLOYMENT}/chat/completions"}


@pytest.mark.parametrize(
    ("header", "told_s"),
    [("retry-after-ms", 1.2), ("Retry-After", 1.0)],
)
def test_a_429_tells_the_engine_how_long_to_wait(header, told_s):
    # One request: the engine retries the step, waiting at least what the server told (tests/test_run_as_asked.py).
    error, server = serve(chat_once(), script=[200, 429], retry_after_s=told_s, retry_after_headers=[header])
    assert isinstance(error, BackendError)
    assert (error.retryable, error.unavailable, error.retry_after_s) == (True, True, told_s)
    assert len(chats(server)) == 1, "no retry in the client"


def test_a_prompt_the_content_filter_blocks_raises_content_filter_error_once():
    def content_filter(body: dict[str, Any]) -> str | None:
        return "prompt" if "forbidden" in str(body["messages"]) else None

    error, server = serve(chat_once([{"role": "user", "content": "a forbidden act"}]), content_filter=content_filter)
    assert isinstance(error, ContentFilterError)
    assert (error.status, error.reason, error.retryable) == ("filtered", "content_filter", False)
    assert str(error) == (
        f"{server.azure_endpoint}/openai/deployments/{DEPLOYMENT}: Azure's content filter blocked the prompt (violence)"
    )
    assert len(chats(server)) == 1, "a blocked prompt is not sent again"


def test_an_answer_the_content_filter_cuts_raises_content_filter_error_once():
    error, server = serve(chat_once(), content_filter=lambda body: "completion" if body["messages"] else None)
    assert isinstance(error, ContentFilterError)
    assert str(error).endswith("Azure's content filter cut the answer")
    assert len(chats(server)) == 1


def test_a_missing_deployment_fails_the_start_up_check_in_one_line():
    error, server = serve(chat_once(deployment="gpt-4o-typo"))
    assert isinstance(error, BackendError) and not isinstance(error, ContentFilterError)
    assert str(error) == (
        f"{server.azure_endpoint}/openai/deployments/gpt-4o-typo answered HTTP 404: "
        "The API deployment for this resource does not exist."
    )
    assert "backend.deployment" in error.hint
    assert len(server.requests) == 1, "a 404 is not retried, and no chat follows a failed check"


def test_a_rejected_key_fails_the_start_up_check():
    error, server = serve(chat_once(), script=[401])
    assert str(error).endswith("answered HTTP 401: failure injected by the fake server")
    assert "backend.api_key_env" in error.hint
    assert len(server.requests) == 1


def test_an_unreachable_endpoint_fails_the_start_up_check():
    async def scenario(server: FakeOpenAIServer) -> BackendError:
        backend = AzureBackend(AzureConfig(endpoint="http://127.0.0.1:9", deployment="d", api_key=KEY))
        with pytest.raises(BackendError) as caught:
            await backend.start()
        return caught.value

    error, _ = serve(scenario)
    assert str(error) == "http://127.0.0.1:9/openai/deployments/d: Connection error."
    assert "backend.endpoint" in error.hint


def test_a_deployment_refusing_the_empty_check_request_passes_it():
    # Real Azure answers the check's empty conversation with HTTP 400: the deployment exists.
    response, server = serve(chat_once(), script=[400])
    assert response.text == "hello there"
    assert len(chats(server)) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"endpoint": None}, "backend.endpoint is not set"),
        ({"deployment": None}, "backend.deployment is not set"),
        ({"base_url": "http://127.0.0.1:1/v1"}, "backend.base_url is not used by backend.type=azure"),
        ({"api_key": None}, "backend.api_key_env: environment variable AZURE_OPENAI_API_KEY is not set"),
        ({"api_key": None, "api_key_env": None}, "backend.api_key_env: no Azure OpenAI key"),
        ({"auth": "entra"}, "backend.api_key is set, but backend.auth=entra sends Entra ID tokens instead"),
    ],
)
def test_configuration_mistakes_are_one_line_errors(options, message):
    values = {"type": "azure", "endpoint": "https://r.openai.azure.com", "deployment": "d", "api_key": KEY, **options}
    with pytest.raises(ConfigError) as caught:
        AzureBackend(typed_config(AzureConfig, values))
    assert str(caught.value) == message


def test_the_key_is_never_shown_or_logged(monkeypatch, caplog):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and its HTTP client's included

    async def scenario(server: FakeOpenAIServer) -> list[str]:
        backend = backend_for(server, api_key=None)
        await backend.start()
        shown = [repr(backend.config), repr(AzureConfig(api_key=KEY))]
        for _ in range(3):  # a 200, a 429 and a 500: one request each, the engine retries steps
            try:
                await backend.chat(HELLO, Sampling())
            except BackendError as error:
                shown += [str(error), str(error.hint)]
        await backend.close()
        return shown

    shown, server = serve(scenario, script=[200, 429, 500])
    assert server.requests[-1].headers["api-key"] == KEY
    assert "HTTP 500" in " ".join(shown)
    assert caplog.records, "the SDK logged its requests"
    assert KEY not in " ".join(shown) + caplog.text
