"""Charts as inline SVG, drawn with matplotlib (no JavaScript, nothing fetched when the page opens)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from matrix_core.report.sections import Bars, Histogram, Lines

matplotlib.rcParams.update(
    {
        "svg.fonttype": "none",  # text stays text: smaller, searchable, drawn in the page's font
        "svg.hashsalt": "matrix-report",  # the same run makes the same page
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
    }
)
WIDTH_IN, HEIGHT_IN = 7.2, 2.6


def lines_svg(block: Lines, step: bool = False) -> str:
    """A line per series over ``x`` (``None`` leaves a gap); ``step`` draws values held until the next point."""
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    for label, values in block.series.items():
        ys = [float("nan") if value is None else value for value in values]
        if step:
            axes.step(block.x, ys, where="post", label=label)
        else:
            sparse = len(block.x) < 30 or any(value is None for value in values)  # a lone point draws no line
            axes.plot(block.x, ys, label=label, marker="." if sparse else None)
    if len(block.series) > 1:
        axes.legend(loc="best", fontsize=8, frameon=False)
    return _svg(figure, axes, block.title, block.x_label, block.y_label)


def bars_svg(block: Bars) -> str:
    """A bar per label, its value written above it."""
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    labels = [str(label) for label in block.labels]
    bars = axes.bar(range(len(labels)), block.values, color="#4c72b0")
    axes.bar_label(bars, labels=[_short(value) for value in block.values], fontsize=8)
    crowded = sum(map(len, labels)) > 60
    axes.set_xticks(range(len(labels)), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.grid(axis="x", visible=False)
    return _svg(figure, axes, block.title, "", block.y_label)


def histogram_svg(block: Histogram) -> str:
    """The distribution of the values."""
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    axes.hist(list(block.values), bins=block.bins if isinstance(block.bins, int) else list(block.bins))
    return _svg(figure, axes, block.title, block.x_label, "count")


def overlaid_svg(title: str, y_label: str, series: dict[str, tuple[Sequence[float], Sequence[float | None]]]) -> str:
    """Several runs' series, each over its own x (seconds since it started), in one chart."""
    figure, axes = plt.subplots(figsize=(WIDTH_IN, HEIGHT_IN))
    for label, (xs, ys) in series.items():
        axes.plot(xs, [float("nan") if y is None else y for y in ys], label=label)
    axes.legend(loc="best", fontsize=8, frameon=False)
    return _svg(figure, axes, title, "seconds since the run started", y_label)


def _svg(figure: Figure, axes: plt.Axes, title: str, x_label: str, y_label: str) -> str:
    """The figure as an ``<svg>`` element to inline (no XML prolog), and the figure closed."""
    axes.set_title(title, loc="left", fontsize=10)
    if x_label.startswith("seconds since"):
        axes.set_xlim(left=0)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(figure)
    svg = buffer.getvalue()
    return re.sub(r"\A.*?(<svg\b)", r"\1", svg, flags=re.S)


def _short(value: float) -> str:
    """A bar's value as written above it."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"
