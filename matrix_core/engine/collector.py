"""Admission and completion for one partition of the input: the only part of the engine that sees whole tasks
start and end, and never one in between.

A plain class: the driver makes it a Ray actor where it creates it (:mod:`matrix_core.engine.run`)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from ray.exceptions import ObjectLostError, RayTaskError

from matrix_core.config import InputConfig, RunConfig
from matrix_core.engine import actor_logs, gc_settings
from matrix_core.engine.components import build_config, import_target
from matrix_core.engine.duplicates import DuplicateIds
from matrix_core.engine.finished_rows import FinishedRows
from matrix_core.engine.idsets import FinishedIds
from matrix_core.engine.inputs import Row, Shard, read_rows, read_rows_resuming
from matrix_core.engine.messages import PartitionCounts, TaskSummary
from matrix_core.engine.offload import materialize, release
from matrix_core.engine.peers import Peers
from matrix_core.engine.plugin_calls import PluginFault, contained, fail, guarded
from matrix_core.engine.telemetry import CollectorTelemetry
from matrix_core.errors import BadRowError, MatrixError
from matrix_core.orchestrator import Orchestrator

logger = logging.getLogger(__name__)


class Collector:
    """Streams its partitions of the input, keeps at most ``run.max_concurrency`` tasks in flight for each, hands
    finished tasks to the writer, and re-admits the tasks a dead actor took with it.

    ``partition`` is this collector's index among the run's collectors (a task's ``partition`` names its collector);
    ``shards`` are the parts of the input it reads, one after another: by default its own of ``run.partitions``.
    The driver starts at most one collector per CPU and gives each several shards when ``run.partitions`` is more
    (:func:`shards_of`)."""

    def __init__(
        self,
        partition: int,
        workflow_target: str,
        workflow_config: dict[str, Any] | None,
        input_config: InputConfig,
        run: RunConfig,
        writer: Any,
        finished: FinishedIds | None = None,
        shards: Sequence[Shard] | None = None,
    ) -> None:
        actor_logs.capture(f"collector {partition}")
        self.partition = partition
        self.shards = list(shards) if shards is not None else [Shard(partition, run.partitions)]
        self.workflow = import_target(workflow_target)
        self.workflow_config = build_config(self.workflow.config_schema, workflow_config)
        self.input_config = input_config
        self.run = run
        self.writer = writer
        self.finished = finished or FinishedIds.empty()
        """Ids that ended in an earlier run (``--resume``): their tasks are skipped."""
        self.slots = asyncio.Semaphore(run.tasks_in_flight * len(self.shards))
        self.in_flight: dict[str, dict[str, Any]] = {}
        self.readmitted = 0
        self.admitted = 0
        self.telemetry = CollectorTelemetry(partition)
        self.peers: Peers | None = None
        self.duplicates: DuplicateIds | None = None
        self._idle = asyncio.Event()
        self.admitting = asyncio.Event()
        self.admitting.set()
        self._outgoing: list[tuple[dict[str, Any] | None, TaskSummary]] = []
        self._flusher: asyncio.Task | None = None
        self.write_failed: BaseException | None = None
        """The writer's error once a write failed: nothing more is admitted, and :meth:`run` raises it."""
        gc_settings.settle(run.gc_threshold)

    def start(
        self, agents: Mapping[str, Sequence[Any]], policies: Mapping[str, str], collectors: Sequence[Any]
    ) -> None:
        """Learn the agent actors to admit tasks to, and every collector of the run (this one's at its index)."""
        self.peers = Peers.for_run(agents, policies, collectors, self.run)
        self.duplicates = DuplicateIds(self.partition, collectors, self.finished)

    async def admit_all(self) -> PartitionCounts:
        """Admit every task of this partition's rows (the workflow's ``expand_row``) that did not finish in an
        earlier run; return once all have ended."""
        assert self.peers is not None and self.duplicates is not None
        finished = self.finished
        skipped = peak_in_flight = 0
        for row in self._rows():
            if isinstance(row, FinishedRows):  # their ids are their tasks' (the workflow's expand_row is the default)
                await self.duplicates.add_finished(row)
                skipped += len(row)
                continue
            try:
                tasks = guarded(self.workflow, "expand_row", row.id, row.data, self.workflow_config)
            except BadRowError as error:
                self._bad_row(row, error)
                continue
            except PluginFault as fault:
                if row.id not in finished:  # the row's id stands for the tasks it could not make
                    self._end_unstarted(row.id, fault.reason)
                continue
            for task_id, _ in tasks:
                await self.duplicates.add(task_id, row.where)
            for task_id, data in tasks:
                if task_id in finished:
                    skipped += 1
                    continue
                await self.admitting.wait()  # paused while a backend is down
                await self.slots.acquire()
                if self.write_failed is not None:  # no request is spent on work the output cannot keep
                    raise self.write_failed
                try:
                    self._admit(task_id, data)
                except BadRowError as error:
                    self.slots.release()
                    self._bad_row(row, error)
                    break  # the row is rejected once, its other tasks with it
                self.admitted += 1
                self.telemetry.admitted()
                peak_in_flight = max(peak_in_flight, len(self.in_flight))
                if self.admitted % 256 == 0:
                    await asyncio.sleep(0)  # let completions in while a fast reader keeps admitting
        await self.duplicates.flush()
        while self.in_flight and self.write_failed is None:
            self._idle.clear()
            await self._idle.wait()
        if self._flusher is not None:
            await self._flusher
        await self._flush()
        if self.write_failed is not None:
            raise self.write_failed
        return PartitionCounts(self.admitted, skipped, self.readmitted, peak_in_flight)

    def _rows(self) -> Iterator[Row | FinishedRows]:
        """This collector's rows: its shards of the input, one after another; with ``run.limit``, its turns among
        the first rows. On ``--resume``, finished rows are passed in chunks, unparsed, where a row's id is its
        task's."""
        assert self.duplicates is not None
        limit, collectors = self.run.limit, len(self.duplicates.collectors)
        if limit is not None:
            rows = itertools.islice(read_rows(self.input_config, self._rejected), limit)
            yield from (row for index, row in enumerate(rows) if index % collectors == self.partition)
            return
        by_row_id = self.workflow.expand_row.__func__ is Orchestrator.expand_row.__func__
        for shard in self.shards:
            if len(self.finished) and by_row_id:
                yield from read_rows_resuming(self.input_config, self.finished, self._rejected, shard)
            else:
                yield from read_rows(self.input_config, self._rejected, shard)

    def claim_ids(self, ids: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Check task ids another partition read that this one owns (:class:`DuplicateIds`)."""
        assert self.duplicates is not None
        return self.duplicates.claim(ids)

    def claim_finished(self, positions: np.ndarray) -> np.ndarray:
        """Check finished ids, by position, another partition read that this one owns (:class:`DuplicateIds`)."""
        assert self.duplicates is not None
        return self.duplicates.claim_finished(positions)

    def _bad_row(self, row: Row, error: BadRowError) -> None:
        """The workflow cannot use a field of ``row``: stop the run naming its file and line or, with
        ``skip_bad_rows``, note it as rejected (only the row's own partition calls this)."""
        if not self.input_config.skip_bad_rows:
            raise BadRowError(f"{row.where}: {error}", hint=error.hint) from None
        self.writer.reject.remote({"where": row.where, "error": str(error)})

    def _admit(self, task_id: str, row: dict[str, Any]) -> None:
        """Send a task for ``row`` to its first role (its admission slot taken); a ``from_row`` that raises ends it
        at once as ``error``."""
        assert self.peers is not None
        try:
            task = guarded(self.workflow, "from_row", task_id, row, self.workflow_config)
        except PluginFault as fault:
            self.in_flight.pop(task_id, None)
            self.slots.release()
            self._end_unstarted(task_id, fault.reason)
            if not self.in_flight:
                self._idle.set()
            return
        self.in_flight[task_id] = row
        task.partition = self.partition
        task.seed = zlib.crc32(f"{self.run.seed}:{task_id}".encode())
        try:
            first = guarded(task, "next_role")
        except PluginFault as fault:
            fail(task, fault.reason)
            self.peers.send_to_collector(task)
            return
        if first is None:
            raise TypeError(f"{self.workflow.__qualname__}.from_row made a task that is already done")
        self.peers.send(task)

    async def deliver(self, tasks: list[Orchestrator]) -> None:
        """Receive finished tasks from agents; a task already completed (re-admitted twice) is ignored."""
        for task in tasks:
            if task.id not in self.in_flight:
                continue  # finished already: this is a second delivery after a re-admission
            try:
                await materialize(task)
            except ObjectLostError:  # its history died with the actor that stored it
                self.restart(task.id)
                continue
            del self.in_flight[task.id]
            # a hook that raises ends the task as error; to_record last, so that its record says so
            metrics = contained(task, "metrics", {})
            keep = contained(task, "keep", True)
            record = contained(task, "to_record", None) if keep else None
            summary = TaskSummary(
                task.id, task.status, task.reason, task.prompt_tokens, task.completion_tokens, task.hops, metrics
            )
            if keep and record is None:
                record = summary.minimal_record()
            self._outgoing.append((record, summary))
            release(task)
            self.slots.release()
        self._start_flush()
        if not self.in_flight:
            self._idle.set()

    def restart(self, task_id: str) -> None:
        """Start an in-flight task again from its row: its history was lost with an actor that died."""
        if task_id in self.in_flight:
            self._admit(task_id, self.in_flight[task_id])
            self.readmitted += 1

    def _end_unstarted(self, task_id: str, reason: str) -> None:
        """Record ``task_id`` as ``error`` with ``reason``: the workflow raised before the task could start."""
        summary = TaskSummary(task_id, "error", reason)
        self._outgoing.append((summary.minimal_record(), summary))
        self._start_flush()

    def _start_flush(self) -> None:
        if self._outgoing and self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        """Hand finished records to the writer in batches, in order; once a write failed, hand nothing more and
        stop the run (:attr:`write_failed`)."""
        while self._outgoing and self.write_failed is None:
            batch, self._outgoing = self._outgoing, []
            try:
                await self.writer.write.remote(batch)
            except RayTaskError as error:
                cause = getattr(error, "cause", None)
                self.write_failed = cause if isinstance(cause, MatrixError) else error
                self._outgoing.clear()  # records are not held in memory for an output that takes none
                self._idle.set()
        self._flusher = None

    def _rejected(self, entry: dict[str, Any]) -> None:
        # each partition reads its own shard; with run.limit every partition reads the first rows, and one reports
        if self.run.limit is None or self.partition == 0:
            self.writer.reject.remote(entry)

    def pause(self) -> None:
        """Admit nothing new (a backend is down); tasks in flight go on, re-admissions too."""
        self.admitting.clear()

    def resume(self) -> None:
        """Admit again."""
        self.admitting.set()

    def holding(self) -> list[str]:
        """Ids sent to an agent but not yet accepted by it."""
        assert self.peers is not None
        return self.peers.holding()

    def flow(self) -> tuple[int, int]:
        """How many tasks are admitted and not yet finished, and how many were admitted so far."""
        self.telemetry.flush(len(self.in_flight))  # the driver polls this: a cheap time to export metrics
        return len(self.in_flight), self.admitted

    def take_logs(self) -> list[actor_logs.ActorLogLine]:
        """This actor's warnings since the last call."""
        return actor_logs.take()

    def replace_agents(self, agents: Mapping[str, Sequence[Any]]) -> None:
        """Route to a new set of agent actors."""
        assert self.peers is not None
        self.peers.replace(agents)

    def readmit(self, held: set[str]) -> int:
        """Admit again every in-flight task that no live actor holds (its actor died); returns how many."""
        lost = [task_id for task_id in self.in_flight if task_id not in held]
        for task_id in lost:
            self._admit(task_id, self.in_flight[task_id])
        self.readmitted += len(lost)
        if lost:
            logger.warning("partition %d: re-admitted %d task(s) lost with a dead actor", self.partition, len(lost))
        return len(lost)


def shards_of(partitions: int, collectors: int) -> list[list[Shard]]:
    """The shards each of ``collectors`` reads when the input is cut in ``partitions``: dealt round-robin."""
    return [[Shard(index, partitions) for index in range(first, partitions, collectors)] for first in range(collectors)]
