"""Honest resume: ``--retry-errors`` runs failed tasks again, and ``--resume`` refuses to continue a run whose input
or settings changed (``<stem>.run.json``) unless ``--force``."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner

from matrix_core import config
from matrix_core.cli import cli
from matrix_core.engine.run import run_workflow
from matrix_core.errors import MatrixError, UsageError
from matrix_core.hookspecs import hookimpl
from matrix_core.sinks import Sink
from matrix_core.testing import FakeOpenAIServer, register_plugin

ROWS = [{"id": f"q{i}", "text": f"question {'bad' if i % 3 == 0 else 'good'} {i}"} for i in range(12)]


def write_input(path: Path, rows: list[dict] = ROWS) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def failing_bad_questions(body: dict) -> str:
    text = body["messages"][-1]["content"]
    if "bad" in text:
        raise RuntimeError("this server cannot answer that")
    return f"answer to {text}"


def run(server: FakeOpenAIServer, source: Path, output: Path, *args: str):
    return CliRunner().invoke(
        cli,
        [
            "run", "inference", "-i", str(source), "-o", str(output), "-q", f"backend.base_url={server.base_url}",
            "backend.model=fake-model", "run.max_retries=0", *args,
        ],
    )  # fmt: skip


def records(output: Path) -> list[dict]:
    if output.suffix == ".parquet":
        return pq.read_table(output).to_pylist()
    return [json.loads(line) for line in output.read_text().splitlines()]


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("sink", ["jsonl", "parquet"])
def test_retry_errors_runs_the_failed_tasks_again_and_each_id_stays_once(ray_session, tmp_path, sink):
    source, output = write_input(tmp_path / "in.jsonl"), tmp_path / f"out.{sink}"
    with FakeOpenAIServer(reply=failing_bad_questions).in_thread() as failing:
        assert run(failing, source, output, f"output.sink={sink}").exit_code == 0
    first = {record["id"]: record["status"] for record in records(output)}
    failed = {row["id"] for row in ROWS if "bad" in row["text"]}
    assert {id for id, status in first.items() if status == "error"} == failed and len(first) == 12

    with FakeOpenAIServer().in_thread() as healthy:  # another address: where the backend answers may change
        result = run(healthy, source, output, f"output.sink={sink}", "--resume", "--retry-errors")
    assert result.exit_code == 0, result.output
    ids = [record["id"] for record in records(output)]
    assert sorted(ids) == sorted(row["id"] for row in ROWS), "every id exactly once"
    assert {record["status"] for record in records(output)} == {"success"}
    asked = {request.body["messages"][-1]["content"] for request in healthy.requests if request.body}
    assert asked == {row["text"] for row in ROWS if row["id"] in failed}, "only the failed tasks ran again"
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert (metrics["skipped_finished"], metrics["admitted"]) == (8, 4)
    assert "step failed" in (tmp_path / "out.log").read_text(), "the first run's failing steps were logged"
    assert sorted(child.name for child in tmp_path.iterdir()) == sorted(
        ["in.jsonl", output.name, "out.metrics.json", "out.run.json", "out.log", "out.timeline.jsonl"]
    ), "no temporary file or journal is left"


def test_retry_errors_also_reruns_tasks_the_workflow_did_not_keep(toy, tmp_path):
    source = write_input(tmp_path / "in.jsonl", [{"id": f"t{i}"} for i in range(4)])

    def run_toy(*overrides: str) -> dict:
        items = [f"input.path={source}", f"output.path={tmp_path / 'out.jsonl'}", "backend.type=toy.null"]
        items += ["run.quiet=true", "toy.keep_errors=false", "run.max_retries=0"]
        workflow = toy.registry.get("orchestrators", "toy")
        resolved = config.resolve(workflow, toy.registry, config.parse_overrides([*items, *overrides]))
        return run_workflow(resolved, toy.registry)

    run_toy("agents.c.always_fail_ids=[t1]")
    dropped = tmp_path / "out.dropped.jsonl"
    assert [json.loads(line)["status"] for line in dropped.read_text().splitlines()] == ["error"]
    metrics = run_toy("run.resume=true", "run.retry_errors=true", "run.force=true")  # the failing knob changed
    assert (metrics.engine.skipped_finished, metrics.engine.admitted) == (3, 1)
    assert dropped.read_text() == ""
    assert sorted(r["id"] for r in records(tmp_path / "out.jsonl")) == ["t0", "t1", "t2", "t3"]


def test_retry_errors_and_force_without_resume_are_usage_errors(tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    for flag in ("--retry-errors", "--force"):
        args = ["-i", str(source), "-o", str(tmp_path / "o.jsonl"), "backend.base_url=http://x/v1", flag]
        result = CliRunner().invoke(cli, ["run", "inference", *args])
        assert result.exit_code == UsageError.exit_code
        assert one_line_error(result) == f"Error: {flag} continues a run: pass it with --resume"


class AppendOnlySink(Sink):
    """Appends; cannot remove records."""

    suffix = ".log"

    def finished_ids(self):
        return iter(())

    def write(self, record):
        pass

    def close(self):
        pass


class AppendOnlyPlugin:
    @hookimpl
    def matrix_register_sinks(self, register):
        register("append-only", AppendOnlySink)


def test_retry_errors_with_a_sink_that_cannot_remove_records_is_one_line(tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    with register_plugin(AppendOnlyPlugin(), name="append"):
        result = CliRunner().invoke(
            cli,
            [
                "run", "inference", "-i", str(source), "-o", str(tmp_path / "o.log"), "backend.base_url=http://x/v1",
                "output.sink=append-only", "--resume", "--retry-errors",
            ],
        )  # fmt: skip
    assert result.exit_code == MatrixError.exit_code
    assert one_line_error(result) == (
        "Error: --retry-errors: sink 'append-only' (test_resume:AppendOnlySink) cannot remove records"
    )


@pytest.fixture
def finished_run(ray_session, tmp_path):
    """A finished run over 4 rows: its server, input and output."""
    source, output = write_input(tmp_path / "in.jsonl", ROWS[:4]), tmp_path / "out.jsonl"
    with FakeOpenAIServer().in_thread() as server:
        result = run(server, source, output, "inference.system_prompt=Be brief.", "backend.api_key=sk-test-SECRET")
        assert result.exit_code == 0, result.output
        yield server, source, output


def test_resume_refuses_changed_settings_in_one_line_and_force_goes_on(finished_run, tmp_path):
    server, source, output = finished_run
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()}
    result = run(server, source, output, "--resume", "inference.system_prompt=Be kind.")
    assert result.exit_code == 1
    assert one_line_error(result) == (
        'Error: --resume: inference.system_prompt changed since the run began ("Be brief." -> "Be kind."); '
        "pass --force to resume anyway"
    )
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before, "untouched"

    several = run(
        server, source, output, "--resume", "inference.system_prompt=x", "backend.model=m2", "input.id_key=text",
        "inference.sampling.max_tokens=3",
    )  # fmt: skip
    assert one_line_error(several) == (
        'Error: --resume: backend.model ("fake-model" -> "m2"), inference.sampling.max_tokens (null -> 3), '
        'inference.system_prompt ("Be brief." -> "x") and 1 more changed since the run began; '
        "pass --force to resume anyway"
    )

    forced = run(server, source, output, "--resume", "--force", "inference.system_prompt=Be kind.")
    assert forced.exit_code == 0, forced.output
    stored = json.loads((tmp_path / "out.run.json").read_text())
    assert stored["settings"]["inference.system_prompt"] == "Be kind.", "the fingerprint now is the new one"
    assert run(server, source, output, "--resume", "inference.system_prompt=Be kind.").exit_code == 0


def test_resume_refuses_a_changed_input_but_goes_on_to_rows_added_at_its_end(finished_run, tmp_path):
    server, source, output = finished_run
    changed = [dict(ROWS[0], text="another question"), *ROWS[1:4]]
    write_input(source, changed)
    result = run(server, source, output, "--resume", "inference.system_prompt=Be brief.")
    assert result.exit_code == 1
    assert one_line_error(result) == (
        f"Error: --resume: the input changed since the run began ({source}); pass --force to resume anyway"
    )
    write_input(source, ROWS[:6])
    grown = run(server, source, output, "--resume", "inference.system_prompt=Be brief.")
    assert grown.exit_code == 0, grown.output
    assert sorted(record["id"] for record in records(output)) == sorted(row["id"] for row in ROWS[:6])


def test_resume_accepts_other_run_and_output_settings(finished_run, tmp_path):
    server, source, output = finished_run
    moved = tmp_path / "elsewhere" / "moved.jsonl"
    moved.parent.mkdir()
    output.rename(moved)
    (tmp_path / "out.run.json").rename(moved.with_name("moved.run.json"))
    write_input(source, ROWS[:5])
    result = run(
        server, source, moved, "--resume", "inference.system_prompt=Be brief.", "run.max_concurrency=3",
        "run.max_retries=5", "agents.model.replicas=2", "input.skip_bad_rows=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(record["id"] for record in records(moved)) == [row["id"] for row in ROWS[:5]]


def test_no_secret_is_written_in_the_fingerprint(finished_run, tmp_path):
    text = (tmp_path / "out.run.json").read_text()
    assert "sk-test-SECRET" not in text and '"backend.api_key"' not in text
    stored = json.loads(text)
    assert stored["settings"]["inference.system_prompt"] == "Be brief."
    assert stored["input"]["size"] == (tmp_path / "in.jsonl").stat().st_size


def test_resume_over_a_sharded_compressed_input_runs_each_new_row_once(ray_session, tmp_path):
    rows = [{"id": f"r{index}", "text": f"question {index}"} for index in range(600)]
    source, output = tmp_path / "in.jsonl.zst", tmp_path / "out.jsonl"
    compressor = zstandard.ZstdCompressor()
    source.write_bytes(compressor.compress("".join(json.dumps(row) + "\n" for row in rows[:400]).encode()))
    with FakeOpenAIServer().in_thread() as server:
        assert run(server, source, output, "run.partitions=2").exit_code == 0
        with source.open("ab") as file:  # the input grows by a frame: not a change
            file.write(compressor.compress("".join(json.dumps(row) + "\n" for row in rows[400:]).encode()))
        resumed = run(server, source, output, "--resume", "run.partitions=3")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(record["id"] for record in records(output)) == sorted(row["id"] for row in rows)
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert (metrics["tasks"], metrics["engine"]["skipped_finished"]) == (200, 400)
