"""Agreement rules, routing, every stop reason, records and metrics, on conversations built by hand."""

from __future__ import annotations

import pytest
from matrix_coral.agreement import agreed_answer
from matrix_coral.config import AgreementRule, CoralConfig, Export, KeepRule
from matrix_coral.workflow import CoralOrchestrator, Extraction

from matrix_core import BadRowError

ROW = {"question_id": 1, "question": "Which?", "options": ["w", "x", "y", "z"], "answer": "A"}
STRICT, LATEST_VALID = AgreementRule.strict, AgreementRule.latest_valid


def conversation(*answers: str | None, **options) -> CoralOrchestrator:
    """A task whose generated turns commit to ``answers`` in order (None: no answer), routed as the engine would."""
    task = CoralOrchestrator.from_row("1", ROW, CoralConfig(**options))
    for number, answer in enumerate(answers, start=1):
        role = task.next_role()
        assert role == ("teacher" if number % 2 else "student")
        task.add_turn(role, f"turn {number}: {answer}", prompt_tokens=10, completion_tokens=number * 10)
        assert task.next_role() == "extractor"
        reply = "not sure yet" if answer is None else f"The answer is ({answer})."
        task.record_extraction(Extraction(reply, answer, answer == "A", prompt_tokens=5, completion_tokens=1))
    return task


@pytest.mark.parametrize(
    ("answers", "strict", "latest_valid"),
    [
        ([("student", None), ("teacher", "A")], None, None),
        ([("student", None), ("teacher", "A"), ("student", "A")], "A", "A"),
        ([("student", None), ("teacher", "A"), ("student", "B")], None, None),
        ([("student", None), ("teacher", "A"), ("student", None)], None, None),
        ([("student", None), ("teacher", "A"), ("student", "B"), ("teacher", None), ("student", "A")], None, "A"),
        ([("student", None), ("teacher", "B"), ("student", "A"), ("teacher", "A")], "A", "A"),
        ([("student", None), ("teacher", "A"), ("student", "A"), ("teacher", "B")], None, None),
        ([("student", None), ("teacher", None), ("student", None)], None, None),
    ],
)
def test_both_agreement_rules(answers, strict, latest_valid):
    assert agreed_answer(answers, STRICT) == strict
    assert agreed_answer(answers, LATEST_VALID) == latest_valid


def test_routing_alternates_through_the_extractor():
    task = CoralOrchestrator.from_row("1", ROW, CoralConfig())
    assert [(turn.role, turn.text) for turn in task.history] == [
        ("student", 'I\'m trying to solve this problem: "Which?"\nAnd the choices are:\n(A) w\n(B) x\n(C) y\n(D) z')
    ]
    assert task.next_role() == "teacher"
    task.add_turn("teacher", "(A)")
    assert task.next_role() == "extractor"
    task.record_extraction(Extraction("(A)", "A", True))
    assert task.next_role() == "student"


def test_agreement_on_turn_k_stops_with_success():
    task = conversation("A", None, "A", "A", max_turns=6)
    assert (task.status, task.reason, task.next_role()) == ("success", "agreement", None)
    assert len(task.turns) == 4
    assert (task.agreed, task.agreement_correct) == ("A", True)


def test_agreement_on_a_wrong_answer_is_not_agreement_correctness():
    task = conversation("B", "B")
    assert (task.status, task.agreed, task.agreement_correct, task.keep()) == ("success", "B", False, True)
    assert not conversation("B", "B", keep=KeepRule.agreement_correct).keep()
    assert conversation("A", "A", keep=KeepRule.agreement_correct).keep()


def test_no_agreement_within_max_turns_stops_there():
    task = conversation("A", "B", "A", "B", max_turns=4)
    assert (task.status, task.reason, task.next_role()) == ("max_turns", "no agreement in 4 turns", None)
    assert task.agreed is None and not task.agreement_correct


def test_the_rule_decides_when_a_turn_without_answer_breaks_agreement():
    answers = ("A", "B", None, "A")
    assert conversation(*answers, max_turns=4).status == "max_turns"
    task = conversation(*answers, max_turns=4, agreement_rule=LATEST_VALID)
    assert (task.status, task.agreed, len(task.turns)) == ("success", "A", 4)


def test_a_backend_error_ends_the_conversation_where_it_was():
    task = conversation("A", "B")
    task.add_turn("teacher", "turn 3 was written, its extraction failed")
    task.finish("error", "http://x/v1 answered HTTP 500: boom")  # what the engine does after the last retry
    record = task.to_record()
    assert (record["status"], record["reason"], record["n_turns"]) == (
        "error",
        "http://x/v1 answered HTTP 500: boom",
        3,
    )
    assert record["turns"][2] == {
        "role": "teacher",
        "text": "turn 3 was written, its extraction failed",
        "answer": None,
        "valid": False,
        "correct": False,
        "extractor_reply": None,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
    }
    assert task.metrics()["conv_err"] == 1.0
    assert task.metrics()["valid_answer_rate"] == 1.0, "over the turns the extractor read"


def test_the_record():
    task = conversation("B", None, "A", "A")
    record = task.to_record()
    assert record["prompt"] == task.history[0].text
    assert {key: record[key] for key in ("id", "status", "reason", "format", "question", "gold")} == {
        "id": "1",
        "status": "success",
        "reason": "agreement",
        "format": "mmlu_pro",
        "question": "Which?",
        "gold": "A",
    }
    assert [(turn["role"], turn["answer"], turn["valid"], turn["correct"]) for turn in record["turns"]] == [
        ("teacher", "B", True, False),
        ("student", None, False, False),
        ("teacher", "A", True, True),
        ("student", "A", True, True),
    ]
    assert record["turns"][1]["extractor_reply"] == "not sure yet"
    assert record["turns"][3]["usage"] == {"prompt_tokens": 10, "completion_tokens": 40}
    assert (record["agreement"], record["agreed_answer"], record["agreement_correctness"]) == (True, "A", True)
    assert record["n_turns"] == 4
    assert (task.prompt_tokens, task.completion_tokens) == (4 * 10 + 4 * 5, 100 + 4), "extractor calls count too"


def test_metrics_of_known_conversations_and_their_mean():
    tasks = [
        conversation("B", None, "A", "A"),  # agreed on the gold at turn 4
        conversation("B", "B"),  # agreed on a wrong answer
        conversation("A", "B", "A", "B", max_turns=4),  # never agreed, but the teacher was right
    ]
    errored = conversation("B")
    errored.finish("error", "boom")
    tasks.append(errored)
    metrics = [task.metrics() for task in tasks]
    assert metrics[0] == {
        "agreement": 1.0,
        "agreement_correctness": 1.0,
        "final_success_rate": 1.0,
        "valid_answer_rate": 0.75,
        "conv_err": 0.0,
        "n_turns": 4.0,
        "teacher_tokens": 20.0,
        "student_tokens": 30.0,
        "conversation_tokens": 100.0,
    }
    mean = {key: sum(m[key] for m in metrics) / len(metrics) for key in metrics[0]}
    assert mean == {
        "agreement": 0.5,
        "agreement_correctness": 0.25,
        "final_success_rate": 0.5,
        "valid_answer_rate": (0.75 + 1 + 1 + 1) / 4,
        "conv_err": 0.25,
        "n_turns": (4 + 2 + 4 + 1) / 4,
        "teacher_tokens": (20 + 10 + 20 + 10) / 4,
        "student_tokens": (30 + 20 + 30 + 0) / 4,
        "conversation_tokens": (100 + 30 + 100 + 10) / 4,
    }


def test_sft_export_gives_one_chat_example_per_turn_from_the_speakers_view():
    task = conversation("A", "A", export=Export.sft, system_prompt="Collaborate.")
    record = task.to_record()
    assert set(record) == {"id", "status", "reason", "examples"}
    question = task.history[0].text
    assert record["examples"] == [
        {
            "prompt": [{"role": "system", "content": "Collaborate."}, {"role": "user", "content": question}],
            "completion": [{"role": "assistant", "content": "turn 1: A"}],
        },
        {
            "prompt": [
                {"role": "system", "content": "Collaborate."},
                {"role": "assistant", "content": question},
                {"role": "user", "content": "turn 1: A"},
            ],
            "completion": [{"role": "assistant", "content": "turn 2: A"}],
        },
    ]


def test_bad_rows_are_user_errors():
    with pytest.raises(BadRowError, match=r"row '9': row has no field 'question'"):
        CoralOrchestrator.from_row("9", {"options": ["x"], "answer": "A"}, CoralConfig())
    with pytest.raises(
        BadRowError, match=r"^row '8': cannot tell the dataset format of a row with fields \['id', 'q'\]$"
    ):
        CoralOrchestrator.from_row(
            "8", {"id": "8", "q": "?"}, CoralConfig()
        )  # a BadRowError, so --skip-bad-rows skips it
