"""One run as the report reads it: its metrics, its timeline and its records, from the files beside its output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from matrix_core.engine.timeline import merge, read_lines
from matrix_core.errors import MatrixError, UsageError
from matrix_core.metrics import RunMetrics
from matrix_core.registry import Registry
from matrix_core.sinks.base import Sink, companion
from matrix_core.sinks.jsonl import JsonlSink

CHART_POINTS = 100
"""The most points a chart draws: a longer timeline's points are merged into that many of equal width."""


@dataclass
class RunData:
    """What one run left beside its output ``path``."""

    path: Path
    metrics: RunMetrics | None
    """``<stem>.metrics.json``; None while the run goes, or after it was killed."""
    starts: list[dict[str, Any]] = field(default_factory=list)
    """The timeline's start lines, one per session (the first run, then each ``--resume``)."""
    points: list[dict[str, Any]] = field(default_factory=list)
    sink: Sink | None = None
    """The output's sink, when one of the installed sinks reads it."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The settings of ``<stem>.run.json`` (what ``--resume`` compares), for runs older than timelines."""

    @property
    def name(self) -> str:
        """How the page names the run: its output's file name."""
        return self.path.name

    @property
    def workflow(self) -> str | None:
        """The workflow's name, from the timeline or the run's settings (None when neither is there)."""
        return self.starts[-1].get("workflow") if self.starts else self.settings.get("workflow")

    @property
    def config(self) -> dict[str, Any]:
        """The last session's redacted config."""
        return self.starts[-1].get("config", {}) if self.starts else {}

    @property
    def origin(self) -> float:
        """When the run's first session started (Unix time): where the charts' time axis starts."""
        if self.starts:
            return self.starts[0]["time"]
        return self.points[0]["time"] - self.points[0]["span_s"] if self.points else 0.0

    @cached_property
    def chart_points(self) -> list[dict[str, Any]]:
        """The timeline's points merged into at most :data:`CHART_POINTS` spans of equal width (a second at
        least; never across sessions): counts add up, so a slow run's rare events read as rates, not spikes."""
        if not self.points:
            return []
        width = max(1.0, (self.points[-1]["time"] - self.origin) / CHART_POINTS)
        merged: list[tuple[int, dict[str, Any]]] = []
        for point in self.points:
            span = int((point["time"] - self.origin) // width)
            if merged and merged[-1][0] == span and merged[-1][1]["session"] == point["session"]:
                merged[-1] = (span, merge(merged[-1][1], point))
            else:
                merged.append((span, point))
        return [point for _, point in merged]

    def records(self) -> Iterator[dict[str, Any]]:
        """The output's records, read as the caller iterates."""
        if self.sink is not None:
            yield from self.sink.records()

    def dropped(self) -> Iterator[dict[str, Any]]:
        """The records of tasks that ended but were not kept (``id``, ``status``, ``reason``)."""
        yield from JsonlSink(companion(self.path, "dropped.jsonl")).records()


def load_run(output: Path, registry: Registry) -> RunData:
    """The run whose output is ``output``; refused in one line when nothing of a run is there."""
    path = output.expanduser().absolute()
    metrics_path, timeline_path = companion(path, "metrics.json"), companion(path, "timeline.jsonl")
    if not (path.exists() or metrics_path.exists() or timeline_path.exists()):
        raise UsageError(f"{output}: no run output there (nor its .metrics.json or .timeline.jsonl)")
    metrics = None
    if metrics_path.exists():
        try:
            metrics = RunMetrics.from_json(json.loads(metrics_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, KeyError) as error:
            raise MatrixError(f"{metrics_path}: not a metrics file ({error.__class__.__name__}: {error})") from None
    lines = list(read_lines(timeline_path))
    run = RunData(
        path=path,
        metrics=metrics,
        starts=[line for line in lines if line["kind"] == "start"],
        points=[line for line in lines if line["kind"] == "point"],
    )
    run.sink = _sink_for(run, registry)
    with suppress(OSError, ValueError, KeyError, TypeError):  # no fingerprint: the timeline names the workflow
        run.settings = json.loads(companion(path, "run.json").read_text(encoding="utf-8"))["settings"]
    return run


def _sink_for(run: RunData, registry: Registry) -> Sink | None:
    """The sink the run wrote with (as its config says, else the one whose suffix the output has), if it reads."""
    named = run.config.get("output", {}).get("sink")
    for component in registry.components("sinks"):
        if component.name == named or (named is None and run.path.suffix == getattr(component.cls, "suffix", None)):
            sink = component.cls(run.path)
            return sink if type(sink).records is not Sink.records else None
    return None
