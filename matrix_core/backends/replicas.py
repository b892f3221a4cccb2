"""Choosing an inference server replica for each request: least outstanding requests, or sticky by task id."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ReplicaRouting(Enum):
    """How a backend client spreads its requests over an inference server's replicas."""

    least_outstanding = "least_outstanding"
    """The replica with the fewest of this client's requests waiting (ties in turn)."""
    sticky = "sticky"
    """A hash of the task id picks the replica, so a conversation reuses one replica's prefix cache; tasks
    whose replica is down go to the next one up. Requests made outside a task route as least_outstanding."""


@dataclass(eq=False)
class Replica:
    """One replica as a client sees it: its Ray actor, its OpenAI client, its load and whether it is up."""

    index: int
    actor: Any
    client: Any = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    """The key its server requires, from the replica itself."""
    in_flight: int = 0
    up: bool = False
    served: int = 0
    recovering: Any = field(default=None, repr=False)


class ReplicaPicker:
    """Picks a replica per request among those up."""

    def __init__(self, routing: ReplicaRouting) -> None:
        self.routing = routing
        self._turn = itertools.count()

    def pick(self, replicas: Sequence[Replica], task_id: str | None, exclude: set[int] = frozenset()) -> Replica | None:
        """The replica for the next request of ``task_id`` (None: not in a task), skipping replicas that are down
        or in ``exclude``; None when none is left."""
        candidates = [replica for replica in replicas if replica.up and replica.index not in exclude]
        if not candidates:
            return None
        if self.routing is ReplicaRouting.sticky and task_id is not None:
            start = zlib.crc32(task_id.encode()) % len(replicas)
            ring = [replicas[(start + step) % len(replicas)] for step in range(len(replicas))]
            return next(replica for replica in ring if replica in candidates)
        turn = next(self._turn)
        ordered = candidates[turn % len(candidates) :] + candidates[: turn % len(candidates)]
        return min(ordered, key=lambda replica: replica.in_flight)
