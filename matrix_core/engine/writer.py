"""The one owner of the output: records written exactly once, dropped and rejected rows noted, metrics counted."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ray

from matrix_core.engine.components import import_target
from matrix_core.engine.telemetry import WriterTelemetry
from matrix_core.redaction import redact
from matrix_core.sinks.jsonl import JsonlSink


def companion(output: Path, name: str) -> Path:
    """``out.jsonl`` -> ``out.<name>``: the files written beside the output."""
    return output.with_name(f"{output.name.removesuffix(output.suffix)}.{name}")


@ray.remote(num_cpus=0, max_concurrency=1)
class Writer:
    """Appends one record per finished task to the sink and drops duplicates, so that delivery inside the engine
    may repeat (after an actor died) while the output holds every id once.

    Tasks the workflow does not keep are noted in ``<stem>.dropped.jsonl`` so that ``--resume`` skips them too;
    malformed input rows skipped with ``input.skip_bad_rows`` go to ``<stem>.rejected.jsonl``.
    """

    def __init__(self, sink_target: str, output: str) -> None:
        path = Path(output)
        self.sink = import_target(sink_target)(path)
        self.dropped = JsonlSink(companion(path, "dropped.jsonl"))
        self.rejected = JsonlSink(companion(path, "rejected.jsonl"))
        self.metrics_path = companion(path, "metrics.json")
        self.written: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.tokens = {"prompt": 0, "completion": 0}
        self.hops = 0
        self.workflow_sums: Counter[str] = Counter()
        self.duplicates = 0
        self.rejected_rows = 0
        self.started = time.monotonic()
        self.telemetry = WriterTelemetry()

    def finished_ids(self, retry_errors: bool = False) -> set[str]:
        """Ids already in the output or noted as dropped: what ``--resume`` skips. With ``retry_errors``
        (``--retry-errors``), the records of tasks that ended ``error`` are removed first, so that they run again."""
        if retry_errors:
            for records in (self.sink, self.dropped):
                if errors := {record.id for record in records.finished() if record.status == "error"}:
                    records.remove(errors)
        self.written = set(self.sink.finished_ids()) | set(self.dropped.finished_ids())
        return self.written

    def write(self, batch: list[tuple[dict[str, Any] | None, dict[str, Any]]]) -> None:
        """Write each ``(record or None, summary)``; a repeated id is dropped."""
        for record, summary in batch:
            if summary["id"] in self.written:
                self.duplicates += 1
                continue
            self.written.add(summary["id"])
            if record is not None:
                self.sink.write(record)
            else:
                self.dropped.write({key: summary[key] for key in ("id", "status", "reason")})
            self._count(summary)

    def _count(self, summary: dict[str, Any]) -> None:
        status = summary["status"]
        self.counts[status] += 1
        self.reasons[f"{status}:{summary['reason']}" if summary["reason"] else status] += 1
        self.tokens["prompt"] += summary["prompt_tokens"]
        self.tokens["completion"] += summary["completion_tokens"]
        self.hops += summary["hops"]
        self.workflow_sums.update(summary["metrics"])
        self.telemetry.finished(status)

    def reject(self, entry: dict[str, Any]) -> None:
        """Note a malformed input row that was skipped."""
        self.rejected.write(entry)
        self.rejected_rows += 1

    def progress(self) -> dict[str, Any]:
        """Tasks finished and failed so far, for the live display (which takes tokens from the agents)."""
        self.telemetry.flush()  # the driver polls this: a cheap time to export metrics
        return {
            "done": sum(self.counts.values()),
            "failed": self.counts.get("error", 0),
            "elapsed_s": time.monotonic() - self.started,
        }

    def close(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Flush and close every file and write ``<stem>.metrics.json``; returns the metrics."""
        self.telemetry.flush()
        self.sink.close()
        self.dropped.close()
        self.rejected.close()
        elapsed = time.monotonic() - self.started
        done = sum(self.counts.values())
        completion = self.tokens["completion"]
        total_tokens = self.tokens["prompt"] + completion
        result = {
            "tasks": done,
            "status": dict(self.counts),
            "status_reason": dict(self.reasons),
            "tokens_in": self.tokens["prompt"],
            "tokens_out": completion,
            "hops": self.hops,
            "wall_time_s": round(elapsed, 3),
            "tasks_per_s": round(done / elapsed, 3) if elapsed else 0.0,
            "tokens_per_s": round(total_tokens / elapsed, 3) if elapsed else 0.0,
            "output_tokens_per_s": round(completion / elapsed, 3) if elapsed else 0.0,
            "duplicates_dropped": self.duplicates,
            "rejected_rows": self.rejected_rows,
            "workflow": {key: value / done for key, value in sorted(self.workflow_sums.items())} if done else {},
            **extra,
        }
        result = redact(result)  # reasons are error messages, which may quote a key
        self.metrics_path.write_text(json.dumps(result, indent=2) + "\n")
        return result
