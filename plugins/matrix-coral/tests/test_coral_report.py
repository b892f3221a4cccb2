"""Coral's sections of ``matrix report``, on the records of conversations finished through the workflow's own code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from matrix_coral.config import CoralConfig, Export
from matrix_coral.report import EXAMPLE_CHARS, MAX_CATEGORIES
from matrix_coral.workflow import CoralOrchestrator, Extraction

from matrix_core import Bars, Conversation, ReportSection, RunMetrics, Table, Text


def conversation(id: str, category: str | None, *answers: str | None, **options: Any) -> CoralOrchestrator:
    """A finished-so-far task on a question whose gold is A, its generated turns committing to ``answers``."""
    row = {"question_id": id, "question": f"Question {id}?", "options": ["w", "x", "y", "z"], "answer": "A"}
    if category is not None:
        row["category"] = category
    task = CoralOrchestrator.from_row(id, row, CoralConfig(**options))
    for number, answer in enumerate(answers, start=1):
        role = task.next_role()
        task.add_turn(role, f"turn {number}: ({answer})", prompt_tokens=10, completion_tokens=number)
        assert task.next_role() == "extractor"
        reply = "not sure yet" if answer is None else f"The answer is ({answer})."
        task.record_extraction(Extraction(reply, answer, answer == "A"))
    return task


def tasks() -> list[CoralOrchestrator]:
    """Conversations of every outcome over three categories, and one row with no category."""
    errored = conversation("err", "law", "A", "B")
    errored.add_turn("teacher", "turn 3, whose extraction failed")
    errored.finish("error", "backend answered HTTP 500")
    finished = [
        conversation("c2", "biology", "A", "A"),  # agreed on the gold at turn 2
        conversation("c4", "biology", "B", None, "A", "A"),  # at turn 4
        conversation("w2", "biology", "B", "B"),  # agreed on a wrong answer
        conversation("c3", "law", "B", "A", "A"),  # agreed on the gold at turn 3
        conversation("m6", "law", "A", "B", "A", "B", "A", "B", max_turns=6),  # never agreed
        errored,
        conversation("h2", None, "A", "A"),  # no category: grouped under its format
    ]
    assert [task.status for task in finished] == [*["success"] * 4, "max_turns", "error", "success"]
    return finished


def records() -> list[dict[str, Any]]:
    return [task.to_record() for task in tasks()]


def sections_by_title(sections: list[ReportSection]) -> dict[str, list[Any]]:
    titles = [section.title for section in sections]
    assert len(set(titles)) == len(titles)
    return {section.title: list(section.blocks) for section in sections}


def report(items: Any, metrics: RunMetrics | None = None) -> dict[str, list[Any]]:
    return sections_by_title(CoralOrchestrator.report(items, metrics or RunMetrics()))


def test_the_record_carries_the_rows_category_or_subject():
    assert conversation("1", "law", "A", "A").to_record()["category"] == "law"
    assert conversation("2", None, "A", "A").to_record()["category"] is None
    row = {"question": "Q", "subject": "anatomy", "choices": ["x", "y"], "answer": 0}
    assert CoralOrchestrator.from_row("3", row, CoralConfig()).to_record()["category"] == "anatomy"


def test_agreement_table_counts_and_rates_equal_the_records():
    given = records()
    agreed = sum(record["agreement"] for record in given)
    correct = sum(record["agreement"] and record["agreement_correctness"] for record in given)
    assert (len(given), agreed, correct) == (7, 5, 4)
    sections = report(iter(given))
    assert list(sections) == ["Agreement", "Turns to agreement", "By category", "Example conversations"]
    [table] = sections["Agreement"]
    assert isinstance(table, Table)
    assert [row[1:] for row in table.rows] == [
        [agreed, round(100 * agreed / len(given), 1)],
        [correct, round(100 * correct / agreed, 1)],
        [correct, round(100 * correct / len(given), 1)],
    ]
    assert [row[1:] for row in table.rows] == [[5, 71.4], [4, 80.0], [4, 57.1]]
    assert "7 conversations" in table.caption


def test_the_overall_rates_are_the_means_of_the_workflows_own_metrics():
    finished = tasks()
    [table] = report(task.to_record() for task in finished)["Agreement"]
    for row, metric in ((table.rows[0], "agreement"), (table.rows[2], "agreement_correctness")):
        mean = sum(task.metrics()[metric] for task in finished) / len(finished)
        assert row[2] == round(100 * mean, 1)


def test_turns_to_agreement_counts_each_number_of_turns_with_the_gaps_filled():
    given = records()
    expected = Counter(record["n_turns"] for record in given if record["agreement"])
    assert expected == {2: 3, 3: 1, 4: 1}
    [bars] = report(given)["Turns to agreement"]
    assert isinstance(bars, Bars)
    assert dict(zip(map(int, bars.labels), bars.values, strict=True)) == expected
    assert list(bars.labels) == ["2", "3", "4"]
    spread = [conversation("a", None, "A", "A").to_record(), conversation("b", None, *"BABABAA").to_record()]
    assert spread[1]["n_turns"] == 7
    [bars] = report(spread)["Turns to agreement"]
    assert (list(bars.labels), list(bars.values)) == (["2", "3", "4", "5", "6", "7"], [1, 0, 0, 0, 0, 1])


def test_the_category_table_has_one_row_per_category_largest_first():
    given = records()
    [table] = report(given)["By category"]
    assert list(table.columns) == ["category", "conversations", "agreed %", "correct %", "mean turns"]
    expected = []
    for name in ("biology", "law", "mmlu_pro"):
        group = [r for r in given if (r["category"] or r["format"]) == name]
        expected.append(
            [
                name,
                len(group),
                round(100 * sum(r["agreement"] for r in group) / len(group), 1),
                round(100 * sum(r["agreement_correctness"] for r in group) / len(group), 1),
                round(sum(r["n_turns"] for r in group) / len(group), 1),
            ]
        )
    assert [list(row) for row in table.rows] == expected
    assert [list(row) for row in table.rows] == [
        ["biology", 3, 100.0, 66.7, 2.7],
        ["law", 3, 33.3, 33.3, 4.0],
        ["mmlu_pro", 1, 100.0, 100.0, 2.0],
    ]


def test_at_most_three_examples_one_of_each_outcome_with_long_texts_cut():
    task = conversation("long", "law", "A", "A")
    task.history[1].text = "x" * (3 * EXAMPLE_CHARS)
    given = [task.to_record(), *records(), *records()]
    examples = report(given)["Example conversations"]
    assert all(isinstance(example, Conversation) for example in examples)
    assert [example.title for example in examples] == [
        "task long: agreed on the gold answer (agreed A, gold A, 2 turns)",
        "task w2: agreed on a wrong answer (agreed B, gold A, 2 turns)",
        "task m6: never agreed (gold A, 6 turns)",
    ]
    first = examples[0]
    assert [speaker for speaker, _ in first.turns] == ["question", "teacher (answer A)", "student (answer A)"]
    assert first.turns[0][1] == task.history[0].text
    assert first.turns[1][1] == "x" * (EXAMPLE_CHARS - 1) + "…"
    assert first.turns[2][1] == "turn 2: (A)"
    assert len(examples[2].turns) == 1 + 6
    assert all(len(text) <= EXAMPLE_CHARS for example in examples for _, text in example.turns)


def test_records_are_read_once_as_they_stream():
    reads = 0

    def stream() -> Iterator[dict[str, Any]]:
        nonlocal reads
        for record in records():
            reads += 1
            yield record

    class Once:
        """An iterable that refuses a second pass."""

        def __init__(self) -> None:
            self.passes = 0

        def __iter__(self) -> Iterator[dict[str, Any]]:
            self.passes += 1
            assert self.passes == 1, "records were iterated twice"
            return stream()

    [table] = report(Once())["Agreement"]
    assert reads == 7
    assert [row[1] for row in table.rows] == [5, 4, 4]


def test_many_records_keep_three_examples_and_the_largest_categories():
    template = records()

    def stream() -> Iterator[dict[str, Any]]:
        for number in range(2000):
            yield {**template[number % len(template)], "category": f"c{number % (MAX_CATEGORIES + 10):02}"}

    sections = report(stream())
    assert len(sections["Example conversations"]) == 3
    [table] = sections["By category"]
    assert len(table.rows) == MAX_CATEGORIES
    assert f"the {MAX_CATEGORIES} largest of {MAX_CATEGORIES + 10} categories" in table.caption
    assert [row[1] for row in table.rows] == sorted((row[1] for row in table.rows), reverse=True)
    [agreement] = sections["Agreement"]
    assert agreement.rows[0][1] == sum(template[n % 7]["agreement"] for n in range(2000))


def test_the_runs_metrics_are_quoted_beside_the_records():
    finished = tasks()
    means = {key: sum(task.metrics()[key] for task in finished) / 10 for key in ("agreement", "agreement_correctness")}
    metrics = RunMetrics(tasks=10, workflow=means)  # as if coral.keep had dropped three more, which never agreed
    blocks = report([task.to_record() for task in finished], metrics)["Agreement"]
    assert isinstance(blocks[1], Text)
    assert "over the 10 conversations it finished" in blocks[1].text
    assert "agreement 50.0%, agreement on the gold answer 40.0%" in blocks[1].text


def test_sft_records_and_odd_records_are_counted_and_skipped_without_error():
    sft = conversation("s", "law", "A", "A", export=Export.sft).to_record()
    odd: list[Any] = [
        sft,
        {},
        None,
        {"agreement": "yes"},
        {"agreement": True, "n_turns": "x", "turns": "nope", "category": 3},
        {"agreement": True, "agreement_correctness": True, "n_turns": True, "turns": [None, {"role": 3}]},
        {"agreement": False, "status": ["max_turns"], "n_turns": -1, "turns": []},
        {"agreement": False, "status": "max_turns", "turns": [{"text": None}], "prompt": 7, "format": "math"},
        {"agreement": True, "agreement_correctness": "yes", "turns": []},
        {"agreement": False, "agreement_correctness": True, "status": "error"},  # not counted as correct
    ]
    sections = report(odd)
    [table, note] = sections["Agreement"]
    assert [row[1:] for row in table.rows] == [[3, 50.0], [1, 33.3], [1, 16.7]]
    assert note.text.startswith("4 records without the conversation fields")
    assert "Turns to agreement" not in sections, "no agreed record gives its number of turns"
    [categories] = sections["By category"]
    assert [list(row) for row in categories.rows] == [["unknown", 5, 60.0, 20.0, "n/a"], ["math", 1, 0.0, 0.0, "n/a"]]
    examples = sections["Example conversations"]
    assert [example.title for example in examples] == [
        "task None: agreed on the gold answer",
        "task None: agreed on a wrong answer",
        "task None: never agreed",
    ]
    assert [list(example.turns) for example in examples] == [[("3", "")], [], [("?", "")]]


@pytest.mark.parametrize("given", [[], [conversation("s", "law", "A", "A", export=Export.sft).to_record()]])
def test_an_output_without_conversations_says_so(given):
    sections = CoralOrchestrator.report(iter(given), RunMetrics())
    assert [section.title for section in sections] == ["Agreement"]
    assert sections[0].blocks[0] == Text("No record of the output holds a conversation.")
