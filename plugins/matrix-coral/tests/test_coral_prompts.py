"""The prompts of each dataset format, rendered from rows, and the chat each side sees."""

from __future__ import annotations

import re

import pytest
from matrix_coral.config import DatasetFormat
from matrix_coral.prompts import (
    EXTRACTOR_SYSTEM_PROMPT,
    chat_messages,
    extraction_prompt,
    opening_message,
    system_prompt,
)
from matrix_coral.questions import Question, detect_format, parse_question

from matrix_core import MatrixError

TEN_OPTIONS = [f"option {n}" for n in range(10)]
MMLU_PRO = {"question_id": 7, "question": "Which?", "options": TEN_OPTIONS, "answer": "J", "answer_index": 9}
GPQA = {"Question": "Which particle?", "choices": ["e", "mu", "tau", "nu"], "label": 2}
MATH = {"problem": "What is $1/2 + 1/2$?", "solution": "It is $\\boxed{\\frac{2}{2}}$, so $\\boxed{1}$."}
TOM = {
    "story_structure": "Anne puts the apple in the box.",
    "question": "Where is the apple?",
    "expected_answer": "box",
}


def test_mmlu_pro_opening_lists_every_option_a_to_j():
    question = parse_question(MMLU_PRO)
    assert question == Question(DatasetFormat.mmlu_pro, "Which?", "J", tuple(TEN_OPTIONS))
    assert opening_message(question) == (
        'I\'m trying to solve this problem: "Which?"\nAnd the choices are:\n'
        + "\n".join(f"({letter}) option {n}" for n, letter in enumerate("ABCDEFGHIJ"))
    )


def test_four_options_give_four_lines_and_the_gold_comes_from_the_index_when_needed():
    row = {"question": "Q", "options": ["w", "x", "y", "z"], "answer_index": 1}
    question = parse_question(row)
    assert question.gold == "B"
    assert opening_message(question).splitlines()[2:] == ["(A) w", "(B) x", "(C) y", "(D) z"]


def test_the_collaborative_system_prompt_word_for_word():
    assert system_prompt(DatasetFormat.mmlu_pro) == (
        "You are working with a user to solve some reasoning-focused question answering problems.\n\n"
        "Here is how you should proceed:\n"
        "* Starting on the problem and try to give a full solution;\n"
        "* When the user proposes a solution, look carefully at each of the step, and be precise and direct when you "
        "notice any mistake;\n"
        "* When the user raises a concern, first think about if you have actually made a mistake. Correct your "
        "mistake if you think you've made one, but stand your ground if you think it's actually correct;\n"
        "* Always stay on topic and work towards a solution to the original problem;\n"
        "* Be direct and concise during the whole communication;\n"
        '* To give a final answer, do it in the format of "The correct answer is (insert answer here)", such as '
        '"The correct answer is (B)"'
    )


def test_each_format_has_its_final_answer_instruction():
    assert system_prompt(DatasetFormat.gpqa).startswith(
        "You are working with an advanced user to solve some complex PhD-level biology, physics, and chemistry"
    )
    assert system_prompt(DatasetFormat.gpqa).endswith('such as "The correct answer is (B)"')
    assert system_prompt(DatasetFormat.math).endswith(
        'To give a final answer to the question (e.g., "\\sqrt{3}"), put your answer in an LaTex box like '
        "$\\boxed{\\sqrt{3}}$"
    )
    assert system_prompt(DatasetFormat.tom).endswith('at the end as "Short Answer: {answer}"')


def test_gpqa_math_and_tom_openings():
    gpqa, math, tom = parse_question(GPQA), parse_question(MATH), parse_question(TOM)
    assert (gpqa.format, gpqa.gold) == (DatasetFormat.gpqa, "C")
    assert opening_message(gpqa) == (
        'I\'m trying to solve this problem: "Which particle?"\nAnd the choices are:\n(A) e\n(B) mu\n(C) tau\n(D) nu'
    )
    assert (math.format, math.gold) == (DatasetFormat.math, "1"), "the last box of the solution"
    assert opening_message(math) == 'I\'m trying to solve this math problem: "What is $1/2 + 1/2$?"'
    assert (tom.format, tom.gold) == (DatasetFormat.tom, "box")
    assert opening_message(tom) == (
        "I'm trying to answer this question based on the following story:\n"
        "Story: Anne puts the apple in the box.\nQuestion: Where is the apple?"
    )


def test_extraction_prompts():
    assert extraction_prompt(parse_question(GPQA), "I say (C).") == (
        "**This is the original question:**\nWhich particle?\n\n\n\n"
        "**And the options are:**\n(A) e\n(B) mu\n(C) tau\n(D) nu\n\n"
        "**This is the response you need to extract answer from:**\n\nI say (C).\n\n"
        '**Extract the answer in ([A-Z]) format, or say "not sure yet".**'
    )
    assert extraction_prompt(parse_question(MATH), "It is 1.") == (
        "**This is the original question:**\nWhat is $1/2 + 1/2$?\n\n"
        "**This is the response you need to extract answer from:**\n\nIt is 1.\n\n"
        '**Extract the answer in $\\boxed{}$ format, or say "not sure yet".**'
    )
    assert extraction_prompt(parse_question(TOM), "In the box.") == (
        "**This is the original story and question:**\n"
        "Story: Anne puts the apple in the box.\nQuestion: Where is the apple?\n\n"
        "**This is the response you need to extract an answer from:**\n\nIn the box.\n\n"
        '**Extract the final answer which should be less than five words, or say "not sure yet".**'
    )
    assert EXTRACTOR_SYSTEM_PROMPT.startswith("You are an assistant that is helping an user to identify")


def test_each_side_sees_its_own_turns_as_assistant():
    turns = [("student", "question"), ("teacher", "t1"), ("student", "s2")]
    teacher = chat_messages("sys", turns, "teacher")
    assert teacher == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "t1"},
        {"role": "user", "content": "s2"},
    ]
    student = chat_messages("sys", turns[:2], "student")
    assert [m["role"] for m in student] == ["system", "assistant", "user"], "the question is the student's own"


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (MMLU_PRO, DatasetFormat.mmlu_pro),
        (GPQA, DatasetFormat.gpqa),
        (MATH, DatasetFormat.math),
        (TOM, DatasetFormat.tom),
    ],
)
def test_formats_are_detected_from_the_fields(row, fmt):
    assert detect_format(row) is fmt


def test_mmlu_rows_in_their_own_layout_read_as_mmlu_pro():
    row = {"question": "Q", "subject": "s", "choices": ["x", "y", "z"], "answer": 2}
    assert parse_question(row) == Question(DatasetFormat.mmlu_pro, "Q", "C", ("x", "y", "z"))


def test_a_format_can_be_forced():
    row = {"question": "Q", "choices": ["x", "y"], "answer": "b"}
    assert parse_question(row, DatasetFormat.gpqa) == Question(DatasetFormat.gpqa, "Q", "B", ("x", "y"))
    tom = {"story": "S", "question": "Q", "answer": "yes"}
    assert parse_question(tom, DatasetFormat.tom) == Question(DatasetFormat.tom, "Q", "yes", story="S")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "hello"}, "cannot tell the dataset format"),
        ({"question": "Q", "options": [], "answer": "A"}, "'options' must be a list of 1 to 26 options"),
        (
            {"question": "Q", "options": ["x", "y"], "answer": "C"},
            "no gold answer: 'answer' or 'answer_index' must be one of A, B or an index below 2",
        ),
        ({"options": ["x"], "answer": "A"}, "no field 'question'"),
        ({"problem": "P", "solution": "no box"}, "no \\boxed{} in 'solution'"),
    ],
)
def test_rows_that_cannot_be_read_are_user_errors(row, message):
    with pytest.raises(MatrixError, match=re.escape(message)):
        parse_question(row)
