"""The jsonl sink: records appended per line, and a torn last line recovered on resume."""

from __future__ import annotations

import json

import pytest

from matrix_core.errors import MatrixError
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
