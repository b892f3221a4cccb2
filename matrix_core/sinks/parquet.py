"""Parquet output: records journaled as jsonl while the run goes, turned into one parquet file on close."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Container, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from matrix_core.engine.idsets import IdStore
from matrix_core.errors import MatrixError
from matrix_core.sinks.base import FinishedRecord, Sink, replace_atomically
from matrix_core.sinks.jsonl import JsonlSink

CHUNK_RECORDS = 10_000
"""Journal records held as Python objects at a time while converting; Arrow holds the rest compactly."""


class ParquetSink(Sink):
    """Writes one parquet file.

    Parquet cannot be appended to record by record, so each record goes durably to a jsonl journal beside the output
    (``<path>.journal.jsonl``) and ``close()`` rewrites the parquet file with the records it already held plus the
    journal's, then deletes the journal. The rewrite streams: a first pass over the journal finds one schema for all
    records, a second writes the old file batch by batch and the journal chunk by chunk, so memory holds one chunk
    and the ids of the old file, never the output. The rewrite goes to a temporary file that replaces the output only
    once complete: a crash leaves the previous parquet file and the journal, never a half-written file.
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

    def records(self) -> Iterator[dict[str, Any]]:
        if self.path.exists():
            for batch in pq.ParquetFile(self.path).iter_batches():
                yield from batch.to_pylist()
        yield from self.journal.records()

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
        # a crash between replacing the output and deleting the journal leaves records in both: the file's count
        kept = IdStore()  # on disk: the output may hold millions of ids
        try:
            if self.path.exists():
                kept.update(self._file_ids())
            schema = self._merged_schema(kept)
            if schema is not None:
                self._rewrite(schema, kept)
        except pa.ArrowException as error:
            raise MatrixError(
                f"{self.path}: the records do not fit one parquet schema ({error})",
                hint=f"they are kept in {self.journal.path}; use output.sink=jsonl for records of varying types",
            ) from None
        finally:
            kept.close()
        self.journal.path.unlink()

    def _new_chunks(self, kept: Container[str]) -> Iterator[list[dict[str, Any]]]:
        """The journal's records not in the file yet, :data:`CHUNK_RECORDS` at a time."""
        chunk: list[dict[str, Any]] = []
        for record in _journal_records(self.journal.path):
            if str(record["id"]) in kept:
                continue
            chunk.append(record)
            if len(chunk) == CHUNK_RECORDS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _merged_schema(self, kept: Container[str]) -> pa.Schema | None:
        """One schema for the file's records and the journal's new ones, or None when the journal adds nothing.
        Permissive: a column all null so far, or a nested field seen only later, widens instead of failing."""
        schemas = [pa.Table.from_pylist(chunk).schema for chunk in self._new_chunks(kept)]
        if not schemas:
            return None
        if self.path.exists():
            schemas.insert(0, pq.read_schema(self.path))
        return pa.unify_schemas(schemas, promote_options="permissive")

    def _rewrite(self, schema: pa.Schema, kept: Container[str]) -> None:
        """Write the file's records, a batch at a time, then the journal's new ones, a chunk at a time, into a new
        file that replaces the output once complete: memory holds one batch or chunk, not the output."""
        with replace_atomically(self.path) as file, pq.ParquetWriter(file, schema) as writer:
            if self.path.exists():
                for batch in pq.ParquetFile(self.path).iter_batches():
                    writer.write_table(_widened(pa.Table.from_batches([batch]), schema))
            for chunk in self._new_chunks(kept):
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))


def _widened(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``, which may widen its types, add columns or add nested fields."""
    if table.schema.equals(schema):
        return table
    if table.schema.names == schema.names:
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return table.cast(schema)
    return pa.Table.from_pylist(table.to_pylist(), schema=schema)  # new columns, or a struct that gained fields


def _journal_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as file:
        for line in file:
            if line.endswith(b"\n"):  # a torn last line, cut short by a crash, is not a record
                yield json.loads(line)
