"""The actor that hosts one agent: a bounded inbox, up to ``max_in_flight`` concurrent steps, direct sends.

A plain class: the driver makes it a Ray actor where it creates it (:mod:`matrix_core.engine.run`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ray.exceptions import ObjectLostError

from matrix_core.agent import AgentContext
from matrix_core.backends.base import BackendError
from matrix_core.engine import actor_logs, gc_settings
from matrix_core.engine.components import build_config, import_target
from matrix_core.engine.concurrency import LimitedBackend
from matrix_core.engine.health import BackendHealth
from matrix_core.engine.messages import ActorStats, AgentSpec
from matrix_core.engine.offload import materialize, offload
from matrix_core.engine.peers import Peers
from matrix_core.engine.plugin_calls import contained
from matrix_core.engine.step_times import StepTimes
from matrix_core.engine.telemetry import AgentTelemetry
from matrix_core.errors import MatrixError
from matrix_core.orchestrator import Orchestrator

logger = logging.getLogger(__name__)


class AgentActor:
    """Runs one role's agent over the tasks delivered to it, and sends each result straight to the next actor."""

    def __init__(self, spec: AgentSpec) -> None:
        actor_logs.capture(f"agent {spec.role}")
        agent_cls = import_target(spec.agent)
        workflow_cls = import_target(spec.workflow)
        backend_cls = import_target(spec.backend)
        self.role = spec.role
        self.config = build_config(agent_cls.config_schema, spec.agent_config)
        self.backend = backend_cls(build_config(backend_cls.config_schema, spec.backend_config))
        if spec.controller is not None:  # its server's limit: requests wait for a slot here, not in its queue
            self.backend = LimitedBackend(self.backend, spec.controller, f"{spec.role}-{uuid.uuid4().hex[:8]}")
        context = AgentContext(
            role=spec.role,
            config=self.config,
            workflow_config=build_config(workflow_cls.config_schema, spec.workflow_config),
            backends={spec.role: self.backend},
            logger=logging.getLogger(f"matrix.agent.{spec.role}"),
        )
        self.agent = agent_cls(context)
        self.run = spec.run
        self.health = BackendHealth(self.backend)
        # Unset, as many steps at once as the run can have tasks in flight: no per-actor limit below it. The inbox
        # holds as many: a smaller one only makes senders wait while its tasks are already admitted.
        in_flight = spec.run.tasks_in_flight * spec.run.partitions
        self.max_workers = self.config.max_in_flight or in_flight
        self.inbox: asyncio.Queue[Orchestrator] = asyncio.Queue(maxsize=in_flight)
        self.peers: Peers | None = None
        self.held: Counter[str] = Counter()  # ids in the inbox or in a step, until handed to the next actor
        self.stepping = 0
        self.idle_workers = 0
        self.stats = ActorStats(backend=spec.backend_name)
        self.telemetry = AgentTelemetry(spec.role)
        self.step_times = StepTimes()
        self._workers: list[asyncio.Task] = []
        gc_settings.settle(spec.run.gc_threshold)  # last: what the agent loaded at start-up is frozen

    async def start(
        self, agents: Mapping[str, Sequence[Any]], policies: Mapping[str, str], collectors: Sequence[Any]
    ) -> None:
        """Learn the peers and open the backend; workers start as tasks arrive, up to ``max_in_flight``."""
        self.peers = Peers.for_run(agents, policies, collectors, self.run)
        await self.backend.start()

    async def deliver(self, tasks: list[Orchestrator]) -> int:
        """Accept tasks into the inbox (waiting while it is full) and report this actor's load."""
        for task in tasks:
            self.held[task.id] += 1
            await self.inbox.put(task)
            # a worker per task waiting, until the limit: no idle workers held for a concurrency never reached
            if self.inbox.qsize() > self.idle_workers and len(self._workers) < self.max_workers:
                self._workers.append(asyncio.ensure_future(self._work()))
        self.telemetry.inbox(self.inbox.qsize())
        return self.inbox.qsize() + self.stepping

    def replace_agents(self, agents: Mapping[str, Sequence[Any]]) -> None:
        """Route to a new set of agent actors."""
        assert self.peers is not None
        self.peers.replace(agents)

    def holding(self) -> list[str]:
        """Ids of every task this actor holds: queued, in a step, or sent but not yet accepted."""
        assert self.peers is not None
        return [*self.held, *self.peers.holding()]

    def get_stats(self) -> ActorStats:
        """This actor's counters, its backend's state, and its warnings and step times since the last call."""
        self.telemetry.flush()  # the driver asks often, and once more at the end: a cheap time to export metrics
        outage = self.health.outage
        return dataclasses.replace(
            self.stats,
            # no peers yet: the run failed while this actor was still starting (another role's backend check failed)
            rerouted=self.peers.rerouted if self.peers else 0,
            outages=self.health.outages,
            down_since=outage.since if outage else None,
            down_error=outage.error if outage else None,
            log=actor_logs.take(),
            step_times=self.step_times.take(),
        )

    def ping(self) -> bool:
        """Liveness probe."""
        return True

    async def _work(self) -> None:
        assert self.peers is not None
        while True:
            self.idle_workers += 1
            try:
                task = await self.inbox.get()
            finally:
                self.idle_workers -= 1
            self.stepping += 1
            self.stats.max_in_step = max(self.stats.max_in_step, self.stepping)
            try:
                await self._advance(task)
            finally:
                self.stepping -= 1
                self.held[task.id] -= 1
                if not self.held[task.id]:
                    del self.held[task.id]

    async def _advance(self, task: Orchestrator) -> None:
        """One hop: fetch offloaded history, run the step, offload, send the task on."""
        assert self.peers is not None
        try:
            await materialize(task)
        except ObjectLostError:
            # the actor that stored this history died: the collector starts the task again from its row
            await self.peers.restart(task)
            return
        prompt_before, completion_before, started = task.prompt_tokens, task.completion_tokens, time.monotonic()
        try:
            task = await self._step(task)
            task.hops += 1
            prompt, completion = task.prompt_tokens - prompt_before, task.completion_tokens - completion_before
            self.stats.prompt_tokens += prompt
            self.stats.completion_tokens += completion
            seconds = time.monotonic() - started
            self.telemetry.step(seconds, prompt, completion)
            self.step_times.add(seconds)
            self.stats.offloaded += offload(task, self.run.offload_threshold_bytes)
        except Exception as error:  # the engine failed this one task: it ends, the run goes on
            logger.exception("task %s: %s failed outside its step", task.id, self.role)
            task.finish("error", f"engine: {type(error).__name__}: {error}")
        self.peers.send(task)
        self.stats.steps += 1

    async def _step(self, task: Orchestrator) -> Orchestrator:
        """Run the agent's step, retrying with exponential backoff and jitter (at least as long as the server's
        ``Retry-After``); after ``max_retries`` the task ends with status ``error``. A :class:`MatrixError` that is
        not ``retryable`` (bad input) is not retried. A failure while the backend is down is no attempt: the step
        waits until the backend answers again (:class:`BackendHealth`), then runs again."""
        attempt = 0
        while True:
            try:
                return await self.agent.step(task)
            except Exception as error:  # one task's failure must not stop the actor: it is the task's outcome
                if isinstance(error, BackendError) and error.unavailable and await self.health.check(error):
                    continue
                retryable = not isinstance(error, MatrixError) or error.retryable
                if retryable and attempt < self.run.max_retries:
                    attempt += 1
                    self.stats.retries += 1
                    self.telemetry.retry()
                    delay = self.run.retry_backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
                    delay = max(delay, getattr(error, "retry_after_s", None) or 0.0)
                    logger.debug("task %s: %s step failed (%r), retry %d", task.id, self.role, error, attempt)
                    await asyncio.sleep(delay)
                    continue
                logger.warning("task %s: %s step failed (%d retries): %r", task.id, self.role, attempt, error)
                status, reason = _outcome(error)
                contained(task, "step_failed", None, self.role, status, reason)
                self.stats.errors += 1
                self.telemetry.error()
                return task


def _outcome(error: Exception) -> tuple[str, str]:
    """The status and reason a step's last error ends its task with: a backend error may name its own (a content
    filter's refusal is ``filtered:content_filter``); otherwise ``error`` and the message."""
    if isinstance(error, MatrixError):
        return getattr(error, "status", "error"), getattr(error, "reason", None) or str(error)
    return "error", f"{type(error).__name__}: {error}"
