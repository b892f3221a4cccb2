"""Sending tasks straight to the next actor: routing plus coalescing of sends to the same peer."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ray.exceptions import RayActorError

from matrix_core.config import RunConfig
from matrix_core.engine.plugin_calls import contained, fail, hook_name
from matrix_core.engine.routing import Router
from matrix_core.orchestrator import DONE, Orchestrator

logger = logging.getLogger(__name__)


class Peers:
    """Where an actor sends tasks: an actor of the task's next role, or its partition's collector once it is done.

    With ``coalesce``, tasks for the same peer go in one Ray call: those queued within ``window_s``, or with
    ``window_s=0`` those queued in the same event-loop turn; without it each task is its own call. A task is
    *held* (see :meth:`holding`) until the receiver has accepted it, so a dead actor's tasks can be found; a send
    to a dead peer is re-routed to a live actor of the same role.
    """

    def __init__(
        self,
        agents: Mapping[str, Sequence[Any]],
        policies: Mapping[str, str],
        collectors: Sequence[Any],
        window_s: float,
        coalesce: bool = True,
    ) -> None:
        self.routers = {role: Router(handles, policies.get(role, "least_loaded")) for role, handles in agents.items()}
        self.collectors = list(collectors)
        self.window_s = window_s
        self.coalesce = coalesce
        self._sends = itertools.count()
        self.rerouted = 0
        """Tasks re-sent because their receiver died before accepting them."""
        self._batches: dict[Any, list[Orchestrator]] = {}
        self._in_transit: dict[str, int] = {}
        self._flushes: set[asyncio.Task] = set()  # asyncio keeps only weak references to running tasks

    @classmethod
    def for_run(
        cls,
        agents: Mapping[str, Sequence[Any]],
        policies: Mapping[str, str],
        collectors: Sequence[Any],
        run: RunConfig,
    ) -> Peers:
        """Peers coalescing as ``run.coalesce`` and ``run.coalesce_window_ms`` say."""
        return cls(agents, policies, collectors, run.coalesce_window_ms / 1000, run.coalesce)

    def send(self, task: Orchestrator) -> None:
        """Queue ``task`` for its next role (or its collector when done); returns at once. A ``next_role()`` that
        raises, or names a role the workflow does not declare, ends the task as ``error``."""
        role = contained(task, "next_role", DONE)
        if role is not DONE and role not in self.routers:
            reason = f"engine: {hook_name(task, 'next_role')} returned {role!r}, a role the workflow does not declare"
            logger.warning("task %s: %s", task.id, reason)
            fail(task, reason)
            role = DONE
        if role is DONE:
            self.send_to_collector(task)
            return
        router = self.routers[role]
        index = router.pick(task.id)
        self._queue(router.peers[index], (role, index), task)

    def send_to_collector(self, task: Orchestrator) -> None:
        """Queue ``task`` for its partition's collector, whatever its next role."""
        self._queue(self.collectors[task.partition], None, task)

    async def restart(self, task: Orchestrator) -> None:
        """Have ``task``'s collector start it again from its row (its history was lost with an actor that died);
        returns once the collector has it."""
        await self.collectors[task.partition].restart.remote(task.id)

    def holding(self) -> list[str]:
        """Ids of tasks sent but not yet accepted by their receiver."""
        return list(self._in_transit)

    def replace(self, agents: Mapping[str, Sequence[Any]]) -> None:
        """Switch to a new set of agent actors (after one died and was replaced)."""
        for role, handles in agents.items():
            self.routers[role].replace(handles)

    def _queue(self, handle: Any, slot: tuple[str, int] | None, task: Orchestrator) -> None:
        self._in_transit[task.id] = self._in_transit.get(task.id, 0) + 1
        key = handle if self.coalesce else next(self._sends)
        batch = self._batches.get(key)
        if batch is not None:
            batch.append(task)
            return
        self._batches[key] = [task]
        flush = asyncio.ensure_future(self._flush(handle, key, slot))
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _flush(self, handle: Any, key: Any, slot: tuple[str, int] | None) -> None:
        if self.coalesce:
            # a window of 0 still gathers the tasks queued in this same event-loop turn
            await asyncio.sleep(self.window_s)
        batch = self._batches.pop(key)
        try:
            load = await handle.deliver.remote(batch)
        except RayActorError:
            if slot is None:
                raise  # a dead collector ends the run: nothing can record completions
            self._reroute(slot[0], handle, batch)
        else:
            if slot is not None:
                self.routers[slot[0]].report(slot[1], load)
        finally:
            for task in batch:
                left = self._in_transit[task.id] - 1
                if left:
                    self._in_transit[task.id] = left
                else:
                    del self._in_transit[task.id]

    def _reroute(self, role: str, dead: Any, batch: list[Orchestrator]) -> None:
        router = self.routers[role]
        if dead in router.peers:
            router.replace([peer for peer in router.peers if peer != dead])
        logger.warning("an actor of role %r died; re-routing %d task(s)", role, len(batch))
        self.rerouted += len(batch)
        for task in batch:
            self.send(task)
