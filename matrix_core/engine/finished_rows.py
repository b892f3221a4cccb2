"""Skipping the rows a resume finished before, without parsing them one by one: the ids of a chunk of jsonl lines
are read in one pyarrow call and looked up among the finished ids at once, so that a resume passes a long finished
prefix at the speed of reading it."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from matrix_core.engine.idsets import FinishedIds

CHUNK_BYTES = 1 << 20
"""Bytes of jsonl read at a time, cut at a line's end."""


@dataclass(frozen=True)
class FinishedRows:
    """Rows of one file whose ids are finished: skipped, but their ids are still checked for duplicates."""

    path: Path
    numbers: np.ndarray
    """Each row's line number in the file."""
    ids: pa.Array
    positions: np.ndarray
    """Each id's position among the finished ids."""

    def where(self, index: int) -> str:
        """``file:line`` of the ``index``-th row."""
        return f"{self.path}:{self.numbers[index]}"

    def id(self, index: int) -> str:
        """The ``index``-th row's id."""
        return str(self.ids[index].as_py())

    def __len__(self) -> int:
        return len(self.positions)


def chunk_ids(chunk: bytes, id_key: str, threads: bool = False) -> pa.Array | None:
    """The ids of the jsonl lines of ``chunk`` in one call (blank lines have none); None unless every line is a
    JSON object with a string at ``id_key`` (the chunk is then read line by line, which names what is wrong)."""
    schema = pa.schema([(id_key, pa.string())])
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    block = len(chunk) // (4 if threads else 1) + 1  # blocks parse in parallel with threads
    read = pa_json.ReadOptions(use_threads=threads, block_size=max(block, 1 << 20))
    try:
        column = pa_json.read_json(io.BytesIO(chunk), read_options=read, parse_options=options).column(id_key)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return None if column.null_count else column.combine_chunks()


class FinishedSkipper:
    """Splits chunks of jsonl lines into the finished rows and the lines still to read."""

    def __init__(self, finished: FinishedIds, id_key: str) -> None:
        self.finished = finished
        self.id_key = id_key

    def split(self, path: Path, first: int, chunk: bytes) -> tuple[FinishedRows | None, Iterable[tuple[int, bytes]]]:
        """The finished rows of ``chunk``, whose first line is number ``first`` (None if none), and its other
        lines with their numbers."""
        lines = chunk.split(b"\n")
        numbered = enumerate(lines, start=first)
        ids = chunk_ids(chunk, self.id_key)
        if ids is None:
            return None, numbered
        at = np.arange(len(lines))  # each id's line in the chunk: pyarrow skips blank lines
        if len(ids) != len(lines):
            at = np.array([index for index, line in enumerate(lines) if line.strip()], dtype=np.int64)
            if len(at) != len(ids):
                return None, numbered
        positions = self.finished.positions(ids)
        done = positions >= 0
        if not done.any():
            return None, numbered
        rows = FinishedRows(path, at[done] + first, ids.filter(pa.array(done)), positions[done])
        unfinished = np.ones(len(lines), dtype=bool)
        unfinished[at[done]] = False
        return rows, itertools.compress(numbered, unfinished)
