"""Choosing which actor of a role receives a task."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from typing import Any

from matrix_core.config import Routing


class Router:
    """Picks a peer of one role: ``least_loaded`` (by the inbox depth each peer last reported, plus what was sent
    to it since), ``round_robin``, or ``sticky`` (the same task id always goes to the same actor, for
    prefix-cache reuse and per-task state)."""

    def __init__(self, peers: Sequence[Any], policy: str) -> None:
        Routing(policy)  # config validation let only known policies through: a ValueError here is a bug
        self.peers = list(peers)
        self.policy = policy
        self.loads = [0] * len(self.peers)
        self._turn = itertools.count()

    def pick(self, task_id: str) -> int:
        """The index of the peer to send ``task_id`` to; counts it towards that peer's load."""
        if not self.peers:
            raise LookupError("no live actor left for this role")
        if self.policy == "sticky":
            index = zlib.crc32(task_id.encode()) % len(self.peers)
        elif self.policy == "round_robin":
            index = next(self._turn) % len(self.peers)
        else:
            index = min(range(len(self.peers)), key=self.loads.__getitem__)
        self.loads[index] += 1
        return index

    def report(self, index: int, load: int) -> None:
        """Record the load a peer reported when it accepted a batch."""
        if index < len(self.loads):
            self.loads[index] = load

    def replace(self, peers: Sequence[Any]) -> None:
        """Use a new set of peers (after an actor died and was replaced)."""
        self.peers = list(peers)
        self.loads = [0] * len(self.peers)
