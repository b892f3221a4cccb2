"""The two orchestrations the peer-to-peer engine is measured against, on the :mod:`duet` workload.

- :func:`central_controller`: one asyncio loop drives every conversation turn by turn, ``concurrency`` conversations
  at a time (the original Collaborative Reasoner's shape, at its best).
- :func:`batch_barrier`: ``concurrency`` conversations form a batch, and each turn of the batch waits for every
  conversation's turn before the next starts, as a pipeline of ``map_batches`` stages does.

Both send exactly the engine's requests (:func:`duet.messages`) through one pooled client of the same library
the engine's ``openai`` backend uses, so only the orchestration differs. Each returns the completion tokens
generated.
"""

from __future__ import annotations

import asyncio
from typing import Any

import duet
import httpx2
import openai


def _client(base_url: str, concurrency: int) -> openai.AsyncOpenAI:
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return openai.AsyncOpenAI(
        api_key="EMPTY",
        base_url=base_url,
        timeout=600,
        max_retries=5,  # never used here: the simulated GPU does not fail
        http_client=openai.DefaultAioHttpClient(limits=limits),
    )


async def _turn(client: openai.AsyncOpenAI, model: str, row: dict[str, Any], turns: list[str], max_tokens: int) -> int:
    """Speak the next turn of ``row``'s conversation; returns its completion tokens."""
    chat = duet.messages(row["question"], turns, duet.speaker(len(turns)))
    completion = await client.chat.completions.create(model=model, messages=chat, max_tokens=max_tokens)
    turns.append(completion.choices[0].message.content or "")
    return completion.usage.completion_tokens if completion.usage else 0


async def central_controller(base_url: str, rows: list[dict[str, Any]], concurrency: int, max_tokens: int) -> int:
    """Drive every conversation from one loop, ``concurrency`` at a time, each turn after the previous one."""
    async with _client(base_url, concurrency) as client:
        model = (await client.models.list()).data[0].id
        queue = iter(rows)
        tokens = 0

        async def conversations() -> None:
            nonlocal tokens
            for row in queue:  # shared iterator: a free slot takes the next conversation
                turns: list[str] = []
                while len(turns) < row["turns"]:
                    tokens += await _turn(client, model, row, turns, max_tokens)

        await asyncio.gather(*(conversations() for _ in range(concurrency)))
    return tokens


async def batch_barrier(base_url: str, rows: list[dict[str, Any]], concurrency: int, max_tokens: int) -> int:
    """Drive ``concurrency`` conversations as a batch: every turn of the batch waits for all of its conversations."""
    async with _client(base_url, concurrency) as client:
        model = (await client.models.list()).data[0].id
        tokens = 0
        for start in range(0, len(rows), concurrency):
            batch = [(row, []) for row in rows[start : start + concurrency]]
            while batch:
                done = await asyncio.gather(*(_turn(client, model, row, turns, max_tokens) for row, turns in batch))
                tokens += sum(done)
                batch = [(row, turns) for row, turns in batch if len(turns) < row["turns"]]
    return tokens
