"""A stand-in for an inference server (vLLM's or SGLang's OpenAI-compatible server), for testing launch plans where
the real one cannot run: it takes the same flags and serves :class:`FakeOpenAIServer` on the given host and port.

Point a ``vllm`` or ``sglang`` backend at it with
``backend.server_command=[python, -m, matrix_core.testing.server_standin]``.
Besides the OpenAI routes it answers ``GET /health`` (503 until ``--standin-health-delay-s`` has passed) and
``GET /standin``: the command line it was started with, its pid, ``CUDA_VISIBLE_DEVICES``, its health polls and
where its key came from. Both stay open; every other route requires the key when it has one.

It takes a key the way the real servers do: ``--api-key KEY`` (both), ``api-key: KEY`` in the YAML file of
``--config FILE`` (SGLang), or the environment variable ``VLLM_API_KEY`` (vLLM), in that order.

Flags of its own (they pass through ``backend.engine_args`` like any server flag):

- ``--standin-health-delay-s S``: answer ``/health`` with 503 for S seconds (a model loading);
- ``--standin-latency-s S``: each chat waits S seconds;
- ``--standin-fail-start MESSAGE``: print MESSAGE and exit with code 3 instead of serving (a model that fails to
  load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml
from aiohttp import web

from matrix_core.testing.server import FakeOpenAIServer


class StandinServer(FakeOpenAIServer):
    """:class:`FakeOpenAIServer` on a given address, with an inference server's ``/health`` route."""

    open_paths = ("/health", "/standin")

    def __init__(self, argv: Sequence[str], health_delay_s: float, key_from: str | None = None, **knobs: Any) -> None:
        super().__init__(**knobs)
        self.argv = list(argv)
        self.key_from = key_from
        self.healthy_at = time.monotonic() + health_delay_s
        self.health_polls = 0

    async def serve(self, host: str, port: int) -> None:
        """Listen on ``host:port`` until the process is stopped."""
        app = web.Application(middlewares=self._middlewares())
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/health", self._health)
        app.router.add_get("/standin", self._standin)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._port = port
        print(f"stand-in server serving {self.models[0]} on {host}:{port}", flush=True)
        await asyncio.Event().wait()

    async def _health(self, request: web.Request) -> web.Response:
        self.health_polls += 1
        return web.Response(status=200 if time.monotonic() >= self.healthy_at else 503)

    async def _standin(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "argv": self.argv,
                "pid": os.getpid(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "health_polls": self.health_polls,
                "key_from": self.key_from,
            }
        )


def _key(api_key: str | None, config: str | None) -> tuple[str | None, str | None]:
    """The key and where it came from: ``--api-key``, else ``--config``'s ``api-key``, else ``VLLM_API_KEY``."""
    if api_key:
        return api_key, "argv"
    if config:
        with open(config) as file:
            from_file = (yaml.safe_load(file) or {}).get("api-key")
        if from_file:
            return str(from_file), "config"
    from_env = os.environ.get("VLLM_API_KEY")
    return (from_env, "env") if from_env else (None, None)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse an inference server's flags (vLLM's ``--model``, SGLang's ``--model-path``; others are accepted and
    ignored) and serve."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="server_standin")
    parser.add_argument("--model", "--model-path", dest="model", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tensor-parallel-size", "--tp", dest="tp", type=int, default=1)
    parser.add_argument("--standin-health-delay-s", type=float, default=0.0)
    parser.add_argument("--standin-latency-s", type=float, default=0.0)
    parser.add_argument("--api-key")
    parser.add_argument("--config")
    parser.add_argument("--standin-fail-start")
    options, _server_flags = parser.parse_known_args(argv)
    if options.standin_fail_start:
        print(options.standin_fail_start, flush=True)
        sys.exit(3)
    key, key_from = _key(options.api_key, options.config)
    server = StandinServer(
        argv,
        options.standin_health_delay_s,
        key_from,
        latency_s=options.standin_latency_s,
        models=[options.model],
        api_key=key,
    )
    asyncio.run(server.serve(options.host, options.port))


if __name__ == "__main__":
    main()
