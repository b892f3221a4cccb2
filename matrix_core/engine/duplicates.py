"""The check that no two rows give one task id, exact across partitions: each id is checked by one partition, its
owner, which remembers it. A partition sends the ids it reads to their owners in batches, so no partition reads or
holds another's rows, and memory holds none of them:

- an id not finished before is owned by a hash of the id, and kept with where it was first seen in the owner's
  :class:`IdStore` (on disk);
- on ``--resume``, an id finished before is owned by its position among the finished ids (the same in every
  partition), and its owner keeps one bit for it: a resume passes the finished rows at the speed of reading them.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from matrix_core.engine.finished_rows import FinishedRows
from matrix_core.engine.idsets import FinishedIds, IdStore
from matrix_core.errors import BadRowError

BATCH = 1024
"""Ids sent to another partition at a time."""
UNANSWERED = 8
"""Batches of finished ids sent to their owners and not yet answered, at most."""


def owner_of(task_id: str, partitions: int) -> int:
    """The partition that checks ``task_id`` (one not finished before)."""
    return zlib.crc32(task_id.encode(errors="surrogatepass")) % partitions


class DuplicateIds:
    """One partition's side of the check: the ids it owns, and those it read that others own, waiting to be sent."""

    def __init__(self, partition: int, collectors: Sequence[Any], finished: FinishedIds | None = None) -> None:
        self.partition = partition
        self.collectors = collectors
        """Every partition's collector (handles), by partition."""
        self.finished = finished or FinishedIds.empty()
        self.first_seen = IdStore()
        """Where each id this partition owns was first seen."""
        self.finished_seen = np.zeros((len(self.finished) + 7) // 8, dtype=np.uint8)
        """One bit per finished id (those at positions this partition owns): read once already."""
        self._outgoing: dict[int, list[tuple[str, str]]] = {}
        self._outgoing_finished: dict[int, list[tuple[np.ndarray, Callable[[int], tuple[str, str]]]]] = {}
        self._unanswered: deque[asyncio.Future[None]] = deque()

    def claim(self, ids: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Record ``(id, where)`` pairs this partition owns; returns those seen before, as ``(id, where, first)``."""
        return [(task_id, where, first) for task_id, where in ids if (first := self.first_seen.add(task_id, where))]

    def claim_finished(self, positions: np.ndarray) -> np.ndarray:
        """Record finished ids, by position, that this partition owns; returns the indexes into ``positions`` of
        those read before (in an earlier batch or earlier in this one)."""
        bytes_at, bits = positions >> 3, (1 << (positions & 7)).astype(np.uint8)
        repeated = (self.finished_seen[bytes_at] & bits) != 0
        _, first = np.unique(positions, return_index=True)
        within = np.ones(len(positions), dtype=bool)
        within[first] = False
        np.bitwise_or.at(self.finished_seen, bytes_at, bits)
        return np.flatnonzero(repeated | within)

    async def add(self, task_id: str, where: str) -> None:
        """Check ``task_id``, read at ``where``: at once if this partition owns it, else with the next batch sent to
        its owner. Raises :class:`BadRowError` for an id seen before."""
        if (position := self.finished.position(task_id)) >= 0:
            self._wait_finished(position % len(self.collectors), np.array([position]), lambda _: (task_id, where))
            await self._send_finished_due()
            return
        owner = owner_of(task_id, len(self.collectors))
        if owner == self.partition:
            self._raise_for(self.claim([(task_id, where)]))
            return
        outgoing = self._outgoing.setdefault(owner, [])
        outgoing.append((task_id, where))
        if len(outgoing) >= BATCH:
            await self._send(owner)

    async def add_finished(self, rows: FinishedRows) -> None:
        """Check the ids of finished rows skipped unparsed (:mod:`finished_rows`)."""
        owners = rows.positions % len(self.collectors)
        for owner in np.unique(owners):
            chosen = np.flatnonzero(owners == owner)
            self._wait_finished(
                int(owner),
                rows.positions[chosen],
                lambda i, chosen=chosen: (rows.id(chosen[i]), rows.where(chosen[i])),
            )
        await self._send_finished_due()

    async def flush(self) -> None:
        """Send every id still waiting and raise for any seen before."""
        for owner in list(self._outgoing):
            await self._send(owner)
        for owner in list(self._outgoing_finished):
            self._send_finished(owner)
        while self._unanswered:
            await self._unanswered.popleft()

    def _wait_finished(self, owner: int, positions: np.ndarray, describe: Callable[[int], tuple[str, str]]) -> None:
        """Queue finished ids for ``owner``; ``describe(i)`` gives the ``(id, where)`` of the ``i``-th."""
        self._outgoing_finished.setdefault(owner, []).append((positions, describe))

    async def _send_finished_due(self) -> None:
        """Check the finished ids this partition owns at once, and send a full batch to any other owner without
        waiting for its answer (the owner answers between blocks of its own reading); at most
        :data:`UNANSWERED` batches are left unanswered."""
        for owner, waiting in list(self._outgoing_finished.items()):
            if owner == self.partition or sum(len(positions) for positions, _ in waiting) >= BATCH:
                self._send_finished(owner)
        while self._unanswered and (self._unanswered[0].done() or len(self._unanswered) > UNANSWERED):
            await self._unanswered.popleft()  # raises the BadRowError of a duplicate found meanwhile

    async def _send(self, owner: int) -> None:
        batch = self._outgoing.pop(owner)
        self._raise_for(await self.collectors[owner].claim_ids.remote(batch))

    def _send_finished(self, owner: int) -> None:
        waiting = self._outgoing_finished.pop(owner)
        self._unanswered.append(asyncio.ensure_future(self._check_finished(owner, waiting)))

    async def _check_finished(
        self, owner: int, waiting: list[tuple[np.ndarray, Callable[[int], tuple[str, str]]]]
    ) -> None:
        positions = np.concatenate([positions for positions, _ in waiting])
        if owner == self.partition:
            repeated = self.claim_finished(positions)
        else:
            repeated = await self.collectors[owner].claim_finished.remote(positions)
        if not len(repeated):
            return
        index = int(repeated[0])
        for part, describe in waiting:
            if index < len(part):
                task_id, where = describe(index)
                raise BadRowError(f"{where}: duplicate id {task_id!r} (it is also on a row read before)")
            index -= len(part)

    @staticmethod
    def _raise_for(seen: list[tuple[str, str, str]]) -> None:
        if seen:
            task_id, where, first = seen[0]
            raise BadRowError(f"{where}: duplicate id {task_id!r} (first at {first})")
