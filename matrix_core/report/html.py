"""Sections and their blocks as HTML: one page with its style inline, charts as inline SVG, nothing to fetch."""

from __future__ import annotations

import datetime
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matrix_core.report import plots
from matrix_core.report.sections import Bars, Block, Conversation, Histogram, Lines, ReportSection, Table, Text

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #fafafa; }
header { background: #1f3b57; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; opacity: .85; }
nav { padding: 8px 32px; background: #e9eef3; font-size: 13px; }
nav a { margin-right: 14px; color: #1f3b57; text-decoration: none; }
main { max-width: 1080px; padding: 8px 32px 40px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; margin: 18px 0; padding: 8px 20px 14px; }
h2 { font-size: 17px; color: #1f3b57; border-bottom: 1px solid #eee; padding-bottom: 6px; }
h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13px; min-width: 60%; }
caption { text-align: left; color: #555; padding-bottom: 4px; }
th, td { border-bottom: 1px solid #eee; padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 6px 0; }
figure svg { max-width: 100%; height: auto; }
details { margin: 6px 0; }
summary { cursor: pointer; color: #1f3b57; }
.turn { margin: 6px 0 6px 12px; }
.turn b { color: #1f3b57; }
pre { white-space: pre-wrap; word-break: break-word; background: #f5f5f5; padding: 6px 8px; margin: 2px 0; }
pre { font-size: 12px; }
.note { color: #666; }
.columns { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 18px; }
.columns table { min-width: 0; }
"""


@dataclass(frozen=True)
class Details:
    """Blocks folded under a summary line (a run's config; one run's sections on a comparison page)."""

    summary: str
    blocks: Sequence[Any]


@dataclass(frozen=True)
class Overlay:
    """Several runs' series in one chart, each over its own x: run name -> (x, y)."""

    title: str
    y_label: str
    series: dict[str, tuple[Sequence[float], Sequence[float | None]]]


@dataclass(frozen=True)
class Columns:
    """Runs side by side: a column per run, each its heading and its blocks."""

    columns: Sequence[tuple[str, Sequence[Any]]]


@dataclass(frozen=True)
class Preformatted:
    """Text shown as it is (the config as YAML)."""

    text: str


def page(title: str, subtitle: str, sections: Sequence[ReportSection]) -> str:
    """The whole page: a header, links to each section, the sections."""
    anchors = [_anchor(section.title, index) for index, section in enumerate(sections)]
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_text(title)}</title><style>{STYLE}</style></head><body>",
            f"<header><h1>{_text(title)}</h1><p>{_text(subtitle)} · report made {made} by matrix report</p></header>",
            "<nav>"
            + "".join(f'<a href="#{a}">{_text(s.title)}</a>' for a, s in zip(anchors, sections, strict=True))
            + "</nav>",
            "<main>",
            *(section_html(section, anchor) for section, anchor in zip(sections, anchors, strict=True)),
            "</main></body></html>",
        ]
    )


def section_html(section: ReportSection, anchor: str) -> str:
    """One section with its blocks in order."""
    body = "\n".join(block_html(block) for block in section.blocks)
    return f'<section id="{anchor}"><h2>{_text(section.title)}</h2>\n{body}\n</section>'


def block_html(block: Block | Details | Overlay | Columns | Preformatted) -> str:
    """One block; a chart with nothing to draw says so instead."""
    match block:
        case Columns():
            columns = "".join(
                f"<div><h3>{_text(heading)}</h3>"
                + ("\n".join(block_html(each) for each in blocks) or '<p class="note">No such section.</p>')
                + "</div>"
                for heading, blocks in block.columns
            )
            return f'<div class="columns" style="--n: {len(block.columns)}">{columns}</div>'
        case Preformatted():
            return f"<pre>{_text(block.text)}</pre>"
        case Overlay():
            return _figure(plots.overlaid_svg(block.title, block.y_label, block.series), block.title)
        case Text():
            return f'<p class="note">{_text(block.text)}</p>'
        case Table():
            return table_html(block)
        case Conversation():
            turns = "".join(
                f'<div class="turn"><b>{_text(who)}</b><pre>{_text(text)}</pre></div>' for who, text in block.turns
            )
            return f"<details><summary>{_text(block.title)}</summary>{turns}</details>"
        case Details():
            inner = "\n".join(block_html(each) for each in block.blocks)
            return f"<details><summary>{_text(block.summary)}</summary>{inner}</details>"
        case Lines() if block.x and any(any(v is not None for v in ys) for ys in block.series.values()):
            return _figure(plots.lines_svg(block, step=block.title.startswith("In flight")), block.title)
        case Bars() if block.values:
            return _figure(plots.bars_svg(block), block.title)
        case Histogram() if block.values:
            return _figure(plots.histogram_svg(block), block.title)
        case Lines() | Bars() | Histogram():
            return f'<p class="note">{_text(block.title or "chart")}: nothing to draw.</p>'
    raise TypeError(f"not a report block: {block!r}")


def table_html(table: Table) -> str:
    """A table; numbers right-aligned, ints with thousands separators."""
    caption = f"<caption>{_text(table.caption)}</caption>" if table.caption else ""
    head = "".join(f"<th>{_text(column)}</th>" for column in table.columns)
    rows = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in table.rows)
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def number(value: Any) -> str:
    """How the page writes a value: ints with separators, floats to 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="n">{_text(number(value))}</td>' if numeric else f"<td>{_text(number(value))}</td>"


def _figure(svg: str, title: str) -> str:
    return f'<figure aria-label="{_text(title)}">{svg}</figure>'


def _anchor(title: str, index: int) -> str:
    return f"s{index}-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section")


def _text(value: object) -> str:
    return html.escape(str(value))
