"""Reading each stage's reply: the classifier's Yes, the rubric's fenced scores, the question's fenced JSON."""

from __future__ import annotations

import json

import pytest
from matrix_naturalreasoning.replies import (
    ExamQuestion,
    Scores,
    classifier_passes,
    fenced_json,
    parse_question,
    parse_scores,
)

SCORES = {"criteria_1": 2, "criteria_2": 1, "criteria_3": 0.5, "criteria_4": 1}


def fence(data: object, tag: str = "json") -> str:
    return f"```{tag}\n{json.dumps(data)}\n```"


@pytest.mark.parametrize(("reply", "passes"), [("Yes", True), (" Yes\n", True), ("No", False), ("Yes.", False)])
def test_only_the_answer_yes_passes_the_classifier(reply, passes):
    assert classifier_passes(reply) is passes


@pytest.mark.parametrize("reply", ["yes", "YES", "Yes, it does", "", "The answer is Yes"])
def test_anything_but_yes_fails_the_classifier(reply):
    assert not classifier_passes(reply)


@pytest.mark.parametrize("tag", ["json", "JSON", ""])
def test_scores_are_read_from_a_fence_with_or_without_the_json_tag(tag):
    reply = "Criteria 1: +1 +1 = 2 ...\n" + fence(SCORES, tag)
    assert parse_scores(reply) == Scores(2.0, 1.0, 0.5, 1.0)


def test_scores_outside_a_fence_are_not_an_answer():
    assert parse_scores(f"My scores: {json.dumps(SCORES)}") is None


@pytest.mark.parametrize(
    ("data", "passed"),
    [
        (SCORES, True),
        ({**SCORES, "criteria_3": 0}, False),
        ({**SCORES, "criteria_4": -1}, False),
        ({**SCORES, "criteria_1": 0.0, "criteria_2": -0.5}, False),
    ],
)
def test_every_criterion_must_be_above_zero(data, passed):
    assert parse_scores(fence(data)).passed() is passed


@pytest.mark.parametrize(
    "data",
    [
        {"criteria_1": 1, "criteria_2": 1, "criteria_3": 1},
        {**SCORES, "criteria_2": "1"},
        {**SCORES, "criteria_2": True},
        {**SCORES, "criteria_2": None},
        [1, 1, 1, 1],
    ],
)
def test_json_without_four_numeric_criteria_is_no_scores(data):
    assert parse_scores(fence(data)) is None


def test_unparsable_json_in_a_fence_is_no_scores():
    assert parse_scores('```json\n{"criteria_1": 1, "criteria_2": \n```') is None


def test_criteria_names_are_normalised_and_the_last_fence_wins():
    reply = (
        "Example:\n"
        + fence({**SCORES, "criteria_4": -1})
        + "\nMine:\n"
        + fence({"Criteria 1": 1, "criteria-2": 1, "CRITERIA_3": 1, " criteria 4 ": 1})
    )
    assert parse_scores(reply) == Scores(1.0, 1.0, 1.0, 1.0)


def question(**changes: object) -> dict:
    data = {
        "exam_question": "What is the derivative of x^2 + 3x?",
        "question_category": "Mathematics",
        "extracted_answer": "Therefore, the final answer is: \\boxed{2x + 3}.",
        "independent_answer": ["Apply the power rule.", "Therefore, the final answer is: \\boxed{2x + 3}."],
    }
    return {**data, **changes}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (question(), None),
        (question(extracted_answer=""), None),
        (question(exam_question=""), "no_question"),
        (question(exam_question="  "), "no_question"),
        (question(independent_answer=[]), "no_answer"),
        (question(independent_answer=["The answer is 2x + 3."]), "no_boxed_answer"),
        (question(independent_answer=["\\boxed{1} first", "then no box"]), "no_boxed_answer"),
    ],
)
def test_a_question_is_usable_only_with_a_question_and_a_boxed_last_step(data, problem):
    parsed = parse_question(fence(data, tag=""))
    assert parsed == ExamQuestion(**data)
    assert parsed.problem() == problem


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(question()),
        fence({key: value for key, value in question().items() if key != "question_category"}),
        fence(question(independent_answer="Therefore, the final answer is: \\boxed{1}.")),
        fence(question(independent_answer=[1, 2])),
        fence(question(exam_question=None)),
        "no json at all",
    ],
)
def test_a_reply_without_the_question_fields_in_a_fence_is_no_question(reply):
    assert parse_question(reply) is None


def test_latex_with_single_backslashes_is_read_as_written():
    """Models often write LaTeX into JSON strings unescaped: ``\\sqrt`` is an invalid JSON escape and ``\\boxed``
    reads as a backspace and ``oxed``; both come back as the model wrote them."""
    reply = (
        '```json\n{"exam_question": "Simplify \\sqrt{8}.", "question_category": "Mathematics", '
        '"extracted_answer": "\\frac{4}{2}", '
        '"independent_answer": ["Therefore, the final answer is: \\boxed{2\\sqrt{2}}."]}'
        "\n```"
    )
    parsed = parse_question(reply)
    assert parsed.exam_question == "Simplify \\sqrt{8}."
    assert parsed.extracted_answer == "\\frac{4}{2}"
    assert parsed.independent_answer == ["Therefore, the final answer is: \\boxed{2\\sqrt{2}}."]
    assert parsed.problem() is None


def test_fenced_json_skips_blocks_that_are_not_objects():
    reply = "```python\nprint(1)\n```\n```json\n[1]\n```\n" + fence({"a": 1})
    assert fenced_json(reply) == [{"a": 1}]
