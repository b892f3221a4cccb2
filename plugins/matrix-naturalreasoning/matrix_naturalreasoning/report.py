"""The workflow's sections of ``matrix report``: how many documents passed each stage and why the others were
dropped (from the run's metrics, which count every document, kept or not), the rubric scores the output records
carry, and a few of the questions. The records are read once, keeping counts and the first few questions."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from matrix_core import Bars, Conversation, Histogram, ReportSection, RunMetrics, Table, Text
from matrix_naturalreasoning.replies import CRITERIA
from matrix_naturalreasoning.workflow import GATES, PAPER_SURVIVAL

STAGE_NAMES = {"en": "English", "filter": "classifier", "score": "score", "question": "question"}
"""Each gate as the funnel names it."""
DROPS = {
    "en": ("filtered:en",),
    "filter": ("filtered:classifier",),
    "score": ("filtered:score", "filtered:score_no_json"),
    "question": ("filtered:question_no_json", "filtered:no_question", "filtered:no_answer", "filtered:no_boxed_answer"),
}
"""The reasons (``status:reason``) each gate drops a document for; ``error`` and other reasons end one anywhere."""
CRITERIA_NAMES = {
    "criteria_1": "1. problem completeness",
    "criteria_2": "2. complexity and technical depth",
    "criteria_3": "3. technical correctness",
    "criteria_4": "4. thinking and reasoning",
}
EXAMPLES = 3
"""Example questions shown at most."""
EXAMPLE_CHARS = 1500
"""Longest text of an example's turn; longer ones are cut."""
OTHER_REASONS = 10
"""Rows for reasons no stage owns (errors' messages); the rest share one row."""


def report_sections(records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
    """The survival funnel, the rubric scores and, when the records hold questions, a few of them."""
    tally = Tally()
    for record in records:
        tally.add(record)
    sections = [funnel(metrics), rubric_scores(tally, metrics)]
    if tally.examples:
        sections.append(ReportSection("Example questions", tally.examples))
    return sections


@dataclass
class Tally:
    """What the report keeps of the records: how many, the rubric totals, each criterion's sum and how often it was
    above 0, and the first few questions."""

    records: int = 0
    totals: list[float] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CRITERIA, 0.0))
    above_zero: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CRITERIA, 0))
    examples: list[Conversation] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        """Count one record; fields it lacks or holds in another shape (an error's record) are skipped."""
        self.records += 1
        if (criteria := read_scores(record.get("scores"))) is not None:
            self.totals.append(sum(criteria.values()))
            for name, value in criteria.items():
                self.sums[name] += value
                self.above_zero[name] += value > 0
        if len(self.examples) < EXAMPLES and (example := conversation(record)) is not None:
            self.examples.append(example)


def read_scores(scores: Any) -> dict[str, float] | None:
    """The four criteria of a record's ``scores``, or None unless each is a finite number."""
    if not isinstance(scores, dict):
        return None
    values = [scores.get(name) for name in CRITERIA]
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return None
    if not all(math.isfinite(value) for value in values):
        return None
    return {name: float(value) for name, value in zip(CRITERIA, values, strict=True)}


def conversation(record: dict[str, Any]) -> Conversation | None:
    """A record's question with its reference and independent answers, each cut to ``EXAMPLE_CHARS``; None
    without a question."""
    question, category = record.get("exam_question"), record.get("question_category")
    if not isinstance(question, str) or not question.strip():
        return None
    turns = [("question", question), ("reference answer", record.get("extracted_answer"))]
    steps = record.get("independent_answer")
    if isinstance(steps, list) and all(isinstance(step, str) for step in steps):
        turns.append(("independent answer", "\n".join(steps)))
    title = f"{record.get('id')} ({category})" if isinstance(category, str) else str(record.get("id"))
    return Conversation(title, [(who, cut(text)) for who, text in turns if isinstance(text, str) and text.strip()])


def cut(text: str) -> str:
    """``text``, cut to ``EXAMPLE_CHARS`` characters."""
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS].rstrip() + " …"


def funnel(metrics: RunMetrics) -> ReportSection:
    """Documents left after each gate (from the run's survival means) and each reason's count, for every
    document of the run, kept or not."""
    documents = metrics.tasks
    if not documents:
        return ReportSection("Survival funnel", [Text("No document finished in this run.")])
    passed = [round(metrics.workflow[f"survived_{gate}"] * documents) for gate in GATES]
    rows: list[tuple[str, str, int, str]] = [("documents", "read", documents, share(documents, documents))]
    for gate, count in zip(GATES, passed, strict=True):
        stage = STAGE_NAMES[gate]
        dropped = [(reason, metrics.status_reason.get(reason, 0)) for reason in DROPS[gate]]
        rows += [(stage, reason, n, share(n, documents)) for reason, n in dropped]
        rows.append((stage, "passed", count, share(count, documents)))
    rows += [("any", reason, n, share(n, documents)) for reason, n in other_reasons(metrics.status_reason)]
    questions = passed[-1]
    return ReportSection(
        "Survival funnel",
        [
            Text(
                f"{questions:,} of {documents:,} documents became questions ({questions / documents:.2%}; the "
                f"paper: {PAPER_SURVIVAL:.2%} of DCLM). A document ends at the first stage it does not pass; "
                "errors end it at any stage."
            ),
            Bars(["documents", *STAGE_NAMES.values()], [documents, *passed], "Documents left", "documents"),
            Table(
                ["stage", "outcome", "documents", "share of documents"],
                rows,
                "Every document of the run, kept or not, by status:reason as in metrics.json.",
            ),
        ],
    )


def other_reasons(counts: dict[str, int]) -> list[tuple[str, int]]:
    """The reasons no stage owns (``error:...``, a backend's ``filtered:content_filter``), most frequent first;
    past ``OTHER_REASONS`` rows, the rest summed in the last."""
    owned = {reason for reasons in DROPS.values() for reason in reasons} | {"success"}
    others = sorted(((r, n) for r, n in counts.items() if r not in owned), key=lambda item: (-item[1], item[0]))
    if len(others) <= OTHER_REASONS:
        return others
    rest = others[OTHER_REASONS - 1 :]
    return [*others[: OTHER_REASONS - 1], (f"{len(rest)} other reasons", sum(n for _, n in rest))]


def rubric_scores(tally: Tally, metrics: RunMetrics) -> ReportSection:
    """The distribution of the rubric's total over the records that carry scores, and each criterion's mean."""
    scored = len(tally.totals)
    if tally.records < metrics.tasks:
        covers = (
            f"Only kept records carry scores: the output holds {tally.records:,} of the run's {metrics.tasks:,} "
            f"documents (nr.keep=success keeps the questions), so this covers those {scored:,}, not the documents "
            "the rubric dropped; run with nr.keep=all to see every scored document."
        )
    else:
        covers = (
            f"{scored:,} of the {tally.records:,} records carry scores: every document whose rubric reply was read, "
            "those the rubric dropped included."
        )
    if not scored:
        return ReportSection("Rubric scores", [Text(covers)])
    criteria = [
        (CRITERIA_NAMES[name], round(tally.sums[name] / scored, 2), share(tally.above_zero[name], scored))
        for name in CRITERIA
    ]
    passing = "The rubric passes a document with every criterion above 0."
    return ReportSection(
        "Rubric scores",
        [
            Text(covers),
            Histogram(tally.totals, "Rubric total per record", "sum of the four criteria"),
            Table(["criterion", "mean", "above 0"], criteria, passing),
        ],
    )


def share(count: int, total: int) -> str:
    """``count`` as a percentage of ``total``."""
    return f"{count / total:.1%}"
