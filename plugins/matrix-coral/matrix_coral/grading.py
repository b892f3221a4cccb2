"""Whether an extracted answer is the gold one: option letters exactly, MATH expressions with ``math-verify``,
theory-of-mind phrases with Collaborative Reasoner's lenient ExploreToM match."""

from __future__ import annotations

from math_verify import parse, verify

from matrix_coral.config import DatasetFormat
from matrix_coral.extraction import normalise_short_answer
from matrix_coral.questions import Question


def is_correct(question: Question, answer: str) -> bool:
    """Whether ``answer`` (as :func:`~matrix_coral.extraction.extract_answer` returns it) answers ``question``.

    MATH answers are checked by sympy, which can take a while: call this from a thread, not an event loop.
    """
    if question.format is DatasetFormat.math:
        return _math_equal(question.gold, answer)
    if question.format is DatasetFormat.tom:
        return _tom_match(normalise_short_answer(question.gold), answer)
    return answer == question.gold


def _math_equal(gold: str, answer: str) -> bool:
    # math-verify's timeouts use SIGALRM, which only the main thread may set: off, since this runs in a thread.
    expressions = [parse(f"$\\boxed{{{text}}}$", parsing_timeout=None) for text in (gold, answer)]
    return verify(*expressions, timeout_seconds=None)


def _tom_match(target: str, prediction: str) -> bool:
    return (
        ("does not know" in target and " not " in prediction)
        or (target.startswith("knows about") and " not " not in prediction)
        or (target in ("yes", "no") and target in (prediction.split(",")[0], prediction.split(".")[0]))
        or prediction in target
        or target in prediction
    )
