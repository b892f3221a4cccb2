"""How many requests each backend server gets at once: one :class:`ConcurrencyController` per server (a Ray actor
the driver creates), shared by every agent actor and role that sends to that server; each agent actor holds its
share as local :class:`Slots`, so that a request waits for a slot in the actor, not in the server's queue, and no
request costs a Ray call.

With ``auto`` the controller's :class:`~matrix_core.engine.limiter.GradientLimiter` sets the limit from the
latencies the actors report (every :data:`SYNC_S`); with a number it stays that number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from matrix_core.backends.base import Backend, BackendError, ChatResponse, Sampling
from matrix_core.config.schemas import AUTO, RunConfig
from matrix_core.engine.limiter import GradientLimiter, LimiterSettings
from matrix_core.engine.telemetry import ControllerTelemetry
from matrix_core.metrics import ConcurrencyReport

logger = logging.getLogger(__name__)

SYNC_S = 0.25
"""How often an agent actor reports its latencies and demand to its server's controller and takes its new share."""
HISTORY_EVERY_S = 1.0
"""The limit over time keeps at most one point per this many seconds (and every change of the limit)."""


def server_of(backend: Mapping[str, Any]) -> str:
    """The server a role's backend config sends to: roles with the same one share its limit."""
    where = backend.get("base_url") or backend.get("endpoint") or backend.get("type")
    return f"{where} ({backend['model']})" if backend.get("model") else str(where)


def concurrency_of(backends: list[Mapping[str, Any]], run: RunConfig) -> int | str | None:
    """The limit one server's roles ask for: ``auto``, a number, or None (no limit of the server's own: the run's
    tasks in flight bound it). ``backend.max_concurrency`` wins over ``run.max_concurrency=auto``; ``auto`` wins over
    a number; two numbers give the smaller."""
    asked = [backend.get("max_concurrency") for backend in backends if backend.get("max_concurrency") is not None]
    if AUTO in asked or (not asked and run.adaptive):
        return AUTO
    return min(asked, default=None)


@dataclass
class _Share:
    demand: int = 0
    in_use: int = 0


@dataclass
class ConcurrencyController:
    """The limit of one server and each agent actor's share of it (a Ray actor, created by the driver)."""

    server: str
    mode: int | str
    """``auto``, or a fixed number of requests."""
    run: RunConfig
    limiter: GradientLimiter | None = None
    history: list[tuple[float, int, float | None]] = field(default_factory=list)
    _actors: dict[str, _Share] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)
    _telemetry: ControllerTelemetry | None = None

    def __post_init__(self) -> None:
        if self.mode == AUTO:
            settings = LimiterSettings(minimum=self.run.min_concurrency, ceiling=self.run.concurrency_ceiling)
            self.limiter = GradientLimiter(settings)
        self._note(force=True)

    @property
    def limit(self) -> int:
        """Requests the server gets at once now."""
        return self.limiter.limit if self.limiter is not None else int(self.mode)

    def report(
        self,
        actor: str,
        samples: list[tuple[float, int, int]],
        overloads: int,
        demand: int,
        in_use: int,
        rate_limits: int = 0,
    ) -> int:
        """An agent actor's news since its last report: each request it completed, as (seconds per output token,
        its own requests in flight when it started, its output tokens); how many were refused or timed out; how many
        it wants at once (in use plus waiting) and has in use; and how many refusals said when to come back (a rate
        limit's 429, counted apart from ``overloads``). Returns its share of the limit."""
        share = self._actors.setdefault(actor, _Share())
        share.demand, share.in_use = demand, in_use
        now = time.monotonic()
        if self.limiter is not None:
            others = sum(each.in_use for name, each in self._actors.items() if name != actor)
            for _ in range(overloads):
                self.limiter.overloaded(now)
            for _ in range(rate_limits):
                self.limiter.overloaded(now, rate_limited=True)
            for latency, started_with, tokens in samples:
                self.limiter.record(latency, started_with + others, now, tokens)
        self._note()
        return self._share_of(actor)

    def _share_of(self, actor: str) -> int:
        """``actor``'s part of the limit, by demand: the shares add up to the limit (each at least one), what an
        actor does not ask for is split among all, so that a rising demand finds room at once. Shares move between
        actors as they report (every :data:`SYNC_S`)."""
        names = sorted(self._actors)
        wants = {name: max(self._actors[name].demand, 1) for name in names}
        total = sum(wants.values())
        if total <= self.limit:
            spare, index = self.limit - total, names.index(actor)
            return wants[actor] + spare // len(names) + (1 if index < spare % len(names) else 0)
        return max(1, math.floor(self.limit * wants[actor] / total))

    def state(self) -> tuple[int, float | None]:
        """The limit now and the latency (seconds per output token) it was last set from."""
        return self.limit, self.limiter.latency if self.limiter is not None else None

    def report_card(self) -> ConcurrencyReport:
        """The limit over the run, for its metrics."""
        self._note(force=True)
        return ConcurrencyReport(self.server, str(self.mode), self.limit, [list(point) for point in self.history])

    def _note(self, force: bool = False) -> None:
        limit, latency = self.state()
        elapsed = round(time.monotonic() - self._started, 3)
        last = self.history[-1] if self.history else None
        if force or last is None or last[1] != limit or elapsed - last[0] >= HISTORY_EVERY_S:
            self.history.append((elapsed, limit, latency))
        if self._telemetry is None and ray.is_initialized():  # exported where it runs as an actor
            self._telemetry = ControllerTelemetry(self.server)
        if self._telemetry is not None:
            self._telemetry.limit(limit)


class Slots:
    """An actor's share of its server's limit: :meth:`taken` waits while ``limit`` requests are in use. The limit
    may change at any time; a lower one lets requests in use finish and holds new ones back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.waiting = 0
        self._freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        """Hold one slot for the body."""
        async with self._freed:
            self.waiting += 1
            try:
                await self._freed.wait_for(lambda: self.in_use < self.limit)
            finally:
                self.waiting -= 1
            self.in_use += 1
        try:
            yield
        finally:
            async with self._freed:
                self.in_use -= 1
                self._freed.notify()

    async def set_limit(self, limit: int) -> None:
        """Change the limit, waking requests a higher one lets in."""
        async with self._freed:
            self.limit = limit
            self._freed.notify_all()


class LimitedBackend(Backend):
    """A backend whose requests take a slot of the server's limit first, and whose latencies feed that limit."""

    def __init__(self, inner: Backend, controller: Any, actor: str) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.controller = controller
        self.actor = actor
        self.slots = Slots(1)
        self._samples: list[tuple[float, int, int]] = []
        self._overloads = 0
        self._rate_limits = 0
        self._sync: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the inner backend and take a first share."""
        await self.inner.start()
        await self._report()
        self._sync = asyncio.ensure_future(self._sync_forever())

    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
    ) -> ChatResponse:
        async with self.slots.taken():
            started, in_use = time.monotonic(), self.slots.in_use
            try:
                response = await self.inner.chat(messages, sampling, tools, task_id=task_id)
            except BackendError as error:
                if error.retry_after_s is not None:  # a 429 (or 503) that says when to come back: a rate limit
                    self._rate_limits += 1
                elif error.unavailable:  # 5xx, a timeout: the server is full
                    self._overloads += 1
                raise
        tokens = max(response.usage.completion_tokens, 1)
        self._samples.append(((time.monotonic() - started) / tokens, in_use, tokens))
        return response

    async def probe(self) -> None:
        """The inner backend's probe, outside the limit: it asks whether the server answers at all."""
        await self.inner.probe()

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
        await self.inner.close()

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            try:
                await self._report()
            except Exception as error:  # a dead controller must not stop the actor's requests: the share stays
                logger.debug("concurrency controller did not answer: %r", error)

    async def _report(self) -> None:
        samples, self._samples = self._samples, []
        overloads, self._overloads = self._overloads, 0
        rate_limits, self._rate_limits = self._rate_limits, 0
        demand = self.slots.in_use + self.slots.waiting
        share = await self.controller.report.remote(
            self.actor, samples, overloads, demand, self.slots.in_use, rate_limits
        )
        await self.slots.set_limit(share)
