"""The run's timeline, ``<stem>.timeline.jsonl``, for ``matrix report``: what the run did each second.

The driver samples its counters as it polls; every second (``SAMPLE_S``) the recorder appends one *point*: what
happened in that second (tasks admitted, finished by status, tokens in and out, retries, cost), the state at its
end (tasks in flight, each backend server's concurrency limit) and each role's step latency (p50, p95, from the
steps that ended in it). Each run, and each ``--resume`` of it, first appends a *start* line: the workflow, the
redacted config, versions and machine. The file stays small however long the run: at ``MAX_POINTS`` points, each
pair of neighbours of one session merges into one point twice as long (counts add up exactly; latencies become
step-weighted means), so older points are coarser and a day-long run stays around a megabyte.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matrix_core.engine.step_times import percentile
from matrix_core.errors import OutputError

SAMPLE_S = 1.0
MAX_POINTS = 3600
"""Points kept before neighbours merge: an hour at one a second, ~1.5 MB."""
COUNTS = ("admitted", "tokens_in", "tokens_out", "retries")
"""What a point counts over its span (summed when points merge)."""


@dataclass
class Sample:
    """The driver's counters at one poll: totals since this run (session) started, except ``step_times``, the
    step durations counted since the previous poll (role -> histogram)."""

    admitted: int = 0
    finished: Mapping[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    cost: float | None = None
    in_flight: int = 0
    limits: Mapping[str, int] = field(default_factory=dict)
    step_times: Mapping[str, Mapping[int, int]] = field(default_factory=dict)


class TimelineRecorder:
    """Appends the run's points to ``path``; with ``resume``, after the points already there."""

    def __init__(self, path: Path, start: dict[str, Any], resume: bool, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.lines = list(read_lines(path)) if resume else []
        self.session = sum(1 for line in self.lines if line["kind"] == "start")
        self.lines.append({"kind": "start", "session": self.session, "time": clock(), **start})
        self.points = sum(1 for line in self.lines if line["kind"] == "point")
        self._rewrite()
        self.last = Sample()
        self.last_time = self.lines[-1]["time"]
        self.step_times: dict[str, Counter[int]] = {}

    def sample(self, now: Sample) -> None:
        """Take the driver's counters; a point goes out once ``SAMPLE_S`` passed since the last one."""
        self._take_step_times(now)
        if self.clock() - self.last_time >= SAMPLE_S:
            self._point(now)

    def close(self, now: Sample) -> None:
        """The last point: what happened since the one before."""
        self._take_step_times(now)
        self._point(now)

    def _take_step_times(self, now: Sample) -> None:
        for role, histogram in now.step_times.items():
            self.step_times.setdefault(role, Counter()).update(histogram)

    def _point(self, now: Sample) -> None:
        at = self.clock()
        point: dict[str, Any] = {
            "kind": "point",
            "session": self.session,
            "time": round(at, 3),
            "span_s": round(at - self.last_time, 3),
            **{name: max(0, getattr(now, name) - getattr(self.last, name)) for name in COUNTS},
            "finished": {
                status: count - self.last.finished.get(status, 0)
                for status, count in now.finished.items()
                if count > self.last.finished.get(status, 0)
            },
            "in_flight": now.in_flight,
            "limits": dict(now.limits),
            "latency": {
                role: {"steps": sum(counts.values()), "p50": percentile(counts, 0.5), "p95": percentile(counts, 0.95)}
                for role, counts in self.step_times.items()
                if counts
            },
        }
        if now.cost is not None:
            point["cost"] = max(0.0, now.cost - (self.last.cost or 0.0))
        self.last, self.last_time, self.step_times = now, at, {}
        self.lines.append(point)
        self.points += 1
        if self.points >= MAX_POINTS:
            self.lines = merge_neighbours(self.lines)
            self.points = sum(1 for line in self.lines if line["kind"] == "point")
            self._rewrite()
        else:
            with self._writing(), self.path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(point) + "\n")

    def _rewrite(self) -> None:
        """Write every line anew, through a temporary file: a crash leaves the old timeline or the new one."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with self._writing(), temporary.open("w", encoding="utf-8") as file:
            file.writelines(json.dumps(line) + "\n" for line in self.lines)
        with self._writing():
            os.replace(temporary, self.path)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A failure to write the timeline is the run's :class:`OutputError`, like any output file's."""
        try:
            yield
        except OSError as error:
            raise OutputError(
                f"cannot write {self.path}: {error.strerror or error}",
                hint="what was written stays: run again with --resume once the cause is fixed",
            ) from None


def merge_neighbours(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines with each pair of neighbouring points of one session merged into one (start lines kept)."""
    result: list[dict[str, Any]] = []
    pending: dict[str, Any] | None = None
    for line in lines:
        if line["kind"] != "point":
            if pending is not None:
                result.append(pending)
                pending = None
            result.append(line)
        elif pending is None:
            pending = line
        else:
            result.append(merge(pending, line))
            pending = None
    if pending is not None:
        result.append(pending)
    return result


def merge(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """One point for two neighbours: counts added, the state at the newer one's end, latencies weighted by steps."""
    point = {**newer, "span_s": round(older["span_s"] + newer["span_s"], 3)}
    for name in COUNTS:
        point[name] = older[name] + newer[name]
    point["finished"] = dict(Counter(older["finished"]) + Counter(newer["finished"]))
    if "cost" in older or "cost" in newer:
        point["cost"] = older.get("cost", 0.0) + newer.get("cost", 0.0)
    latency = {}
    for role in {*older["latency"], *newer["latency"]}:
        sides = [side["latency"][role] for side in (older, newer) if role in side["latency"]]
        steps = sum(side["steps"] for side in sides)
        latency[role] = {"steps": steps} | {
            which: sum(side[which] * side["steps"] for side in sides) / steps for which in ("p50", "p95")
        }
    point["latency"] = latency
    return point


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The timeline's lines, in order; none when there is no file, and a torn last line (a crash) is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as file:
        for text in file:
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and line.get("kind") in ("start", "point"):
                yield line
