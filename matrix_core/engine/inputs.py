"""Input rows: jsonl (plain or zstd-compressed), parquet or a local Hugging Face ``datasets`` directory, streamed
one row at a time, each with a stable id.

``input.path`` is a file, a directory of ``.jsonl``/``.json``/``.jsonl.zst``/``.parquet`` shards, a glob
(``data/*.jsonl``), a directory written by ``datasets``' ``save_to_disk``, or a dataset by name, ``hf://OWNER/NAME``
(``input.hf.config``, ``.split``, ``.revision``), streamed with the ``datasets`` library (``pip install
'matrix-core[hf]'``; ``hf:///a/local/folder`` reads a local dataset folder the same way). Nothing is read whole:
jsonl goes a chunk of lines at a time (``.zst`` files decompressed as a stream), parquet and Arrow by record
batch, so millions of rows cost the memory of one batch. ``input.id_key`` may be a dotted path into nested fields
(``metadata.WARC-Record-ID``).

A row that cannot be a task (not JSON, not an object, an id of the wrong type, nested deeper than
:data:`MAX_DEPTH`, not UTF-8 text) is a :class:`BadRowError`, which ``input.skip_bad_rows`` skips. A file that cannot be
read to its end (a truncated ``.zst``, a corrupt parquet page) stops the read with a :class:`MatrixError` naming the
file, even with ``input.skip_bad_rows``: the rows it loses cannot be named one by one.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from matrix_core.config import InputConfig
from matrix_core.engine.finished_rows import CHUNK_BYTES, FinishedRows, FinishedSkipper
from matrix_core.engine.idsets import FinishedIds
from matrix_core.errors import BadRowError, ConfigError, MatrixError

logger = logging.getLogger(__name__)

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".jsonl.zst": "jsonl", ".parquet": "parquet"}
"""The file suffixes read without ``input.format``, and the format each means."""
FORMATS = ("jsonl", "parquet", "hf")
HUB = "hf://"
"""The prefix of ``input.path`` for a dataset read by name with the ``datasets`` library."""
BATCH_ROWS = 1024
"""Rows turned into Python objects at a time: bounds memory when one Arrow batch holds many large rows."""
_HF_MARKERS = ("state.json", "dataset_info.json")
MAX_DEPTH = 100
"""Levels of nesting a row may have: Ray pickles every task, and Python's pickle stops near 500 levels."""
_ZSTD_READ = 1 << 14
"""Compressed bytes decompressed at a time: jsonl compresses 5x to 100x, so this holds up to about 1.6 MB."""
_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")
"""What a lone surrogate looks like in a jsonl line: a ``\\ud800``-style escape, or its bytes, which ``json.loads``
lets through."""


@dataclass(frozen=True)
class Row:
    """One input row: its task id, its data, and where it was read (``file:line`` or ``file:row N``)."""

    id: str
    data: dict[str, Any]
    where: str


@dataclass(frozen=True)
class Shard:
    """Partition ``index`` of ``count``: the part of the input one collector reads, and no other does.

    A plain jsonl file is cut in ``count`` byte ranges at line starts; the other units (parquet row groups, the
    record batches of a ``datasets`` directory, the chunks of lines of a ``.zst`` file, which cannot be entered
    midway) go round-robin, counted across the input's files. Rows keep the numbers they have in the whole file."""

    index: int = 0
    count: int = 1


class _Turns:
    """Round-robin over an input's units, counted across its files: whether a shard takes the next one."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        self._next = 0

    def mine(self) -> bool:
        taken = self._next % self.shard.count == self.shard.index
        self._next += 1
        return taken


@dataclass(frozen=True)
class _Record:
    """A record as read, before it is checked: ``error`` says why it could not be parsed."""

    where: str
    value: Any = None
    line: bytes | None = None  # the raw jsonl line, kept only to report it when rejected
    error: str | None = None


def read_rows(
    config: InputConfig,
    on_rejected: Callable[[dict[str, Any]], None] | None = None,
    shard: Shard = Shard(),
) -> Iterator[Row]:
    """Stream the rows of ``config.path`` (those of ``shard``: by default all) with their ids.

    A missing input or an unknown format fails here, before any row is read. A malformed row raises :class:`BadRowError`
    while iterating, or, with ``config.skip_bad_rows``, is passed to ``on_rejected`` as ``{"where", "error",
    "line"}`` (``line`` for jsonl only) and skipped. A file that cannot be read to its end raises a
    :class:`MatrixError` naming it, even with ``skip_bad_rows``. Duplicate ids are the caller's to detect.
    """
    return _rows(_records(config, shard), config, on_rejected or _log_rejected)  # type: ignore[return-value]


def read_rows_resuming(
    config: InputConfig,
    finished: FinishedIds,
    on_rejected: Callable[[dict[str, Any]], None] | None = None,
    shard: Shard = Shard(),
) -> Iterator[Row | FinishedRows]:
    """:func:`read_rows` for a resume: runs of jsonl rows whose ids are in ``finished`` come as
    :class:`FinishedRows`, their ids read in blocks, not parsed row by row. Other formats, and an ``input.id_key``
    into nested fields, yield every row."""
    skipper = None if "." in config.id_key else FinishedSkipper(finished, config.id_key)
    return _rows(_records(config, shard, skipper), config, on_rejected or _log_rejected)


def _records(config: InputConfig, shard: Shard, skipper: FinishedSkipper | None = None) -> Iterator[Any]:
    """What the readers of ``config``'s sources yield for ``shard``: records, and with ``skipper``, finished rows."""
    if config.path is None:
        raise MatrixError("no input: pass -i FILE or set input.path")
    if config.format is not None and config.format not in FORMATS:
        raise ConfigError(f"input.format: unknown format {config.format!r} (one of: {', '.join(FORMATS)})")
    if not 0 <= shard.index < shard.count:
        raise ValueError(f"no shard {shard.index} of {shard.count}")
    turns = _Turns(shard)
    if config.path.startswith(HUB):
        return _hub_records(config, turns, _hub_stream(config))
    sources = _sources(config.path, config.format)
    return (
        record
        for path, format in sources
        for record in (_read_jsonl(path, turns, skipper) if format == "jsonl" else _READERS[format](path, turns))
    )


def input_files(config: InputConfig) -> list[Path]:
    """Every file ``config.path`` reads, in order: its jsonl and parquet files, a ``datasets`` directory's Arrow
    shards."""
    assert config.path is not None
    if config.path.startswith(HUB):
        return []  # a dataset by name is identified by its name and input.hf.*, not by files here
    files: list[Path] = []
    for path, format in _sources(config.path, config.format):
        files += _hf_data_files(path) if format == "hf" else [path]
    return files


def _sources(path_text: str, format: str | None) -> list[tuple[Path, str]]:
    """The files (or ``datasets`` directory) to read, in order, each with its format."""
    path = Path(path_text)
    if not path.exists() and any(char in path_text for char in "*?["):
        matches = sorted(Path(match) for match in glob.glob(path_text, recursive=True) if Path(match).is_file())
        if not matches:
            raise MatrixError(f"input.path: no file matches {path_text}")
        return [(match, format or _format_of(match)) for match in matches]
    if not path.exists():
        raise MatrixError(f"input.path: no such file: {path_text}")
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            raise MatrixError(
                f"input.path: {path} holds several splits (a DatasetDict)",
                hint=f"point input.path at one split, e.g. {path / 'train'}",
            )
        if format == "hf" or any((path / marker).is_file() for marker in _HF_MARKERS):
            return [(path, "hf")]
        shards = sorted(child for child in path.iterdir() if _suffix_of(child) in SUFFIXES and child.is_file())
        if not shards:
            raise MatrixError(
                f"input.path: {path} holds no {', '.join(SUFFIXES)} files and is not a datasets directory"
            )
        return [(shard, format or _format_of(shard)) for shard in shards]
    if format == "hf":
        raise MatrixError(f"input.path: {path} is a file; input.format hf reads a directory saved by save_to_disk")
    return [(path, format or _format_of(path))]


def _format_of(path: Path) -> str:
    try:
        return SUFFIXES[_suffix_of(path)]
    except KeyError:
        raise MatrixError(
            f"{path}: unknown input suffix {path.suffix!r}: set input.format to one of {', '.join(FORMATS)}"
        ) from None


def _suffix_of(path: Path) -> str:
    """``.jsonl.zst`` for a compressed shard, else the last suffix."""
    return ".jsonl.zst" if path.name.endswith(".jsonl.zst") else path.suffix


def _rows(
    records: Iterable[_Record | FinishedRows], config: InputConfig, on_rejected: Callable[[dict[str, Any]], None]
) -> Iterator[Row | FinishedRows]:
    for record in records:
        if isinstance(record, FinishedRows):
            yield record
            continue
        error = record.error or _problem(record.value, config.id_key)
        if error is None:
            yield Row(_row_id(record.value, config.id_key), record.value, record.where)
        elif config.skip_bad_rows:
            entry = {"where": record.where, "error": error}
            if record.line is not None:
                entry["line"] = record.line.decode("utf-8", "replace").rstrip("\r\n")
            on_rejected(entry)
        else:
            raise BadRowError(f"{record.where}: {error}")


def _problem(value: Any, id_key: str) -> str | None:
    """Why a parsed value cannot be a row, or None."""
    if not isinstance(value, dict):
        return f"a row must be a JSON object, got {type(value).__name__}"
    task_id = _lookup(value, id_key)
    # bool is an int subclass, but True as an id is a data bug, not an id
    if task_id is not _MISSING and (not isinstance(task_id, (str, int)) or isinstance(task_id, bool)):
        return f"{id_key!r} must be a string or an integer, got {type(task_id).__name__}"
    return None


_MISSING = object()


def _lookup(data: dict[str, Any], id_key: str) -> Any:
    """``data[id_key]``; else, for a dotted key, the nested field it names (``metadata.WARC-Record-ID``)."""
    if id_key in data:
        return data[id_key]
    value: Any = data
    for part in id_key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _row_id(data: dict[str, Any], id_key: str) -> str:
    """The row's own id, else a hash of its content: the same row gets the same id on every run."""
    if (task_id := _lookup(data, id_key)) is not _MISSING:
        return str(task_id)
    # default=str: parquet and Arrow rows may hold dates or bytes, which have a stable str() but no JSON form
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _log_rejected(entry: dict[str, Any]) -> None:
    logger.warning("skipped bad row %s: %s", entry["where"], entry["error"])


# --- readers: each yields the records of one source, streamed -------------------------------------------------


def _read_jsonl(path: Path, turns: _Turns, skipper: FinishedSkipper | None = None) -> Iterator[_Record | FinishedRows]:
    with _open(path) as raw, _decompressed(path, raw) as file:
        try:
            for first, chunk in _line_chunks(path, file, turns):
                if skipper is not None:
                    finished, lines = skipper.split(path, first, chunk)
                    if finished is not None:
                        yield finished
                else:
                    lines = enumerate(chunk.split(b"\n"), start=first)
                for number, line in lines:
                    if line.strip():
                        yield _parsed(f"{path}:{number}", line)
        except zstandard.ZstdError as error:
            raise MatrixError(f"{path}: not a readable zstd file ({_one_line(error)})") from None
        except OSError as error:  # a disk or network file system failing mid-file
            raise MatrixError(f"{path}: cannot read ({error.strerror or _one_line(error)})") from None


def _line_chunks(path: Path, file: IO[bytes], turns: _Turns) -> Iterator[tuple[int, bytes]]:
    """The shard's part of ``file`` in chunks of whole lines (about :data:`CHUNK_BYTES` each, without the last
    line's newline), each with the number its first line has in the whole file: a plain file's byte range, or a
    ``.zst`` file's chunks in turns (a compressed stream cannot be entered midway)."""
    shard = turns.shard
    whole = shard.count == 1 or path.suffix == ".zst"
    position, end = 0, None
    if not whole:
        size = path.stat().st_size
        position, end = size * shard.index // shard.count, size * (shard.index + 1) // shard.count
        if position > 0:  # a line belongs to the range it starts in
            file.seek(position - 1)
            if file.read(1) != b"\n":
                file.readline()
            position = file.tell()
    number = _lines_before(file, position) + 1 if position else 1
    rest = b""
    while end is None or position < end:
        data = file.read(CHUNK_BYTES)
        if not data:
            if rest and (not whole or turns.mine()):
                yield number, rest  # a last line without a newline
            return
        data, rest = rest + data, b""
        cut = data.rfind(b"\n")
        if cut < 0:  # one line longer than a chunk
            rest = data
            continue
        if end is not None and position + cut + 1 >= end:  # a line starts at the range's end: stop before it
            cut = data.index(b"\n", max(0, end - position - 1))
            yield number, data[:cut]
            return
        chunk, rest = data[:cut], data[cut + 1 :]
        if not whole or turns.mine():
            yield number, chunk
        number += chunk.count(b"\n") + 1
        position += cut + 1


def _lines_before(file: IO[bytes], position: int) -> int:
    """How many lines end before byte ``position`` (counted, not parsed); leaves the file at ``position``."""
    file.seek(0)
    lines = 0
    while position - file.tell() > 0:
        lines += file.read(min(1 << 20, position - file.tell())).count(b"\n")
    return lines


def _parsed(where: str, line: bytes) -> _Record:
    try:
        value = json.loads(line)
    except UnicodeDecodeError:
        return _Record(where, line=line, error="not UTF-8 text")
    except json.JSONDecodeError as error:
        return _Record(where, line=line, error=f"invalid JSON ({error.msg})")
    except ValueError:  # json's only other one: int() refuses more than sys.get_int_max_str_digits()
        limit = sys.get_int_max_str_digits()
        return _Record(where, line=line, error=f"invalid JSON (an integer of more than {limit} digits)")
    except RecursionError:
        return _Record(where, line=line, error=f"nested deeper than {MAX_DEPTH} levels")
    return _Record(where, value, line, _json_problem(line, value))


def _json_problem(line: bytes, value: Any) -> str | None:
    """Why a parsed jsonl row still cannot be a task (too deep, a lone surrogate), or None.

    Each check walks the row, so it runs only on a line that could fail it: one with more brackets than
    :data:`MAX_DEPTH`, or with what looks like a surrogate.
    """
    if line.count(b"[") + line.count(b"{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        return f"nested deeper than {MAX_DEPTH} levels"
    if _SURROGATE.search(line):
        try:  # the output is UTF-8, and a lone surrogate has no UTF-8 form
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError as error:
            return f"not UTF-8 text (a lone surrogate {error.object[error.start : error.end]!r})"
    return None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep (a scalar has none)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _read_parquet(path: Path, turns: _Turns) -> Iterator[_Record]:
    with _open(path) as file:
        try:  # verifies the checksums of pages that have one (writers add them on request)
            parquet = pq.ParquetFile(file, page_checksum_verification=True)
        except (pa.ArrowException, OSError) as error:  # pyarrow raises a plain OSError for a corrupt file
            raise MatrixError(f"{path}: not a readable parquet file ({_one_line(error)})") from None
        metadata = parquet.metadata
        sizes = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
        if (grouped := sum(sizes)) != metadata.num_rows:
            raise MatrixError(f"{path}: corrupt footer (it counts {metadata.num_rows} rows, its row groups {grouped})")
        first = 0
        for group, rows in enumerate(sizes):
            if turns.mine():
                batches = parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group])
                # a corrupt page header can make pyarrow end a column early without an error: the footer's count
                # catches it
                yield from _batch_records(path, batches, first, expected_rows=rows)
            first += rows


def _read_hf(directory: Path, turns: _Turns) -> Iterator[_Record]:
    """A ``save_to_disk`` directory: its ``.arrow`` files are Arrow IPC streams, in ``state.json``'s order."""
    for path in _hf_data_files(directory):
        if not path.is_file():
            raise MatrixError(f"{directory}: state.json lists {path.name}, which is missing")
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowException as error:
                raise MatrixError(f"{path}: not an Arrow stream written by datasets ({_one_line(error)})") from None
            yield from _batch_records(path, reader, take=turns.mine)


def _hub_stream(config: InputConfig) -> Any:
    """The split ``config`` names, as a ``datasets`` streaming dataset (nothing is downloaded before it is read)."""
    assert config.path is not None
    try:
        import datasets
    except ImportError:
        raise MatrixError(
            f"input.path: {config.path} is read with the datasets library, which is not installed",
            hint="pip install 'matrix-core[hf]'",
        ) from None
    hub = config.hf
    try:
        return datasets.load_dataset(
            config.path[len(HUB) :], hub.config, split=hub.split, revision=hub.revision, streaming=True
        )
    except Exception as error:  # datasets raises many kinds (not found, offline, no such split): its words name it
        raise MatrixError(f"input.path: cannot open {config.path} ({_one_line(error)})") from None


def _hub_records(config: InputConfig, turns: _Turns, stream: Any) -> Iterator[_Record]:
    """The rows of a streaming dataset, whose data files (``num_shards``) are dealt round-robin; a row is named by
    its file's number and its number in that file (``hf://org/data:train/3:row 12``)."""
    for index in range(stream.num_shards):
        if not turns.mine():
            continue
        number = 0
        try:
            for number, example in enumerate(stream.shard(num_shards=stream.num_shards, index=index)):
                yield _Record(f"{config.path}:{config.hf.split}/{index}:row {number}", example)
        except Exception as error:  # a download or a file failing midway: the rows after it cannot be named
            where = f"{config.path}:{config.hf.split}/{index}"
            raise MatrixError(f"{where}: cannot read from row {number} on ({_one_line(error)})") from None


def _hf_data_files(directory: Path) -> list[Path]:
    state = directory / "state.json"
    if not state.is_file():  # only dataset_info.json: no recorded order, so take the shards by name
        return sorted(directory.glob("*.arrow"))
    try:
        files = json.loads(state.read_text(encoding="utf-8"))["_data_files"]
        return [directory / entry["filename"] for entry in files]
    except (ValueError, KeyError, TypeError) as error:
        raise MatrixError(f"{state}: not a datasets state file ({error.__class__.__name__}: {error})") from None


def _batch_records(
    path: Path,
    batches: Iterable[pa.RecordBatch],
    first: int = 0,
    expected_rows: int | None = None,
    take: Callable[[], bool] | None = None,
) -> Iterator[_Record]:
    """The rows of ``batches``, numbered from ``first`` (those of the batches ``take`` says yes to); a batch that
    cannot be read, or batches that end before ``expected_rows``, end them with a :class:`MatrixError` naming the row
    it starts at."""
    # rows count from 0, as pandas, pyarrow and datasets index them
    number = first
    batches = iter(batches)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as error:
            raise MatrixError(f"{path}: corrupt from row {number} on ({_one_line(error)})") from None
        if batch is None:
            if expected_rows is not None and number - first != expected_rows:
                counts = f"rows end at {number}; the footer counts {first + expected_rows}"
                raise MatrixError(f"{path}: corrupt from row {number} on ({counts})")
            return
        if take is not None and not take():
            number += batch.num_rows
            continue
        for start in range(0, batch.num_rows, BATCH_ROWS):
            for record in _slice_records(path, batch.slice(start, BATCH_ROWS), number):
                yield record
                number += 1


def _slice_records(path: Path, rows: pa.RecordBatch, first: int) -> list[_Record]:
    """The records of ``rows``, the first numbered ``first``; a string that is not UTF-8 makes its row a bad one."""
    try:
        return [_Record(f"{path}:row {first + index}", data) for index, data in enumerate(rows.to_pylist())]
    except UnicodeDecodeError:  # Arrow checks UTF-8 only when a string becomes Python's: find the rows, one by one
        records = []
        for index in range(rows.num_rows):
            where = f"{path}:row {first + index}"
            try:
                records.append(_Record(where, rows.slice(index, 1).to_pylist()[0]))
            except UnicodeDecodeError:
                records.append(_Record(where, error="not UTF-8 text"))
        return records


def _one_line(error: BaseException) -> str:
    """The first line of ``error``'s message (a library's may run on over several), control characters escaped."""
    line = next(iter(str(error).strip().splitlines()), type(error).__name__)
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in line)


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as error:
        raise MatrixError(f"{path}: cannot read ({error.strerror})") from None


def _decompressed(path: Path, raw: IO[bytes]) -> IO[bytes]:
    """``raw`` itself, or for a ``.zst`` file a buffered stream of its decompressed bytes (every frame of it)."""
    if path.suffix != ".zst":
        return raw
    return io.BufferedReader(_ZstdFrames(path, raw))


class _ZstdFrames(io.RawIOBase):
    """The decompressed bytes of a ``.zst`` file, frame after frame, ending in a :class:`MatrixError` if the file
    ends inside a frame.

    zstandard's ``stream_reader`` reads a truncated file silently short; a decompressor per frame
    (``decompressobj``) says whether its frame ended (``eof``).
    """

    def __init__(self, path: Path, raw: IO[bytes]) -> None:
        super().__init__()
        self._path, self._raw = path, raw
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame: Any = None
        """The decompressor of the frame being read; None between frames."""
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            data = self._raw.read(_ZSTD_READ)
            if not data:
                if self._frame is not None:
                    raise MatrixError(f"{self._path}: truncated zstd stream (the file ends inside a frame)")
                return 0
            self._out = memoryview(self._decompress(data))
        size = min(len(buffer), len(self._out))
        buffer[:size] = self._out[:size]
        self._out = self._out[size:]
        return size

    def _decompress(self, data: bytes) -> bytes:
        chunks = []
        while data:
            if self._frame is None:
                self._frame = self._decompressor.decompressobj()
            chunks.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data, self._frame = self._frame.unused_data, None
        return b"".join(chunks)


_READERS: dict[str, Callable[[Path, _Turns], Iterator[_Record]]] = {
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "hf": _read_hf,
}
