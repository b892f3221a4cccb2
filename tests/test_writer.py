"""Writer without Ray: every id written once, dropped and rejected rows noted beside the output, metrics counted and
written to ``<stem>.metrics.json``, and a failed write stopping every later call."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from matrix_core.engine.idsets import FinishedIds
from matrix_core.engine.messages import TaskSummary
from matrix_core.engine.writer import Writer
from matrix_core.errors import MatrixError, OutputError
from matrix_core.metrics import EngineCounters, RunMetrics

JSONL = "matrix_core.sinks.jsonl:JsonlSink"


@pytest.fixture
def make_writer(tmp_path: Path) -> Iterator[Callable[..., Writer]]:
    """A Writer on ``tmp_path/<name>`` with the jsonl sink; each is closed (its lock released) after the test."""
    made: list[Writer] = []

    def make(name: str = "out.jsonl", fsync_interval_s: float = 5.0) -> Writer:
        writer = Writer(JSONL, str(tmp_path / name), fsync_interval_s)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        with contextlib.suppress(MatrixError):
            writer.close(EngineCounters())


def done(task_id: str, status: str = "success", reason: str = "", **counts: Any) -> tuple[dict, TaskSummary]:
    """A finished task as the collector hands it over: its record and its summary."""
    return {"id": task_id, "status": status, "reason": reason}, TaskSummary(task_id, status, reason, **counts)


def dropped(task_id: str, status: str = "filtered", reason: str = "") -> tuple[None, TaskSummary]:
    """A finished task the workflow does not keep."""
    return None, TaskSummary(task_id, status, reason)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_id_is_written_once_and_repeats_are_counted(make_writer, tmp_path):
    writer = make_writer()
    writer.write([done("t1"), done("t2")])
    writer.write([done("t1"), done("t3"), done("t2")])
    metrics = writer.close(EngineCounters())
    assert [record["id"] for record in lines(tmp_path / "out.jsonl")] == ["t1", "t2", "t3"]
    assert metrics.duplicates_dropped == 2
    assert metrics.tasks == 3


def test_a_task_without_a_record_is_noted_in_the_dropped_file(make_writer, tmp_path):
    writer = make_writer()
    writer.write([done("kept"), dropped("gone", "filtered", "too long")])
    writer.write([done("gone")])
    metrics = writer.close(EngineCounters())
    assert [record["id"] for record in lines(tmp_path / "out.jsonl")] == ["kept"]
    assert lines(tmp_path / "out.dropped.jsonl") == [{"id": "gone", "status": "filtered", "reason": "too long"}]
    assert metrics.status == {"success": 1, "filtered": 1}
    assert metrics.duplicates_dropped == 1, "a dropped id counts as written"


def test_a_record_json_cannot_encode_is_replaced_by_an_error_record(make_writer, tmp_path):
    writer = make_writer()
    record, summary = done("t1")
    writer.write([({**record, "tags": {"a", "b"}}, summary), done("t2")])
    metrics = writer.close(EngineCounters())
    first, second = lines(tmp_path / "out.jsonl")
    assert set(first) == {"id", "status", "reason"}
    assert (first["id"], first["status"]) == ("t1", "error")
    assert first["reason"].startswith("the record cannot be encoded as JSON: ")
    assert second["id"] == "t2"
    assert metrics.status == {"error": 1, "success": 1}


def test_a_rejected_row_goes_to_the_rejected_file_and_is_counted(make_writer, tmp_path):
    writer = make_writer()
    entry = {"where": "in.jsonl:3", "error": "not JSON"}
    writer.reject(entry)
    metrics = writer.close(EngineCounters())
    assert lines(tmp_path / "out.rejected.jsonl") == [entry]
    assert metrics.rejected_rows == 1
    assert metrics.tasks == 0


def held(finished: FinishedIds, *ids: str) -> set[str]:
    """Which of ``ids`` ``finished`` holds, checking that it holds nothing else."""
    inside = {task_id for task_id in ids if task_id in finished}
    assert len(finished) == len(inside)
    return inside


def test_finished_ids_are_those_written_or_dropped_by_an_earlier_run(make_writer):
    first = make_writer()
    first.write([done("ok"), done("bad", "error", "boom"), dropped("skip"), dropped("lost", "error")])
    first.close(EngineCounters())
    assert held(make_writer().finished_ids(), "ok", "bad", "skip", "lost", "other") == {"ok", "bad", "skip", "lost"}


def test_finished_ids_with_retry_errors_removes_the_error_records(make_writer, tmp_path):
    first = make_writer()
    first.write([done("ok"), done("bad", "error", "boom"), dropped("skip"), dropped("lost", "error")])
    first.close(EngineCounters())
    again = make_writer()
    assert held(again.finished_ids(retry_errors=True), "ok", "bad", "skip", "lost") == {"ok", "skip"}
    assert [record["id"] for record in lines(tmp_path / "out.jsonl")] == ["ok"]
    assert [record["id"] for record in lines(tmp_path / "out.dropped.jsonl")] == ["skip"]
    again.write([done("bad"), done("bad")])
    assert again.duplicates == 1, "a retried id is written once"
    assert [record["id"] for record in lines(tmp_path / "out.jsonl")] == ["ok", "bad"]


def test_close_returns_the_run_metrics_and_writes_them_beside_the_output(make_writer, tmp_path):
    writer = make_writer()
    writer.write(
        [
            done("t1", prompt_tokens=3, completion_tokens=5, hops=2, metrics={"score": 1.0}),
            done("t2", "error", "boom", prompt_tokens=1, completion_tokens=1, hops=1, metrics={"score": 0.0}),
        ]
    )
    writer.write([dropped("t3", "filtered", "en")])
    engine = EngineCounters(admitted=3, readmitted=1, rerouted=2, most_steps_at_once={"a": 4})
    metrics = writer.close(engine)
    assert metrics.tasks == 3
    assert metrics.status == {"success": 1, "error": 1, "filtered": 1}
    assert metrics.status_reason == {"success": 1, "error:boom": 1, "filtered:en": 1}
    assert (metrics.tokens_in, metrics.tokens_out, metrics.hops) == (4, 6, 3)
    assert metrics.workflow == {"score": pytest.approx(1 / 3)}, "averaged over every finished task"
    assert metrics.engine == engine
    on_disk = json.loads((tmp_path / "out.metrics.json").read_text())
    assert on_disk["admitted"] == 3, "the engine's counters sit at the top level"
    assert RunMetrics.from_json(on_disk) == metrics


def test_close_releases_the_output_for_the_next_run(make_writer, tmp_path):
    make_writer().close(EngineCounters())
    assert not (tmp_path / "out.writer.lock").exists()
    make_writer().close(EngineCounters())  # would wait for the lock, then fail, were it still held


def test_a_secret_in_a_reason_is_redacted_in_the_metrics(make_writer, tmp_path):
    secret = "sk-" + "a1b2c3d4" * 4
    writer = make_writer()
    writer.write([done("t1", "error", f"backend refused key {secret}")])
    metrics = writer.close(EngineCounters())
    assert metrics.status_reason == {"error:backend refused key ***": 1}
    assert secret not in (tmp_path / "out.metrics.json").read_text()
    assert secret in (tmp_path / "out.jsonl").read_text(), "records, the user's own data, are kept as they are"


def test_an_unwritable_output_raises_output_error_on_this_and_every_later_call(make_writer, tmp_path):
    writer = make_writer()
    (tmp_path / "out.jsonl").mkdir()  # root may write anywhere: a directory in the way fails for everyone
    with pytest.raises(OutputError, match=r"^cannot write .*out\.jsonl: Is a directory$") as first:
        writer.write([done("t1")])
    with pytest.raises(OutputError) as later_write:
        writer.write([])
    with pytest.raises(OutputError) as later_progress:
        writer.progress()
    assert later_write.value is first.value and later_progress.value is first.value


def test_an_id_counts_as_written_only_once_its_sink_has_it(make_writer, tmp_path):
    writer = make_writer()
    (tmp_path / "out.jsonl").mkdir()
    with pytest.raises(OutputError):
        writer.write([done("t1")])
    assert "t1" not in writer.written
    assert sum(writer.counts.values()) == 0, "nothing counted for a record that was not written"


def test_progress_counts_the_finished_and_failed_tasks(make_writer):
    writer = make_writer(fsync_interval_s=0)
    writer.write([done("t1"), done("t2", "error", "boom"), dropped("t3")])
    progress = writer.progress()
    assert (progress["done"], progress["failed"]) == (3, 1)
