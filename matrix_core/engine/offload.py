"""Large history texts travel through Ray's object store by reference instead of inside every message."""

from __future__ import annotations

import asyncio

import ray

from matrix_core.orchestrator import Orchestrator


def offload(task: Orchestrator, threshold_bytes: int) -> int:
    """Move every history text longer than ``threshold_bytes`` to the object store (once per turn); returns how
    many texts were stored now."""
    stored = 0
    for turn in task.history:
        if turn.text is None:
            continue
        # len(text) * 4 bounds the UTF-8 size: short texts skip the encode on the hot path
        if turn.ref is None and len(turn.text) * 4 > threshold_bytes and len(turn.text.encode()) > threshold_bytes:
            turn.ref = ray.put(turn.text)
            stored += 1
        if turn.ref is not None:
            turn.text = None
    return stored


async def materialize(task: Orchestrator) -> None:
    """Put every offloaded text back into its turn; the reference is kept so it is not stored twice."""
    pending = [turn for turn in task.history if turn.text is None and turn.ref is not None]
    if pending:
        for turn, text in zip(pending, await asyncio.gather(*(turn.ref for turn in pending)), strict=True):
            turn.text = text


def release(task: Orchestrator) -> None:
    """Drop the task's references so Ray frees the objects once no message holds them."""
    for turn in task.history:
        turn.ref = None
