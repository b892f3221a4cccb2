"""The one owner of the output: records written exactly once, dropped and rejected rows noted, metrics counted.

A plain class: the driver makes it a Ray actor where it creates it (:mod:`matrix_core.engine.run`)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matrix_core.engine.components import import_target
from matrix_core.engine.idsets import FinishedIds, IdStore
from matrix_core.engine.messages import TaskSummary
from matrix_core.engine.output import OutputLock
from matrix_core.engine.telemetry import WriterTelemetry
from matrix_core.errors import MatrixError, OutputError
from matrix_core.metrics import EngineCounters, RunMetrics
from matrix_core.redaction import redact
from matrix_core.sinks.base import Sink, companion, replace_atomically
from matrix_core.sinks.jsonl import JsonlSink

WAIT_FOR_OLD_WRITER_S = 60.0
"""How long a writer waits for the writer of a run whose driver was killed (Ray ends it within seconds)."""


class Writer:
    """Appends one record per finished task to the sink and drops duplicates, so that delivery inside the engine
    may repeat (after an actor died) while the output holds every id once.

    Tasks the workflow does not keep are noted in ``<stem>.dropped.jsonl`` so that ``--resume`` skips them too;
    malformed input rows skipped with ``input.skip_bad_rows`` go to ``<stem>.rejected.jsonl``. Every file is put on
    disk every ``fsync_interval_s`` and at close. A file that cannot be written raises :class:`OutputError` from
    this call and every later one, so that the run stops; an id counts as written only once its sink has it.
    """

    def __init__(self, sink_target: str, output: str, fsync_interval_s: float = 5.0) -> None:
        path = Path(output)
        self.lock = OutputLock(path, "writer.lock")
        self.lock.acquire(wait_s=WAIT_FOR_OLD_WRITER_S)  # before reading what is finished: nobody appends after
        self.sink = import_target(sink_target)(path)
        self.dropped = JsonlSink(companion(path, "dropped.jsonl"))
        self.rejected = JsonlSink(companion(path, "rejected.jsonl"))
        self.metrics_path = companion(path, "metrics.json")
        self.written = IdStore()
        """Ids written in this run (those of earlier runs are not admitted again)."""
        self.counts: Counter[str] = Counter()
        self.kept = 0
        self.reasons: Counter[str] = Counter()
        self.tokens = {"prompt": 0, "completion": 0}
        self.hops = 0
        self.workflow_sums: Counter[str] = Counter()
        self.duplicates = 0
        self.rejected_rows = 0
        self.started = time.monotonic()
        self.telemetry = WriterTelemetry()
        self.fsync_interval_s = fsync_interval_s
        self.synced = time.monotonic()
        self.failed: OutputError | None = None

    def finished_ids(self, retry_errors: bool = False) -> FinishedIds:
        """Ids already in the output or noted as dropped: what ``--resume`` skips. With ``retry_errors``
        (``--retry-errors``), the records of tasks that ended ``error`` are removed first, so that they run again."""
        if retry_errors:
            for records in (self.sink, self.dropped):
                if errors := {record.id for record in records.finished() if record.status == "error"}:
                    records.remove(errors)
        return FinishedIds.of(itertools.chain(self.sink.finished_id_batches(), self.dropped.finished_id_batches()))

    def write(self, batch: list[tuple[dict[str, Any] | None, TaskSummary]]) -> None:
        """Write each ``(record or None, summary)``; a repeated id is dropped. A record JSON cannot encode ends its
        task ``error``: the minimal ``{id, status, reason}`` record is written in its place."""
        if self.failed is not None:
            raise self.failed
        for record, summary in batch:
            if summary.id in self.written:
                self.duplicates += 1
                continue
            if record is not None:
                summary = self._append(self.sink, record, summary)
                self.kept += 1
            else:
                summary = self._append(self.dropped, summary.minimal_record(), summary)
            self.written.add(summary.id)
            self._count(summary)
        self._sync_if_due()

    def _append(self, records: Sink, record: dict[str, Any], summary: TaskSummary) -> TaskSummary:
        """Append ``record`` to ``records``; returns the task's summary, made ``error`` if the record was replaced."""
        try:
            with self._writing(records.path):
                records.write(record)
            return summary
        except (TypeError, ValueError) as error:  # json.dumps: a set, a lone surrogate, ...
            reason = f"the record cannot be encoded as JSON: {error}"
            summary = dataclasses.replace(summary, status="error", reason=reason)
            with self._writing(records.path):
                records.write(summary.minimal_record())
            return summary

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn a failure to write ``path`` into the run's :class:`OutputError`."""
        try:
            yield
        except OSError as error:
            self.failed = OutputError(
                f"cannot write {path}: {error.strerror or error}",
                hint="what was written stays: run again with --resume once the cause is fixed",
            )
            raise self.failed from None

    def _sync_if_due(self) -> None:
        """Put every file on disk if ``fsync_interval_s`` passed since the last time."""
        if self.failed is not None:
            raise self.failed
        if time.monotonic() - self.synced < self.fsync_interval_s:
            return
        for records in (self.sink, self.dropped, self.rejected):
            with self._writing(records.path):
                records.sync()
        self.synced = time.monotonic()

    def _count(self, summary: TaskSummary) -> None:
        status = summary.status
        self.counts[status] += 1
        self.reasons[f"{status}:{summary.reason}" if summary.reason else status] += 1
        self.tokens["prompt"] += summary.prompt_tokens
        self.tokens["completion"] += summary.completion_tokens
        self.hops += summary.hops
        self.workflow_sums.update(summary.metrics)
        self.telemetry.finished(status)

    def reject(self, entry: dict[str, Any]) -> None:
        """Note a malformed input row that was skipped."""
        with self._writing(self.rejected.path):
            self.rejected.write(entry)
        self.rejected_rows += 1

    def progress(self) -> dict[str, Any]:
        """Tasks finished and failed so far, for the live display (which takes tokens from the agents); raises the
        run's :class:`OutputError` once a file could not be written."""
        self.telemetry.flush()  # the driver polls this: a cheap time to export metrics, and to sync the files
        self._sync_if_due()
        return {
            "done": sum(self.counts.values()),
            "failed": self.counts.get("error", 0),
            "status": dict(self.counts),
            "elapsed_s": time.monotonic() - self.started,
        }

    def close(self, engine: EngineCounters) -> RunMetrics:
        """Close every file (on disk) and write ``<stem>.metrics.json`` atomically; returns the metrics, or raises
        the first error after trying every file."""
        self.telemetry.flush()
        self.written.close()
        first: MatrixError | None = self.failed  # a write failed earlier: the run stops with that error
        for records in (self.sink, self.dropped, self.rejected):
            try:
                with self._writing(records.path):
                    records.close()
            except MatrixError as error:  # an OutputError, or parquet's records that fit no schema
                first = first or error
        elapsed = time.monotonic() - self.started
        done = sum(self.counts.values())
        completion = self.tokens["completion"]
        total_tokens = self.tokens["prompt"] + completion
        metrics = RunMetrics(
            tasks=done,
            kept=self.kept,
            status=dict(self.counts),
            status_reason=dict(self.reasons),
            tokens_in=self.tokens["prompt"],
            tokens_out=completion,
            hops=self.hops,
            wall_time_s=round(elapsed, 3),
            tasks_per_s=round(done / elapsed, 3) if elapsed else 0.0,
            tokens_per_s=round(total_tokens / elapsed, 3) if elapsed else 0.0,
            output_tokens_per_s=round(completion / elapsed, 3) if elapsed else 0.0,
            duplicates_dropped=self.duplicates,
            rejected_rows=self.rejected_rows,
            workflow={key: value / done for key, value in sorted(self.workflow_sums.items())} if done else {},
            engine=engine,
            cost_per_kept_record=engine.cost / self.kept if engine.cost is not None and self.kept else None,
        )
        shown = redact(metrics.to_json())  # reasons are error messages, which may quote a key
        metrics = RunMetrics.from_json(shown)
        try:
            with self._writing(self.metrics_path), replace_atomically(self.metrics_path) as file:
                file.write((json.dumps(shown, indent=2) + "\n").encode())
        except OutputError as error:
            first = first or error
        self.lock.release()
        if first is not None:
            raise first
        return metrics
