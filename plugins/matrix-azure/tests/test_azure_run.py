"""`matrix run inference backend.type=azure` end to end, as a user runs it: the `matrix` command in its own process
with the key in its environment, its own local Ray, real actors, and the test server playing Azure OpenAI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from matrix_core.testing import FakeOpenAIServer

KEY = "azure-run-key-7e57"
DEPLOYMENT = "gpt-4o-run"


def content_filter(body: dict[str, Any]) -> str | None:
    """Refuses prompts that say ``forbidden``; cuts the answers to prompts that say ``unsafe``."""
    text = json.dumps(body["messages"])
    return "prompt" if "forbidden" in text else "completion" if "unsafe" in text else None


def matrix_run(tmp_path: Path, rows: list[dict[str, Any]], *overrides: str) -> subprocess.CompletedProcess[str]:
    """``matrix run inference`` over ``rows`` into ``tmp_path/out.jsonl``, with the Azure key in its environment."""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    command = [
        sys.executable, "-m", "matrix_core", "run", "inference", "-i", str(tmp_path / "in.jsonl"),
        "-o", str(tmp_path / "out.jsonl"), "-q", "backend.type=azure", *overrides,
    ]  # fmt: skip
    environment = {**os.environ, "AZURE_OPENAI_API_KEY": KEY, "MATRIX_STRICT_PLUGINS": "1"}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


def test_a_run_with_content_filtered_prompts_and_a_rate_limit(tmp_path):
    rows = [{"id": f"q{i}", "text": f"question number {i}"} for i in range(4)]
    rows += [{"id": "blocked", "text": "a forbidden question"}, {"id": "cut", "text": "an unsafe question"}]
    output = tmp_path / "out.jsonl"
    # One start-up check, then the first chat is rate limited for 50 ms (Azure's header) and retried.
    server = FakeOpenAIServer(
        models=[DEPLOYMENT], output_tokens=4, content_filter=content_filter, script=[200, 429], retry_after_s=0.05,
        retry_after_headers=["retry-after-ms"],
    )  # fmt: skip
    with server.in_thread():
        result = matrix_run(
            tmp_path, rows, f"backend.endpoint={server.azure_endpoint}", f"backend.deployment={DEPLOYMENT}",
            "inference.sampling.max_tokens=3", "run.max_retries=2",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "6 tasks (2 filtered, 4 success)" in result.stderr

    records = {record["id"]: record for record in map(json.loads, output.read_text().splitlines())}
    assert {record_id: (r["status"], r["reason"]) for record_id, r in records.items()} == {
        **{f"q{i}": ("success", "") for i in range(4)},
        "blocked": ("filtered", "content_filter"),
        "cut": ("filtered", "content_filter"),
    }
    assert records["q2"]["response"] == "question number 2"
    assert records["q2"]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3}
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["status_reason"] == {"success": 4, "filtered:content_filter": 2}

    assert server.stats()["rate_limited"] == 1
    for request in server.requests:
        assert (request.method, request.path) == ("POST", f"/openai/deployments/{DEPLOYMENT}/chat/completions")
        assert request.query == {"api-version": "2024-10-21"}
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers
    prompts = [json.dumps(request.body["messages"]) for request in server.requests]
    assert sum("forbidden" in prompt for prompt in prompts) == 1, "a blocked prompt is never sent again"
    assert sum("unsafe" in prompt for prompt in prompts) == 1
    assert len(server.requests) == 1 + 6 + 1  # the start-up check, one chat per row, the retried 429
    # Azure's retry-after-ms says when to come back: a rate limit, not an outage, so the deployment is not probed
    assert server.stats()["probes"] == 0

    shown = result.stdout + result.stderr + "".join(path.read_text() for path in tmp_path.glob("out*"))
    assert KEY not in shown


def test_a_deployment_that_does_not_exist_fails_the_run_at_start_up_in_one_line(tmp_path):
    rows = [{"id": "a", "text": "hi"}, {"id": "b", "text": "yo"}]
    with FakeOpenAIServer(models=[DEPLOYMENT]).in_thread() as server:
        endpoint = server.azure_endpoint
        result = matrix_run(tmp_path, rows, f"backend.endpoint={endpoint}", "backend.deployment=gpt-4o-typo")
    assert result.returncode == 1
    # Ray's own notice of its token authentication may come first.
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: {endpoint}/openai/deployments/gpt-4o-typo answered HTTP 404: "
        "The API deployment for this resource does not exist."
    ]
    assert "Hint: check backend.endpoint, backend.deployment" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(server.requests) == 1, "one start-up check, no task sent"
    assert not (tmp_path / "out.jsonl").exists()
