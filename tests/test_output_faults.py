"""Faults at the output: a run checks its output before spending anything, stops in one line when a write fails
(keeping what was written for ``--resume``), holds its output alone, survives SIGKILL, and ends a task whose record
cannot be encoded as ``error`` instead of ending the run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from toy_workflow import ToyOrchestrator

from matrix_core import config
from matrix_core.cli import cli
from matrix_core.engine.output import OutputLock
from matrix_core.engine.run import run_workflow
from matrix_core.hookspecs import hookimpl
from matrix_core.testing import FakeOpenAIServer, register_plugin

ROWS = [{"id": f"q{i}", "text": f"question {i} " + "word " * 200} for i in range(60)]
IDS = sorted(row["id"] for row in ROWS)


def write_input(path: Path, rows: list[dict] = ROWS) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(server: FakeOpenAIServer, source: Path, output: Path, *args: str):
    return CliRunner().invoke(
        cli,
        [
            "run", "inference", "-i", str(source), "-o", str(output), "-q", f"backend.base_url={server.base_url}",
            "backend.model=fake-model", "run.max_retries=0", "run.max_concurrency=2", *args,
        ],
    )  # fmt: skip


def error_line(result) -> str:
    """The run's one ``Error:`` line (a ``Hint:`` line may follow it), with no traceback."""
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and result.exit_code != 0, result.output
    assert lines and lines[0].startswith("Error: ") and all(line.startswith("Hint: ") for line in lines[1:]), lines
    return lines[0]


def ids_in(output: Path) -> list[str]:
    """The ids of the output's records, each line whole JSON (no torn line)."""
    return sorted(json.loads(line)["id"] for line in output.read_text().splitlines())


def chats(server: FakeOpenAIServer) -> int:
    return sum(1 for request in server.requests if request.body)


def test_an_output_under_a_file_is_refused_in_one_line_before_any_request(tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    (tmp_path / "afile").write_text("not a directory")
    output = tmp_path / "afile" / "out.jsonl"
    with FakeOpenAIServer().in_thread() as server:
        result = run(server, source, output)
    assert error_line(result) == f"Error: cannot write {output}: {tmp_path / 'afile'} is not a directory"
    assert chats(server) == 0


def test_an_output_naming_a_directory_is_refused_in_one_line_before_any_request(tmp_path):
    source = write_input(tmp_path / "in.jsonl")
    (tmp_path / "out").mkdir()
    with FakeOpenAIServer().in_thread() as server:
        result = run(server, source, tmp_path / "out")
    assert error_line(result) == f"Error: cannot write {tmp_path / 'out'}: it is a directory"
    assert chats(server) == 0


def test_a_missing_output_directory_is_created(ray_session, tmp_path):
    source = write_input(tmp_path / "in.jsonl", ROWS[:3])
    output = tmp_path / "new" / "deeper" / "out.jsonl"
    with FakeOpenAIServer().in_thread() as server:
        result = run(server, source, output)
    assert result.exit_code == 0, result.output
    assert ids_in(output) == sorted(row["id"] for row in ROWS[:3])


def test_a_full_disk_stops_the_run_in_one_line_and_resume_finishes_every_id_once(ray_session, tmp_path, small_disk):
    many = [dict(row, id=f"{row['id']}-{copy}") for copy in range(4) for row in ROWS]  # ~1 MiB of records
    source, output = write_input(tmp_path / "in.jsonl", many), small_disk / "out.jsonl"
    with FakeOpenAIServer(output_tokens=200).in_thread() as server:
        result = run(server, source, output)
        assert error_line(result) == f"Error: cannot write {output}: No space left on device"
        assert chats(server) < len(many), "admission stopped: the rows left were never sent"
        assert len(ids_in_complete_lines(output)) > 0, "what was written stays"

        subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)  # space freed
        resumed = run(server, source, output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert ids_in(output) == sorted(row["id"] for row in many), "every id exactly once"


def ids_in_complete_lines(output: Path) -> list[str]:
    """Ids of the whole lines of a file whose last line may be torn."""
    lines = output.read_bytes().split(b"\n")[:-1]
    return [json.loads(line)["id"] for line in lines]


def test_an_output_directory_removed_mid_run_stops_it_and_resume_into_a_new_one_works(ray_session, tmp_path):
    source, output = write_input(tmp_path / "in.jsonl"), tmp_path / "out" / "out.jsonl"
    answered = []

    def remove_the_output_after_5(body: dict) -> str:
        answered.append(1)
        if len(answered) == 5:
            shutil.rmtree(output.parent)
        return "an answer"

    with FakeOpenAIServer(reply=remove_the_output_after_5).in_thread() as server:
        result = run(server, source, output, "output.fsync_interval_s=0")
    line = error_line(result)
    assert line.startswith(f"Error: cannot write {output.parent}"), line
    assert len(answered) < len(ROWS), "admission stopped"

    output.parent.mkdir()
    with FakeOpenAIServer().in_thread() as server:
        resumed = run(server, source, output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert ids_in(output) == IDS


def test_a_driver_killed_with_sigkill_resumes_to_every_id_once(ray_session, tmp_path):
    source, output = write_input(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    with FakeOpenAIServer(latency_s=0.2).in_thread() as server:
        driver = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("matrix")), "run", "inference", "-i", str(source), "-o",
                str(output), "-q", f"backend.base_url={server.base_url}", "backend.model=fake-model",
                "run.max_concurrency=2",
            ],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 180
            while not (output.exists() and output.read_bytes().count(b"\n") >= 3):
                assert driver.poll() is None, driver.stderr.read().decode() if driver.stderr else ""
                assert time.monotonic() < deadline, "no record within 180 s"
                time.sleep(0.1)
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            assert len(ids_in_complete_lines(output)) < len(ROWS), "killed mid-run"
            # at once: the killed run's writer may still be appending (Ray ends it within seconds); the new run's
            # writer waits for it (<stem>.writer.lock) before reading what is finished
            resumed = run(server, source, output, "--resume")
        finally:
            _kill_group(driver.pid)  # what Ray leaves of the killed run's private cluster
    assert resumed.exit_code == 0, resumed.output
    assert ids_in(output) == IDS, "every id exactly once, no torn line"


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def test_a_second_run_on_a_locked_output_is_refused_naming_the_first_runs_pid(ray_session, tmp_path):
    source, output = write_input(tmp_path / "in.jsonl", ROWS[:3]), tmp_path / "out.jsonl"
    with FakeOpenAIServer().in_thread() as server:
        with OutputLock(output):  # as a run in progress holds it
            result = run(server, source, output, "--resume")
            assert error_line(result) == f"Error: {output} is being written by another run (pid {os.getpid()})"
            assert chats(server) == 0
        assert run(server, source, output).exit_code == 0, "released: the next run goes"
    assert not (tmp_path / "out.lock").exists()
    assert ids_in(output) == sorted(row["id"] for row in ROWS[:3])


@dataclass
class UnencodableOrchestrator(ToyOrchestrator):
    """A toy task whose record holds a set (JSON has none) or a lone surrogate (UTF-8 has none) when its row
    says so."""

    def to_record(self) -> dict[str, Any]:
        record = super().to_record()
        if self.row.get("bad") == "set":
            record["tags"] = {"a"}
        elif self.row.get("bad") == "surrogate":
            record["text"] = "half of a pair: \ud800"
        return record


class UnencodablePlugin:
    @hookimpl
    def matrix_register_orchestrators(self, register):
        register("toy.unencodable", UnencodableOrchestrator)


def test_a_record_that_cannot_be_encoded_ends_its_task_as_error_and_the_run_goes_on(toy, tmp_path):
    rows = [{"id": "t0"}, {"id": "t1", "bad": "set"}, {"id": "t2", "bad": "surrogate"}, {"id": "t3"}]
    source, output = write_input(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    with register_plugin(UnencodablePlugin(), name="unencodable") as loaded:
        items = [f"input.path={source}", f"output.path={output}", "backend.type=toy.null", "run.quiet=true"]
        workflow = loaded.registry.get("orchestrators", "toy.unencodable")
        metrics = run_workflow(
            config.resolve(workflow, loaded.registry, config.parse_overrides(items)), loaded.registry
        )
    records = {record["id"]: record for record in map(json.loads, output.read_text().splitlines())}
    assert sorted(records) == ["t0", "t1", "t2", "t3"]
    assert records["t0"]["status"] == records["t3"]["status"] == "success"
    assert records["t1"] == {
        "id": "t1",
        "status": "error",
        "reason": "the record cannot be encoded as JSON: Object of type set is not JSON serializable",
    }
    assert records["t2"]["status"] == "error" and set(records["t2"]) == {"id", "status", "reason"}
    assert records["t2"]["reason"].startswith("the record cannot be encoded as JSON: 'utf-8' codec can't encode")
    assert metrics.status == {"success": 2, "error": 2}
