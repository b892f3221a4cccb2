"""Reading the three stages' replies: the classifier's Yes/No, the rubric's fenced JSON scores, the question's
fenced JSON. Each parser returns None for a reply it cannot read; the stage turns that into its reason.

As in fair-matrix's ``extract_json``, only JSON inside a ```` ``` ```` fence counts (with or without a ``json``
tag): JSON outside a fence is not an answer in the prompts' format. Where fair-matrix takes the first fenced block,
the last one is read here, since both prompts ask for the JSON after the analysis (a model that first echoes the
prompt's example would otherwise be scored by it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)```", re.DOTALL)
_INVALID_ESCAPE = re.compile(r'(?<!\\)((?:\\\\)*)\\(?=[^"\\/bfnrtu])')
_CONTROL = {"\b": "\\b", "\f": "\\f"}
"""LaTeX commands that JSON reads as control characters (``\\boxed``, ``\\frac``): put back as typed."""
CRITERIA = ("criteria_1", "criteria_2", "criteria_3", "criteria_4")
BOXED = "\\boxed{"


def classifier_passes(reply: str) -> bool:
    """Only the answer ``Yes`` passes (surrounding whitespace aside); ``Yes.``, ``yes`` or ``No`` do not."""
    return reply.strip() == "Yes"


@dataclass(frozen=True)
class Scores:
    """The rubric's four criteria, as the score model rated them."""

    criteria_1: float
    criteria_2: float
    criteria_3: float
    criteria_4: float

    def passed(self) -> bool:
        """Every criterion above zero."""
        return all(getattr(self, name) > 0 for name in CRITERIA)


@dataclass(frozen=True)
class ExamQuestion:
    """What the question stage extracted from a document."""

    exam_question: str
    question_category: str
    extracted_answer: str
    independent_answer: list[str]

    def problem(self) -> str | None:
        """Why the question is unusable (``no_question``, ``no_answer``, ``no_boxed_answer``), or None."""
        if not self.exam_question.strip():
            return "no_question"
        if not self.independent_answer:
            return "no_answer"
        if BOXED not in self.independent_answer[-1]:
            return "no_boxed_answer"
        return None


def parse_scores(reply: str) -> Scores | None:
    """The scores of the last fenced JSON object that rates all four criteria with numbers, else None."""
    for data in reversed(fenced_json(reply)):
        values = [data.get(name) for name in CRITERIA]
        if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
            return Scores(*(float(value) for value in values))
    return None


def parse_question(reply: str) -> ExamQuestion | None:
    """The last fenced JSON object with the four question fields of the right types, else None."""
    for data in reversed(fenced_json(reply)):
        steps = data.get("independent_answer")
        texts = [data.get(name) for name in ("exam_question", "question_category", "extracted_answer")]
        strings = all(isinstance(text, str) for text in texts)
        if strings and isinstance(steps, list) and all(isinstance(step, str) for step in steps):
            return ExamQuestion(*texts, independent_answer=steps)
    return None


def fenced_json(reply: str) -> list[dict[str, Any]]:
    """Every fenced block of ``reply`` that holds a JSON object, in order, with its keys normalised
    (``"Criteria 1"`` reads as ``criteria_1``)."""
    found = []
    for block in _FENCE.findall(reply):
        data = _loads(block.strip())
        if isinstance(data, dict):
            found.append({_normalise(key): _restore_latex(value) for key, value in data.items()})
    return found


def _loads(text: str) -> Any:
    """JSON, forgiving LaTeX written with single backslashes (``"\\sqrt{2}"``), which strict JSON rejects."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(_INVALID_ESCAPE.sub(r"\1\\\\", text))
    except json.JSONDecodeError:
        return None


def _restore_latex(value: Any) -> Any:
    if isinstance(value, str):
        return "".join(_CONTROL.get(char, char) for char in value)
    if isinstance(value, list):
        return [_restore_latex(item) for item in value]
    return value


def _normalise(key: str) -> str:
    return key.strip().lower().replace(" ", "_").replace("-", "_")
