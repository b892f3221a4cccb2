"""Whether an agent actor's backend answers: a step that failed because the server may be down waits here, without
spending its retries, until the backend answers a probe again."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from matrix_core.backends.base import Backend, BackendError

logger = logging.getLogger(__name__)

PROBE_EVERY_S = 1.0
"""The first wait between probes of a backend that is down; it doubles up to :data:`MAX_PROBE_EVERY_S`."""
MAX_PROBE_EVERY_S = 10.0
FRESH_S = 1.0
"""A probe answered this recently settles whether the backend is up, without another one."""


@dataclass(frozen=True)
class Outage:
    """A backend that stopped answering: since when (wall-clock seconds) and its last error, in one line."""

    since: float
    error: str


class BackendHealth:
    """One actor's view of its backend: up, or down since some time with some error.

    After a request failed as ``unavailable``, :meth:`check` probes the backend (one probe at a time, shared by every
    step that asks). If the probe fails too, the backend is down: one loop probes it, with backoff, until it
    answers, and every step that asks waits for that. A refusal that says when to come back (``Retry-After``: a rate
    limit) is an answer: the server is up and pacing its clients, so it is neither probed nor waited out here.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.outage: Outage | None = None
        self.outages = 0
        """Times the backend went down in this actor's life."""
        self._up = asyncio.Event()
        self._up.set()
        self._probing: asyncio.Future[bool] | None = None
        self._answered_at = float("-inf")
        self._prober: asyncio.Future[None] | None = None

    async def check(self, error: BackendError) -> bool:
        """After ``error`` (``unavailable``): True once the backend was down and answers again (the step may be
        tried again without counting it), False when the backend answers (the failure was the request's own)."""
        if self.outage is None:
            if error.retry_after_s is not None:  # refused with a time to come back (a rate limit): it answers
                return False
            if time.monotonic() - self._answered_at < FRESH_S or await self._probe_once():
                return False
            if self.outage is None:
                self.outages += 1
                self.outage = Outage(time.time(), " ".join(str(error).split()))
                logger.warning("backend does not answer (%s); steps wait until it does", self.outage.error)
                self._up.clear()
                self._prober = asyncio.ensure_future(self._probe_until_up())
        await self._up.wait()
        return True

    async def _probe_once(self) -> bool:
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe())
            self._probing.add_done_callback(lambda _: setattr(self, "_probing", None))
        return await asyncio.shield(self._probing)

    async def _probe(self) -> bool:
        try:
            await self.backend.probe()
        except Exception as error:  # whatever the probe raised, the backend did not answer: it is the outage's error
            if isinstance(error, BackendError) and error.retry_after_s is not None:
                self._answered_at = time.monotonic()  # refused with a time to come back: it answers
                return True
            if self.outage is not None:
                self.outage = Outage(self.outage.since, " ".join(str(error).split()) or type(error).__name__)
            return False
        self._answered_at = time.monotonic()
        return True

    async def _probe_until_up(self) -> None:
        wait = PROBE_EVERY_S
        while not await self._probe_once():
            await asyncio.sleep(wait)
            wait = min(wait * 2, MAX_PROBE_EVERY_S)
        logger.warning("backend answers again after %.0f s", time.time() - (self.outage.since if self.outage else 0))
        self.outage = None
        self._up.set()
