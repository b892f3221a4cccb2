"""Input rows: every format streamed, ids from the row or a stable hash, malformed rows named by file and line."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from matrix_core.config import InputConfig
from matrix_core.engine.finished_rows import FinishedRows
from matrix_core.engine.idsets import FinishedIds
from matrix_core.engine.inputs import BadRowError, Row, Shard, read_rows, read_rows_resuming
from matrix_core.errors import ConfigError, MatrixError

ROW_HASH = "4f53b43425e12904"
"""The id of ``{"q": "2+2?", "n": 1}``: sha1 of ``{"n": 1, "q": "2+2?"}``, pinned so that a change shows."""


def rows(path: Path | str, **options) -> list[Row]:
    return list(read_rows(InputConfig(path=str(path), **options)))


def write_jsonl(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_hf(directory: Path, *shards: list[dict], listed: list[str] | None = None, state: bool = True) -> Path:
    """A directory laid out like ``datasets``' ``save_to_disk``: Arrow IPC stream shards, state.json naming them."""
    directory.mkdir()
    names = [f"data-{index:05d}-of-{len(shards):05d}.arrow" for index in range(len(shards))]
    for name, records in zip(names, shards, strict=True):
        table = pa.Table.from_pylist(records)
        with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=2):  # several batches per shard, as datasets writes them
                writer.write_batch(batch)
    (directory / "dataset_info.json").write_text(json.dumps({"features": {}}))
    if state:
        files = [{"filename": name} for name in (listed or names)]
        (directory / "state.json").write_text(json.dumps({"_data_files": files, "_split": "train"}))
    return directory


# --- jsonl ------------------------------------------------------------------------------------------------------


def test_jsonl_rows_carry_their_id_data_and_line(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", '{"id": "a", "q": "é"}', "", "  ", '{"id": 7, "q": [1, {"x": null}]}')
    assert rows(path) == [
        Row("a", {"id": "a", "q": "é"}, f"{path}:1"),
        Row("7", {"id": 7, "q": [1, {"x": None}]}, f"{path}:4"),
    ], "blank lines are skipped but still counted"


def test_a_row_without_its_id_key_gets_a_stable_hash_of_its_content(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", '{"q": "2+2?", "n": 1}', '{"n": 1, "q": "2+2?"}', '{"q": "3+3?"}')
    first, reordered, other = rows(path)
    assert first.id == ROW_HASH, "the same on every run and every machine"
    assert reordered.id == first.id, "key order does not matter"
    assert other.id != first.id and len(other.id) == 16


def test_id_key_names_the_id_field(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", '{"id": "ignored", "uid": 12}')
    assert [row.id for row in rows(path, id_key="uid")] == ["12"]


def test_rows_are_streamed_not_read_whole(tmp_path):
    lines = [json.dumps({"id": index}) for index in range(100_000)]
    path = write_jsonl(tmp_path / "big.jsonl", *lines, "not json")
    stream = read_rows(InputConfig(path=str(path)))
    assert next(stream).id == "0", "the first row comes before the bad last line is ever read"
    with pytest.raises(BadRowError, match=r"big\.jsonl:100001: invalid JSON"):
        for _ in stream:
            pass


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "in.jsonl:2: invalid JSON (Expecting value)"),
        ('{"id": "b"', "in.jsonl:2: invalid JSON (Expecting ',' delimiter)"),
        ("[1, 2]", "in.jsonl:2: a row must be a JSON object, got list"),
        ('"text"', "in.jsonl:2: a row must be a JSON object, got str"),
        ('{"id": 1.5}', "in.jsonl:2: 'id' must be a string or an integer, got float"),
        ('{"id": true}', "in.jsonl:2: 'id' must be a string or an integer, got bool"),
        ('{"id": null}', "in.jsonl:2: 'id' must be a string or an integer, got NoneType"),
        ('{"id": {"x": 1}}', "in.jsonl:2: 'id' must be a string or an integer, got dict"),
    ],
)
def test_a_malformed_row_is_one_line_naming_file_and_line(tmp_path, monkeypatch, line, message):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", '{"id": "a"}', line, '{"id": "c"}')
    with pytest.raises(BadRowError) as raised:
        rows("in.jsonl")
    assert str(raised.value) == message
    assert isinstance(raised.value, MatrixError)


def test_bytes_that_are_not_utf8_are_a_bad_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in.jsonl").write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(BadRowError, match=r"^in\.jsonl:2: not UTF-8 text$"):
        rows("in.jsonl")


def test_skip_bad_rows_reports_each_rejected_row_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", '{"id": "a"}', "oops", "[1]", '{"id": 2.5}', '{"id": "e"}')
    rejected: list[dict] = []
    config = InputConfig(path="in.jsonl", skip_bad_rows=True)
    assert [row.id for row in read_rows(config, on_rejected=rejected.append)] == ["a", "e"]
    assert rejected == [
        {"where": "in.jsonl:2", "error": "invalid JSON (Expecting value)", "line": "oops"},
        {"where": "in.jsonl:3", "error": "a row must be a JSON object, got list", "line": "[1]"},
        {"where": "in.jsonl:4", "error": "'id' must be a string or an integer, got float", "line": '{"id": 2.5}'},
    ]


def test_skip_bad_rows_without_a_callback_still_logs_each_row(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", "oops", '{"id": "b"}')
    with caplog.at_level(logging.WARNING, logger="matrix_core.engine.inputs"):
        assert [row.id for row in rows("in.jsonl", skip_bad_rows=True)] == ["b"]
    assert "in.jsonl:1: invalid JSON (Expecting value)" in caplog.text


# --- where the input is -----------------------------------------------------------------------------------------


def test_no_input_path_says_how_to_give_one():
    with pytest.raises(MatrixError, match=r"^no input: pass -i FILE or set input\.path$"):
        read_rows(InputConfig())


def test_a_missing_path_fails_before_any_row_is_read(tmp_path):
    with pytest.raises(MatrixError, match=r"^input\.path: no such file: .*nope\.jsonl$"):
        read_rows(InputConfig(path=str(tmp_path / "nope.jsonl")))


def test_an_unknown_suffix_asks_for_input_format(tmp_path):
    path = write_jsonl(tmp_path / "rows.txt", '{"id": "a"}')
    with pytest.raises(MatrixError, match=r"rows\.txt: unknown input suffix '\.txt': set input\.format"):
        rows(path)
    assert [row.id for row in rows(path, format="jsonl")] == ["a"]


def test_an_unknown_format_is_a_config_error(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", '{"id": "a"}')
    with pytest.raises(ConfigError, match=r"^input\.format: unknown format 'csv'"):
        rows(path, format="csv")


def test_a_glob_reads_every_match_in_sorted_order(tmp_path):
    write_jsonl(tmp_path / "data" / "b.jsonl", '{"id": "b"}')
    write_jsonl(tmp_path / "data" / "a.jsonl", '{"id": "a1"}', '{"id": "a2"}')
    write_jsonl(tmp_path / "data" / "c.txt", '{"id": "not me"}')
    assert [row.id for row in rows(tmp_path / "data" / "*.jsonl")] == ["a1", "a2", "b"]
    with pytest.raises(MatrixError, match=r"^input\.path: no file matches .*\*\.parquet$"):
        rows(tmp_path / "data" / "*.parquet")


def test_a_directory_reads_its_shards_in_sorted_order(tmp_path):
    shards = tmp_path / "shards"
    write_jsonl(shards / "part-1.jsonl", '{"id": "j"}')
    pq.write_table(pa.Table.from_pylist([{"id": "p"}]), shards / "part-0.parquet")
    (shards / "README.md").write_text("not a shard")
    assert [(row.id, Path(row.where).name) for row in rows(shards)] == [
        ("p", "part-0.parquet:row 0"),
        ("j", "part-1.jsonl:1"),
    ]


def test_a_directory_without_shards_is_an_error(tmp_path):
    (tmp_path / "README.md").write_text("nothing here")
    with pytest.raises(MatrixError, match=r"holds no \.jsonl, \.json, \.jsonl\.zst, \.parquet files"):
        rows(tmp_path)


# --- parquet ----------------------------------------------------------------------------------------------------


def test_parquet_rows_keep_nested_values_and_name_their_row(tmp_path):
    path = tmp_path / "in.parquet"
    records = [{"id": 1, "meta": {"tags": ["a", "b"]}}, {"id": 2, "meta": {"tags": []}}]
    pq.write_table(pa.Table.from_pylist(records), path)
    assert rows(path) == [Row("1", records[0], f"{path}:row 0"), Row("2", records[1], f"{path}:row 1")]


def test_parquet_rows_without_an_id_column_are_hashed(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "2+2?", "n": 1}]), path)
    assert rows(path)[0].id == ROW_HASH, "the same id as the same row in jsonl"


def test_parquet_is_streamed_by_batch(tmp_path):
    path = tmp_path / "big.parquet"
    ids = [str(index) for index in range(5000)] + [None]
    pq.write_table(pa.table({"id": ids}), path, row_group_size=1000)
    stream = read_rows(InputConfig(path=str(path)))
    assert next(stream).id == "0", "the first row comes before the bad last row is ever read"
    with pytest.raises(BadRowError, match=r"big\.parquet:row 5000: 'id' must be a string or an integer, got NoneType"):
        for _ in stream:
            pass


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    path = tmp_path / "in.parquet"
    path.write_text("{}")
    with pytest.raises(MatrixError, match=r"in\.parquet: not a readable parquet file"):
        rows(path)


# --- Hugging Face datasets directories -------------------------------------------------------------------------


def test_a_datasets_directory_is_read_in_state_json_order(tmp_path):
    directory = write_hf(
        tmp_path / "ds",
        [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "c", "text": "z"}],
        [{"id": "d", "text": "w"}],
        listed=["data-00001-of-00002.arrow", "data-00000-of-00002.arrow"],
    )
    read = rows(directory)
    assert [row.id for row in read] == ["d", "a", "b", "c"]
    assert read[0].data == {"id": "d", "text": "w"}
    assert read[3].where == f"{directory / 'data-00000-of-00002.arrow'}:row 2", "rows count across batches"


def test_a_datasets_directory_without_state_json_reads_its_shards_by_name(tmp_path):
    directory = write_hf(tmp_path / "ds", [{"q": "a"}], [{"q": "b"}], state=False)
    assert [row.data["q"] for row in rows(directory)] == ["a", "b"]


def test_a_datasets_directory_is_streamed_by_batch(tmp_path):
    directory = write_hf(tmp_path / "ds", [{"id": str(index)} for index in range(99)] + [{"id": None}])
    stream = read_rows(InputConfig(path=str(directory)))
    assert next(stream).id == "0"
    with pytest.raises(BadRowError, match=r"data-00000-of-00001\.arrow:row 99: 'id' must be a string"):
        list(stream)


def test_a_datasets_directory_missing_a_listed_shard_is_an_error(tmp_path):
    directory = write_hf(tmp_path / "ds", [{"id": "a"}], listed=["data-00000-of-00001.arrow", "gone.arrow"])
    with pytest.raises(MatrixError, match=r"state\.json lists gone\.arrow, which is missing"):
        rows(directory)


def test_a_dataset_dict_asks_for_one_split(tmp_path):
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    with pytest.raises(MatrixError, match=r"holds several splits") as raised:
        rows(tmp_path / "dd")
    assert raised.value.hint.endswith("train")


def test_format_hf_needs_a_directory(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", '{"id": "a"}')
    with pytest.raises(MatrixError, match=r"input\.format hf reads a directory"):
        rows(path, format="hf")


# --- zstd-compressed jsonl and nested ids (DCLM shards) ----------------------------------------------------------


def write_zst(path: Path, *lines: str, frames: int = 1) -> Path:
    """``lines`` as a ``.jsonl.zst`` shard of ``frames`` zstd frames (DCLM's shards and ``zstd`` itself may write
    several)."""
    data = "".join(line + "\n" for line in lines).encode()
    cut = len(data) // frames
    chunks = [data[index * cut : (index + 1) * cut if index < frames - 1 else None] for index in range(frames)]
    path.write_bytes(b"".join(zstandard.ZstdCompressor().compress(chunk) for chunk in chunks))
    return path


def test_a_zstd_shard_is_read_line_by_line_across_frames(tmp_path):
    lines = [json.dumps({"id": index, "text": "x" * 50}) for index in range(200)]
    path = write_zst(tmp_path / "in.jsonl.zst", *lines, "not json", frames=3)
    stream = read_rows(InputConfig(path=str(path)))
    assert next(stream) == Row("0", {"id": 0, "text": "x" * 50}, f"{path}:1")
    assert [row.id for row in itertools.islice(stream, 199)] == [str(index) for index in range(1, 200)]
    with pytest.raises(BadRowError, match=r"in\.jsonl\.zst:201: invalid JSON"):
        next(stream)


def test_zstd_shards_are_found_in_directories_and_globs(tmp_path):
    (tmp_path / "shards").mkdir()
    write_zst(tmp_path / "shards" / "b.jsonl.zst", '{"id": "b"}')
    write_zst(tmp_path / "shards" / "a.jsonl.zst", '{"id": "a"}')
    write_jsonl(tmp_path / "shards" / "c.jsonl", '{"id": "c"}')
    assert [row.id for row in rows(tmp_path / "shards")] == ["a", "b", "c"]
    assert [row.id for row in rows(tmp_path / "shards" / "*.zst")] == ["a", "b"]


def test_a_file_that_is_not_zstd_is_named(tmp_path):
    path = tmp_path / "in.jsonl.zst"
    path.write_text('{"id": "a"}\n')
    with pytest.raises(MatrixError, match=r"in\.jsonl\.zst: not a readable zstd file"):
        rows(path)


def test_a_dotted_id_key_reads_a_nested_field(tmp_path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        '{"metadata": {"WARC-Record-ID": "<urn:uuid:1>"}, "text": "a"}',
        '{"metadata": {}, "text": "b"}',
        '{"metadata.WARC-Record-ID": "flat", "metadata": {"WARC-Record-ID": "nested"}}',
    )
    nested, missing, flat = rows(path, id_key="metadata.WARC-Record-ID")
    assert nested.id == "<urn:uuid:1>"
    assert len(missing.id) == 16, "a row without the nested field gets a hash of its content"
    assert flat.id == "flat", "a top-level key spelled with the dot wins"


def test_a_dotted_id_key_of_the_wrong_type_is_a_bad_row(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", '{"metadata": {"WARC-Record-ID": ["x"]}}')
    with pytest.raises(
        BadRowError, match=r"^in\.jsonl:1: 'metadata\.WARC-Record-ID' must be a string or an integer, got list$"
    ):
        rows("in.jsonl", id_key="metadata.WARC-Record-ID")


# --- input that once ended in a traceback, or was read silently short ---------------------------------------------


def rejected_by(path: Path | str, **options) -> tuple[list[str], list[dict]]:
    """The ids read with ``skip_bad_rows`` and the rows rejected."""
    rejected: list[dict] = []
    config = InputConfig(path=str(path), skip_bad_rows=True, **options)
    return [row.id for row in read_rows(config, on_rejected=rejected.append)], rejected


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"id": "b", "n": ' + "9" * 4301 + "}", "invalid JSON (an integer of more than 4300 digits)"),
        ('{"id": "b", "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper than 100 levels"),
        ('{"id": "b", "x": ' + "[" * 100 + "]" * 100 + "}", "nested deeper than 100 levels"),
        ('{"id": "\\ud800"}', "not UTF-8 text (a lone surrogate '\\ud800')"),
        ('{"id": "b", "text": "x\\uDFFFy"}', "not UTF-8 text (a lone surrogate '\\udfff')"),
        ('{"id": "b", "\\ud83d": 1}', "not UTF-8 text (a lone surrogate '\\ud83d')"),
    ],
    ids=["huge-int", "deep-5000", "deep-101", "surrogate-id", "surrogate-text", "surrogate-key"],
)
def test_rows_python_cannot_carry_are_bad_rows(tmp_path, monkeypatch, line, error):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", '{"id": "a"}', line, '{"id": "c"}')
    with pytest.raises(BadRowError) as raised:
        rows("in.jsonl")
    assert str(raised.value) == f"in.jsonl:2: {error}"
    assert rejected_by("in.jsonl") == (["a", "c"], [{"where": "in.jsonl:2", "error": error, "line": line}])


def test_a_lone_surrogate_written_as_bytes_is_a_bad_row_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # json.loads lets the UTF-8 form of a surrogate through; the output cannot write it
    Path("in.jsonl").write_bytes(b'{"id": "\xed\xa0\x80"}\n{"id": "\xed\x9f\xbb"}\n')
    ids, rejected = rejected_by("in.jsonl")
    assert ids == ["\ud7fb"], "a Hangul syllable starts with the same byte, and is fine"
    assert [entry["error"] for entry in rejected] == ["not UTF-8 text (a lone surrogate '\\ud800')"]


def test_what_is_only_near_a_limit_is_a_good_row(tmp_path):
    lines = [
        '{"id": "deep", "x": ' + "[" * 99 + "]" * 99 + "}",
        '{"id": "brackets", "text": "' + "[{" * 200 + '"}',
        '{"id": "pair \\ud83d\\ude00", "text": "\\\\ud800 is how JSON writes a surrogate"}',
        '{"id": "long", "n": ' + "9" * 4300 + "}",
    ]
    path = write_jsonl(tmp_path / "in.jsonl", *lines)
    assert [row.id for row in rows(path)] == ["deep", "brackets", "pair \U0001f600", "long"]


def test_a_truncated_zstd_shard_is_an_error_naming_it_skipped_or_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [json.dumps({"id": index, "text": "x" * 50}) for index in range(2000)]
    whole = write_zst(tmp_path / "in.jsonl.zst", *lines, frames=2).read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, 3):
        Path("in.jsonl.zst").write_bytes(whole[:cut])
        for skip_bad_rows in (False, True):
            rejected: list[dict] = []
            config = InputConfig(path="in.jsonl.zst", skip_bad_rows=skip_bad_rows)
            read: list[str] = []
            with pytest.raises(MatrixError) as raised:
                read.extend(row.id for row in read_rows(config, on_rejected=rejected.append))
            assert str(raised.value) == "in.jsonl.zst: truncated zstd stream (the file ends inside a frame)"
            assert not isinstance(raised.value, BadRowError), "the rows it lost cannot be named one by one"
            assert rejected == [], "the torn last line is not taken for a bad row"
    empty = write_zst(tmp_path / "empty.jsonl.zst")
    assert rows(empty) == [], "a file that ends between frames is whole"


def test_a_zstd_shard_corrupt_in_the_middle_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = "".join(f'{{"id": {index}}}\n' for index in range(3000)).encode()
    whole = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(data))  # as the zstd command writes
    whole[len(whole) // 2 : len(whole) // 2 + 16] = b"\xff" * 16
    Path("in.jsonl.zst").write_bytes(bytes(whole))
    with pytest.raises(MatrixError, match=r"^in\.jsonl\.zst: not a readable zstd file \(.+\)$") as raised:
        rows("in.jsonl.zst", skip_bad_rows=True)
    assert "\n" not in str(raised.value)


def test_a_parquet_file_corrupt_in_the_middle_is_one_line_naming_it_skipped_or_not(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{index}" for index in range(6000)]}), path, row_group_size=2000)
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    start = column.data_page_offset + 8  # inside the last row group's first page, past the start of its header
    data = bytearray(path.read_bytes())
    data[start : start + 64] = bytes(range(64))
    path.write_bytes(bytes(data))
    for skip_bad_rows in (False, True):
        read: list[str] = []
        with pytest.raises(MatrixError) as raised:
            read.extend(row.id for row in read_rows(InputConfig(path=str(path), skip_bad_rows=skip_bad_rows)))
        message = str(raised.value)
        assert message.startswith(f"{path}: corrupt from row {len(read)} on (") and "\n" not in message
        assert not isinstance(raised.value, BadRowError)
        assert read == [f"r{index}" for index in range(len(read))], "what was read before is good"


def test_a_parquet_file_whose_pages_end_before_its_footer_count_is_corrupt(tmp_path):
    """A damaged page header can make pyarrow end a column early with no error (found by test_inputs_fuzz)."""
    written = tmp_path / "good.parquet"
    texts = pa.array([b""], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["r0"], "text": texts}), written, compression="zstd", write_page_checksum=True)
    good = written.read_bytes()
    path = tmp_path / "in.parquet"
    silently_short = []
    for offset in range(4, len(good) - 8):  # one byte at a time, up to the footer's length and magic
        for value in (0, 1):
            damaged = bytearray(good)
            damaged[offset] = value
            path.write_bytes(bytes(damaged))
            try:
                short = sum(batch.num_rows for batch in pq.ParquetFile(path).iter_batches()) == 0
            except (pa.ArrowException, OSError):
                continue
            if short:
                silently_short.append(offset)
                with pytest.raises(MatrixError) as raised:
                    list(read_rows(InputConfig(path=str(path), skip_bad_rows=True)))
                assert str(raised.value).startswith(f"{path}: corrupt "), raised.value
    assert silently_short, "pyarrow no longer reads any damaged byte of this file as fewer rows"


def test_a_parquet_string_that_is_not_utf8_is_a_bad_row(tmp_path):
    path = tmp_path / "in.parquet"
    texts = pa.array([b"fine", b"\xff\xfe", b"also fine"], pa.binary()).view(pa.string())  # a careless writer's
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": texts}), path)
    with pytest.raises(BadRowError, match=r"in\.parquet:row 1: not UTF-8 text$"):
        rows(path)
    assert rejected_by(path) == (["a", "c"], [{"where": f"{path}:row 1", "error": "not UTF-8 text"}])


def test_a_truncated_datasets_shard_is_one_line_naming_it(tmp_path):
    directory = write_hf(tmp_path / "ds", [{"id": str(index), "text": "x" * 20} for index in range(50)])
    shard = directory / "data-00000-of-00001.arrow"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(MatrixError, match=r"data-00000-of-00001\.arrow: corrupt from row \d+ on \([^\n]+\)$") as raised:
        rejected_by(directory)
    assert not isinstance(raised.value, BadRowError)


# --- shards: each partition reads its part of the input ------------------------------------------------------------


def sharded(path: Path, count: int, **options) -> list[list[Row]]:
    return [
        list(read_rows(InputConfig(path=str(path), **options), shard=Shard(index, count))) for index in range(count)
    ]


def varied_lines(first: int, count: int) -> list[str]:
    """Lines of uneven length with blank ones among them, so that byte ranges fall anywhere in a line."""
    lines = []
    for index in range(first, first + count):
        lines.append(json.dumps({"id": f"r{index}", "text": "x" * (index * 37 % 300)}))
        if index % 7 == 0:
            lines.append("")
    return lines


def every_input_kind(tmp_path: Path) -> dict[str, Path]:
    kinds = {"jsonl": write_jsonl(tmp_path / "plain.jsonl", *varied_lines(0, 120))}
    kinds["zst"] = write_zst(tmp_path / "packed.jsonl.zst", *varied_lines(0, 120), frames=3)
    table = pa.Table.from_pylist([{"id": f"r{index}", "n": index} for index in range(100)])
    pq.write_table(table, tmp_path / "groups.parquet", row_group_size=9)
    kinds["parquet"] = tmp_path / "groups.parquet"
    shards = tmp_path / "shards"
    write_jsonl(shards / "a.jsonl", *varied_lines(0, 40))
    write_zst(shards / "b.jsonl.zst", *varied_lines(40, 30))
    pq.write_table(pa.Table.from_pylist([{"id": f"r{index}"} for index in range(70, 95)]), shards / "c.parquet")
    kinds["directory"] = shards
    records = [{"id": f"r{index}", "n": index} for index in range(45)]
    kinds["hf"] = write_hf(tmp_path / "saved", records[:20], records[20:])
    return kinds


@pytest.mark.parametrize("count", [1, 2, 3, 7, 200])
@pytest.mark.parametrize("kind", ["jsonl", "zst", "parquet", "directory", "hf"])
def test_each_row_is_read_by_exactly_one_shard_where_the_whole_read_finds_it(tmp_path, kind, count):
    path = every_input_kind(tmp_path)[kind]
    whole = rows(path)
    parts = sharded(path, count)
    assert sorted((row.where, row.id) for part in parts for row in part) == sorted((row.where, row.id) for row in whole)
    for part in parts:  # each shard in the whole read's order
        assert [row.where for row in part] == [row.where for row in whole if row in part]


def test_a_plain_jsonl_shard_reads_only_its_byte_range(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "in.jsonl", *varied_lines(0, 400))
    parsed = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda line, **kw: parsed.append(line) or real_loads(line, **kw))
    parts = sharded(path, 4)
    assert len(parsed) == 400, "no line is parsed by two shards"
    assert all(80 <= len(part) <= 120 for part in parts), [len(part) for part in parts]
    starts, offset = [], 0  # each non-blank line's number and first byte
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        if line.strip():
            starts.append((number, offset))
        offset += len(line)
    half = path.stat().st_size // 2
    assert parts[2][0].where == f"{path}:{min(number for number, start in starts if start >= half)}"


def test_parquet_row_groups_go_round_robin_and_keep_their_row_numbers(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{index}" for index in range(10)]}), path, row_group_size=3)
    parts = sharded(path, 2)
    assert [row.id for row in parts[0]] == ["r0", "r1", "r2", "r6", "r7", "r8"]
    assert [row.where for row in parts[1]] == [f"{path}:row {index}" for index in (3, 4, 5, 9)]


def test_a_bad_row_is_rejected_by_its_own_shard_only(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", *varied_lines(0, 50), "{torn", *varied_lines(50, 50))
    rejected: list[list[str]] = []
    for index in range(3):
        seen: list[str] = []
        config = InputConfig(path=str(path), skip_bad_rows=True)
        list(read_rows(config, on_rejected=lambda entry, seen=seen: seen.append(entry["where"]), shard=Shard(index, 3)))
        rejected.append(seen)
    assert sorted(where for seen in rejected for where in seen) == [f"{path}:{len(varied_lines(0, 50)) + 1}"]


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("kind", ["jsonl", "zst", "parquet", "directory", "hf"])
def test_a_resume_read_gives_each_row_once_either_as_a_row_or_among_the_finished(tmp_path, kind, count):
    path = every_input_kind(tmp_path)[kind]
    whole = rows(path)
    finished_ids = {row.id for row in whole[::2]}
    finished = FinishedIds.of([list(finished_ids)])
    read, skipped = [], []
    for index in range(count):
        for item in read_rows_resuming(InputConfig(path=str(path)), finished, shard=Shard(index, count)):
            if isinstance(item, FinishedRows):
                skipped += [(item.where(at), item.id(at)) for at in range(len(item))]
                assert all(position >= 0 for position in item.positions)
            else:
                read.append((item.where, item.id))
    assert sorted(read + skipped) == sorted((row.where, row.id) for row in whole)
    if kind in ("jsonl", "zst"):  # jsonl's finished rows are passed unparsed, in blocks
        assert sorted(skipped) == sorted((row.where, row.id) for row in whole if row.id in finished_ids)


def test_a_resume_read_leaves_a_block_it_cannot_parse_at_once_to_the_line_reader(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", '{"id": "a"}', '{"id": 7}', "{torn", '{"id": "b"}')
    config = InputConfig(path=str(path), skip_bad_rows=True)
    rejected: list[dict] = []
    items = list(read_rows_resuming(config, FinishedIds.of([["a", "7"]]), on_rejected=rejected.append, shard=Shard()))
    assert [item.id for item in items] == ["a", "7", "b"], "every row parsed as a row"
    assert [entry["where"] for entry in rejected] == [f"{path}:3"]
