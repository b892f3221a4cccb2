"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, hosted APIs).

HTTP is the official ``openai`` SDK's, with its own retries off: the engine is the one place that tries a step
again (``run.max_retries``), so one step against a dead server costs ``1 + run.max_retries`` requests, not that
times the SDK's retries. Each failure says what the engine needs: whether trying again can help (not for a 400),
whether the server may be down (no connection, a timeout, 5xx, 429), and how long a 429 or 503 asked to wait
(``Retry-After``, ``retry-after-ms``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import os
import time
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
    max_connections: int | None = None
    """Connections one agent actor's client keeps open; null: no limit beyond the steps the actor runs at once."""
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
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.config.base_url,
            timeout=self.config.timeout_s,
            max_retries=0,  # the engine retries steps: see the module's docstring
            http_client=self._pool(),
        )

    def _pool(self) -> httpx2.AsyncClient:
        """The connection pool of one client: ``backend.max_connections`` connections, every one kept alive.
        Subclasses that open another client class (``azure``) give it this pool too."""
        # The SDK's own aiohttp transport, with the SDK's timeouts and redirects. Its default httpx2 pool scans every
        # connection on each request: at 500 requests in flight that cost 2.8-3.2 ms of CPU per request against
        # 1.3-1.5 ms with aiohttp (benchmarks/README.md, efficiency).
        # aiohttp reads 0 as no limit, and an unset limit as its own default of 100 connections: a cap nobody set.
        connections = self.config.max_connections or 0
        return openai.DefaultAioHttpClient(
            limits=httpx2.Limits(
                max_connections=connections,
                # Keep every connection alive: a busy actor would otherwise reopen connections under load.
                max_keepalive_connections=connections,
            )
        )

    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
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

    unreachable_hint = "is the server running, and is backend.base_url right?"
    """What to check when the server cannot be reached; a subclass names its own setting."""

    @property
    def where(self) -> str:
        """How errors name the server: ``backend.base_url``; a subclass may name its own URL."""
        return str(self.config.base_url)

    def status_hint(self, status: int) -> str | None:
        """What to check when a request is answered HTTP ``status``; none by default."""
        return None

    def _error(self, error: openai.APIError) -> BackendError:
        """The :class:`BackendError` a failed request raises: retryable and ``unavailable`` by its status, with the
        wait the server asked for."""
        message = error_message(error)
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            return BackendError(
                f"{self.where} answered HTTP {status}: {message}",
                hint=self.status_hint(status),
                retryable=status in RETRYABLE_STATUS or status >= 500,
                unavailable=status == 429 or status >= 500,
                retry_after_s=retry_after(error.response.headers),
            )
        return BackendError(f"{self.where}: {message}", hint=self.unreachable_hint, unavailable=True)


RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Client-error statuses worth a second try (the ``openai`` SDK's own list); every 5xx is too."""
MAX_RETRY_AFTER_S = 300.0
"""The longest wait a server's ``Retry-After`` is taken at its word for."""


def retry_after(headers: Any) -> float | None:
    """Seconds a response asks the client to wait: ``retry-after-ms`` (Azure's), else ``Retry-After`` in seconds
    or as an HTTP date; None when it says nothing usable."""
    milliseconds = headers.get("retry-after-ms")
    seconds: float | None = None
    try:
        if milliseconds is not None:
            seconds = float(milliseconds) / 1000
        elif (value := headers.get("retry-after")) is not None:
            try:
                seconds = float(value)
            except ValueError:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (ValueError, TypeError):
        return None
    if seconds is None or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def error_message(error: openai.APIError) -> str:
    """The SDK's message of a failed request on one line, without the status its own message repeats, and a refused
    connection called so."""
    message = " ".join(error.message.split())  # one line: some servers answer multi-line bodies
    if isinstance(error, openai.APITimeoutError) and _refused(error):
        message = "Connection error."  # the SDK's aiohttp transport reports a refused connection as a timeout
    if isinstance(error, openai.APIStatusError):
        message = message.removeprefix(f"Error code: {error.status_code} - ")  # the caller says the status
    return message


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
