"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, hosted APIs).

HTTP, retries and backoff are the official ``openai`` SDK's: it retries connection errors, timeouts, 408, 409, 429
and 5xx with exponential backoff and jitter, honouring ``Retry-After``, up to ``max_retries`` times.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
import openai
from openai.types.chat import ChatCompletion

from matrix_core.backends.base import Backend, BackendError, ChatResponse, Sampling, Usage
from matrix_core.config import BackendConfig
from matrix_core.errors import ConfigError

logger = logging.getLogger(__name__)

NO_AUTH_KEY = "EMPTY"
"""The key sent when none is configured: local servers ignore it, and the SDK refuses to run without one."""


@dataclass
class OpenAIConfig(BackendConfig):
    """``backend.*`` for ``type=openai``."""

    timeout_s: float = 60.0
    max_retries: int = 5
    max_connections: int = 1000
    extra_body: dict[str, Any] = field(default_factory=dict)
    """Extra JSON fields sent with every chat request (server-specific options such as vLLM's ``top_k``)."""


class OpenAIBackend(Backend):
    """Chat with an OpenAI-compatible server through one pooled ``AsyncOpenAI`` client."""

    config_schema = OpenAIConfig
    config: OpenAIConfig

    def __init__(self, config: OpenAIConfig) -> None:
        super().__init__(config)
        if not config.base_url:
            raise ConfigError("backend.base_url is not set", hint="e.g. backend.base_url=http://localhost:8000/v1")
        self._api_key = _api_key(config)
        self._client: openai.AsyncOpenAI | None = None
        self._model = config.model
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Open the client and check the server once, so that a wrong URL or model name fails the run at start-up
        instead of every task: the server must answer and serve ``backend.model`` (unset: its first model)."""
        async with self._starting:
            if self._client is not None:
                return  # started already (concurrent first chats wait here for one check)
            client = self._open()
            try:
                served = [entry.id for entry in (await client.models.list()).data]
            except openai.NotFoundError:
                served = None  # a server without a model list: its first chat tells
            except openai.APIError as error:
                await client.close()
                raise self._error(error) from error
            if self._model is None:
                if not served:
                    await client.close()
                    raise BackendError(f"{self.config.base_url} lists no models", hint="set backend.model")
                self._model = served[0]
                logger.info("backend.model not set: using %s, the first model of %s", self._model, self.config.base_url)
            elif served and self._model not in served:
                await client.close()
                raise BackendError(
                    f"{self.config.base_url} does not serve model {self._model!r}",
                    hint=f"set backend.model to one it serves: {', '.join(served[:10])}",
                )
            self._client = client

    async def _ready(self) -> tuple[openai.AsyncOpenAI, str]:
        if self._client is None:
            await self.start()
        assert self._client is not None and self._model is not None
        return self._client, self._model

    def _open(self) -> openai.AsyncOpenAI:
        # The SDK's own aiohttp transport, with the SDK's timeouts and redirects. Its default httpx2 pool scans every
        # connection on each request: at 500 requests in flight that cost 2.8-3.2 ms of CPU per request against
        # 1.3-1.5 ms with aiohttp (benchmarks/README.md, efficiency).
        http_client = openai.DefaultAioHttpClient(
            limits=httpx2.Limits(
                max_connections=self.config.max_connections,
                # Keep every connection alive: a busy actor would otherwise reopen connections under load.
                max_keepalive_connections=self.config.max_connections,
            )
        )
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.config.base_url,
            timeout=self.config.timeout_s,
            max_retries=self.config.max_retries,
            http_client=http_client,
        )

    async def chat(
        self, messages: list[dict[str, Any]], sampling: Sampling, tools: list[dict[str, Any]] | None = None
    ) -> ChatResponse:
        """Send one chat completion request; a request that fails after the retries raises :class:`BackendError`."""
        client, model = await self._ready()
        options = {key: value for key, value in dataclasses.asdict(sampling).items() if value is not None}
        if tools:
            options["tools"] = tools
        try:
            completion = await client.chat.completions.create(
                model=model, messages=messages, extra_body=self.config.extra_body or None, **options
            )
        except openai.APIError as error:
            raise self._error(error) from error
        return _response(completion)

    async def close(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _error(self, error: openai.APIError) -> BackendError:
        message = " ".join(error.message.split())  # one line: some servers answer multi-line bodies
        if isinstance(error, openai.APITimeoutError) and _refused(error):
            message = "Connection error."  # the SDK's aiohttp transport reports a refused connection as a timeout
        if isinstance(error, openai.APIStatusError):
            message = message.removeprefix(f"Error code: {error.status_code} - ")  # the SDK's, said again below
            return BackendError(f"{self.config.base_url} answered HTTP {error.status_code}: {message}")
        return BackendError(
            f"{self.config.base_url}: {message}",
            hint="is the server running, and is backend.base_url right?",
        )


def _refused(error: BaseException) -> bool:
    """Whether ``error`` comes from a connection that could not be made, rather than from a slow answer."""
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectorError):
            return True
        cause = cause.__cause__
    return False


def _api_key(config: OpenAIConfig) -> str:
    """``backend.api_key``, else the variable ``backend.api_key_env`` names, else :data:`NO_AUTH_KEY`."""
    if config.api_key:
        return config.api_key
    if config.api_key_env:
        key = os.environ.get(config.api_key_env)
        if not key:
            raise ConfigError(f"backend.api_key_env: environment variable {config.api_key_env} is not set")
        return key
    return NO_AUTH_KEY


def _response(completion: ChatCompletion) -> ChatResponse:
    usage = Usage()
    if completion.usage is not None:  # some servers leave usage out
        usage = Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    if not completion.choices:
        return ChatResponse(text=None, finish_reason=None, usage=usage)
    first = completion.choices[0]
    # OpenAI-compatible servers only make function tool calls.
    tool_calls = [
        {
            "id": call.id,
            "type": call.type,
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }
        for call in first.message.tool_calls or []
    ]
    return ChatResponse(
        text=first.message.content,
        finish_reason=first.finish_reason,
        usage=usage,
        tool_calls=tool_calls,
        choices=[choice.message.content for choice in completion.choices],
    )
