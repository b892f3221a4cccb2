"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks, with latency and failure knobs.

It answers deterministically (the reply is made of the last user message's words, or scripted by ``reply``), counts
what it served, and records every request it received, so that a test can assert on exactly what a client sent::

    async with FakeOpenAIServer(rate_limit_rate=0.5) as server:   # inside a running event loop
        client = AsyncOpenAI(base_url=server.base_url, api_key="k")
        azure = AsyncAzureOpenAI(azure_endpoint=server.azure_endpoint, api_version="2024-10-21", api_key="k")

    with FakeOpenAIServer().in_thread() as server:                 # from synchronous code
        urllib.request.urlopen(server.base_url + "/models")
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from matrix_core.backends.base import PROBE_MESSAGES

logger = logging.getLogger(__name__)

_TOOL_WORD = re.compile(r"\btool\b", re.IGNORECASE)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received: ``body`` is the parsed JSON (None when there was none), ``received_at`` the
    ``time.monotonic()`` of its arrival."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    query: Mapping[str, str] = field(default_factory=dict)
    received_at: float = 0.0


class FakeOpenAIServer:
    """An OpenAI-compatible server: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /stats``; and Azure
    OpenAI's ``POST /openai/deployments/{deployment}/chat/completions``, where ``models`` are the deployments that
    exist (any other answers 404 ``DeploymentNotFound``, as Azure does).

    :param latency_s: seconds each chat request waits before answering (failures included).
    :param slots: with ``latency_s``, how many requests the server works on at once, as a continuous-batching
        server's capacity: more wait in a FIFO queue first (their latency grows, the throughput does not). None: all.
    :param output_tokens: words in each choice's reply, before ``max_tokens`` cuts it.
    :param failure_rate: fraction of chat requests answered with HTTP 500.
    :param rate_limit_rate: fraction of chat requests answered with HTTP 429 and a ``Retry-After`` header.
    :param retry_after_s: the ``Retry-After`` value, in seconds (fractions allowed, as the ``openai`` SDK reads them).
    :param retry_after_headers: the headers a 429 tells its delay in: ``Retry-After`` (seconds) and/or Azure's
        ``retry-after-ms`` (milliseconds).
    :param script: HTTP statuses to answer the first chat requests with, in order, before the rates apply, so a test
        can ask for exactly "two 429s, then success".
    :param models: the model ids ``GET /v1/models`` lists.
    :param seed: seeds the draws of failures and rate limits, so the same requests in the same order fail alike.
    :param record: keep every request in :attr:`requests`; turn off in long benchmarks to bound memory.
    :param reply: scripts the answers: called with each chat request's parsed body, it returns the content of every
        choice (still cut to ``max_tokens`` words), or a list of tool calls ``[{"name": ..., "arguments": {...}}]``
        to answer with instead of text, so that a test can play several roles of a conversation. An
        exception it raises is answered with HTTP 500 and counted in ``failures``. Without it, the reply is made of
        the last user message's words.
    :param content_filter: plays Azure's content filter: called with each chat request's parsed body, it returns
        ``"prompt"`` to refuse the request (HTTP 400, code ``content_filter``), ``"completion"`` to answer with
        finish reason ``content_filter``, or None to let it through.
    :param port: the port to listen on (0: a free one). Once started, the server keeps its port: ``stop()`` then
        ``start()`` brings it back at the same address, as a restarted server would.
    :param api_key: plays a server that requires a key, as vLLM and SGLang do when given one: every route but those
        in :attr:`open_paths` answers HTTP 401 (counted in :attr:`unauthorized`, not recorded) unless the request
        carries ``Authorization: Bearer <key>`` or Azure's ``api-key: <key>``. None: no key is asked for.

    The engine's probe of a backend (:data:`~matrix_core.backends.base.PROBE_MESSAGES`, one token) is answered
    apart: never scripted, failed or delayed, not recorded, and counted in ``probes``, not ``requests``, so that the
    knobs above fail the requests a test names. Setting :attr:`outage` plays a server that fails everything (HTTP 503).
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        slots: int | None = None,
        output_tokens: int = 16,
        failure_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after_s: float = 0.01,
        script: Sequence[int] = (),
        models: Sequence[str] = ("fake-model",),
        seed: int = 0,
        record: bool = True,
        reply: Callable[[dict[str, Any]], str | list[dict[str, Any]]] | None = None,
        retry_after_headers: Sequence[str] = ("Retry-After",),
        content_filter: Callable[[dict[str, Any]], str | None] | None = None,
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.slots = slots
        self._slots: asyncio.Semaphore | None = None
        self.output_tokens = output_tokens
        self.failure_rate = failure_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after_s = retry_after_s
        self.models = list(models)
        self.record = record
        self.reply = reply
        self.retry_after_headers = list(retry_after_headers)
        self.content_filter = content_filter
        self.requests: list[RecordedRequest] = []
        """Every request received, oldest first (when ``record`` is on)."""
        self.outage = False
        """While True, every chat request, probes included, is answered HTTP 503 (a 5xx storm)."""
        self.api_key = api_key
        self.unauthorized = 0
        """Requests answered 401 for want of the key."""
        self._script = list(script)
        self._random = random.Random(seed)
        self._ids = itertools.count(1)
        self._counts = dict.fromkeys(
            ("requests", "in_flight", "max_in_flight", "failures", "rate_limited", "probes"), 0
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = port or None

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> FakeOpenAIServer:
        """Listen on a free port of 127.0.0.1 in the running event loop."""
        app = web.Application(middlewares=self._middlewares())
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)
        app.router.add_get("/stats", self._stats)
        # A short shutdown timeout: stopping should not wait out slow requests still in flight.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # A large backlog so that a benchmark opening a thousand connections at once is not refused.
        site = web.TCPSite(self._runner, "127.0.0.1", self._port or 0, backlog=4096)
        await site.start()
        self._port = self._runner.addresses[0][1]
        logger.debug("fake OpenAI server listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        """Stop listening and drop open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextmanager
    def in_thread(self) -> Iterator[FakeOpenAIServer]:
        """Run the server on its own event loop in a background thread, for synchronous callers."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-openai-server", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result()
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give a client, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        """The Azure OpenAI endpoint to give a client, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, int]:
        """Chat requests received, in flight now and at most, answered 5xx (``failures``) and 429, and probes."""
        return {**self._counts, "recorded": len(self.requests)}

    # --- routes ------------------------------------------------------------------------------------------------

    open_paths: tuple[str, ...] = ("/health",)
    """Routes answered without the key, as inference servers leave ``/health`` open to health checks."""

    def _middlewares(self) -> list[Any]:
        # No middleware without a key: the benchmarks' hot path stays as it was.
        return [self._authorize] if self.api_key is not None else []

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """Refuse a request without the key (when one is set) with HTTP 401, as vLLM and SGLang do."""
        if self.api_key is None or request.path in self.open_paths:
            return await handler(request)
        expected = self.api_key.encode()
        authorization = request.headers.get("Authorization", "")
        bearer = authorization[len("Bearer ") :].encode() if authorization.startswith("Bearer ") else b""
        azure = request.headers.get("api-key", "").encode()
        if hmac.compare_digest(bearer, expected) or hmac.compare_digest(azure, expected):
            return await handler(request)
        self.unauthorized += 1
        return _error(401, "a valid API key is required", code="invalid_api_key")

    async def _record(self, request: web.Request) -> Any:
        """The request's body, parsed; the request is recorded unless it is the engine's probe."""
        body = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = await request.text()
        if self.record and not _is_probe(body):
            headers, query = CIMultiDict(request.headers), dict(request.query)
            self.requests.append(RecordedRequest(request.method, request.path, headers, body, query, time.monotonic()))
        return body

    async def _chat(self, request: web.Request) -> web.Response:
        counts = self._counts
        body = await self._record(request)
        if self.outage:
            counts["failures"] += 1
            return _error(503, "the fake server is down")
        if _is_probe(body):
            counts["probes"] += 1
            return web.json_response(self._completion(body, "pong"))
        counts["requests"] += 1
        counts["in_flight"] += 1
        counts["max_in_flight"] = max(counts["max_in_flight"], counts["in_flight"])
        try:
            if self.latency_s > 0:
                await self._work()
            status = self._draw_status()
            if status == 429:
                counts["rate_limited"] += 1
                return _error(429, "rate limited by the fake server", self._retry_after())
            if status != 200:
                counts["failures"] += 1
                return _error(status, "failure injected by the fake server")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return _error(400, "the body must be a JSON object with a 'messages' list")
            if body.get("stream"):
                return _error(400, "the fake server does not stream")
            verdict = self.content_filter(body) if self.content_filter is not None else None
            if verdict == "prompt":
                return _content_filtered()
            try:
                scripted = self.reply(body) if self.reply is not None else None
            except Exception as error:  # the script asked for a failure: it is the answer, not a server bug
                counts["failures"] += 1
                return _error(500, f"scripted failure: {error}")
            completion = self._completion(body, scripted)
            if verdict == "completion":
                for choice in completion["choices"]:
                    choice["finish_reason"] = "content_filter"
            return web.json_response(completion)
        finally:
            counts["in_flight"] -= 1

    async def _work(self) -> None:
        """Take ``latency_s`` in one of the ``slots`` (waiting for one first, in arrival order)."""
        if self.slots is None:
            await asyncio.sleep(self.latency_s)
            return
        if self._slots is None:  # made here: it belongs to the server's event loop
            self._slots = asyncio.Semaphore(self.slots)
        async with self._slots:
            await asyncio.sleep(self.latency_s)

    async def _azure_chat(self, request: web.Request) -> web.Response:
        if request.match_info["deployment"] not in self.models:
            await self._record(request)
            message = "The API deployment for this resource does not exist."
            return _error(404, message, code="DeploymentNotFound")
        return await self._chat(request)

    def _retry_after(self) -> dict[str, str]:
        values = {"Retry-After": str(self.retry_after_s), "retry-after-ms": str(round(self.retry_after_s * 1000))}
        return {header: values[header] for header in self.retry_after_headers}

    def _draw_status(self) -> int:
        if self._script:
            return self._script.pop(0)
        draw = self._random.random()
        if draw < self.rate_limit_rate:
            return 429
        if draw < self.rate_limit_rate + self.failure_rate:
            return 500
        return 200

    def _completion(self, body: dict[str, Any], scripted: str | list[dict[str, Any]] | None) -> dict[str, Any]:
        messages = body["messages"]
        prompt = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        words = prompt.split() or ["ok"]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        tools = body.get("tools") or []
        choices, completion_tokens = [], 0
        for index in range(int(body.get("n") or 1)):
            message: dict[str, Any] = {"role": "assistant", "content": None}
            if isinstance(scripted, list):  # scripted tool calls: [{"name": ..., "arguments": {...}}, ...]
                message["tool_calls"] = [_scripted_call(call, next(self._ids)) for call in scripted]
                finish_reason = "tool_calls"
            elif tools and _TOOL_WORD.search(prompt):
                message["tool_calls"] = [_tool_call(tools[0], next(self._ids))]
                finish_reason = "tool_calls"
            elif scripted is not None:
                reply, content, finish_reason = scripted.split(), scripted, "stop"
                if limit is not None and len(reply) > limit:
                    reply, finish_reason = reply[:limit], "length"
                    content = " ".join(reply)
                message["content"] = content
                completion_tokens += len(reply)
            else:
                # Each choice starts one word further along, so that n > 1 gives distinct choices.
                reply = list(itertools.islice(itertools.cycle(words), index, index + self.output_tokens))
                finish_reason = "stop"
                if limit is not None and len(reply) > limit:
                    reply, finish_reason = reply[:limit], "length"
                message["content"] = " ".join(reply)
                completion_tokens += len(reply)
            choices.append({"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None})
        prompt_tokens = sum(len(_text(m.get("content")).split()) for m in messages)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.models[0],
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "matrix"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())


def _is_probe(body: Any) -> bool:
    return isinstance(body, dict) and body.get("messages") == PROBE_MESSAGES and body.get("max_tokens") == 1


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _scripted_call(call: dict[str, Any], number: int) -> dict[str, Any]:
    """A tool call a ``reply`` script asked for, as ``{"name": ..., "arguments": {...}}``."""
    arguments = json.dumps(call.get("arguments", {}))
    return {"id": f"call_{number}", "type": "function", "function": {"name": call["name"], "arguments": arguments}}


def _tool_call(tool: dict[str, Any], number: int) -> dict[str, Any]:
    """A call of ``tool`` with a placeholder for each required argument, chosen by its JSON-schema type."""
    function = tool.get("function", {})
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties", {})
    placeholders = {"string": "test", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    arguments = {
        name: placeholders.get(properties.get(name, {}).get("type")) for name in parameters.get("required", [])
    }
    return {
        "id": f"call_{number}",
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": json.dumps(arguments)},
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None, code: str | None = None) -> web.Response:
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}
    kind = kinds.get(status, "server_error")
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": code or status}}, status=status, headers=headers
    )


def _content_filtered() -> web.Response:
    """Azure's answer to a prompt its content filter blocks (here always for violence)."""
    error = {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": True, "severity": "medium"},
            },
        },
    }
    return web.json_response({"error": error}, status=400)
