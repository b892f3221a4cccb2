"""A simulated GPU: an OpenAI-compatible server that behaves like a continuous-batching inference server.

It has ``slots`` decode slots; a request beyond them waits in a FIFO queue. A request in a slot takes
``prompt_tokens / prefill_tps + output_tokens / decode_tps`` seconds (per-sequence rates, as in a continuous batch
whose per-sequence speed does not depend on the batch). Output lengths are drawn from a lognormal that is
deterministic per request (a hash of its messages and the server's seed), so two clients sending the same prompts
get the same answers and the same work. Its capacity, ``slots`` sequences at those rates, is the physical limit
every benchmark compares against.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /stats`` (in flight, queued, completed, tokens,
busy slot-seconds; ``?times=1`` adds every request's arrival time and each completion's time, latency and output
tokens, for rates over a run).

Two behaviours a client has to adapt to: ``rate_limit_rps`` (a provider's rate limit: a token bucket; a request over
it is answered 429 at once, with ``Retry-After`` saying when the next token comes) and ``halve_after_s`` (the server
loses half its slots that long after its first request, as when a replica goes away).

    python benchmarks/simulated_gpu.py --slots 512 --decode-tps 50 --mean-output-tokens 100

prints ``listening on http://127.0.0.1:PORT/v1`` and serves until killed. From Python, :func:`serve_in_process`
runs it in its own process (so that it never competes with the client for the same event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import importlib
import json
import math
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import web

Reply = Callable[[dict[str, Any], int], str]
"""Scripts the answer: called with the request body and the drawn output length, returns the content."""


@dataclass
class GpuConfig:
    """The simulated server's shape and behaviour."""

    slots: int = 256
    """Sequences decoded at once; more requests wait in a FIFO queue."""
    decode_tps: float = 50.0
    """Output tokens per second of one sequence."""
    prefill_tps: float = 20_000.0
    """Prompt tokens per second of one sequence."""
    mean_output_tokens: float = 100.0
    """Mean of the lognormal output length (before ``max_tokens`` cuts it)."""
    sigma: float = 0.5
    """Shape of the lognormal: 0 gives every request the mean."""
    failure_rate: float = 0.0
    """Fraction of requests answered HTTP 500 (after their time in a slot)."""
    rate_limit_rate: float = 0.0
    """Fraction of requests answered HTTP 429 at once, with ``Retry-After``."""
    retry_after_s: float = 0.05
    rate_limit_rps: float = 0.0
    """Requests per second admitted (a token bucket holding one second's worth); each request over it is answered
    HTTP 429 at once, ``Retry-After`` the seconds until the next token. 0: no limit."""
    halve_after_s: float = 0.0
    """Seconds after the first request when the server loses half its slots (requests in them finish). 0: never."""
    seed: int = 0
    model: str = "simulated-gpu"
    reply: str | None = None
    """``module:function`` scripting the content (a :data:`Reply`); default: ``output_tokens`` filler words."""


def _digest(messages: Any, config: GpuConfig, salt: str) -> int:
    payload = json.dumps(messages, sort_keys=True, separators=(",", ":")).encode()
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8, key=f"{config.seed}:{salt}".encode()).digest())


def _draw(messages: Any, config: GpuConfig, salt: str) -> float:
    """A uniform draw in [0, 1) fixed by the messages, the seed and ``salt``."""
    return _digest(messages, config, salt) / 2**64


def output_length(messages: Any, config: GpuConfig) -> int:
    """The request's output length: lognormal with mean ``mean_output_tokens``, seeded by the messages' hash."""
    if config.sigma <= 0:
        return max(1, round(config.mean_output_tokens))
    rng = random.Random(_digest(messages, config, "len"))
    mu = math.log(config.mean_output_tokens) - config.sigma**2 / 2  # so that the mean is mean_output_tokens
    return max(1, round(rng.lognormvariate(mu, config.sigma)))


def prompt_tokens(messages: Any) -> int:
    """About four characters per token, as English text in common tokenizers."""
    if not isinstance(messages, list):
        return 0
    return sum(len(m.get("content") or "") for m in messages if isinstance(m, dict)) // 4 + 1


class SimulatedGpu:
    """The server: FIFO admission to ``slots``, time in a slot from the token counts, counters for ``/stats``."""

    def __init__(self, config: GpuConfig) -> None:
        self.config = config
        self.reply: Reply | None = _import(config.reply) if config.reply else None
        self.slots = config.slots
        """Slots now (``halve_after_s`` halves them)."""
        self._free = config.slots
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._started = time.monotonic()
        self._completion_times: list[float] = []
        self._latencies: list[float] = []
        self._completion_tokens: list[int] = []
        self._arrival_times: list[float] = []
        self._bucket = max(config.rate_limit_rps, 1.0)  # tokens; the bucket holds one second's worth
        self._bucket_at = time.monotonic()
        self._halved_at: float | None = None
        self.counts = {
            "requests": 0,
            "in_flight": 0,
            "queued": 0,
            "max_queued": 0,
            "completed": 0,
            "failures": 0,
            "rate_limited": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        self.busy_slot_s = 0.0
        self._ids = 0

    def app(self) -> web.Application:
        """The aiohttp application serving the routes."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        return app

    def stats(self, times: bool = False) -> dict[str, Any]:
        """Counters, busy slot-seconds, the capacity, and (with ``times``) each request's arrival and each
        completion's time since start."""
        elapsed = time.monotonic() - self._started
        stats: dict[str, Any] = {
            **self.counts,
            "slots": self.slots,
            "busy_slot_seconds": round(self.busy_slot_s, 3),
            "elapsed_s": round(elapsed, 3),
            "utilization": round(self.busy_slot_s / (self.slots * elapsed), 4) if elapsed else 0.0,
            "config": asdict(self.config),
            "halved_at_s": None if self._halved_at is None else round(self._halved_at, 4),
        }
        if times:
            stats["arrival_times"] = [round(t, 4) for t in self._arrival_times]
            stats["completion_times"] = [round(t, 4) for t in self._completion_times]
            stats["latencies"] = [round(t, 4) for t in self._latencies]
            stats["completion_token_counts"] = self._completion_tokens
        return stats

    def _over_rate_limit(self) -> float | None:
        """Takes a token of the rate limit's bucket; None if there was one, else the seconds until the next."""
        rate = self.config.rate_limit_rps
        if not rate:
            return None
        now = time.monotonic()
        self._bucket = min(max(rate, 1.0), self._bucket + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if self._bucket >= 1.0:
            self._bucket -= 1.0
            return None
        return (1.0 - self._bucket) / rate

    def _halve(self) -> None:
        """Lose half the slots: requests in them finish, but freed slots beyond the new count are not reused."""
        lost = self.slots - self.slots // 2
        self.slots -= lost
        self._free -= lost
        self._halved_at = time.monotonic() - self._started

    async def _acquire(self) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.counts["queued"] += 1
        self.counts["max_queued"] = max(self.counts["max_queued"], self.counts["queued"])
        try:
            await waiter
        finally:
            self.counts["queued"] -= 1

    def _release(self) -> None:
        self._free += 1  # below zero after the slots halved, until enough requests left them
        while self._free > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a client that hung up while queued left a cancelled waiter
                waiter.set_result(None)
                self._free -= 1

    async def _chat(self, request: web.Request) -> web.Response:
        counts = self.counts
        counts["requests"] += 1
        arrival = time.monotonic() - self._started
        self._arrival_times.append(arrival)
        if counts["requests"] == 1 and self.config.halve_after_s:
            asyncio.get_running_loop().call_later(self.config.halve_after_s, self._halve)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be JSON")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return _error(400, "the body must be a JSON object with a 'messages' list")
        config = self.config
        if config.rate_limit_rate and _draw(messages, config, f"429:{counts['requests']}") < config.rate_limit_rate:
            counts["rate_limited"] += 1
            return _error(429, "rate limited by the simulated GPU", {"Retry-After": str(config.retry_after_s)})
        if (wait := self._over_rate_limit()) is not None:
            counts["rate_limited"] += 1
            return _error(429, "over the simulated GPU's rate limit", {"Retry-After": f"{wait:.3f}"})
        wanted = output_length(messages, config)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        produced = min(wanted, limit) if limit else wanted
        prompt = prompt_tokens(messages)
        await self._acquire()
        counts["in_flight"] += 1
        seconds = prompt / config.prefill_tps + produced / config.decode_tps
        try:
            await asyncio.sleep(seconds)
        finally:
            counts["in_flight"] -= 1
            self.busy_slot_s += seconds
            self._release()
        if config.failure_rate and _draw(messages, config, f"500:{counts['requests']}") < config.failure_rate:
            counts["failures"] += 1
            return _error(500, "failure injected by the simulated GPU")
        counts["completed"] += 1
        counts["prompt_tokens"] += prompt
        counts["completion_tokens"] += produced
        completed = time.monotonic() - self._started
        self._completion_times.append(completed)
        self._latencies.append(completed - arrival)
        self._completion_tokens.append(produced)
        content = self.reply(body, produced) if self.reply else filler(produced)
        self._ids += 1
        return web.json_response(
            {
                "id": f"chatcmpl-{self._ids}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or config.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "length" if produced < wanted else "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": produced,
                    "total_tokens": prompt + produced,
                },
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "benchmarks"}
        return web.json_response({"object": "list", "data": [model]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(times=request.query.get("times") == "1"))


def filler(tokens: int) -> str:
    """``tokens`` words of text, about four characters per token."""
    return " ".join(["tok"] * tokens)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = "rate_limit_error" if status == 429 else "server_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": status}}, status=status, headers=headers
    )


def _import(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


async def serve(config: GpuConfig, port: int = 0, announce: Callable[[str], None] = print) -> None:
    """Serve on 127.0.0.1:``port`` (0: a free one) until cancelled; announces the base URL once listening."""
    runner = web.AppRunner(SimulatedGpu(config).app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=8192)
    await site.start()
    announce(f"listening on http://127.0.0.1:{runner.addresses[0][1]}/v1")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@contextmanager
def serve_in_process(config: GpuConfig) -> Iterator[str]:
    """Run the simulated GPU in a child process; yields its OpenAI base URL, stops it on exit."""
    args = [sys.executable, __file__, *_to_flags(config)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the simulated GPU did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def fetch_stats(base_url: str, times: bool = False) -> dict[str, Any]:
    """``GET /stats`` of the simulated GPU serving ``base_url``."""
    url = base_url.removesuffix("/").removesuffix("/v1") + "/stats" + ("?times=1" if times else "")
    with urllib.request.urlopen(url) as response:
        return json.load(response)


class Meter:
    """What the simulated GPU did inside a ``with`` block: requests completed, completion tokens, and the span
    from the first request's arrival to the last completion (so a client's start-up does not count); each
    arrival, and each completion's time, latency and output tokens; requests answered 429."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.completed = 0
        self.completion_tokens = 0
        self.seconds = 0.0
        self.completion_times: list[float] = []
        self.arrival_times: list[float] = []
        self.latencies: list[float] = []
        self.completion_token_counts: list[int] = []
        self.rate_limited = 0
        self.halved_at_s: float | None = None

    def __enter__(self) -> Meter:
        self._before = fetch_stats(self.base_url, times=True)
        return self

    def __exit__(self, *exc_info: object) -> None:
        after = fetch_stats(self.base_url, times=True)
        before = self._before
        self.completed = after["completed"] - before["completed"]
        self.completion_tokens = after["completion_tokens"] - before["completion_tokens"]
        arrivals = self.arrival_times = after["arrival_times"][len(before["arrival_times"]) :]
        done = len(before["completion_times"])
        self.completion_times = after["completion_times"][done:]
        self.latencies = after["latencies"][done:]
        self.completion_token_counts = after["completion_token_counts"][done:]
        self.rate_limited = after["rate_limited"] - before["rate_limited"]
        self.halved_at_s = after["halved_at_s"]
        if arrivals and self.completion_times:
            self.seconds = self.completion_times[-1] - arrivals[0]

    def rate(self, of: str = "completed") -> float:
        """``completed`` requests or ``completion_tokens`` per second over the span."""
        return getattr(self, of) / self.seconds if self.seconds else 0.0


def _to_flags(config: GpuConfig) -> list[str]:
    flags = []
    for item in fields(GpuConfig):
        value = getattr(config, item.name)
        if value is not None:
            flags += [f"--{item.name.replace('_', '-')}", str(value)]
    return flags


def parse_args(argv: list[str] | None = None) -> tuple[GpuConfig, int]:
    """The config and port given on the command line (one flag per :class:`GpuConfig` field)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    for item in fields(GpuConfig):
        kind = type(item.default) if item.default is not None else str
        parser.add_argument(f"--{item.name.replace('_', '-')}", type=kind, default=item.default)
    values = vars(parser.parse_args(argv))
    port = values.pop("port")
    return GpuConfig(**values), port


def main() -> None:
    config, port = parse_args()
    sys.path.insert(0, str(Path(__file__).parent))  # replies scripted by benchmark modules
    with suppress(KeyboardInterrupt):
        asyncio.run(serve(config, port, announce=lambda line: print(line, flush=True)))


if __name__ == "__main__":
    main()
