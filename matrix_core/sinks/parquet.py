"""Parquet output: records journaled as jsonl while the run goes, turned into one parquet file on close."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from matrix_core.errors import MatrixError
from matrix_core.sinks.base import FinishedRecord, Sink, replace_atomically
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
            yield from self._file_ids()
        yield from self.journal.finished_ids()

    def finished(self) -> Iterator[FinishedRecord]:
        if self.path.exists():
            file = pq.ParquetFile(self.path)
            columns = [name for name in ("id", "status") if name in file.schema_arrow.names]
            for batch in file.iter_batches(columns=columns):
                ids = batch.column("id").to_pylist()
                statuses = batch.column("status").to_pylist() if "status" in columns else [None] * len(ids)
                for task_id, status in zip(ids, statuses, strict=True):
                    yield FinishedRecord(str(task_id), "" if status is None else str(status))
        yield from self.journal.finished()

    def remove(self, ids: Collection[str]) -> None:
        """Remove the records of ``ids`` from the parquet file (rewritten whole, atomically, a batch at a time) and
        from the journal."""
        unwanted = set(ids)
        if self.path.exists() and any(task_id in unwanted for task_id in self._file_ids()):
            value_set = pa.array(sorted(unwanted), pa.string())
            with (
                pq.ParquetFile(self.path) as source,
                replace_atomically(self.path) as file,
                pq.ParquetWriter(file, source.schema_arrow) as writer,
            ):
                for batch in source.iter_batches():
                    ids = pc.cast(batch.column("id"), pa.string())
                    writer.write_batch(batch.filter(pc.invert(pc.is_in(ids, value_set=value_set))))
        self.journal.remove(unwanted)

    def _file_ids(self) -> Iterator[str]:
        for batch in pq.ParquetFile(self.path).iter_batches(columns=["id"]):
            yield from (str(value) for value in batch.column("id").to_pylist())

    def write(self, record: dict[str, Any]) -> None:
        self.journal.write(record)

    def sync(self) -> None:
        self.journal.sync()

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
        with replace_atomically(self.path) as file:
            pq.write_table(table, file)


def _journal_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as file:
        for line in file:
            if line.endswith(b"\n"):  # a torn last line, cut short by a crash, is not a record
                yield json.loads(line)
