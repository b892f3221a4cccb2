"""What a workflow adds to ``matrix report``: sections made of tables, charts and example conversations, as plain
data. The core draws them (:mod:`matrix_core.report.page`); a workflow only says what to show, through
:meth:`matrix_core.Orchestrator.report`. Part of the plugin contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Text:
    """A paragraph."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table: ``rows`` of cells under ``columns``; ints are shown whole (with thousands separators), floats to four
    significant digits, strings as they are, None as a dash."""

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass(frozen=True)
class Bars:
    """A bar chart: one bar per label, e.g. counts per category or the stages of a funnel."""

    labels: Sequence[str]
    values: Sequence[float]
    title: str = ""
    y_label: str = ""


@dataclass(frozen=True)
class Histogram:
    """The distribution of ``values``, in ``bins`` equal bins or at the given bin edges."""

    values: Sequence[float]
    title: str = ""
    x_label: str = ""
    bins: int | Sequence[float] = 20


@dataclass(frozen=True)
class Lines:
    """One line per series over the shared ``x``; ``None`` leaves a gap."""

    x: Sequence[float]
    series: dict[str, Sequence[float | None]]
    title: str = ""
    x_label: str = ""
    y_label: str = ""


@dataclass(frozen=True)
class Conversation:
    """An example conversation: ``(speaker, text)`` turns under a title such as the task id and its outcome."""

    title: str
    turns: Sequence[tuple[str, str]]


Block = Text | Table | Bars | Histogram | Lines | Conversation


@dataclass(frozen=True)
class ReportSection:
    """One section of a run's report: a heading and what sits under it, in order."""

    title: str
    blocks: Sequence[Block] = field(default_factory=list)
