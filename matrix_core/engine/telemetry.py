"""The engine's metrics, exported through ``ray.util.metrics``: each Ray node serves them to Prometheus with a
``ray_`` prefix (counters also get ``_total``). One class per kind of actor, so that every metric is defined here.

| metric | kind | tags | what |
|---|---|---|---|
| ``matrix_tasks_admitted`` | counter | ``partition`` | tasks admitted by the collectors |
| ``matrix_tasks_in_flight`` | gauge | ``partition`` | tasks admitted and not yet finished |
| ``matrix_tasks_finished`` | counter | ``status`` | tasks written (or noted as dropped), once each |
| ``matrix_hops`` | counter | ``role`` | agent steps run |
| ``matrix_tokens`` | counter | ``role``, ``kind`` | tokens used by steps (``prompt``, ``completion``) |
| ``matrix_step_seconds`` | histogram | ``role`` | duration of one step, its retries included |
| ``matrix_inbox_depth`` | gauge | ``role``, ``actor`` | tasks waiting in one agent actor's inbox |
| ``matrix_retries`` | counter | ``role`` | step attempts retried |
| ``matrix_step_errors`` | counter | ``role`` | steps that failed for good (the task ends with an error status) |
| ``matrix_concurrency_limit`` | gauge | ``server`` | requests a backend server gets at once (``max_concurrency``) |
"""

from __future__ import annotations

from collections import Counter

import ray
from ray.util import metrics

STEP_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class AgentTelemetry:
    """The metrics of one agent actor."""

    def __init__(self, role: str) -> None:
        self._tags = {"role": role}
        self._hops = metrics.Counter("matrix_hops", "Agent steps run", tag_keys=("role",))
        self._tokens = metrics.Counter("matrix_tokens", "Tokens used by agent steps", tag_keys=("role", "kind"))
        self._seconds = metrics.Histogram(
            "matrix_step_seconds", "Duration of one agent step, retries included", STEP_SECONDS, tag_keys=("role",)
        )
        self._depth = metrics.Gauge("matrix_inbox_depth", "Tasks waiting in an agent's inbox", ("role", "actor"))
        self._retries = metrics.Counter("matrix_retries", "Agent step attempts retried", tag_keys=("role",))
        self._errors = metrics.Counter("matrix_step_errors", "Agent steps failed for good", tag_keys=("role",))
        for metric in (self._hops, self._seconds, self._retries, self._errors):
            metric.set_default_tags(self._tags)
        self._depth.set_default_tags({**self._tags, "actor": ray.get_runtime_context().get_actor_id() or "driver"})
        self._prompt = {**self._tags, "kind": "prompt"}
        self._completion = {**self._tags, "kind": "completion"}
        self._durations: list[float] = []
        self._prompt_tokens = self._completion_tokens = 0

    def step(self, seconds: float, prompt_tokens: int, completion_tokens: int) -> None:
        """One step done, taking ``seconds`` and using these tokens; exported at the next :meth:`flush`."""
        self._durations.append(seconds)
        self._prompt_tokens += prompt_tokens
        self._completion_tokens += completion_tokens

    def flush(self) -> None:
        """Export the steps recorded since the last flush. A Ray counter increment costs microseconds (measured
        ~2-20 us here), a hop's whole budget at 100k hops/s: so a hop only appends, and the actor flushes when the
        driver polls its stats (every 0.5 s, and once more before the run ends)."""
        durations, self._durations = self._durations, []
        if durations:
            self._hops.inc(len(durations))
            for seconds in durations:
                self._seconds.observe(seconds)
        if self._prompt_tokens > 0:  # Ray's counters refuse an increment of 0
            self._tokens.inc(self._prompt_tokens, tags=self._prompt)
        if self._completion_tokens > 0:
            self._tokens.inc(self._completion_tokens, tags=self._completion)
        self._prompt_tokens = self._completion_tokens = 0

    def inbox(self, depth: int) -> None:
        """The inbox now holds ``depth`` tasks."""
        self._depth.set(depth)

    def retry(self) -> None:
        """A step attempt failed and will be retried."""
        self._retries.inc()

    def error(self) -> None:
        """A step failed for good."""
        self._errors.inc()


class CollectorTelemetry:
    """The metrics of one collector (one input partition), exported at each :meth:`flush`."""

    def __init__(self, partition: int) -> None:
        tags = {"partition": str(partition)}
        self._admitted = metrics.Counter("matrix_tasks_admitted", "Tasks admitted", tag_keys=("partition",))
        self._in_flight = metrics.Gauge("matrix_tasks_in_flight", "Tasks admitted, not finished", ("partition",))
        self._admitted.set_default_tags(tags)
        self._in_flight.set_default_tags(tags)
        self._pending = 0

    def admitted(self) -> None:
        """A task was admitted."""
        self._pending += 1

    def flush(self, in_flight: int) -> None:
        """Export the admissions since the last flush and the ``in_flight`` count (the driver polls it)."""
        if self._pending:
            self._admitted.inc(self._pending)
            self._pending = 0
        self._in_flight.set(in_flight)


class ControllerTelemetry:
    """The metric of one server's concurrency controller."""

    def __init__(self, server: str) -> None:
        self._limit = metrics.Gauge("matrix_concurrency_limit", "Requests a server gets at once", ("server",))
        self._limit.set_default_tags({"server": server})

    def limit(self, limit: int) -> None:
        """The server's limit is now ``limit``."""
        self._limit.set(limit)


class WriterTelemetry:
    """The metrics of the writer, exported at each :meth:`flush`."""

    def __init__(self) -> None:
        self._finished = metrics.Counter("matrix_tasks_finished", "Tasks finished", tag_keys=("status",))
        self._pending: Counter[str] = Counter()

    def finished(self, status: str) -> None:
        """A task ended with ``status`` and was written once."""
        self._pending[status] += 1

    def flush(self) -> None:
        """Export the tasks finished since the last flush (the driver polls progress every 0.5 s)."""
        for status, count in self._pending.items():
            self._finished.inc(count, tags={"status": status})
        self._pending.clear()
