"""The check that no two rows give one task id, exact across partitions: each id is checked by one partition, its
owner (by a hash of the id), which keeps where the id was first seen. A partition sends the ids it reads to their
owners in batches, so no partition reads or holds another's rows."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from matrix_core.errors import BadRowError

BATCH = 1024
"""Ids sent to another partition at a time."""


def owner_of(task_id: str, partitions: int) -> int:
    """The partition that checks ``task_id``."""
    return zlib.crc32(task_id.encode()) % partitions


class DuplicateIds:
    """One partition's side of the check: the ids it owns, and those it read that others own, waiting to be sent."""

    def __init__(self, partition: int, collectors: Sequence[Any]) -> None:
        self.partition = partition
        self.collectors = collectors
        """Every partition's collector (handles), by partition."""
        self.first_seen: dict[str, str] = {}
        """Where each id this partition owns was first seen."""
        self._outgoing: dict[int, list[tuple[str, str]]] = {}

    def claim(self, ids: Sequence[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """Record ``(id, where)`` pairs this partition owns; returns those seen before, as ``(id, where, first)``."""
        seen = []
        for task_id, where in ids:
            if task_id in self.first_seen:
                seen.append((task_id, where, self.first_seen[task_id]))
            else:
                self.first_seen[task_id] = where
        return seen

    async def add(self, task_id: str, where: str) -> None:
        """Check ``task_id``, read at ``where``: at once if this partition owns it, else with the next batch sent to
        its owner. Raises :class:`BadRowError` for an id seen before."""
        owner = owner_of(task_id, len(self.collectors))
        if owner == self.partition:
            self._raise_for(self.claim([(task_id, where)]))
            return
        outgoing = self._outgoing.setdefault(owner, [])
        outgoing.append((task_id, where))
        if len(outgoing) >= BATCH:
            await self._send(owner)

    async def flush(self) -> None:
        """Send every id still waiting and raise for any seen before."""
        for owner in list(self._outgoing):
            await self._send(owner)

    async def _send(self, owner: int) -> None:
        batch = self._outgoing.pop(owner)
        self._raise_for(await self.collectors[owner].claim_ids.remote(batch))

    @staticmethod
    def _raise_for(seen: list[tuple[str, str, str]]) -> None:
        if seen:
            task_id, where, first = seen[0]
            raise BadRowError(f"{where}: duplicate id {task_id!r} (first at {first})")
