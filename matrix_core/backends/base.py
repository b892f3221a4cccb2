"""The one async chat interface every LLM backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from matrix_core.config import BackendConfig
from matrix_core.errors import MatrixError

_task_id: ContextVar[str | None] = ContextVar("matrix_task_id", default=None)


def current_task_id() -> str | None:
    """The id of the task whose step is running, None outside a step: a backend that routes by task (the engines'
    sticky routing) reads it in ``chat``."""
    return _task_id.get()


def set_current_task_id(task_id: str | None) -> None:
    """Name the task whose step runs next in this asyncio context; the engine calls it before each step."""
    _task_id.set(task_id)


class BackendError(MatrixError):
    """A chat call that failed: the server kept refusing or erroring after the client's retries, or is unreachable.
    The engine retries the step (``run.max_retries``) before the task ends with status ``error``."""

    retryable = True
    status = "error"
    """The task's status when this error ends it."""
    reason: str | None = None
    """The task's reason when this error ends it; ``None`` uses the error's message."""


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
    ) -> ChatResponse:
        """Send one chat request and return the model's answer."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`start` opened."""

    async def __aenter__(self) -> Self:
        """``async with Backend(config) as backend``: :meth:`start` on the way in, :meth:`close` on the way out."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
