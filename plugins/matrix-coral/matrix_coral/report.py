"""Coral's sections of ``matrix report``: how often teacher and student agreed, and on the gold answer; how many
turns agreement took; the same per category; and a few example conversations.

The records stream past once and may number millions: only counts and at most one example of each kind are kept.
A record without the conversation fields (``coral.export=sft``, another workflow's) is counted and left out; a
missing or malformed field is skipped, never an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from matrix_core import Bars, Conversation, ReportSection, Table, Text

if TYPE_CHECKING:
    from matrix_core import RunMetrics

EXAMPLE_CHARS = 1500
"""An example's texts are cut to this many characters, the ellipsis included."""
MAX_CATEGORIES = 30
"""The per-category table shows the categories with the most conversations, at most this many."""
EXAMPLE_KINDS = {
    "agreed_correct": "agreed on the gold answer",
    "agreed_wrong": "agreed on a wrong answer",
    "max_turns": "never agreed",
}
"""The kinds of example conversation shown, in order, the first of each kind met."""


@dataclass
class Counts:
    """One group's conversations: how many agreed, how many on the gold answer, and their turns."""

    conversations: int = 0
    agreed: int = 0
    agreed_correct: int = 0
    turns: int = 0
    """Generated turns, summed over the conversations whose record gives them."""
    with_turns: int = 0

    def add(self, agreed: bool, correct: bool, n_turns: int | None) -> None:
        """Count one conversation."""
        self.conversations += 1
        self.agreed += agreed
        self.agreed_correct += agreed and correct
        if n_turns is not None:
            self.turns += n_turns
            self.with_turns += 1


@dataclass
class Tally:
    """What the report keeps of the records: counts, overall and per category, and the examples."""

    total: Counts = field(default_factory=Counts)
    categories: dict[str, Counts] = field(default_factory=dict)
    turns_to_agreement: Counter[int] = field(default_factory=Counter)
    """Generated turns -> conversations that agreed after that many."""
    other_records: int = 0
    """Records without the conversation fields."""
    examples: dict[str, Conversation] = field(default_factory=dict)

    def add(self, record: Any) -> None:
        """Count one output record, and keep it as an example when it is the first of its kind."""
        if not isinstance(record, dict) or not isinstance(record.get("agreement"), bool):
            self.other_records += 1
            return
        agreed, correct, n_turns = record["agreement"], record.get("agreement_correctness") is True, _n_turns(record)
        self.total.add(agreed, correct, n_turns)
        self.categories.setdefault(_category(record), Counts()).add(agreed, correct, n_turns)
        if agreed and n_turns is not None:
            self.turns_to_agreement[n_turns] += 1
        kind = ("agreed_correct" if correct else "agreed_wrong") if agreed else str(record.get("status"))
        if kind in EXAMPLE_KINDS and kind not in self.examples and isinstance(record.get("turns"), list):
            self.examples[kind] = _example(record, EXAMPLE_KINDS[kind])


def report_sections(records: Iterable[dict[str, Any]], metrics: RunMetrics) -> list[ReportSection]:
    """Coral's sections of the run's report, from one pass over ``records``; a section with nothing to show is left
    out."""
    tally = Tally()
    for record in records:
        tally.add(record)
    sections = [ReportSection("Agreement", _agreement_blocks(tally, metrics))]
    if tally.turns_to_agreement:
        sections.append(ReportSection("Turns to agreement", [_turns_bars(tally.turns_to_agreement)]))
    if tally.categories:
        sections.append(ReportSection("By category", [_category_table(tally.categories)]))
    if tally.examples:
        examples = [tally.examples[kind] for kind in EXAMPLE_KINDS if kind in tally.examples]
        sections.append(ReportSection("Example conversations", examples))
    return sections


def percent(part: int, whole: int) -> float | str:
    """``part`` as a percentage of ``whole``, to one decimal; ``n/a`` when ``whole`` is 0."""
    return round(100 * part / whole, 1) if whole else "n/a"


def cut(text: str) -> str:
    """``text``, cut to :data:`EXAMPLE_CHARS` characters with an ellipsis when longer."""
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _n_turns(record: dict[str, Any]) -> int | None:
    value = record.get("n_turns")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _category(record: dict[str, Any]) -> str:
    """The record's category (the input row's ``category`` or ``subject``), else its question format."""
    for key in ("category", "format"):
        if isinstance(record.get(key), str) and record[key]:
            return record[key]
    return "unknown"


def _example(record: dict[str, Any], outcome: str) -> Conversation:
    """The record's conversation, the question first, each text cut, each turn's speaker with its answer."""
    shown = {"agreed_answer": "agreed", "gold": "gold"}
    details = [f"{name} {record[key]}" for key, name in shown.items() if record.get(key)]
    if (n_turns := _n_turns(record)) is not None:
        details.append(f"{n_turns} turns")
    title = f"task {record.get('id')}: {outcome}" + (f" ({', '.join(details)})" if details else "")
    turns = [("question", cut(record["prompt"]))] if isinstance(record.get("prompt"), str) else []
    for turn in record["turns"]:
        if isinstance(turn, dict):
            speaker = str(turn.get("role", "?")) + (f" (answer {turn['answer']})" if turn.get("answer") else "")
            turns.append((speaker, cut(str(turn.get("text") or ""))))
    return Conversation(title, turns)


def _agreement_blocks(tally: Tally, metrics: RunMetrics) -> list[Text | Table]:
    total = tally.total
    if total.conversations:
        correct = total.agreed_correct
        rows = [
            ["agreed", total.agreed, percent(total.agreed, total.conversations)],
            ["agreed on the gold answer, of those that agreed", correct, percent(correct, total.agreed)],
            ["agreed on the gold answer, of all", correct, percent(correct, total.conversations)],
        ]
        blocks: list[Text | Table] = [
            Table(["", "conversations", "%"], rows, caption=f"of the {total.conversations} conversations in the output")
        ]
    else:
        blocks = [Text("No record of the output holds a conversation.")]
    means = metrics.workflow
    if "agreement" in means and "agreement_correctness" in means:
        blocks.append(
            Text(
                f"The run's metrics, over the {metrics.tasks} conversations it finished (those coral.keep dropped "
                f"included): agreement {100 * means['agreement']:.1f}%, agreement on the gold answer "
                f"{100 * means['agreement_correctness']:.1f}%."
            )
        )
    if tally.other_records:
        left_out = f"{tally.other_records} records without the conversation fields (coral.export=sft, or not coral's)"
        blocks.append(Text(f"{left_out} are left out."))
    return blocks


def _turns_bars(turns_to_agreement: Counter[int]) -> Bars:
    """Conversations per number of turns to agreement, with a bar for every number between the fewest and most."""
    span = range(min(turns_to_agreement), max(turns_to_agreement) + 1)
    return Bars(
        [str(n) for n in span],
        [turns_to_agreement[n] for n in span],
        title="Generated turns until teacher and student agreed",
        y_label="conversations",
    )


def _category_table(categories: dict[str, Counts]) -> Table:
    largest = sorted(categories.items(), key=lambda item: (-item[1].conversations, item[0]))[:MAX_CATEGORIES]
    rows = [
        [
            name,
            counts.conversations,
            percent(counts.agreed, counts.conversations),
            percent(counts.agreed_correct, counts.conversations),
            round(counts.turns / counts.with_turns, 1) if counts.with_turns else "n/a",
        ]
        for name, counts in largest
    ]
    caption = "category: the input row's category or subject, else the question format; "
    caption += "correct %: agreed on the gold answer, of the category's conversations"
    if len(categories) > MAX_CATEGORIES:
        caption += f"; the {MAX_CATEGORIES} largest of {len(categories)} categories"
    return Table(["category", "conversations", "agreed %", "correct %", "mean turns"], rows, caption=caption)
