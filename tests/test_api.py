"""``matrix_core.run`` from Python: the same path as ``matrix run``, returning the typed metrics."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import matrix_core
from matrix_core import ConfigError, RunMetrics, UsageError
from matrix_core.cli import cli
from matrix_core.testing import FakeOpenAIServer

ROWS = [{"id": f"q{i}", "text": f"question number {i}"} for i in range(12)]


@pytest.fixture
def server():
    with FakeOpenAIServer(output_tokens=4).in_thread() as running:
        yield running


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def test_a_run_from_python_returns_what_metrics_json_holds(ray_session, server, rows, tmp_path):
    output = tmp_path / "out.jsonl"
    metrics = matrix_core.run(
        "inference",
        input=str(rows),
        output=str(output),
        quiet=True,
        overrides=[f"backend.base_url={server.base_url}", "backend.model=fake-model", "run.max_concurrency=4"],
    )
    assert isinstance(metrics, RunMetrics)
    assert metrics.tasks == len(ROWS) and metrics.status == {"success": len(ROWS)}
    assert metrics.engine.admitted == len(ROWS) and metrics.engine.peak_in_flight <= 4
    assert RunMetrics.from_json(json.loads((tmp_path / "out.metrics.json").read_text())) == metrics
    assert sorted(json.loads(line)["id"] for line in output.read_text().splitlines()) == sorted(r["id"] for r in ROWS)


def test_python_and_the_cli_resolve_the_same_config(server, rows, tmp_path):
    settings = tmp_path / "run.yaml"
    settings.write_text("run:\n  max_concurrency: 7\n")
    overrides = [f"backend.base_url={server.base_url}", "backend.model=fake-model", "run.seed=3"]
    resolved = matrix_core.resolve_config("inference", overrides=overrides, config_files=[str(settings)])
    printed = CliRunner().invoke(cli, ["run", "inference", "-c", str(settings), "--print-config", *overrides])
    assert printed.exit_code == 0, printed.output
    assert resolved.to_yaml() == printed.output
    assert resolved.config.run.max_concurrency == 7 and str(resolved.origins["run.seed"]) == "override"


def test_mistakes_raise_the_cli_s_one_line_errors(rows, tmp_path):
    with pytest.raises(UsageError, match="unknown workflow"):
        matrix_core.run("no-such-workflow", input=str(rows))
    with pytest.raises(ConfigError) as caught:
        matrix_core.run("inference", input=str(rows), overrides=["run.max_concurrency=0"])
    assert str(caught.value) == "override #1: run.max_concurrency: must be at least 1, got 0"
    assert not (tmp_path / "inference.jsonl").exists()
