"""``matrix report``: the page of one run, or of several side by side, from the files beside their outputs."""

from __future__ import annotations

import datetime
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, get_args

from omegaconf import OmegaConf

from matrix_core.errors import MatrixError, first_line
from matrix_core.registry import Registry
from matrix_core.report.html import Columns, Details, Overlay, Preformatted, number, page
from matrix_core.report.run_data import RunData, load_run
from matrix_core.report.sections import Bars, Block, Lines, ReportSection, Table, Text
from matrix_core.sinks.base import companion, replace_atomically

logger = logging.getLogger(__name__)

ERROR_EXAMPLES = 3
"""Task ids shown per error reason."""
ERROR_REASONS = 30
"""Reasons shown, the most frequent first."""


def write_report(outputs: Sequence[Path], registry: Registry, html_path: Path | None = None) -> Path:
    """Write the page of the runs whose outputs are ``outputs`` (one run: ``<stem>.report.html`` beside it; several:
    ``<first stem>.compare.html``, unless ``html_path`` names the page) and return its path."""
    runs = [load_run(output, registry) for output in outputs]
    if len(runs) == 1:
        title = f"{runs[0].workflow or 'Matrix'} run: {runs[0].name}"
        html = page(title, str(runs[0].path), run_sections(runs[0], registry))
        target = html_path or companion(runs[0].path, "report.html")
    else:
        names = ", ".join(run.name for run in runs)
        html = page(f"{len(runs)} runs compared", names, compare_sections(runs, registry))
        target = html_path or companion(runs[0].path, "compare.html")
    with replace_atomically(target) as file:
        file.write(html.encode())
    return target


def run_sections(run: RunData, registry: Registry) -> list[ReportSection]:
    """The engine's sections of one run, then its workflow's."""
    errors = ErrorExamples()
    workflow_sections = _workflow_sections(run, registry, errors.tap(run.records()))
    errors.drain()
    errors.take(run.dropped())
    return [
        ReportSection("The run", overview(run)),
        ReportSection("Throughput", throughput(run)),
        ReportSection("In flight and concurrency limit", in_flight(run)),
        ReportSection("Latency per role", latency(run)),
        ReportSection("Status and reasons", statuses(run)),
        *([ReportSection("Errors", errors.blocks())] if errors.by_reason else []),
        *workflow_sections,
    ]


def compare_sections(runs: Sequence[RunData], registry: Registry) -> list[ReportSection]:
    """Several runs side by side: one table of their numbers and differing settings, overlaid charts, their statuses
    and workflow metrics in one table each, then the workflows' own sections, a column per run."""
    names = [run.name for run in runs]
    sections = [
        ReportSection("Runs", [Table(["", *names], _side_by_side(runs))]),
        ReportSection(
            "Throughput",
            [
                Overlay("Tasks finished per second", "tasks/s", {r.name: _rate(r, "finished") for r in runs}),
                Overlay("Output tokens per second", "tokens/s", {r.name: _rate(r, "tokens_out") for r in runs}),
                Overlay("Tasks in flight", "tasks", {r.name: _gauge(r, "in_flight") for r in runs}),
            ],
        ),
        ReportSection("Statuses", [_joined(runs, lambda m: m.status_reason, "status:reason")]),
        ReportSection("Workflow metrics", [_joined(runs, lambda m: m.workflow, "metric (mean per task)")]),
    ]
    sections += _workflow_columns(runs, registry)
    return sections


# --- one run ---------------------------------------------------------------------------------------------------


def overview(run: RunData) -> list[Block | Details]:
    """What ran, where, and its totals."""
    rows: list[tuple[str, Any]] = [("workflow", run.workflow or "unknown (no timeline)")]
    metrics = run.metrics
    if run.starts:
        first = run.starts[0]
        rows.append(("started", _when(first["time"])))
        rows.append(("sessions", f"{len(run.starts)} (the first run and each --resume)"))
        if run.starts[-1].get("profile"):
            rows.append(("profile", run.starts[-1]["profile"]))
    if metrics is not None:
        rows += [
            ("wall time (s)", metrics.wall_time_s),
            ("tasks finished", metrics.tasks),
            ("records kept", metrics.kept),
            ("tokens in", metrics.tokens_in),
            ("tokens out", metrics.tokens_out),
            ("tasks per second", metrics.tasks_per_s),
            ("tokens per second", metrics.tokens_per_s),
            ("output tokens per second", metrics.output_tokens_per_s),
            ("steps (hops)", metrics.hops),
            ("retries", metrics.engine.retries),
            ("duplicates dropped", metrics.duplicates_dropped),
            ("rejected input rows", metrics.rejected_rows),
            ("backend outages", metrics.engine.backend_outages),
        ]
        if metrics.engine.cost is not None:
            rows += [("cost", metrics.engine.cost), ("cost per kept record", metrics.cost_per_kept_record)]
    blocks: list[Block | Details] = [Table(["", "value"], rows)]
    if metrics is not None and len(run.starts) > 1:
        blocks.append(Text("The numbers above count the last session (metrics.json); the charts show every session."))
    if metrics is None:
        blocks.append(Text("No metrics.json: the run has not finished, or was stopped; the charts show what it did."))
    if run.starts:
        start = run.starts[-1]
        versions = ", ".join(f"{name} {value}" for name, value in sorted(start.get("versions", {}).items()) if value)
        machine = start.get("machine", {})
        blocks.append(Text(f"Versions: {versions}."))
        blocks.append(
            Text(
                f"Machine: {machine.get('host')} ({machine.get('system')}), {machine.get('cpus')} CPUs; Ray saw "
                f"{number(machine.get('ray_cpus'))} CPUs and {number(machine.get('ray_gpus'))} GPUs."
            )
        )
        blocks.append(Details("Configuration (secrets redacted)", [Preformatted(OmegaConf.to_yaml(run.config))]))
    return blocks


def throughput(run: RunData) -> list[Block]:
    """Tasks finished so far by status, tasks per second and tokens per second over the run."""
    if not run.chart_points:
        return [Text("No timeline (<output>.timeline.jsonl): the run predates timelines or never started.")]
    x, finished = _rate(run, "finished")
    _, tokens_in = _rate(run, "tokens_in")
    _, tokens_out = _rate(run, "tokens_out")
    so_far: Counter[str] = Counter()
    by_status: dict[str, list[float | None]] = {}
    for index, point in enumerate(run.chart_points):
        so_far.update(point["finished"])
        for status in so_far:
            by_status.setdefault(status, [0] * index).append(so_far[status])
    since = "seconds since the run started"
    return [
        Lines(x, by_status, "Tasks finished so far, by status", since, "tasks"),
        Lines(x, {"tasks finished": finished}, "Tasks finished per second", since, "tasks/s"),
        Lines(x, {"in": tokens_in, "out": tokens_out}, "Tokens per second", since, "tokens/s"),
    ]


def in_flight(run: RunData) -> list[Block]:
    """Tasks in flight, and each backend server's concurrency limit, over the run."""
    if not run.chart_points:
        return [Text("No timeline.")]
    x, tasks = _gauge(run, "in_flight")
    series: dict[str, list[float | None]] = {"tasks in flight": tasks}
    for server in sorted({server for point in run.chart_points for server in point["limits"]}):
        series[f"limit: {server}"] = [point["limits"].get(server) for point in run.chart_points]
    return [Lines(x, series, "In flight and each server's limit", "seconds since the run started", "tasks / requests")]


def latency(run: RunData) -> list[Block]:
    """Each role's step latency (p50, p95) over the run, and over the whole run."""
    roles = sorted({role for point in run.chart_points for role in point["latency"]})
    if not roles:
        return [Text("No step recorded in the timeline.")]
    x = _x(run)
    series: dict[str, list[float | None]] = {}
    rows = []
    for role in roles:
        steps = [point["latency"].get(role) for point in run.chart_points]
        series[f"{role} p50"] = [step["p50"] if step else None for step in steps]
        series[f"{role} p95"] = [step["p95"] if step else None for step in steps]
        counted = [step for step in steps if step]
        total = sum(step["steps"] for step in counted)
        weighted = {q: sum(step[q] * step["steps"] for step in counted) / total for q in ("p50", "p95")}
        rows.append((role, total, round(weighted["p50"], 3), round(weighted["p95"], 3)))
    return [
        Lines(x, series, "Step latency per role", "seconds since the run started", "seconds"),
        Table(
            ["role", "steps", "p50 (s)", "p95 (s)"],
            rows,
            "Over the run: each second's percentiles weighted by its steps (within ~10%: durations are counted in "
            "buckets).",
        ),
    ]


def statuses(run: RunData) -> list[Block]:
    """How the tasks ended: each status, and each status with its reason."""
    if run.metrics is None:
        totals: Counter[str] = Counter()
        for point in run.points:
            totals.update(point["finished"])
        return [Bars(list(totals), list(totals.values()), "Tasks by status (from the timeline)", "tasks")]
    metrics = run.metrics
    share = {key: count / metrics.tasks if metrics.tasks else 0.0 for key, count in metrics.status_reason.items()}
    ordered = sorted(metrics.status_reason.items(), key=lambda item: -item[1])
    return [
        Bars(list(metrics.status), list(metrics.status.values()), "Tasks by status", "tasks"),
        Table(
            ["status:reason", "tasks", "share"],
            [(key, count, f"{100 * share[key]:.1f}%") for key, count in ordered],
        ),
    ]


class ErrorExamples:
    """Tasks that ended ``error``, by reason, with a few of their ids, gathered as records stream past."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self._pending: Iterator[dict[str, Any]] = iter(())

    def tap(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``records`` as they are, noting the errors among them; :meth:`drain` reads what the caller left."""
        self._pending = self._noting(records)
        return self._pending

    def drain(self) -> None:
        """Read the records the workflow's sections did not."""
        for _ in self._pending:
            pass

    def take(self, records: Iterable[dict[str, Any]]) -> None:
        """Note the errors among ``records``."""
        for _ in self._noting(records):
            pass

    def _noting(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if isinstance(record, dict) and record.get("status") == "error":
                reason = first_line(str(record.get("reason") or "")) or "(no reason)"
                self.by_reason[reason] += 1
                examples = self.examples.setdefault(reason, [])
                if len(examples) < ERROR_EXAMPLES:
                    examples.append(str(record.get("id")))
            yield record

    def blocks(self) -> list[Block]:
        """A table of the error reasons, the most frequent first, each with example task ids."""
        ordered = sorted(self.by_reason.items(), key=lambda item: -item[1])
        rows = [(reason[:300], count, ", ".join(self.examples[reason])) for reason, count in ordered[:ERROR_REASONS]]
        caption = f"{sum(self.by_reason.values()):,} tasks ended error, from the records"
        if len(ordered) > ERROR_REASONS:
            caption += f"; the {len(ordered) - ERROR_REASONS:,} least frequent of {len(ordered):,} reasons not shown"
        return [Table(["reason", "tasks", "example task ids"], rows, caption + ".")]


def _workflow_sections(run: RunData, registry: Registry, records: Iterator[dict[str, Any]]) -> list[ReportSection]:
    """The workflow's own sections (its plugin's ``report``); a failure there is one note, not a failed page."""
    if run.workflow is None or run.metrics is None:
        return []
    try:
        workflow = registry.get("orchestrators", run.workflow)
    except MatrixError:
        note = f"The {run.workflow} workflow is not installed: its sections are left out."
        return [ReportSection(run.workflow, [Text(note)])]
    try:
        return _checked(list(workflow.cls.report(records, run.metrics)))
    except Exception as error:  # plugin code: the page goes on without its sections
        logger.debug("workflow sections failed", exc_info=True)
        note = f"Its sections failed: {type(error).__name__}: {first_line(str(error))}"
        return [ReportSection(run.workflow, [Text(note)])]


def _checked(sections: list[Any]) -> list[ReportSection]:
    """The workflow's sections, refused (TypeError) unless each is a :class:`ReportSection` of known blocks."""
    for section in sections:
        if not isinstance(section, ReportSection):
            raise TypeError(f"report() returned {type(section).__name__}, not a ReportSection")
        for block in section.blocks:
            if not isinstance(block, get_args(Block)):
                raise TypeError(f"section {section.title!r} holds a {type(block).__name__}, not a report block")
    return sections


# --- several runs ----------------------------------------------------------------------------------------------


def _workflow_columns(runs: Sequence[RunData], registry: Registry) -> list[ReportSection]:
    """Each workflow section any run has, with a column per run (empty where a run has no such section)."""
    per_run = [{section.title: section for section in _workflow_sections(run, registry, run.records())} for run in runs]
    result = []
    for title in dict.fromkeys(title for own in per_run for title in own):
        pairs = zip(runs, per_run, strict=True)
        columns = [(run.name, own[title].blocks if title in own else []) for run, own in pairs]
        result.append(ReportSection(title, [Columns(columns)]))
    return result


def _side_by_side(runs: Sequence[RunData]) -> list[list[Any]]:
    """The runs' main numbers, then every setting whose value differs between them."""

    def row(label: str, value_of: Any) -> list[Any]:
        return [label, *(value_of(run.metrics) if run.metrics is not None else None for run in runs)]

    rows = [
        ["workflow", *(run.workflow for run in runs)],
        row("tasks finished", lambda m: m.tasks),
        row("records kept", lambda m: m.kept),
        row("wall time (s)", lambda m: m.wall_time_s),
        row("tasks per second", lambda m: m.tasks_per_s),
        row("output tokens per second", lambda m: m.output_tokens_per_s),
        row("tokens in", lambda m: m.tokens_in),
        row("tokens out", lambda m: m.tokens_out),
        row("cost", lambda m: m.engine.cost),
        row("cost per kept record", lambda m: m.cost_per_kept_record),
    ]
    settings = [_flat(run.config) for run in runs]
    for key in sorted({key for each in settings for key in each} - {"output.path"}):
        values = [each.get(key) for each in settings]
        if any(value != values[0] for value in values):
            rows.append([f"setting {key}", *values])
    return rows


def _joined(runs: Sequence[RunData], values_of: Any, label: str) -> Table:
    """One row per key any run has, one column per run."""
    per_run = [values_of(run.metrics) if run.metrics is not None else {} for run in runs]
    keys = sorted({key for values in per_run for key in values})
    rows = [[key, *(values.get(key) for values in per_run)] for key in keys]
    return Table([label, *(run.name for run in runs)], rows)


# --- timeline series -------------------------------------------------------------------------------------------


def _x(run: RunData) -> list[float]:
    """Each point's end, in seconds since the run's first session started."""
    return [round(point["time"] - run.origin, 3) for point in run.chart_points]


def _rate(run: RunData, name: str) -> tuple[list[float], list[float | None]]:
    """A count per second over each point's span (``finished`` adds every status)."""
    values = []
    for point in run.chart_points:
        count = sum(point["finished"].values()) if name == "finished" else point[name]
        values.append(count / point["span_s"] if point["span_s"] > 0 else None)
    return _x(run), values


def _gauge(run: RunData, name: str) -> tuple[list[float], list[float | None]]:
    return _x(run), [point[name] for point in run.chart_points]


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
