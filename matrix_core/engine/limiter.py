"""An adaptive limit on one LLM server's requests in flight, moved by the latency it measures (``auto``).

Completed requests are grouped in windows (at least ``window_s`` seconds and ``window_samples`` requests, or
``5 x window_s`` with any). A window's latency is its mean seconds per output token; the baseline is the lowest
window latency seen, and ``gradient = clamp(tolerance x baseline / latency, 0.5, 1)`` falls below 1 as a queue builds.

- Slow start: while the gradient is 1, the limit doubles each window. It ends at the first gradient below 1 or the
  first overload.
- Congestion avoidance (Netflix's Gradient2): with gradient 1 the limit grows by ``smoothing x sqrt(limit)`` (the
  queue allowance, weighted as a new estimate); below 1 it falls toward ``in_flight x gradient`` (the window's mean
  requests in flight), the load at which a latency that grows with the queue is back at ``tolerance x baseline``,
  by at most ``smoothing`` of itself per window, so that one noisy window costs little. The limit thus settles
  where latency is ``tolerance`` x baseline.
- Growth never takes the limit past twice the most requests a window had in flight: a run that does not use its limit
  does not raise it, and a window of requests sent before the last doubling does not double it again.
- Overload (429, 503, Retry-After, a timeout): the limit is multiplied by ``backoff``, at most once per window (a
  burst of refusals is one signal; with no request completing, once per ``5 x window_s``).
- Forgetting: a window run at ``minimum`` sets the baseline to its latency, the server's latency with no queue as it
  is now. Past tolerance, the old baseline was stale (a slower model or hardware had pinned the limit at the minimum):
  slow start resumes.
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
    tolerance: float = 1.5
    """How many times the baseline latency may grow before the limit shrinks."""
    backoff: float = 0.5
    """What an overload multiplies the limit by."""
    smoothing: float = 0.2
    """Weight of a new estimate when growing; the largest fraction of the limit one window takes off."""
    window_s: float = 1.0
    """A window closes after at least this long ..."""
    window_samples: int = 16
    """... and at least this many completed requests (or after ``5 x window_s`` with any)."""


class GradientLimiter:
    """The limit of one server's requests in flight, moved by the latencies and overloads it is told of."""

    def __init__(self, settings: LimiterSettings) -> None:
        self.settings = settings
        self._limit = self._bounded(settings.initial)
        self._slow_start = True
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
        """Whether the limit still doubles each window that keeps latency within tolerance."""
        return self._slow_start

    def record(self, latency: float, in_flight: int, now: float) -> None:
        """One request completed: its seconds per output token, the requests in flight when it started, and a
        monotonic time. May close a window and move the limit."""
        if self._start is None:
            self._start = now
        self._count += 1
        self._latency_sum += latency
        self._in_flight_sum += in_flight
        self._peak = max(self._peak, in_flight)
        elapsed = now - self._start
        if elapsed >= 5 * self.settings.window_s or (
            elapsed >= self.settings.window_s and self._count >= self.settings.window_samples
        ):
            self._close(now)

    def overloaded(self, now: float) -> None:
        """The server refused or timed out a request: cut the limit, at most once per window."""
        if self._cut and self._start is not None and now - self._start < 5 * self.settings.window_s:
            return
        self._limit = self._bounded(self._limit * self.settings.backoff)
        self._slow_start = False
        self._open(now, cut=True)  # what the window saw so far ran at the limit just cut: measure the new one

    def _open(self, now: float | None, cut: bool = False) -> None:
        self._start = now
        self._cut = cut
        self._count = 0
        self._latency_sum = 0.0
        self._in_flight_sum = 0
        self._peak = 0

    def _close(self, now: float) -> None:
        s = self.settings
        latency, in_flight, peak = self._latency_sum / self._count, self._in_flight_sum / self._count, self._peak
        self._latency = latency
        self._windows += 1
        self._open(now)
        if self.limit == s.minimum and peak <= s.minimum:
            # nothing runs lighter than the minimum: this is the server's latency without a queue, as it is now
            if self._baseline is not None and latency > s.tolerance * self._baseline:
                self._slow_start = True
            self._baseline = latency
        elif self._baseline is None or latency < self._baseline:
            self._baseline = latency
        if latency <= s.tolerance * self._baseline:
            grown = 2 * self._limit if self._slow_start else self._limit + s.smoothing * math.sqrt(self._limit)
            self._limit = max(self._limit, min(grown, 2 * peak))
        else:
            self._slow_start = False
            gradient = max(s.tolerance * self._baseline / latency, 0.5)
            # from the load the window measured, not the limit: late requests sent before a cut do not cut again
            self._limit = min(self._limit, max(in_flight * gradient, self._limit * (1 - s.smoothing)))
        self._limit = self._bounded(self._limit)

    def _bounded(self, limit: float) -> float:
        return min(max(limit, self.settings.minimum), self.settings.ceiling)
