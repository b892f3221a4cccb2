"""``max_concurrency=auto`` and ``backend.max_concurrency``: a limit per backend server, end to end against the
project's test server (real Ray actors, real HTTP)."""

from __future__ import annotations

import json

import pytest

import matrix_core
from matrix_core import ConfigError
from matrix_core.testing import FakeOpenAIServer

ROWS = 120


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "text": f"question {i}"}) + "\n" for i in range(ROWS)))
    return path


def run(server: FakeOpenAIServer, rows, tmp_path, *overrides: str) -> matrix_core.RunMetrics:
    return matrix_core.run(
        "inference",
        input=str(rows),
        output=str(tmp_path / "out.jsonl"),
        quiet=True,
        overrides=[f"backend.base_url={server.base_url}", "backend.model=fake-model", *overrides],
    )


def test_auto_limits_the_servers_requests_and_reports_the_limit_over_time(ray_session, rows, tmp_path):
    with FakeOpenAIServer(latency_s=0.02, slots=4, output_tokens=4).in_thread() as server:
        metrics = run(server, rows, tmp_path, "run.max_concurrency=auto", "run.concurrency_ceiling=6")
        stats = server.stats()
    assert metrics.status == {"success": ROWS}
    assert stats["max_in_flight"] <= 6, "the ceiling bounds the server's requests"
    [report] = metrics.engine.concurrency
    assert report.server == f"{server.base_url} (fake-model)" and report.mode == "auto"
    assert 1 <= report.limit <= 6 and report.history, "the limit over time is kept"
    assert all(1 <= limit <= 6 for _, limit, _ in report.history)
    assert metrics.engine.peak_in_flight <= 6, "with auto, the ceiling bounds the tasks in flight too"
    on_disk = json.loads((tmp_path / "out.metrics.json").read_text())
    assert on_disk["concurrency"][0]["mode"] == "auto"


def test_a_fixed_backend_concurrency_is_the_servers_limit(ray_session, rows, tmp_path):
    with FakeOpenAIServer(latency_s=0.01, output_tokens=4).in_thread() as server:
        metrics = run(server, rows, tmp_path, "backend.max_concurrency=3", "run.max_concurrency=50")
        stats = server.stats()
    assert metrics.status == {"success": ROWS}
    assert stats["max_in_flight"] == 3
    [report] = metrics.engine.concurrency
    assert (report.mode, report.limit) == ("3", 3)


def test_a_fixed_run_concurrency_keeps_no_server_limit(ray_session, rows, tmp_path):
    with FakeOpenAIServer(latency_s=0.01, output_tokens=4).in_thread() as server:
        metrics = run(server, rows, tmp_path, "run.max_concurrency=7")
        stats = server.stats()
    assert stats["max_in_flight"] <= 7 and metrics.engine.concurrency == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.max_concurrency=lots", "run.max_concurrency: must be a number or auto, got 'lots'"),
        ("backend.max_concurrency=0", "backend.max_concurrency: must be at least 1, got 0"),
        ("run.concurrency_ceiling=0", "run.concurrency_ceiling: must be at least 1, got 0"),
    ],
)
def test_a_concurrency_that_is_neither_a_number_nor_auto_is_one_line(override, message):
    with pytest.raises(ConfigError) as caught:
        matrix_core.resolve_config("inference", overrides=["backend.type=openai", "backend.base_url=x", override])
    assert str(caught.value) == f"override #3: {message}"
