"""`matrix run inference` end to end: real Ray actors against the real test server, with failures and 429s."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from matrix_core.cli import cli
from matrix_core.engine.timeline import read_lines
from matrix_core.testing import FakeOpenAIServer


@pytest.fixture
def server():
    with FakeOpenAIServer(
        output_tokens=8, failure_rate=0.1, rate_limit_rate=0.1, retry_after_s=0.01, seed=7
    ).in_thread() as running:
        yield running


def test_the_smallest_useful_run(ray_session, server, tmp_path):
    rows = [{"id": f"q{i}", "text": f"question number {i}"} for i in range(40)]
    rows.append({"id": "chat", "messages": [{"role": "user", "content": "hello there"}]})
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli,
        [
            "run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(output), "-q",
            f"backend.base_url={server.base_url}", "backend.model=fake-model", "run.max_retries=8",
            "run.retry_backoff_s=0.01", "backend.api_key=sk-test-secret", "inference.sampling.max_tokens=5",
            "inference.sampling.temperature=0.3", "agents.model.max_in_flight=8",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = {record["id"]: record for record in map(json.loads, output.read_text().splitlines())}
    assert set(records) == {row["id"] for row in rows}
    assert all(record["status"] == "success" for record in records.values())
    assert records["q3"]["response"].split()[:3] == ["question", "number", "3"]
    assert records["q3"]["finish_reason"] == "length"
    assert records["q3"]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5}
    stats = server.stats()
    assert stats["failures"] > 0 and stats["rate_limited"] > 0, "the run went through failures and 429s"
    assert stats["max_in_flight"] <= 8
    bodies = [request.body for request in server.requests if request.path.endswith("/chat/completions")]
    assert {body["temperature"] for body in bodies} == {0.3}
    assert {request.headers["authorization"] for request in server.requests} == {"Bearer sk-test-secret"}
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status"] == {"success": 41}
    assert metrics["tokens_out"] == 41 * 5
    points = [line for line in read_lines(tmp_path / "out.timeline.jsonl") if line["kind"] == "point"]
    assert sum(point["admitted"] for point in points) == 41
    assert sum(point["finished"].get("success", 0) for point in points) == 41
    assert sum(point["tokens_out"] for point in points) == 41 * 5
    assert sum(point["retries"] for point in points) == metrics["retries"] > 0
    assert sum(point["latency"]["model"]["steps"] for point in points if point["latency"]) == 41
    assert "sk-test-secret" not in output.read_text() + json.dumps(metrics) + result.output


def test_an_unreachable_server_fails_the_run_at_start_up_in_one_line(ray_session, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n{"id": "b", "text": "yo"}\n')
    args = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-q"]
    result = CliRunner().invoke(cli, [*args, "backend.base_url=http://127.0.0.1:9/v1"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "Error: http://127.0.0.1:9/v1: Connection error."
    assert "Traceback" not in result.output


def test_a_model_the_server_does_not_serve_fails_at_start_up(ray_session, server, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    args = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-q"]
    result = CliRunner().invoke(cli, [*args, f"backend.base_url={server.base_url}", "backend.model=llama-typo"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == f"Error: {server.base_url} does not serve model 'llama-typo'"
    assert "fake-model" in result.output


def test_a_server_failing_mid_run_is_an_error_per_task_and_the_run_goes_on(ray_session, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n{"id": "b", "text": "yo"}\n')
    args = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "-q"]
    with FakeOpenAIServer(failure_rate=1.0).in_thread() as failing:
        result = CliRunner().invoke(
            cli,
            [
                *args, f"backend.base_url={failing.base_url}", "run.max_retries=2", "run.retry_backoff_s=0.01",
            ],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["error", "error"]
    assert records[0]["reason"].startswith(f"{failing.base_url} answered HTTP 500")
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["retries"] == 2 * 2, "a backend failure is retried run.max_retries times"
    assert failing.stats()["requests"] == 2 * 3, "one request per attempt: the client itself does not retry"
    assert metrics["backend_outages"] == 0, "the server answered its probes: these requests failed, not the server"


def test_a_missing_base_url_is_one_line_before_any_actor_starts(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    result = CliRunner().invoke(cli, ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.startswith("Error: backend.base_url is not set")


def test_system_prompt_option(tmp_path):
    result = CliRunner().invoke(cli, ["run", "inference", "--system-prompt", "Be brief.", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "system_prompt: Be brief." in result.output


def test_a_role_backend_error_names_the_role(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "hi"}\n')
    args = ["run", "inference", "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl")]
    result = CliRunner().invoke(
        cli, [*args, "backend.base_url=http://x/v1", "agents.model.backend.api_key_env=NOPE_UNSET"]
    )
    assert result.exit_code == 2
    assert result.output.startswith(
        "Error: agents.model.backend.api_key_env: environment variable NOPE_UNSET is not set"
    )
