"""Random inputs, good and broken, in every file format: a good row always comes out once, a bad one is always named
(one line, its file and line) or skipped, a damaged file always stops the read in one line naming it; nothing ever
ends in another exception.

Most examples read with ``read_rows`` directly (no Ray); a few fixed ones go through ``matrix run inference``.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matrix_core.cli import cli
from matrix_core.config import InputConfig
from matrix_core.engine import inputs
from matrix_core.engine.inputs import BadRowError, read_rows
from matrix_core.errors import MatrixError
from matrix_core.testing import FakeOpenAIServer

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis directory in the tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- what a file holds --------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
"""Any text a good row may hold: every character but the surrogates."""
SCALARS = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False) | TEXT
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=10
)
PAYLOADS = st.dictionaries(TEXT.filter(lambda key: key != "id"), VALUES, max_size=3)

ERRORS = {
    "torn": r"invalid JSON \(.+\)",
    "huge-int": r"invalid JSON \(an integer of more than 4300 digits\)",
    "deep": r"nested deeper than 100 levels",
    "surrogate": r"not UTF-8 text \(a lone surrogate '\\ud[89a-f][0-9a-f]{2}'\)",
    "not-utf8": r"not UTF-8 text",
    "not-object": r"a row must be a JSON object, got \w+",
    "id-type": r"'id' must be a string or an integer, got \w+",
}
"""The error each kind of bad row is rejected with."""


@dataclass(frozen=True)
class Good:
    id: Any
    data: dict[str, Any]
    ascii: bool = True
    """Whether its line escapes every non-ASCII character (``json.dumps``' default) or holds them as UTF-8."""


@dataclass(frozen=True)
class Bad:
    kind: str
    line: bytes


@dataclass(frozen=True)
class Blank:
    line: bytes


def _escape(code: int, upper: bool) -> str:
    text = f"\\u{code:04x}"
    return text.upper().replace("\\U", "\\u") if upper else text


@st.composite
def bad_lines(draw: st.DrawFn) -> Bad:
    """One jsonl line that cannot be a row, of a random kind."""
    kind = draw(st.sampled_from(sorted(ERRORS)))
    if kind == "torn":  # a good line cut short: a proper prefix of an object is never JSON
        text = json.dumps({"id": draw(TEXT), **draw(PAYLOADS)})
        line = text[: draw(st.integers(1, len(text) - 1))].encode()
    elif kind == "huge-int":
        digits = "9" * draw(st.integers(4301, 6000))
        line = draw(st.sampled_from([f'{{"id": {digits}}}', f'{{"id": "h", "n": [-{digits}]}}'])).encode()
    elif kind == "deep":
        depth = draw(st.integers(100, 3000))
        nested = draw(st.sampled_from(["[" * depth + "]" * depth, '{"a": ' * depth + "1" + "}" * depth]))
        line = f'{{"id": "d", "x": {nested}}}'.encode()
    elif kind == "surrogate":
        code = draw(st.integers(0xD800, 0xDFFF))
        text = json.dumps(draw(TEXT))[1:-1]  # escaped: a non-BMP character is a pair, which never pairs with ours
        as_bytes = draw(st.booleans())
        lone = chr(code).encode("utf-8", "surrogatepass") if as_bytes else _escape(code, draw(st.booleans())).encode()
        field = draw(st.sampled_from(["id", "text", "key"]))
        if field == "key":
            line = b'{"id": "k", "' + lone + b'": 1}'
        else:
            line = b'{"id": "s", "' + field.encode() + b'": "' + text.encode() + lone + b'"}'
    elif kind == "not-utf8":
        line = b'{"id": "' + draw(st.sampled_from([b"\xff", b"\xc3", b"\x80abc", b"\xe2\x82"])) + b'"}'
    elif kind == "not-object":
        value = draw(VALUES.filter(lambda value: not isinstance(value, dict)))
        line = json.dumps(value).encode()
    else:
        value = draw(st.floats() | st.booleans() | st.none() | st.lists(SCALARS, max_size=2) | st.just({"x": 1}))
        line = json.dumps({"id": value}).encode()
    return Bad(kind, line)


@st.composite
def entries(draw: st.DrawFn, max_size: int = 25) -> list[Good | Bad | Blank]:
    """A file's lines: good rows with ids unique as text, bad rows, blank lines."""
    kinds = draw(st.lists(st.sampled_from(["good", "good", "good", "bad", "blank"]), max_size=max_size))
    lines: list[Good | Bad | Blank] = []
    for index, kind in enumerate(kinds):
        if kind == "good":  # the index makes each id unique, also once written as text
            row_id = draw(st.one_of(TEXT, st.integers(0, 10**30)))
            row_id = row_id * 1000 + index if isinstance(row_id, int) else f"{index}|{row_id}"
            lines.append(Good(row_id, {"id": row_id, **draw(PAYLOADS)}, draw(st.booleans())))
        elif kind == "bad":
            lines.append(draw(bad_lines()))
        else:
            lines.append(Blank(draw(st.sampled_from([b"", b"   ", b"\t", b"\r"]))))
    return lines


def jsonl_bytes(lines: list[Good | Bad | Blank]) -> bytes:
    def encode(entry: Good | Bad | Blank) -> bytes:
        if isinstance(entry, Good):
            return json.dumps(entry.data, ensure_ascii=entry.ascii).encode()
        return entry.line

    return b"".join(encode(entry) + b"\n" for entry in lines)


Wanted = tuple[int, str, Any]
"""A good row as it must come out: its line (or row) number, its id, its data."""
Rejection = tuple[int, str, str]
"""A bad row as it must be named: its line (or row) number, where it is, its kind (a key of ERRORS)."""


def expected(path: Path, lines: list[Good | Bad | Blank]) -> tuple[list[Wanted], list[Rejection]]:
    """The good rows and the bad ones of ``lines`` as written to ``path``, in order."""
    goods, bads = [], []
    for number, entry in enumerate(lines, start=1):
        if isinstance(entry, Good):
            goods.append((number, str(entry.id), entry.data))
        elif isinstance(entry, Bad):
            bads.append((number, f"{path}:{number}", entry.kind))
    return goods, bads


def read(path: Path, skip_bad_rows: bool) -> tuple[list[tuple[str, Any]], list[dict], MatrixError | None]:
    """The rows read (id, data), the rejected ones and the error that stopped the read, if one did."""
    got: list[tuple[str, Any]] = []
    rejected: list[dict] = []
    try:
        for row in read_rows(InputConfig(path=str(path), skip_bad_rows=skip_bad_rows), on_rejected=rejected.append):
            got.append((row.id, row.data))
    except MatrixError as error:  # anything else fails the test with its traceback
        assert "\n" not in str(error), f"one line: {error}"
        return got, rejected, error
    return got, rejected, None


def check_rows(path: Path, goods: list[Wanted], bads: list[Rejection], whole: bool = True) -> None:
    """With ``skip_bad_rows`` every good row comes out once and every bad one is rejected, in order; without it the
    first bad row stops the read, named by its file and line. ``whole=False``: the file is damaged, so the read
    stops early in an error naming the file (never a bad row's), after a prefix of what the file holds."""
    rows = [(row_id, data) for _, row_id, data in goods]
    got, rejected, error = read(path, skip_bad_rows=True)
    assert [entry["where"] for entry in rejected] == [where for _, where, _ in bads[: len(rejected)]]
    for (_, _, kind), entry in zip(bads, rejected, strict=False):
        assert re.fullmatch(ERRORS[kind], entry["error"]), (kind, entry)
    if whole:
        assert error is None, error
        assert got == rows, "every good row once, as written"
        assert len(rejected) == len(bads)
    else:
        assert error is not None and not isinstance(error, BadRowError), "a damaged file is never read silently short"
        assert str(error).startswith(f"{path}: ")
        assert got == rows[: len(got)] and len(rejected) <= len(bads)

    got, rejected, error = read(path, skip_bad_rows=False)
    assert rejected == []
    if isinstance(error, BadRowError) or (whole and bads):
        number, where, kind = bads[0]
        assert isinstance(error, BadRowError), error
        assert re.fullmatch(re.escape(where) + ": " + ERRORS[kind], str(error)), (kind, str(error))
        assert got == [(row_id, data) for before, row_id, data in goods if before < number], "all rows before it"
    elif whole:
        assert error is None and got == rows
    else:
        assert error is not None and str(error).startswith(f"{path}: ")
        assert got == rows[: len(got)]


@FUZZ
@given(lines=entries())
def test_jsonl(lines):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "in.jsonl"
        path.write_bytes(jsonl_bytes(lines))
        check_rows(path, *expected(path, lines))


@FUZZ
@given(lines=entries(), data=st.data())
def test_jsonl_zst(lines, data):
    """Written as 1 to 3 frames, with or without checksums; maybe cut short anywhere inside a frame."""
    raw = jsonl_bytes(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=2)))
    compressor = zstandard.ZstdCompressor(write_checksum=data.draw(st.booleans()))
    frames = [compressor.compress(raw[start:end]) for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    compressed = b"".join(frames)
    boundaries = {sum(map(len, frames[:count])) for count in range(len(frames) + 1)}
    truncate = data.draw(st.booleans())
    if truncate:  # a file that ends between frames is a whole (shorter) zstd file: cut inside one
        compressed = compressed[: data.draw(st.integers(1, len(compressed) - 1).filter(lambda n: n not in boundaries))]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "in.jsonl.zst"
        path.write_bytes(compressed)
        check_rows(path, *expected(path, lines), whole=not truncate)
        if truncate:
            _, _, error = read(path, skip_bad_rows=True)
            assert str(error) == f"{path}: truncated zstd stream (the file ends inside a frame)"


@st.composite
def parquet_rows(draw: st.DrawFn) -> list[tuple[str, str | None, bytes]]:
    """(kind, id, text) rows: a None id (``id-type``) or a text that is not UTF-8 (``not-utf8``) makes a bad row."""
    count = draw(st.integers(0, 40))
    rows = []
    for index in range(count):
        kind = draw(st.sampled_from(["good", "good", "good", "id-type", "not-utf8"]))
        text = draw(TEXT).encode()
        if kind == "not-utf8":
            text = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"])) + text
        rows.append((kind, None if kind == "id-type" else f"r{index}", text))
    return rows


@FUZZ
@given(rows=parquet_rows(), data=st.data())
def test_parquet(rows, data):
    """Row groups and read batches of random sizes; maybe bytes overwritten anywhere between the magic and the footer
    (written with page checksums, as a careful writer does: without them, corrupt data can read as other data)."""
    texts = pa.array([text for _, _, text in rows], pa.binary()).view(pa.string())  # unchecked, as a careless writer's
    table = pa.table({"id": pa.array([row_id for _, row_id, _ in rows], pa.string()), "text": texts})
    buffer = io.BytesIO()
    compression = data.draw(st.sampled_from(["snappy", "zstd", "none"]))
    row_group_size = data.draw(st.integers(1, 10))
    pq.write_table(table, buffer, row_group_size=row_group_size, compression=compression, write_page_checksum=True)
    written = bytearray(buffer.getvalue())
    footer_start = len(written) - 8 - struct.unpack("<I", written[-8:-4])[0]
    corrupt = bool(rows) and data.draw(st.booleans())
    if corrupt:
        start = data.draw(st.integers(4, footer_start - 1))
        noise = data.draw(st.binary(min_size=1, max_size=32))[: footer_start - start]
        written[start : start + len(noise)] = noise
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "in.parquet"
        path.write_bytes(bytes(written))
        goods: list[Wanted] = []
        bads: list[Rejection] = []
        for number, (kind, row_id, text) in enumerate(rows):
            if kind == "good":
                goods.append((number, row_id, {"id": row_id, "text": text.decode()}))
            else:
                bads.append((number, f"{path}:row {number}", kind))
        with mock.patch.object(inputs, "BATCH_ROWS", data.draw(st.integers(1, 7))):
            if not corrupt:
                check_rows(path, goods, bads)
                return
            got, rejected, error = read(path, skip_bad_rows=True)
            good_rows = [(row_id, data) for _, row_id, data in goods]
            if error is None:  # the noise hit nothing read (statistics, padding) or left the bytes as they were
                assert got == good_rows and len(rejected) == len(bads)
            else:
                assert not isinstance(error, BadRowError) and str(error).startswith(f"{path}: "), error
                assert got == good_rows[: len(got)], "what was read before the damage is good"


# --- end to end: a few fixed inputs through `matrix run inference` -------------------------------------------------

BAD_LINES = [
    ('{"id": "torn", "text": "a', "invalid JSON"),
    ('{"id": "big", "n": ' + "9" * 5000 + "}", "invalid JSON (an integer of more than 4300 digits)"),
    ('{"id": "deep", "text": "x", "x": ' + "[" * 2000 + "]" * 2000 + "}", "nested deeper than 100 levels"),
    ('{"id": "\\ud800", "text": "lone"}', "not UTF-8 text (a lone surrogate '\\ud800')"),
    ('["not", "an", "object"]', "a row must be a JSON object, got list"),
]


def mixed_input(directory: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """``in.jsonl``: good rows with every bad line of BAD_LINES between them; its good ids and bad (where, error)."""
    lines, good, bad = [], [], []
    for index, (line, error) in enumerate(BAD_LINES):
        good.append(f"q{index}")
        lines += [json.dumps({"id": f"q{index}", "text": f"question {index}"}), line]
        bad.append((f"{directory / 'in.jsonl'}:{len(lines)}", error))
    (directory / "in.jsonl").write_text("".join(line + "\n" for line in lines))
    return good, bad


def run(server: FakeOpenAIServer, path: Path, *args: str) -> Any:
    command = ["run", "inference", "-i", str(path), "-o", str(path.parent / "out.jsonl"), "-q"]
    command += [f"backend.base_url={server.base_url}", "backend.model=fake-model", "inference.sampling.max_tokens=4"]
    return CliRunner().invoke(cli, [*command, *args])


def assert_one_error_line(result: Any, pattern: str) -> None:
    """The run failed with exactly one ``Error:`` line, which matches ``pattern``, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), "no exception escaped the CLI"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and re.fullmatch("Error: " + pattern, errors[0]), result.output


@pytest.fixture
def server():
    with FakeOpenAIServer(output_tokens=4).in_thread() as running:
        yield running


def test_bad_rows_end_to_end_are_skipped_and_noted_or_stop_the_run_in_one_line(ray_session, server, tmp_path):
    good, bad = mixed_input(tmp_path)
    result = run(server, tmp_path / "in.jsonl", "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(record["id"] for record in written) == sorted(good), "every good row once, and no other"
    rejected = [json.loads(line) for line in (tmp_path / "out.rejected.jsonl").read_text().splitlines()]
    found = {entry["where"]: entry["error"] for entry in rejected}
    assert len(rejected) == len(found) and sorted(found) == sorted(where for where, _ in bad), "every bad row once"
    assert all(found[where].startswith(error) for where, error in bad), found

    for leftover in tmp_path.glob("out.*"):
        leftover.unlink()
    result = run(server, tmp_path / "in.jsonl")
    assert_one_error_line(result, re.escape(f"{bad[0][0]}: {bad[0][1]}") + r" \(.+\)")


def test_a_truncated_zstd_shard_stops_the_run_in_one_line_skipped_or_not(ray_session, server, tmp_path):
    data = "".join(json.dumps({"id": f"q{index}", "text": "words " * 20}) + "\n" for index in range(200)).encode()
    compressed = zstandard.ZstdCompressor().compress(data)
    (tmp_path / "in.jsonl.zst").write_bytes(compressed[: len(compressed) * 2 // 3])
    for options in ([], ["--skip-bad-rows"]):
        for leftover in tmp_path.glob("out.*"):
            leftover.unlink()
        result = run(server, tmp_path / "in.jsonl.zst", *options)
        message = f"{tmp_path / 'in.jsonl.zst'}: truncated zstd stream (the file ends inside a frame)"
        assert_one_error_line(result, re.escape(message))


def test_a_parquet_file_corrupt_in_the_middle_stops_the_run_in_one_line(ray_session, server, tmp_path):
    path = tmp_path / "in.parquet"
    table = pa.table(
        {"id": [f"q{index}" for index in range(300)], "text": [f"question {index}" for index in range(300)]}
    )
    pq.write_table(table, path, row_group_size=100, write_page_checksum=True)
    column = pq.ParquetFile(path).metadata.row_group(2).column(1)
    written = bytearray(path.read_bytes())
    start = column.data_page_offset + column.total_compressed_size // 2
    written[start : start + 8] = b"\x00\xff" * 4
    path.write_bytes(bytes(written))
    result = run(server, path, "--skip-bad-rows")
    assert_one_error_line(
        result, re.escape(f"{path}: ") + r"(corrupt from row \d+ on|not a readable parquet file) \(.+\)"
    )
