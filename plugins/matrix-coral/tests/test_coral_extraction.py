"""Normalising the extractor's replies, and grading the answers against the gold."""

from __future__ import annotations

import pytest
from matrix_coral.config import DatasetFormat
from matrix_coral.extraction import boxed_contents, extract_answer
from matrix_coral.grading import is_correct
from matrix_coral.questions import Question


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("The answer is (B).", "B"),
        ("(J)", "J"),
        ("The correct answer is (C), not (A).", "C"),
        ("  (A) the first option\n(B) is wrong", "A"),
        ("Answer: (H) Hydrogen", "H"),
        ("not sure yet", None),
        ("Not Sure Yet.", None),
        ("They lean towards (B) but are NOT SURE YET", None),
        ("The answer is B.", None),
        ("(b)", None),
        ("", None),
        ("The answer is (AB).", None),
    ],
)
def test_multiple_choice_replies(reply, answer):
    assert extract_answer(DatasetFormat.mmlu_pro, reply) == answer
    assert extract_answer(DatasetFormat.gpqa, reply) == answer


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("The answer is $\\boxed{ 42 }$.", "42"),
        ("\\boxed{\\sqrt{3}} and later \\boxed{7}", "\\sqrt{3}"),
        ("$\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),
        ("\\boxed {x^{2}}", "x^{2}"),
        ("\\boxed{}", None),
        ("\\boxed{1", None),
        ("The answer is 42.", None),
        ("not sure yet, maybe $\\boxed{3}$", None),
    ],
)
def test_math_replies(reply, answer):
    assert extract_answer(DatasetFormat.math, reply) == answer


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Short Answer: The basket.", "basket"),
        ("Short Answer: The final answer is the red_box", "red box"),
        ("The final answer is Yes", "yes"),
        ("in the Kitchen\nbecause Anne left", "in kitchen"),
        ("  Theater  ", "theater"),
        ("does not know about it.", "does not know about it"),
        ("not sure yet", None),
        ("Short Answer: ", None),
        ("", None),
    ],
)
def test_theory_of_mind_replies(reply, answer):
    assert extract_answer(DatasetFormat.tom, reply) == answer


def test_boxed_contents_balances_braces():
    assert boxed_contents("a \\boxed{\\frac{a}{b}} b \\boxed{c}") == ["\\frac{a}{b}", "c"]


MCQ = Question(DatasetFormat.mmlu_pro, "Q", "C", ("w", "x", "y", "z"))


def test_option_letters_are_correct_only_when_equal():
    assert is_correct(MCQ, "C")
    assert not is_correct(MCQ, "B")


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "\\frac12", True),
        ("\\frac{1}{2}", "1/2", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("10", "10.0", True),
        ("3", "4", False),
        ("x^2+1", "1+x^{2}", True),
        ("(1,2)", "(2,1)", False),
    ],
)
def test_math_answers_are_compared_by_math_verify(gold, answer, correct):
    assert is_correct(Question(DatasetFormat.math, "P", gold), answer) is correct


@pytest.mark.parametrize(
    ("gold", "answer", "correct"),
    [
        ("the basket", "basket", True),
        ("basket", "in basket", True),
        ("Green_Bucket", "green bucket", True),
        ("yes", "yes, she does", True),
        ("no", "no. he left", True),
        ("no", "yes", False),
        ("does not know about the apple", "she does not know", True),
        ("knows about the apple", "she knows", True),
        ("knows about the apple", "she does not know", False),
        ("kitchen", "garden", False),
    ],
)
def test_theory_of_mind_answers_match_leniently(gold, answer, correct):
    assert is_correct(Question(DatasetFormat.tom, "Q", gold, story="S"), answer) is correct
