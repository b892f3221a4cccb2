"""The ideal client: a bare asyncio loop with one pooled aiohttp session keeping ``concurrency`` requests in flight.

It does nothing but send each prompt and read the answer, so at the same concurrency it is the best any client can
do against the simulated GPU; the engine's efficiency is its throughput over this one's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import aiohttp


async def run(base_url: str, requests: Iterable[dict[str, Any]], concurrency: int) -> int:
    """Send every request body (``messages``, sampling) to ``base_url``, ``concurrency`` at a time; returns how many
    were answered 200."""
    bodies = iter(requests)
    answered = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(base_url=base_url.rstrip("/") + "/", connector=connector, timeout=timeout) as s:
        model = (await (await s.get("models")).json())["data"][0]["id"]

        async def worker() -> None:
            nonlocal answered
            for body in bodies:  # the iterator is shared: each worker takes the next body when it is free
                async with s.post("chat/completions", json={"model": model, **body}) as response:
                    await response.read()
                    answered += response.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered
