"""The jsonl sink: records appended per line, and a torn last line recovered on resume."""

from __future__ import annotations

import json
import os

import pytest

from matrix_core.errors import MatrixError
from matrix_core.sinks import Sink
from matrix_core.sinks.base import ID_BATCH
from matrix_core.sinks.jsonl import JsonlSink


def test_records_are_flushed_as_they_are_written(tmp_path):
    sink = JsonlSink(tmp_path / "sub" / "out.jsonl")
    sink.write({"id": "a", "status": "success", "text": "é"})
    assert json.loads((tmp_path / "sub" / "out.jsonl").read_text(encoding="utf-8")) == {
        "id": "a",
        "status": "success",
        "text": "é",
    }, "visible before close"
    sink.write({"id": 2, "status": "error"})
    sink.close()
    assert list(JsonlSink(tmp_path / "sub" / "out.jsonl").finished_ids()) == ["a", "2"]


def test_a_missing_file_has_no_finished_ids(tmp_path):
    assert list(JsonlSink(tmp_path / "none.jsonl").finished_ids()) == []


@pytest.mark.parametrize("torn", [b'{"id": "c", "sta', b'{"id": "c"}', b"x" * 200_000])
def test_a_torn_last_line_is_ignored_then_cut_before_appending(tmp_path, torn):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n' + torn)
    sink = JsonlSink(path)
    assert list(sink.finished_ids()) == ["a", "b"]
    sink.write({"id": "d"})
    sink.close()
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n{"id": "d"}\n'


def test_a_file_that_is_one_torn_line_is_emptied(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"')
    sink = JsonlSink(path)
    sink.write({"id": "b"})
    sink.close()
    assert path.read_bytes() == b'{"id": "b"}\n'


def test_a_corrupt_line_in_the_middle_names_file_and_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(MatrixError, match=r"out\.jsonl:2: not a record with an 'id'"):
        list(JsonlSink(path).finished_ids())


def test_finished_ids_read_in_chunks_give_every_id_and_name_a_bad_line_by_its_number(tmp_path):
    path = tmp_path / "out.jsonl"
    records = [{"id": f"r{index}", "history": ["x" * 500]} for index in range(6000)]  # about 3 MiB: 3 chunks
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + '{"id": "torn')
    assert list(JsonlSink(path).finished_ids()) == [record["id"] for record in records]
    lines = path.read_bytes().split(b"\n")
    lines[4500] = b'{"id": 7}'  # an integer id: the chunk is read line by line, and the number is the file's
    lines[5000] = b"[]"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(MatrixError, match=r"out\.jsonl:5001: not a record with an 'id'"):
        list(JsonlSink(path).finished_ids())


def test_finished_lists_each_record_with_its_status(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a", "status": "success"}\n{"id": 2, "status": "error"}\n{"id": "c"}\n{"id": "d", "st')
    assert list(JsonlSink(path).finished()) == [("a", "success"), ("2", "error"), ("c", "")]
    assert list(JsonlSink(tmp_path / "none.jsonl").finished()) == []


def test_remove_rewrites_the_file_without_those_records_through_a_synced_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        b'{"id": "a", "status": "error"}\n{"id": "b", "status": "success"}\n{"id": 3, "status": "error"}\n'
    )
    synced, replaced = [], []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda source, target: (replaced.append((source, target)), real_replace(source, target))
    )
    JsonlSink(path).remove({"a", "3"})
    assert path.read_bytes() == b'{"id": "b", "status": "success"}\n'
    assert replaced == [(tmp_path / "out.jsonl.tmp", path)], "renamed over it"
    assert len(synced) == 2, "the temporary file synced before the rename, the directory after it"
    assert sorted(child.name for child in tmp_path.iterdir()) == ["out.jsonl"]


def test_remove_drops_a_torn_last_line_and_appending_goes_on(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "sta')
    sink = JsonlSink(path)
    sink.remove({"a"})
    assert path.read_bytes() == b'{"id": "b"}\n'
    sink.write({"id": "a"})
    sink.close()
    assert path.read_bytes() == b'{"id": "b"}\n{"id": "a"}\n'


def test_remove_of_ids_not_in_the_file_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b')
    before = path.stat()
    JsonlSink(path).remove({"x"})
    JsonlSink(tmp_path / "none.jsonl").remove({"x"})
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b' and path.stat().st_ino == before.st_ino
    assert not (tmp_path / "none.jsonl").exists()


def test_remove_after_writing_goes_on_appending_to_the_new_file(tmp_path):
    sink = JsonlSink(tmp_path / "out.jsonl")
    sink.write({"id": "a"})
    sink.write({"id": "b"})
    sink.remove({"a"})
    sink.write({"id": "c"})
    sink.close()
    assert list(JsonlSink(sink.path).finished_ids()) == ["b", "c"]


def test_a_failed_remove_leaves_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n')

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        JsonlSink(path).remove({"a"})
    assert path.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n'
    assert sorted(child.name for child in tmp_path.iterdir()) == ["out.jsonl"], "no temporary file is left"


def test_jsonl_sinks_can_remove_and_a_sink_without_remove_cannot(tmp_path):
    class AppendOnly(Sink):
        def finished_ids(self):
            return iter(())

        def write(self, record):
            pass

        def close(self):
            pass

    assert JsonlSink.can_remove() and not AppendOnly.can_remove()
    with pytest.raises(NotImplementedError):
        AppendOnly(tmp_path / "x").remove({"a"})


def test_a_sink_that_only_lists_its_ids_gives_them_in_batches_for_resume(tmp_path):
    class Listed(Sink):
        def finished_ids(self):
            return (f"r{index}" for index in range(ID_BATCH + 5))

        def write(self, record):
            pass

        def close(self):
            pass

    batches = list(Listed(tmp_path / "out.x").finished_id_batches())
    assert [len(batch) for batch in batches] == [ID_BATCH, 5]
    assert batches[1] == [f"r{index}" for index in range(ID_BATCH, ID_BATCH + 5)]
    jsonl = JsonlSink(tmp_path / "out.jsonl")
    jsonl.write({"id": "a"})
    jsonl.close()
    assert [batch.to_pylist() for batch in jsonl.finished_id_batches()] == [["a"]], "jsonl's: pyarrow arrays"
