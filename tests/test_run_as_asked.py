"""Runs do what the user asked: the concurrency asked for reaches the server, a cap is named, the engine is the one
place that retries (waiting out ``Retry-After``), and a backend outage pauses the run instead of failing its tasks.

Real Ray actors against the project's test server, counted at the server; only the settings a user would type.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer


def write_rows(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i}"}) + "\n" for i in range(count)))
    return path


def run_inference(server: FakeOpenAIServer, tmp_path: Path, rows: int, *options: str) -> tuple[Any, Path]:
    output = tmp_path / "out.jsonl"
    args = ["run", "inference", "-i", str(write_rows(tmp_path / "in.jsonl", rows)), "-o", str(output), "-q"]
    result = CliRunner().invoke(cli, [*args, f"backend.base_url={server.base_url}", *options])
    return result, output


def records(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def metrics_of(output: Path) -> dict[str, Any]:
    return json.loads(output.with_name("out.metrics.json").read_text())


def test_the_server_sees_the_concurrency_asked_for(ray_session, tmp_path):
    """500 in flight with defaults only: no per-actor worker limit, no connection pool limit below it."""
    with FakeOpenAIServer(latency_s=2.0, record=False).in_thread() as server:
        result, output = run_inference(server, tmp_path, 1000, "run.max_concurrency=500")
    assert result.exit_code == 0, result.output
    assert server.stats()["max_in_flight"] == 500
    assert len(records(output)) == 1000
    metrics = metrics_of(output)
    assert metrics["caps"] == [] and "cap" not in result.output
    assert metrics["most_steps_at_once"]["model"] == 500


def test_a_cap_the_user_set_is_named_once_and_reported_when_reached(ray_session, tmp_path):
    with FakeOpenAIServer(latency_s=0.2).in_thread() as server:
        result, output = run_inference(
            server, tmp_path, 60, "run.max_concurrency=40", "agents.model.max_in_flight=8", "run.quiet=false"
        )
    assert result.exit_code == 0, result.output
    assert server.stats()["max_in_flight"] == 8
    [cap] = metrics_of(output)["caps"]
    assert cap == {
        "role": "model",
        "setting": "agents.model.max_in_flight=8 (x 1 actors)",
        "limit": 8,
        "asked": 40,
        "reached": True,
    }
    lines = result.output.splitlines()
    assert sum("cap: agents.model.max_in_flight=8" in line for line in lines) == 1, result.output
    assert "cap reached: agents.model.max_in_flight=8 (x 1 actors) held role 'model' at 8 at once" in result.output


def test_each_attempt_is_one_request_and_retry_after_is_waited_out(ray_session, tmp_path):
    with FakeOpenAIServer(script=[429, 500], retry_after_s=0.6).in_thread() as server:
        result, output = run_inference(server, tmp_path, 1, "run.retry_backoff_s=0.01", "run.max_retries=2")
    assert result.exit_code == 0, result.output
    assert [record["status"] for record in records(output)] == ["success"]
    chats = [request for request in server.requests if request.path.endswith("/chat/completions")]
    attempts = [request for request in chats if request.body["messages"][-1]["content"] == "row 0"]
    assert len(attempts) == 3, "a 429, a 500, then the answer: one request per attempt"
    assert attempts[1].received_at - attempts[0].received_at >= 0.6, "the 429's Retry-After was waited out"
    assert metrics_of(output)["retries"] == 2


def test_a_rate_limits_refusal_is_an_answer_not_an_outage(ray_session, tmp_path):
    """A 429 with Retry-After says the server is up and pacing its clients: no probe (it would spend the rate
    limit's tokens and be refused too), no pause; the step waits the time asked and goes again."""
    with FakeOpenAIServer(script=[429, 429], retry_after_s=0.3).in_thread() as server:
        result, output = run_inference(server, tmp_path, 1, "run.retry_backoff_s=0.01", "run.max_retries=2")
        probes = server.stats()["probes"]
    assert result.exit_code == 0, result.output
    assert [record["status"] for record in records(output)] == ["success"]
    assert probes == 0
    metrics = metrics_of(output)
    assert metrics["backend_outages"] == 0 and metrics["retries"] == 2


def test_a_step_that_keeps_failing_costs_one_request_per_attempt(ray_session, tmp_path):
    def refuse_row_3(body: dict[str, Any]) -> str | None:
        if body["messages"][-1]["content"] == "row 3":
            raise RuntimeError("this prompt breaks the server")
        return None

    with FakeOpenAIServer(reply=refuse_row_3).in_thread() as server:
        result, output = run_inference(server, tmp_path, 5, "run.retry_backoff_s=0.01")
    assert result.exit_code == 0, result.output
    status = {record["id"]: record["status"] for record in records(output)}
    assert status == {"r0": "success", "r1": "success", "r2": "success", "r3": "error", "r4": "success"}
    assert server.stats()["failures"] == 1 + 3, "the first try and run.max_retries=3 retries, nothing more"
    assert metrics_of(output)["backend_outages"] == 0, "the server answered its probe: the request failed, not it"


def break_server_after(server: FakeOpenAIServer, requests: int, how: str, down_s: float):
    """A ``reply`` that, at the ``requests``-th chat, takes the server down for ``down_s`` seconds: stopped (connections
    refused) or answering every request with HTTP 503; then it comes back at the same address."""
    seen = [0]

    async def outage() -> None:
        if how == "stopped":
            await server.stop()
            await asyncio.sleep(down_s)
            await server.start()
        else:
            server.outage = True
            await asyncio.sleep(down_s)
            server.outage = False

    def reply(body: dict[str, Any]) -> None:
        seen[0] += 1
        if seen[0] == requests:
            asyncio.get_running_loop().create_task(outage())

    return reply


@pytest.mark.parametrize("how", ["stopped", "503 storm"])
def test_an_outage_pauses_the_run_and_it_goes_on_by_itself(ray_session, tmp_path, how):
    server = FakeOpenAIServer(latency_s=0.05)
    server.reply = break_server_after(server, 20, how, down_s=2.0)
    with server.in_thread():
        result, output = run_inference(server, tmp_path, 80, "run.max_concurrency=8", "run.quiet=false")
    assert result.exit_code == 0, result.output
    done = records(output)
    assert sorted(record["id"] for record in done) == sorted(f"r{i}" for i in range(80)), "every id once"
    assert {record["status"] for record in done} == {"success"}, "no task ended error"
    metrics = metrics_of(output)
    assert metrics["backend_outages"] == 1 and metrics["paused_s"] > 0
    assert metrics["retries"] == 0, "steps that failed while the server was down spent no retries"
    assert "admission paused" in result.output and "admission resumed" in result.output


def test_an_outage_longer_than_the_timeout_stops_the_run_resumable(ray_session, tmp_path):
    server = FakeOpenAIServer(latency_s=0.05)
    server.reply = break_server_after(server, 10, "stopped", down_s=3600)
    with server.in_thread():
        result, output = run_inference(server, tmp_path, 40, "run.max_concurrency=4", "run.outage_timeout_s=2")
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: backend {server.base_url} answered nothing for 2s (")
    assert "Traceback" not in result.output
    first = records(output)
    assert first and {record["status"] for record in first} == {"success"}, "only finished tasks were written"

    with FakeOpenAIServer(port=server.port).in_thread() as back:  # the server back at its address
        result, output = run_inference(back, tmp_path, 40, "--resume")
    assert result.exit_code == 0, result.output
    done = records(output)
    assert sorted(record["id"] for record in done) == sorted(f"r{i}" for i in range(40)), "every id once"
    assert {record["status"] for record in done} == {"success"}
