"""Parquet output: records journaled as jsonl while the run goes, turned into one parquet file on close."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from matrix_core.errors import MatrixError
from matrix_core.sinks.base import Sink
from matrix_core.sinks.jsonl import JsonlSink

CHUNK_RECORDS = 10_000
"""Journal records held as Python objects at a time while converting; Arrow holds the rest compactly."""


class ParquetSink(Sink):
    """Writes one parquet file.

    Parquet cannot be appended to record by record, so each record goes durably to a jsonl journal beside the output
    (``<path>.journal.jsonl``) and ``close()`` rewrites the parquet file with the records it already held plus the
    journal's, then deletes the journal. The rewrite goes to a temporary file that replaces the output only once
    complete: a crash leaves the previous parquet file and the journal, never a half-written file.
    """

    suffix = ".parquet"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.journal = JsonlSink(path.with_name(path.name + ".journal.jsonl"))

    def finished_ids(self) -> Iterator[str]:
        if self.path.exists():
            for batch in pq.ParquetFile(self.path).iter_batches(columns=["id"]):
                yield from (str(value) for value in batch.column("id").to_pylist())
        yield from self.journal.finished_ids()

    def write(self, record: dict[str, Any]) -> None:
        self.journal.write(record)

    def close(self) -> None:
        """Fold the journal into the parquet file, atomically, and delete the journal."""
        self.journal.close()
        if not self.journal.path.exists():
            return
        try:
            table = self._merged()
        except pa.ArrowException as error:
            raise MatrixError(
                f"{self.path}: the records do not fit one parquet schema ({error})",
                hint=f"they are kept in {self.journal.path}; use output.sink=jsonl for records of varying types",
            ) from None
        if table is not None:
            self._replace(table)
        self.journal.path.unlink()

    def _merged(self) -> pa.Table | None:
        """The output's records plus the journal's new ones, or None when the journal adds nothing."""
        tables: list[pa.Table] = []
        kept: set[str] = set()
        if self.path.exists():
            old = pq.read_table(self.path)
            tables.append(old)
            kept = {str(value) for value in old.column("id").to_pylist()}
        chunk: list[dict[str, Any]] = []
        added = 0
        for record in _journal_records(self.journal.path):
            # a crash between replacing the output and deleting the journal leaves these records in both
            if str(record["id"]) in kept:
                continue
            chunk.append(record)
            if len(chunk) == CHUNK_RECORDS:
                tables.append(pa.Table.from_pylist(chunk))
                added, chunk = added + len(chunk), []
        if chunk:
            tables.append(pa.Table.from_pylist(chunk))
            added += len(chunk)
        if not added:
            return None
        # permissive: a column all null so far, or a nested field seen only later, widens instead of failing
        return pa.concat_tables(tables, promote_options="permissive")

    def _replace(self, table: pa.Table) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with temporary.open("wb") as file:
                pq.write_table(table, file)
                file.flush()
                # on disk before the rename: else a power loss could leave the new name on an empty file
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def _journal_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as file:
        for line in file:
            if line.endswith(b"\n"):  # a torn last line, cut short by a crash, is not a record
                yield json.loads(line)
