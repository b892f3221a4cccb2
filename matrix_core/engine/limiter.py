"""An adaptive limit on one LLM server's requests in flight, moved by the latency it measures (``auto``).

Completed requests are grouped in windows (at least ``window_s`` seconds and ``window_samples`` requests, or
``5 x window_s`` with any). A window's latency is its seconds per output token, weighted by tokens (a short answer,
whose fixed costs weigh more per token, counts little); the baseline is the lowest window latency seen. Latency at
``target`` x baseline or below means no queue worth the name: the limit may grow. Past ``tolerance`` x baseline
requests wait in the server's queue: the limit is cut toward the load that brings latency back to ``target`` x
baseline. In between it holds, so that noise in either direction does not move it.

- Slow start: the limit doubles each window within ``slow_start_exit`` x baseline. A window mostly holds requests
  sent before the last doubling, whose latency cannot show it; so requests sent with more than the limit before the
  last change in flight (*fresh* ones) are judged on their own, and the first fresh ones past ``target`` end slow
  start with one cut straight to ``in_flight x target x baseline / latency`` of theirs (no smoothing: the overshoot
  is known).
- Congestion avoidance (as Netflix's Gradient2): within ``target``, once the fresh requests show no queue either,
  the limit grows by ``growth x sqrt(limit)`` (``smoothing x sqrt(limit)`` once the server refused a request: it has
  a limit of its own that latency does not show). Growing only on fresh evidence grows once per request time, so the
  limit does not outrun what latency can show. Past ``tolerance`` it falls toward ``in_flight x target x baseline /
  latency`` (the mean requests in flight, the load at which a latency that grows with the queue is back at
  ``target``), by at most ``smoothing`` of itself per window, so that one noisy window costs little. Only requests
  sent under the limit as it is count for a cut: those sent before it drain without cutting again.
- Growth never takes the limit past twice the most requests a window had in flight: a run that does not use its limit
  does not raise it.
- Overload: the limit is multiplied by ``backoff`` (a timeout, a 503) or ``rate_backoff`` (a 429 with
  ``Retry-After``: the server is healthy and says when to come back), at most once per window (a burst of refusals is
  one signal; with no request completing, once per ``5 x window_s``).
- Forgetting: a window run at ``minimum`` sets the baseline to its latency, the server's latency with no queue as it
  is now. Past tolerance, the old baseline was stale (a slower model or hardware had pinned the limit at the minimum):
  slow start resumes.

Latency is read as queueing. An engine whose time per token rises with its batch even below its capacity shows that
rise too, and the limit stops where it reaches ``target``: pin ``run.max_concurrency`` when a sweep finds more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LimiterSettings:
    """How a :class:`GradientLimiter` moves its limit (see the module docstring)."""

    initial: int = 16
    """The limit before anything is measured."""
    minimum: int = 1
    """The lowest limit (``run.min_concurrency``)."""
    ceiling: int = 4096
    """The highest limit (``run.concurrency_ceiling``)."""
    target: float = 1.1
    """The latency the limit aims for, as a multiple of the baseline: within it the limit grows."""
    tolerance: float = 1.3
    """How many times the baseline latency may grow before the limit is cut (back toward ``target``)."""
    backoff: float = 0.5
    """What an overload (a timeout, a 503) multiplies the limit by."""
    rate_backoff: float = 0.8
    """What a rate limit's refusal (429 with ``Retry-After``) multiplies the limit by."""
    growth: float = 1.0
    """Past slow start, a window within ``target`` adds ``growth x sqrt(limit)`` (a queue's worth, as Gradient2) ..."""
    smoothing: float = 0.2
    """... or ``smoothing x sqrt(limit)`` once the server refused a request (it has a limit of its own, such as a rate
    limit, that latency does not show: the limit creeps back toward it). The largest fraction of the limit one
    window takes off."""
    slow_start_exit: float = 1.05
    """Slow start ends at a window past this multiple of the baseline: doubling is for a server with no queue yet."""
    window_s: float = 1.0
    """A window closes after at least this long ..."""
    window_samples: int = 16
    """... and at least this many completed requests (or after ``5 x window_s`` with any)."""


class GradientLimiter:
    """The limit of one server's requests in flight, moved by the latencies and overloads it is told of."""

    def __init__(self, settings: LimiterSettings) -> None:
        self.settings = settings
        self._limit = self._bounded(settings.initial)
        self._fresh_above = 0.0
        """Requests started with more than this in flight were sent after the limit last changed (*fresh*)."""
        self._slow_start = True
        self._refused = False
        self._baseline: float | None = None
        self._latency: float | None = None
        self._windows = 0
        self._open(None)

    @property
    def limit(self) -> int:
        """Requests the server may have in flight now, within ``[minimum, ceiling]``."""
        return int(self._bounded(round(self._limit)))

    @property
    def latency(self) -> float | None:
        """The last window's latency (seconds per output token); None before a window closed."""
        return self._latency

    @property
    def windows(self) -> int:
        """How many windows have closed."""
        return self._windows

    @property
    def slow_start(self) -> bool:
        """Whether the limit still doubles each window that keeps latency within ``slow_start_exit``."""
        return self._slow_start

    def record(self, latency: float, in_flight: int, now: float, tokens: int = 1) -> None:
        """One request completed: its seconds per output token, the requests in flight when it started, a monotonic
        time and its output tokens (the weight of its latency). May close a window and move the limit."""
        if self._start is None:
            self._start = now
        self._peak = max(self._peak, in_flight)
        self._all.add(latency, in_flight, tokens)
        if in_flight > self._fresh_above:
            self._fresh.add(latency, in_flight, tokens)
        if in_flight <= self.limit:  # sent under the limit as it is: a request sent before a cut is not its measure
            self._current.add(latency, in_flight, tokens)
        elapsed = now - self._start
        if elapsed >= 5 * self.settings.window_s or (
            elapsed >= self.settings.window_s and self._all.count >= self.settings.window_samples
        ):
            self._close(now)

    def overloaded(self, now: float, rate_limited: bool = False) -> None:
        """The server refused or timed out a request (``rate_limited``: a 429 that says when to come back): cut the
        limit, at most once per window."""
        if self._cut and self._start is not None and now - self._start < 5 * self.settings.window_s:
            return
        backoff = self.settings.rate_backoff if rate_limited else self.settings.backoff
        self._limit = self._bounded(self._limit * backoff)
        self._slow_start = False
        self._refused = True
        self._fresh_above = 0.0
        self._open(now, cut=True)  # what the window saw so far ran at the limit just cut: measure the new one

    def _open(self, now: float | None, cut: bool = False) -> None:
        self._start = now
        self._cut = cut
        self._peak = 0
        self._all = _Samples()
        self._fresh = _Samples()
        self._current = _Samples()

    def _close(self, now: float) -> None:
        s = self.settings
        (latency, _), peak = self._all.means(), self._peak
        fresh, current = self._fresh.means() if self._fresh else None, self._current.means() if self._current else None
        self._latency = latency
        self._windows += 1
        self._open(now)
        if self.limit == s.minimum and peak <= s.minimum:
            # nothing runs lighter than the minimum: this is the server's latency without a queue, as it is now
            if self._baseline is not None and latency > s.tolerance * self._baseline:
                self._slow_start = True
                self._fresh_above = 0.0
            self._baseline = latency
        elif self._baseline is None or latency < self._baseline:
            self._baseline = latency
        target = s.target * self._baseline
        if self._slow_start:
            if fresh is not None and fresh[0] > target:  # requests sent at the new limit queue: back to their knee
                self._slow_start = False
                self._limit = min(self._limit, max(fresh[1] * target / fresh[0], self._limit * s.backoff))
            elif latency <= s.slow_start_exit * self._baseline:
                self._fresh_above = self._limit
                self._limit = max(self._limit, min(2 * self._limit, 2 * peak))
            else:
                self._slow_start = False
        elif latency <= target:
            if fresh is not None and fresh[0] <= target:  # requests sent since it last grew show no queue
                self._fresh_above = self._limit
                growth = s.smoothing if self._refused else s.growth
                self._limit = max(self._limit, min(self._limit + growth * math.sqrt(self._limit), 2 * peak))
        elif current is not None and current[0] > s.tolerance * self._baseline:
            # judged by requests sent under the limit as it is: those sent before a cut drain without cutting again
            cut = current[1] * target / current[0]
            self._limit = min(self._limit, max(cut, self._limit * (1 - s.smoothing)))
            self._fresh_above = 0.0
        self._limit = self._bounded(self._limit)

    def _bounded(self, limit: float) -> float:
        return min(max(limit, self.settings.minimum), self.settings.ceiling)


class _Samples:
    """Completed requests of one kind in a window: their latency weighted by output tokens, their mean in flight."""

    def __init__(self) -> None:
        self.count = 0
        self.tokens = 0
        self.weighted_latency = 0.0
        self.in_flight = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, latency: float, in_flight: int, tokens: int) -> None:
        self.count += 1
        self.tokens += tokens
        self.weighted_latency += latency * tokens
        self.in_flight += in_flight

    def means(self) -> tuple[float, float]:
        """Seconds per output token over all their tokens, and requests in flight per request."""
        return self.weighted_latency / self.tokens, self.in_flight / self.count
