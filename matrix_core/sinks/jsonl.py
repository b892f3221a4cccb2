"""JSON Lines output: one record per line, appended and flushed per record, put on disk when the writer syncs."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from matrix_core.engine.finished_rows import chunk_ids
from matrix_core.errors import MatrixError
from matrix_core.sinks.base import FinishedRecord, Sink, replace_atomically

READ_BYTES = 1 << 24
"""Bytes of the output parsed at a time on ``--resume``."""


class JsonlSink(Sink):
    """Appends one JSON object per line; a torn last line left by a crash is dropped on resume."""

    suffix = ".jsonl"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file: IO[bytes] | None = None

    def finished_ids(self) -> Iterator[str]:
        for batch in self.finished_id_batches():
            yield from batch.to_pylist() if isinstance(batch, pa.Array) else batch

    def finished_id_batches(self) -> Iterator[Sequence[str]]:
        """The ids, a chunk of lines at a time, each chunk parsed in one pyarrow call on every core (a resume reads
        millions of records in seconds); a chunk with a line that is not a record is read line by line, which
        names it."""
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            number, rest = 1, b""
            while data := file.read(READ_BYTES):
                data = rest + data
                cut = data.rfind(b"\n") + 1
                chunk, rest = data[:cut], data[cut:]  # a torn last line stays in rest: it is no record
                if not chunk:
                    continue
                ids = chunk_ids(chunk, "id", threads=True)
                if ids is not None and len(ids) == chunk.count(b"\n"):  # no blank line, which is no record
                    yield ids
                else:
                    lines = chunk.split(b"\n")[:-1]
                    yield [self._record(at, line).id for at, line in enumerate(lines, start=number)]
                number += chunk.count(b"\n")

    def finished(self) -> Iterator[FinishedRecord]:
        return (record for _, record in self._lines())

    def records(self) -> Iterator[dict[str, Any]]:
        for number, line in self._numbered_lines():
            try:
                yield json.loads(line)
            except ValueError as error:
                raise MatrixError(f"{self.path}:{number}: not a record ({error.__class__.__name__})") from None

    def remove(self, ids: Collection[str]) -> None:
        """Rewrite the file without the records of ``ids`` (and without a torn last line), atomically."""
        if self._file is not None:  # appending to the file about to be replaced would write to the old one
            self._file.close()
            self._file = None
        unwanted = set(ids)
        if not any(record.id in unwanted for _, record in self._lines()):
            return
        with replace_atomically(self.path) as file:
            for line, record in self._lines():
                if record.id not in unwanted:
                    file.write(line)

    def _lines(self) -> Iterator[tuple[bytes, FinishedRecord]]:
        """Each complete line with its record's id and status."""
        return ((line, self._record(number, line)) for number, line in self._numbered_lines())

    def _numbered_lines(self) -> Iterator[tuple[int, bytes]]:
        """Each complete line with its number."""
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    return  # torn by a crash mid-write: truncated before appending
                yield number, line

    def _record(self, number: int, line: bytes) -> FinishedRecord:
        try:
            record = json.loads(line)
            task_id, status = str(record["id"]), record.get("status")
        except (ValueError, KeyError, TypeError) as error:
            raise MatrixError(f"{self.path}:{number}: not a record with an 'id' ({error.__class__.__name__})") from None
        return FinishedRecord(task_id, "" if status is None else str(status))

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line; a record JSON cannot encode (a set, a lone surrogate) raises
        ``TypeError`` or ``ValueError`` before anything is written."""
        line = json.dumps(record, ensure_ascii=False).encode() + b"\n"
        if self._file is None:
            self._file = self._open_for_append()
        self._file.write(line)
        self._file.flush()

    def sync(self) -> None:
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        if os.fstat(self._file.fileno()).st_nlink == 0:  # writes to a removed file succeed, and are lost
            raise FileNotFoundError(errno.ENOENT, "the file was removed while the run wrote it")

    def close(self) -> None:
        if self._file is not None:
            try:
                self.sync()
            finally:
                self._file.close()
                self._file = None

    def _open_for_append(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("ab+")
        file.truncate(_end_of_last_complete_line(file))
        file.seek(0, 2)
        return file


def _end_of_last_complete_line(file: IO[bytes], chunk: int = 65536) -> int:
    """The offset just past the file's last newline (0 if none): where a torn last line begins."""
    position = file.seek(0, 2)
    while position > 0:
        start = max(0, position - chunk)
        file.seek(start)
        newline = file.read(position - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0
