"""The workflow's sections of `matrix report`: documents taken through the plugin's own three agents (a scripted
backend sends each to one reason), their records and the run's metrics built from them as the engine counts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from matrix_naturalreasoning.agents import Filter, Question, Score
from matrix_naturalreasoning.config import FilterConfig, Keep, NRConfig, QuestionConfig, ScoreConfig
from matrix_naturalreasoning.prompts import FILTER_PROMPT, SCORE_PROMPT
from matrix_naturalreasoning.report import EXAMPLE_CHARS, EXAMPLES
from matrix_naturalreasoning.workflow import GATES, NROrchestrator

from matrix_core import (
    AgentContext,
    Backend,
    BackendConfig,
    Bars,
    ChatResponse,
    Conversation,
    Histogram,
    ReportSection,
    RunMetrics,
    Sampling,
    Table,
    Text,
    Usage,
)

SCORES = {"criteria_1": 2, "criteria_2": 1, "criteria_3": 0.5, "criteria_4": 1}
LONG_QUESTION = "Why is building a binary heap bottom-up linear? " * 80
CASES = {
    # case: (status:reason, what the row or the scripted stage does)
    "foreign": ("filtered:en", "precomputed en 0.3"),
    "spam": ("filtered:classifier", "the classifier says No"),
    "shallow": ("filtered:score", "criteria_3 = 0"),
    "rambling": ("filtered:score_no_json", "scores outside a fence"),
    "down": ("error:RuntimeError: the score model is down", "the score call fails"),
    "unboxed": ("filtered:no_boxed_answer", "last step without a box"),
    "heap-1": ("success", "a question of 3,840 characters, criteria_1 = 0.5"),
    "heap-2": ("success", "criteria_1 = 1.0"),
    "heap-3": ("success", "criteria_1 = 1.5"),
    "heap-4": ("success", "criteria_1 = 2.0"),
}


def fenced(data: Any) -> str:
    return f"Step by step analysis...\n```json\n{json.dumps(data)}\n```"


def reply(system: str, case: str) -> str:
    """Plays the three stages for the documents of CASES."""
    if system == FILTER_PROMPT:
        return "No" if case == "spam" else "Yes"
    if system == SCORE_PROMPT:
        if case == "down":
            raise RuntimeError("the score model is down")
        if case == "rambling":
            return f"Scores: {json.dumps(SCORES)}"
        if case.startswith("heap-"):
            return fenced({**SCORES, "criteria_1": int(case[-1]) / 2})
        return fenced({**SCORES, "criteria_3": 0} if case == "shallow" else SCORES)
    steps = ["Sum the sift-down costs.", "The answer is O(n)." if case == "unboxed" else "So \\boxed{O(n)}."]
    question = LONG_QUESTION if case == "heap-1" else f"What does building a heap cost? ({case})"
    return fenced(
        {
            "exam_question": question,
            "question_category": "Computer Science",
            "extracted_answer": "\\boxed{O(n)}",
            "independent_answer": steps,
        }
    )


class Scripted(Backend):
    """A backend in this process that answers with :func:`reply` for the case the document names."""

    def __init__(self) -> None:
        super().__init__(BackendConfig())

    async def chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        tools: list[dict[str, Any]] | None = None,
        *,
        task_id: str | None = None,
    ) -> ChatResponse:
        system, text = (message["content"] for message in messages)
        return ChatResponse(reply(system, text.rsplit(" ", 1)[-1]), "stop", Usage(len(text), 8))


def finished(keep: Keep) -> list[NROrchestrator]:
    """Every document of CASES, stepped by the plugin's agents until it ends; a failed step ends it as the
    engine does."""
    workflow = NRConfig(keep=keep)
    backend = Scripted()
    agents = {
        role: agent(AgentContext(role, config, workflow, {role: backend}, logging.getLogger("test")))
        for role, agent, config in [
            ("filter", Filter, FilterConfig()),
            ("score", Score, ScoreConfig()),
            ("question", Question, QuestionConfig()),
        ]
    }

    async def run(task: NROrchestrator) -> NROrchestrator:
        while (role := task.next_role()) is not None:
            try:
                task = await agents[role].step(task)
            except RuntimeError as error:
                task.step_failed(role, "error", f"{type(error).__name__}: {error}")
        return task

    rows = {case: {"text": f"A thread. {case}", "language_id_whole_page_fasttext": {"en": 0.95}} for case in CASES}
    rows["foreign"]["language_id_whole_page_fasttext"]["en"] = 0.3
    tasks = [run(NROrchestrator.from_row(f"<urn:uuid:{case}>", row, workflow)) for case, row in rows.items()]
    return asyncio.run(_gather(tasks))


async def _gather(steps: list[Any]) -> list[NROrchestrator]:
    return list(await asyncio.gather(*steps))


def metrics_of(tasks: list[NROrchestrator]) -> RunMetrics:
    """The run's metrics as the engine counts them: every document, kept or not."""
    means = Counter[str]()
    for task in tasks:
        means.update(task.metrics())
    return RunMetrics(
        tasks=len(tasks),
        status=dict(Counter(task.status for task in tasks)),
        status_reason=dict(Counter(f"{t.status}:{t.reason}" if t.reason else t.status for t in tasks)),
        workflow={key: total / len(tasks) for key, total in means.items()},
    )


def records_of(tasks: list[NROrchestrator]) -> list[dict[str, Any]]:
    """The kept documents' records, as read back from the output."""
    return [json.loads(json.dumps(task.to_record())) for task in tasks if task.keep()]


class Once:
    """Records that can be iterated only once, counting what was read."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records, self.iterations, self.read = records, 0, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.iterations += 1
        assert self.iterations == 1, "the records were iterated twice"
        return self._read()

    def _read(self) -> Iterator[dict[str, Any]]:
        for record in self.records:
            self.read += 1
            yield record


def report(tasks: list[NROrchestrator]) -> dict[str, ReportSection]:
    sections = NROrchestrator.report(Once(records_of(tasks)), metrics_of(tasks))
    return {section.title: section for section in sections}


def block(section: ReportSection, kind: type) -> Any:
    (found,) = [each for each in section.blocks if isinstance(each, kind)]
    return found


@pytest.fixture(scope="module")
def success_run() -> list[NROrchestrator]:
    return finished(Keep.success)


@pytest.fixture(scope="module")
def all_run() -> list[NROrchestrator]:
    return finished(Keep.all)


def test_the_documents_end_as_scripted(success_run):
    assert {task.id: f"{task.status}:{task.reason}".rstrip(":") for task in success_run} == {
        f"<urn:uuid:{case}>": outcome for case, (outcome, _) in CASES.items()
    }


def test_the_funnel_counts_every_document_from_the_metrics(success_run):
    metrics = metrics_of(success_run)
    reasons = metrics.status_reason
    section = report(success_run)["Survival funnel"]
    english = metrics.tasks - reasons["filtered:en"]
    classifier = english - reasons["filtered:classifier"]
    score = classifier - reasons["filtered:score"] - reasons["filtered:score_no_json"]
    score -= reasons["error:RuntimeError: the score model is down"]  # the one error is the score call's
    question = score - reasons["filtered:no_boxed_answer"]
    bars = block(section, Bars)
    assert list(bars.labels) == ["documents", "English", "classifier", "score", "question"]
    assert list(bars.values) == [metrics.tasks, english, classifier, score, question] == [10, 9, 8, 5, 4]
    assert question == reasons["success"]
    rows = {(stage, outcome): (count, share) for stage, outcome, count, share in block(section, Table).rows}
    passed = dict(zip(bars.labels[1:], bars.values[1:], strict=True))
    assert {stage: rows[stage, "passed"][0] for stage in passed} == passed
    for (_, outcome), (count, share) in rows.items():
        assert share == f"{count / 10:.1%}"
        if outcome not in ("passed", "read"):
            assert count == reasons.get(outcome, 0), outcome
    assert rows["any", "error:RuntimeError: the score model is down"] == (1, "10.0%")
    assert rows["question", "filtered:no_question"] == (0, "0.0%")
    assert rows["documents", "read"] == (10, "100.0%")
    owned = {outcome for _, outcome in rows} - {"passed", "read"}
    assert owned >= set(reasons) - {"success"}, "every reason of the run has its row"
    assert "4 of 10 documents became questions (40.00%; the paper: 5.45% of DCLM)" in block(section, Text).text


def test_the_histogram_holds_the_scores_the_kept_records_carry(success_run):
    records = records_of(success_run)
    section = report(success_run)["Rubric scores"]
    assert list(block(section, Histogram).values) == [sum(record["scores"].values()) for record in records]
    assert list(block(section, Histogram).values) == [3.0, 3.5, 4.0, 4.5]
    assert block(section, Text).text.startswith("Only kept records carry scores: the output holds 4 of the run's 10")
    criteria = {name: (mean, above) for name, mean, above in block(section, Table).rows}
    assert criteria["1. problem completeness"] == (1.25, "100.0%")
    assert criteria["3. technical correctness"] == (0.5, "100.0%")


def test_with_keep_all_the_histogram_covers_every_document_the_rubric_read(all_run, success_run):
    records = records_of(all_run)
    assert len(records) == 10
    section = report(all_run)["Rubric scores"]
    scored = [sum(record["scores"].values()) for record in records if record["scores"]]
    assert list(block(section, Histogram).values) == scored and len(scored) == 6, "the four questions, shallow, unboxed"
    assert block(section, Text).text.startswith("6 of the 10 records carry scores")
    criteria = {name: (mean, above) for name, mean, above in block(section, Table).rows}
    assert criteria["3. technical correctness"] == (round(2.5 / 6, 2), "83.3%")
    assert report(all_run)["Survival funnel"] == report(success_run)["Survival funnel"], "keep aside"


def test_at_most_three_example_questions_cut_to_length(success_run):
    examples = report(success_run)["Example questions"].blocks
    assert len(examples) == EXAMPLES == 3
    assert all(isinstance(example, Conversation) for example in examples)
    assert [example.title for example in examples] == [f"<urn:uuid:heap-{n}> (Computer Science)" for n in (1, 2, 3)]
    speaker, question = examples[0].turns[0]
    assert speaker == "question" and len(LONG_QUESTION) > EXAMPLE_CHARS
    assert question == LONG_QUESTION[:EXAMPLE_CHARS].rstrip() + " …"
    assert examples[1].turns == [
        ("question", "What does building a heap cost? (heap-2)"),
        ("reference answer", "\\boxed{O(n)}"),
        ("independent answer", "Sum the sift-down costs.\nSo \\boxed{O(n)}."),
    ]


def test_the_records_are_read_once_and_to_the_end(success_run):
    records = Once(records_of(success_run) * 1000)
    NROrchestrator.report(records, metrics_of(success_run))
    assert (records.iterations, records.read) == (1, 4000)
    sections = NROrchestrator.report(iter(records_of(success_run)), metrics_of(success_run))
    assert len(block(sections[1], Histogram).values) == 4


def test_odd_records_are_skipped_not_raised_on():
    odd = [
        {},
        {"id": "e", "status": "error", "reason": "engine: KeyError: 'x'"},
        {"id": "a", "scores": None, "exam_question": None},
        {"id": "b", "scores": [1, 2, 3, 4], "exam_question": 3},
        {"id": "c", "scores": {"criteria_1": 1, "criteria_2": "2", "criteria_3": 1, "criteria_4": 1}},
        {"id": "d", "scores": {"criteria_1": 1, "criteria_2": True, "criteria_3": 1, "criteria_4": 1}},
        {"id": "f", "scores": {"criteria_1": float("nan"), "criteria_2": 1, "criteria_3": 1, "criteria_4": 1}},
        {"id": "g", "scores": {"criteria_1": 1}, "exam_question": "   "},
        {"id": "h", "exam_question": "Why?", "question_category": None, "independent_answer": "not a list"},
        {"id": "i", "scores": {**SCORES, "extra": 9}, "exam_question": "How?", "extracted_answer": None},
    ]
    metrics = RunMetrics(tasks=10, status_reason={"success": 10}, workflow={f"survived_{g}": 1.0 for g in GATES})
    sections = {section.title: section for section in NROrchestrator.report(odd, metrics)}
    assert list(block(sections["Rubric scores"], Histogram).values) == [4.5]
    assert [example.title for example in sections["Example questions"].blocks] == ["h", "i"]
    assert sections["Example questions"].blocks[0].turns == [("question", "Why?")]


def test_a_run_without_documents_or_scores_says_so():
    sections = NROrchestrator.report([], RunMetrics())
    assert [section.title for section in sections] == ["Survival funnel", "Rubric scores"]
    assert sections[0].blocks == [Text("No document finished in this run.")]
    assert [type(each) for each in sections[1].blocks] == [Text]
    metrics = RunMetrics(tasks=3, status_reason={"filtered:en": 3}, workflow={f"survived_{g}": 0.0 for g in GATES})
    (covers,) = NROrchestrator.report([], metrics)[1].blocks
    assert covers.text.startswith("Only kept records carry scores: the output holds 0 of the run's 3 documents")


def test_past_ten_other_reasons_the_rest_share_a_row():
    errors = {f"error:HTTP 500 on request {n:02}": 20 - n for n in range(15)}
    survived = {f"survived_{gate}": float(gate == "en") for gate in GATES}
    metrics = RunMetrics(tasks=sum(errors.values()), status_reason=errors, workflow=survived)
    rows = block(NROrchestrator.report([], metrics)[0], Table).rows
    others = [(outcome, count) for stage, outcome, count, _ in rows if stage == "any"]
    assert others[:9] == [(f"error:HTTP 500 on request {n:02}", 20 - n) for n in range(9)]
    assert others[9] == ("6 other reasons", sum(20 - n for n in range(9, 15)))
    assert len(others) == 10
