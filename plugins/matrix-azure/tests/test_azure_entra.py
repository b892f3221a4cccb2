"""``backend.auth=entra``: bearer tokens from azure-identity's real ``DefaultAzureCredential``, which finds a managed
identity the way it does on Azure App Service: ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``, here pointing at a
token endpoint this test serves on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import pytest
from aiohttp import web
from matrix_azure.backend import AzureAuth, AzureBackend, AzureConfig

from matrix_core import BackendError, ConfigError, Sampling
from matrix_core.testing import FakeOpenAIServer

DEPLOYMENT = "gpt-4o-test"
TOKEN = "entra-test-token-5ecret"
IDENTITY_HEADER = "identity-header-5ecret"
HELLO = [{"role": "user", "content": "hello"}]


class IdentityEndpoint:
    """App Service's managed identity endpoint: hands out :data:`TOKEN` and records each request's query."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/msi/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}/msi/token"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return web.json_response({"error": "wrong identity header"}, status=401)
        self.queries.append(dict(request.query))
        expires_on = str(int(time.time()) + 3600)
        body = {"access_token": TOKEN, "expires_on": expires_on, "resource": request.query["resource"]}
        return web.json_response({**body, "token_type": "Bearer"})


def entra_run(monkeypatch: pytest.MonkeyPatch, chats: int, **options: Any) -> tuple[Any, FakeOpenAIServer, list]:
    """Start an Entra ID backend against the test server and the identity endpoint, send ``chats`` chats; return
    the last response (or the error raised), the server and the identity endpoint's requests."""
    identity = IdentityEndpoint()

    async def main() -> tuple[Any, FakeOpenAIServer]:
        async with identity as token_url, FakeOpenAIServer(models=[DEPLOYMENT], output_tokens=1) as server:
            monkeypatch.setenv("IDENTITY_ENDPOINT", token_url)
            monkeypatch.setenv("IDENTITY_HEADER", options.pop("identity_header", IDENTITY_HEADER))
            config = AzureConfig(endpoint=server.azure_endpoint, deployment=DEPLOYMENT, auth=AzureAuth.entra, **options)
            backend = AzureBackend(config)
            try:
                await backend.start()
                result = [await backend.chat(HELLO, Sampling()) for _ in range(chats)][-1]
            except BackendError as error:
                result = error
            finally:
                await backend.close()
            return result, server

    result, server = asyncio.run(main())
    return result, server, identity.queries


def test_requests_carry_entra_tokens_instead_of_a_key(monkeypatch, caplog):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "a-key-that-must-not-be-sent")
    caplog.set_level(logging.DEBUG)
    response, server, token_requests = entra_run(monkeypatch, chats=2)
    assert response.text == "hello"
    assert len(server.requests) == 3  # the start-up check and two chats
    for request in server.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert "api-key" not in request.headers
        assert request.query == {"api-version": "2024-10-21"}
    # azure-identity caches the token: one request to the identity endpoint, for Azure OpenAI's resource.
    assert [query["resource"] for query in token_requests] == ["https://cognitiveservices.azure.com"]
    assert TOKEN not in caplog.text and IDENTITY_HEADER not in caplog.text


def test_the_token_scope_is_configurable(monkeypatch):
    _, _, token_requests = entra_run(monkeypatch, chats=1, entra_scope="https://ai.azure.com/.default")
    assert [query["resource"] for query in token_requests] == ["https://ai.azure.com"]


def test_no_token_fails_the_start_up_check_in_one_line(monkeypatch):
    error, server, token_requests = entra_run(monkeypatch, chats=1, identity_header="not-this-machine's")
    assert isinstance(error, BackendError)
    assert str(error) == (
        "Microsoft Entra ID gave no token for https://cognitiveservices.azure.com/.default: "
        "DefaultAzureCredential failed to retrieve a token from the included credentials."
    )
    assert "az login" in error.hint
    assert server.requests == [], "nothing is sent without a token"
    assert token_requests == []


def test_entra_without_azure_identity_installed_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)  # makes its import fail, as when not installed
    monkeypatch.delitem(sys.modules, "matrix_azure.entra", raising=False)  # imported by an earlier test
    with pytest.raises(ConfigError) as caught:
        AzureBackend(AzureConfig(endpoint="https://r.openai.azure.com", deployment="d", auth=AzureAuth.entra))
    assert str(caught.value) == "backend.auth=entra needs the azure-identity package"
    assert caught.value.hint == "pip install 'matrix-azure[entra]'"
