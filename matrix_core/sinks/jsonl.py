"""JSON Lines output: one record per line, appended and flushed per record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from matrix_core.errors import MatrixError
from matrix_core.sinks.base import Sink


class JsonlSink(Sink):
    """Appends one JSON object per line; a torn last line left by a crash is dropped on resume."""

    suffix = ".jsonl"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file: IO[bytes] | None = None

    def finished_ids(self) -> Iterator[str]:
        if not self.path.exists():
            return
        with self.path.open("rb") as file:
            for number, line in enumerate(file, start=1):
                if not line.endswith(b"\n"):
                    return  # torn by a crash mid-write: truncated before appending
                try:
                    yield str(json.loads(line)["id"])
                except (ValueError, KeyError, TypeError) as error:
                    raise MatrixError(
                        f"{self.path}:{number}: not a record with an 'id' ({error.__class__.__name__})"
                    ) from None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self._open_for_append()
        self._file.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
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
