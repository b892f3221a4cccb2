"""The parquet sink: records journaled as they come, folded into the parquet file on close, resumable, atomic."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from matrix_core.errors import MatrixError
from matrix_core.plugins import load_plugins
from matrix_core.sinks import parquet
from matrix_core.sinks.jsonl import JsonlSink
from matrix_core.sinks.parquet import ParquetSink


def read(path):
    return pq.read_table(path).to_pylist()


def crashed_run(path, *records):
    """A run that wrote ``records`` and died before close(): only the journal holds them."""
    sink = ParquetSink(path)
    for record in records:
        sink.write(record)
    sink.journal.close()  # the process is gone: the journal file is as it was last flushed
    return sink.journal.path


def test_records_are_journaled_then_written_as_parquet_on_close(tmp_path):
    path = tmp_path / "out" / "run.parquet"
    sink = ParquetSink(path)
    sink.write({"id": "a", "history": [{"role": "user", "text": "é"}], "meta": {"turns": 2}})
    assert sink.journal.path == tmp_path / "out" / "run.parquet.journal.jsonl"
    assert list(JsonlSink(sink.journal.path).finished_ids()) == ["a"], "durable before close"
    assert not path.exists()
    sink.write({"id": "b", "history": [], "meta": {"turns": 0}})
    sink.close()
    assert read(path) == [
        {"id": "a", "history": [{"role": "user", "text": "é"}], "meta": {"turns": 2}},
        {"id": "b", "history": [], "meta": {"turns": 0}},
    ]
    assert not sink.journal.path.exists()
    assert list(ParquetSink(path).finished_ids()) == ["a", "b"]


def test_closing_with_nothing_written_creates_no_file(tmp_path):
    ParquetSink(tmp_path / "run.parquet").close()
    assert list(tmp_path.iterdir()) == []


def test_finished_ids_after_a_crash_come_from_the_journal(tmp_path):
    path = tmp_path / "run.parquet"
    crashed_run(path, {"id": "a"}, {"id": 2})
    assert list(ParquetSink(path).finished_ids()) == ["a", "2"]


def test_resume_appends_new_records_to_the_parquet_file(tmp_path):
    path = tmp_path / "run.parquet"
    first = ParquetSink(path)
    first.write({"id": "a", "score": None, "meta": {"x": 1}})
    first.close()
    second = ParquetSink(path)
    assert list(second.finished_ids()) == ["a"]
    second.write({"id": "b", "score": 0.5, "meta": {"y": "new"}})
    second.close()
    assert read(path) == [
        {"id": "a", "score": None, "meta": {"x": 1, "y": None}},
        {"id": "b", "score": 0.5, "meta": {"x": None, "y": "new"}},
    ], "a column null so far and a new nested field widen the schema"


def test_records_converted_in_chunks_share_one_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "CHUNK_RECORDS", 2)
    sink = ParquetSink(tmp_path / "run.parquet")
    records = [{"id": str(index), "meta": {f"k{index}": index}} for index in range(5)]
    for record in records:
        sink.write(record)
    sink.close()
    keys = {f"k{index}" for index in range(5)}
    assert read(sink.path) == [
        {"id": record["id"], "meta": dict.fromkeys(keys) | record["meta"]} for record in records
    ], "each chunk had other nested fields"


def test_resume_after_a_crash_merges_the_old_file_the_journal_and_new_records(tmp_path):
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    done.write({"id": "a"})
    done.close()
    journal = crashed_run(path, {"id": "b"})
    with journal.open("ab") as file:
        file.write(b'{"id": "c", "tor')  # the crash cut the last record short
    sink = ParquetSink(path)
    assert list(sink.finished_ids()) == ["a", "b"]
    sink.write({"id": "c"})
    sink.close()
    assert [record["id"] for record in read(path)] == ["a", "b", "c"]
    assert not journal.exists()


def test_a_torn_journal_line_is_dropped_even_when_nothing_new_is_written(tmp_path):
    path = tmp_path / "run.parquet"
    journal = crashed_run(path, {"id": "a"})
    with journal.open("ab") as file:
        file.write(b'{"id": "b"')
    ParquetSink(path).close()
    assert read(path) == [{"id": "a"}]


def test_records_already_in_the_file_are_not_added_twice(tmp_path):
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    done.write({"id": "a"})
    done.close()
    # a crash after the parquet file was replaced but before the journal was deleted leaves "a" in both
    crashed_run(path, {"id": "a"}, {"id": "b"})
    ParquetSink(path).close()
    assert read(path) == [{"id": "a"}, {"id": "b"}]


def test_a_failed_close_leaves_the_previous_file_and_the_journal(tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    done.write({"id": "a"})
    done.close()
    sink = ParquetSink(path)
    sink.write({"id": "b"})

    def crash_midway(writer, table, row_group_size=None):
        raise OSError("disk full")  # the writer had begun the file: "PAR1" and nothing more

    monkeypatch.setattr(parquet.pq.ParquetWriter, "write_table", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        sink.close()
    monkeypatch.undo()
    assert read(path) == [{"id": "a"}], "the output was never overwritten in place"
    assert sorted(child.name for child in tmp_path.iterdir()) == ["run.parquet", "run.parquet.journal.jsonl"]
    ParquetSink(path).close()
    assert read(path) == [{"id": "a"}, {"id": "b"}], "nothing was lost: the next close finishes the job"


def test_the_output_is_replaced_whole_from_a_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    replaced = []
    monkeypatch.setattr(os, "replace", lambda source, target: replaced.append((source, target)))
    sink = ParquetSink(path)
    sink.write({"id": "a"})
    sink.close()
    assert replaced == [(tmp_path / "run.parquet.tmp", path)]
    assert not path.exists(), "nothing was written under the output's own name"


def test_resume_widens_the_file_for_new_columns_nested_fields_and_types(tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    first = ParquetSink(path)
    first.write({"id": "a", "score": None, "meta": {"k": 1}})
    first.close()
    sink = ParquetSink(path)
    sink.write({"id": "b", "score": 0.5, "meta": {"k": 2, "extra": "x"}, "note": "new column"})
    with monkeypatch.context() as patched:
        patched.setattr(parquet.pq, "read_table", None)  # the output is read a batch at a time, never whole
        sink.close()
    assert read(path) == [
        {"id": "a", "score": None, "meta": {"k": 1, "extra": None}, "note": None},
        {"id": "b", "score": 0.5, "meta": {"k": 2, "extra": "x"}, "note": "new column"},
    ]


def test_close_writes_a_row_group_per_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "CHUNK_RECORDS", 3)
    path = tmp_path / "run.parquet"
    sink = ParquetSink(path)
    for index in range(7):
        sink.write({"id": str(index)})
    sink.close()
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert [record["id"] for record in read(path)] == [str(index) for index in range(7)]


def test_records_that_fit_no_schema_are_kept_in_the_journal(tmp_path):
    path = tmp_path / "run.parquet"
    sink = ParquetSink(path)
    sink.write({"id": "a", "answer": 4})
    sink.write({"id": "b", "answer": "four"})
    with pytest.raises(MatrixError, match=r"run\.parquet: the records do not fit one parquet schema") as raised:
        sink.close()
    assert "run.parquet.journal.jsonl" in raised.value.hint
    assert list(JsonlSink(sink.journal.path).finished_ids()) == ["a", "b"]
    assert not path.exists()


def test_parquet_is_a_builtin_sink():
    assert load_plugins().registry.get("sinks", "parquet").cls is ParquetSink


def test_finished_lists_the_file_and_the_journal_with_statuses(tmp_path):
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    done.write({"id": "a", "status": "success"})
    done.write({"id": "b", "status": "error"})
    done.close()
    crashed_run(path, {"id": "c", "status": "error"})
    assert list(ParquetSink(path).finished()) == [("a", "success"), ("b", "error"), ("c", "error")]


def test_remove_takes_records_out_of_the_file_and_the_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "CHUNK_RECORDS", 2)
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    for index in range(5):
        done.write({"id": str(index), "status": "error" if index % 2 else "success", "meta": {"n": index}})
    done.close()
    journal = crashed_run(path, {"id": "5", "status": "error"}, {"id": "6", "status": "success", "meta": {"n": 6}})
    with journal.open("ab") as file:
        file.write(b'{"id": "7", "st')  # torn by the crash
    sink = ParquetSink(path)
    sink.remove({"1", "3", "5"})
    assert list(sink.finished()) == [("0", "success"), ("2", "success"), ("4", "success"), ("6", "success")]
    assert sorted(child.name for child in tmp_path.iterdir()) == ["run.parquet", "run.parquet.journal.jsonl"]
    sink.write({"id": "1", "status": "success", "meta": {"n": 10}})
    sink.close()
    assert [(r["id"], r["status"], r["meta"]) for r in read(path)] == [
        ("0", "success", {"n": 0}),
        ("2", "success", {"n": 2}),
        ("4", "success", {"n": 4}),
        ("6", "success", {"n": 6}),
        ("1", "success", {"n": 10}),
    ]


def test_remove_replaces_the_parquet_file_whole_and_only_when_it_holds_one_of_the_ids(tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    done.write({"id": 1, "status": "error"})
    done.write({"id": 2, "status": "success"})
    done.close()
    real_replace, replaced = os.replace, []
    monkeypatch.setattr(os, "replace", lambda *paths: (replaced.append(paths), real_replace(*paths)))
    ParquetSink(path).remove({"9"})
    assert replaced == [], "nothing to remove: the file is not rewritten"
    ParquetSink(path).remove({"1"})
    assert replaced == [(tmp_path / "run.parquet.tmp", path)]
    assert read(path) == [{"id": 2, "status": "success"}], "integer ids match by their text"


def test_a_failed_remove_leaves_the_parquet_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    done = ParquetSink(path)
    done.write({"id": "a", "status": "error"})
    done.close()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        ParquetSink(path).remove({"a"})
    monkeypatch.undo()
    assert read(path) == [{"id": "a", "status": "error"}]
    assert [child.name for child in tmp_path.iterdir()] == ["run.parquet"]
