"""Input rows as questions: the four dataset layouts Collaborative Reasoner reads, and how a row's layout is detected.

- ``mmlu_pro``: ``question``, ``options`` (up to ten in MMLU-Pro; ``choices`` in MMLU's own layout), ``answer`` (a
  letter or an index) or ``answer_index``.
- ``gpqa``: ``Question`` (or ``question``), ``choices`` (four in GPQA), ``label`` (an index) or ``answer``.
- ``math``: ``problem``, ``answer`` (else the last ``\\boxed{}`` of ``solution``).
- ``tom`` (ExploreToM, Hi-ToM): ``story_structure`` (or ``story``), ``question``, ``expected_answer`` (or ``answer``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from matrix_coral.config import DatasetFormat
from matrix_coral.extraction import boxed_contents
from matrix_core import BadRowError

LETTERS = string.ascii_uppercase
"""Option letters: (A), (B), ... as many as a question has."""

MULTIPLE_CHOICE = (DatasetFormat.mmlu_pro, DatasetFormat.gpqa)


@dataclass(frozen=True)
class Question:
    """One row's question in its format, with its gold answer (an option letter, a LaTeX expression or a phrase)."""

    format: DatasetFormat
    text: str
    gold: str
    choices: tuple[str, ...] = ()
    story: str = ""


def detect_format(row: dict[str, Any]) -> DatasetFormat:
    """The format whose fields ``row`` has; a row that fits none is a :class:`BadRowError`."""
    if "options" in row:
        return DatasetFormat.mmlu_pro
    if "choices" in row:
        return DatasetFormat.gpqa if "Question" in row else DatasetFormat.mmlu_pro
    if "problem" in row:
        return DatasetFormat.math
    if "story_structure" in row or "story" in row:
        return DatasetFormat.tom
    raise BadRowError(
        f"cannot tell the dataset format of a row with fields {sorted(row)}",
        hint="expected 'options' (mmlu_pro), 'Question' and 'choices' (gpqa), 'problem' (math) or 'story_structure' "
        "(tom); or set coral.dataset.format",
    )


def parse_question(row: dict[str, Any], format: DatasetFormat = DatasetFormat.auto) -> Question:
    """The question in ``row``, read as ``format`` (detected from the fields when ``auto``); a row without the
    fields of its format is a :class:`BadRowError`, which ``--skip-bad-rows`` skips."""
    if format is DatasetFormat.auto:
        format = detect_format(row)
    if format is DatasetFormat.mmlu_pro:
        choices = _choices(row, "options" if "options" in row else "choices")
        return Question(format, _text(row, "question"), _gold_letter(row, choices, "answer", "answer_index"), choices)
    if format is DatasetFormat.gpqa:
        choices = _choices(row, "choices")
        text = _text(row, "Question" if "Question" in row else "question")
        return Question(format, text, _gold_letter(row, choices, "label", "answer"), choices)
    if format is DatasetFormat.math:
        return Question(format, _text(row, "problem"), _math_answer(row))
    story = _text(row, "story_structure" if "story_structure" in row else "story")
    gold = _text(row, "expected_answer" if "expected_answer" in row else "answer")
    return Question(format, _text(row, "question"), gold, story=story)


def _text(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise BadRowError(f"row has no field {key!r}", hint=f"its fields: {sorted(row)}")
    return str(value)


def _choices(row: dict[str, Any], key: str) -> tuple[str, ...]:
    choices = row.get(key)
    if not isinstance(choices, list) or not 1 <= len(choices) <= len(LETTERS):
        raise BadRowError(f"row field {key!r} must be a list of 1 to {len(LETTERS)} options, got {choices!r:.80}")
    return tuple(str(choice) for choice in choices)


def _gold_letter(row: dict[str, Any], choices: tuple[str, ...], *keys: str) -> str:
    """The gold option letter: the first of ``keys`` that holds a letter or a 0-based index of ``choices``."""
    letters = LETTERS[: len(choices)]
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip().upper() in letters:
            return value.strip().upper()
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
            return letters[value]
    raise BadRowError(
        f"row has no gold answer: {' or '.join(map(repr, keys))} must be one of {', '.join(letters)} "
        f"or an index below {len(choices)}"
    )


def _math_answer(row: dict[str, Any]) -> str:
    if row.get("answer") is not None:
        return str(row["answer"])
    boxed = boxed_contents(str(row.get("solution", "")))
    if not boxed:
        raise BadRowError("row has no gold answer: no 'answer' field and no \\boxed{} in 'solution'")
    return boxed[-1]
