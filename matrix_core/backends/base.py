"""The one async chat interface every LLM backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from matrix_core.config import BackendConfig
from matrix_core.errors import MatrixError

PROBE_MESSAGES = [{"role": "user", "content": "ping"}]
"""The chat :meth:`Backend.probe` sends (with ``max_tokens=1``): a scripted test server may answer it apart."""


class BackendError(MatrixError):
    """A chat call that failed. The engine is the one place that tries a step again (``run.max_retries`` times,
    waiting at least ``retry_after_s``); clients make one attempt. ``unavailable`` says the server may be down
    (no connection, a timeout, HTTP 5xx or 429): the engine then checks with :meth:`Backend.probe`, and while the
    backend does not answer the step waits instead of spending its retries."""

    retryable = True
    status = "error"
    """The task's status when this error ends it."""
    reason: str | None = None
    """The task's reason when this error ends it; ``None`` uses the error's message."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        retryable: bool = True,
        unavailable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.retryable = retryable and type(self).retryable
        self.unavailable = unavailable
        self.retry_after_s = retry_after_s


class ContentFilterError(BackendError):
    """The provider refused the request or its answer for its content (Azure's content filter, an OpenAI
    moderation refusal): trying again cannot help, so the task ends as ``filtered:content_filter``."""

    retryable = False
    status = "filtered"
    reason = "content_filter"


@dataclass
class Sampling:
    """Sampling parameters of one chat call; ``None`` leaves the server's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int = 1
    stop: list[str] | None = None
    seed: int | None = None


@dataclass
class Usage:
    """Tokens one call consumed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatResponse:
    """What a chat call returns: text or tool calls, why generation stopped, and the tokens used.

    ``choices`` holds every choice's text when ``n > 1``; ``text`` is the first.
    """

    text: str | None
    finish_reason: str | None
    usage: Usage
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    choices: list[str | None] = field(default_factory=list)


class Backend(ABC):
    """An LLM backend: one instance per agent actor, holding one pooled client, opened once.

    ``config_schema`` is the dataclass typing ``backend.*`` for this backend type; subclasses extend
    :class:`BackendConfig` with their own options, which ``matrix backends list`` shows.
    """

    config_schema: ClassVar[type[BackendConfig]] = BackendConfig

    def __init__(self, config: BackendConfig) -> None:
        """Keep ``config`` and check it; cheap (the driver builds one to validate), heavy work goes in start()."""
        self.config = config

    async def start(self) -> None:  # noqa: B027 - optional hook, most backends open lazily
        """Open connections or start servers; called once before the first chat."""

    @abstractmethod
    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
    ) -> ChatResponse:
        """Send one chat request and return the model's answer. ``task_id`` names the task the request belongs to
        (agents pass ``task.id``; None outside a task): a backend may route by it, as the inference servers'
        ``sticky`` routing sends all the turns of one task to the same replica."""

    async def probe(self) -> None:
        """Check that the backend answers, raising :class:`BackendError` if not: the engine calls it after a
        request failed as ``unavailable``, and every few seconds while the backend is down. By default one chat
        of one token."""
        await self.chat(PROBE_MESSAGES, Sampling(max_tokens=1))

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` opened."""

    async def __aenter__(self) -> Self:
        """``async with Backend(config) as backend``: :meth:`start` on the way in, :meth:`close` on the way out."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
