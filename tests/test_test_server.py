"""The fake OpenAI-compatible server, over real sockets: answers, knobs, counters and recorded requests."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest

from matrix_core.testing import FakeOpenAIServer

CHAT = "/chat/completions"


def post(server: FakeOpenAIServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        server.base_url + CHAT,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_chat_answers_deterministically_with_usage():
    with FakeOpenAIServer(output_tokens=5).in_thread() as server:
        body = {"model": "m", "messages": [{"role": "system", "content": "be brief"}, *user("one two three")]}
        first, second = post(server, body), post(server, body)
    assert first["choices"][0]["message"]["content"] == "one two three one two"
    assert first["choices"][0]["finish_reason"] == "stop"
    assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert first["model"] == "m"
    assert first["choices"] == second["choices"]


def test_max_tokens_cuts_the_reply_and_n_gives_distinct_choices():
    with FakeOpenAIServer(output_tokens=8).in_thread() as server:
        answer = post(server, {"messages": user("a b c d"), "max_tokens": 3, "n": 2})
    texts = [choice["message"]["content"] for choice in answer["choices"]]
    assert texts == ["a b c", "b c d"]
    assert {choice["finish_reason"] for choice in answer["choices"]} == {"length"}
    assert answer["usage"]["completion_tokens"] == 6


def test_tools_and_the_word_tool_give_a_tool_call():
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    with FakeOpenAIServer().in_thread() as server:
        called = post(server, {"messages": user("use a Tool please"), "tools": [weather]})
        plain = post(server, {"messages": user("tools are nice"), "tools": [weather]})
    choice = called["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "test"}
    assert plain["choices"][0]["finish_reason"] == "stop"


def test_a_reply_script_can_answer_with_tool_calls():
    def script(body: dict[str, Any]) -> str | list[dict[str, Any]]:
        if body["messages"][-1]["role"] == "tool":
            return "done"
        return [{"name": "lookup", "arguments": {"id": 7}}, {"name": "save", "arguments": {}}]

    with FakeOpenAIServer(reply=script).in_thread() as server:
        called = post(server, {"messages": user("find seven")})
        answered = post(server, {"messages": [*user("find seven"), {"role": "tool", "content": "{}"}]})
    choice = called["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("lookup", {"id": 7}),
        ("save", {}),
    ]
    assert len({c["id"] for c in calls}) == 2
    assert answered["choices"][0]["message"]["content"] == "done"


def test_models_stats_and_recorded_requests():
    with FakeOpenAIServer(models=["a", "b"]).in_thread() as server:
        models = get(server.base_url + "/models")
        post(server, {"model": "a", "messages": user("hi")}, headers={"Authorization": "Bearer k"})
        stats = get(f"http://127.0.0.1:{server.port}/stats")
    assert [model["id"] for model in models["data"]] == ["a", "b"]
    assert stats == {
        "requests": 1, "in_flight": 0, "max_in_flight": 1, "failures": 0, "rate_limited": 0, "probes": 0, "recorded": 2
    }  # fmt: skip
    listing, chat = server.requests
    assert (listing.method, listing.path, listing.body) == ("GET", "/v1/models", None)
    assert (chat.method, chat.path) == ("POST", "/v1/chat/completions")
    assert chat.body == {"model": "a", "messages": user("hi")}
    assert chat.headers["authorization"] == "Bearer k"


def test_script_then_rates_answer_429_with_retry_after_and_500():
    with FakeOpenAIServer(script=[429, 500], retry_after_s=2.5).in_thread() as server:
        with pytest.raises(urllib.error.HTTPError) as limited:
            post(server, {"messages": user("x")})
        with pytest.raises(urllib.error.HTTPError) as failed:
            post(server, {"messages": user("x")})
        post(server, {"messages": user("x")})
        stats = server.stats()
    assert limited.value.code == 429
    assert limited.value.headers["Retry-After"] == "2.5"
    assert json.load(limited.value)["error"]["type"] == "rate_limit_error"
    assert failed.value.code == 500
    assert (stats["requests"], stats["rate_limited"], stats["failures"]) == (3, 1, 1)


def test_rates_are_drawn_from_the_seed():
    def statuses(seed: int) -> list[int]:
        codes = []
        with FakeOpenAIServer(failure_rate=0.3, rate_limit_rate=0.3, seed=seed, record=False).in_thread() as server:
            for _ in range(30):
                try:
                    post(server, {"messages": user("x")})
                    codes.append(200)
                except urllib.error.HTTPError as error:
                    codes.append(error.code)
            assert server.requests == []
        return codes

    first = statuses(seed=1)
    assert first == statuses(seed=1)
    assert {200, 429, 500} <= set(first)
    assert first != statuses(seed=2)


def test_bad_requests_are_answered_400():
    with FakeOpenAIServer().in_thread() as server:
        with pytest.raises(urllib.error.HTTPError) as no_messages:
            post(server, {"model": "m"})
        with pytest.raises(urllib.error.HTTPError) as streaming:
            post(server, {"messages": user("x"), "stream": True})
    assert no_messages.value.code == streaming.value.code == 400


def test_async_server_counts_requests_in_flight():
    async def scenario() -> dict[str, int]:
        async with FakeOpenAIServer(latency_s=0.5) as server, aiohttp.ClientSession() as session:

            async def one() -> None:
                async with session.post(server.base_url + CHAT, json={"messages": user("x")}) as response:
                    response.raise_for_status()

            requests = asyncio.gather(*(one() for _ in range(5)))
            deadline = time.monotonic() + 10
            while server.stats()["in_flight"] < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await requests
            return server.stats()

    stats = asyncio.run(scenario())
    assert (stats["requests"], stats["max_in_flight"], stats["in_flight"]) == (5, 5, 0)


def test_port_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeOpenAIServer().base_url


def test_reply_scripts_the_answers_and_its_errors_are_500s():
    def reply(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        if last == "fail":
            raise RuntimeError("as asked")
        return f"{body['messages'][0]['content']} says:\n  {last.upper()}"

    with FakeOpenAIServer(reply=reply).in_thread() as server:
        answer = post(server, {"messages": [{"role": "system", "content": "judge"}, *user("guilty or not")]})
        cut = post(server, {"messages": user("a b c d"), "max_tokens": 3})
        with pytest.raises(urllib.error.HTTPError) as failed:
            post(server, {"messages": user("fail")})
        stats = server.stats()
    assert answer["choices"][0]["message"]["content"] == "judge says:\n  GUILTY OR NOT"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 5
    assert cut["choices"][0]["message"]["content"] == "a b c"
    assert (cut["choices"][0]["finish_reason"], cut["usage"]["completion_tokens"]) == ("length", 3)
    assert failed.value.code == 500
    assert json.load(failed.value)["error"]["message"] == "scripted failure: as asked"
    assert (stats["requests"], stats["failures"]) == (3, 1)


def test_an_api_key_is_required_on_every_route_when_set():
    with FakeOpenAIServer(api_key="k-123", models=["a"]).in_thread() as server:
        refused = []
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k-123"}, {"api-key": "nope"}):
            with pytest.raises(urllib.error.HTTPError) as caught:
                post(server, {"messages": user("hi")}, headers=headers)
            refused.append(caught.value.code)
        with pytest.raises(urllib.error.HTTPError) as listing:
            get(server.base_url + "/models")
        bearer = post(server, {"messages": user("hi")}, headers={"Authorization": "Bearer k-123"})
        azure = urllib.request.Request(
            f"{server.azure_endpoint}/openai/deployments/a/chat/completions?api-version=2024-10-21",
            data=json.dumps({"messages": user("hi")}).encode(),
            headers={"Content-Type": "application/json", "api-key": "k-123"},
        )
        with urllib.request.urlopen(azure, timeout=10) as response:
            by_azure_header = json.load(response)
    assert refused == [401, 401, 401, 401] and listing.value.code == 401
    assert json.load(listing.value)["error"]["code"] == "invalid_api_key"
    assert bearer["choices"][0]["message"]["content"] and by_azure_header["choices"][0]["message"]["content"]
    assert server.unauthorized == 5
    assert [request.path for request in server.requests] == [
        "/v1/chat/completions", "/openai/deployments/a/chat/completions"
    ], "refused requests are counted, not recorded"  # fmt: skip
