"""The tau2 workflow's sections of ``matrix report``: reward and pass^k per domain as tau2 computes them, termination
reasons, tool calls and tokens, from records read once; odd records are skipped, not fatal."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from matrix_tau2.config import Tau2Config
from matrix_tau2.conversation import load_messages
from matrix_tau2.report import pass_hat_k, sections
from matrix_tau2.results import summary, to_results
from matrix_tau2.scoring import Scorer
from matrix_tau2.workflow import Tau2Orchestrator
from trajectories import gold_simulation

from matrix_core import Bars, Histogram, Lines, ReportSection, RunMetrics, Table


def run_task(task_id: str, trial: int, *, solved: bool) -> dict[str, Any]:
    """The record of a mock task run by the workflow's own code: the gold trajectory (less its last action unless
    ``solved``) recorded turn by turn, with tokens counted, then scored and finished."""
    from tau2.data_model.message import ToolMessage

    row = {"domain": "mock", "task_id": task_id, "trial": trial}
    task = Tau2Orchestrator.from_row(f"mock/{task_id}/{trial}", row, Tau2Config())
    for message in load_messages(gold_simulation("mock", task_id, drop_last_action=not solved)["messages"][1:]):
        if isinstance(message, ToolMessage):
            task.record_tool_results([message])
        else:
            task.record_turn(message)
    task.count("assistant", 100, 10)
    task.count("user", 50, 5)
    task.finish_scored(Scorer().score("mock", task_id, task.simulation()))
    return task.to_record()


class Once:
    """Records that can be iterated only once, counting what was read."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records, self.read, self.started = records, 0, False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        assert not self.started, "the records were iterated twice"
        self.started = True
        for record in self.records:
            self.read += 1
            yield record


def section(found: list[ReportSection], title: str) -> ReportSection:
    [only] = [candidate for candidate in found if candidate.title == title]
    return only


def block(found: list[ReportSection], title: str, kind: type) -> Any:
    [only] = [candidate for candidate in section(found, title).blocks if isinstance(candidate, kind)]
    return only


def literal(domain: str, task_id: str, trial: int, reward: float | None, reason: str = "user_stop") -> dict:
    """A record with the workflow's field names, for hand-worked numbers."""
    return {
        "id": f"{domain}/{task_id}/{trial}",
        "task_id": task_id,
        "trial": trial,
        "termination_reason": reason,
        "reward_info": None if reward is None else {"reward": reward, "info": None},
        "messages": [],
        "domain": domain,
        "status": "success",
        "reason": reason,
    }


@pytest.fixture(scope="module")
def mock_records() -> list[dict[str, Any]]:
    """Two mock tasks, three trials each: create_task_1 solved in trials 0 and 2, update_task_1 in all three."""
    plan = [("create_task_1", [True, False, True]), ("update_task_1", [True, True, True])]
    return [run_task(task, trial, solved=solved) for task, outcomes in plan for trial, solved in enumerate(outcomes)]


def test_pass_hat_k_of_three_trials_with_two_successes():
    assert pass_hat_k(Counter(t=3), Counter(t=2)) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert pass_hat_k(Counter(a=3, b=2), Counter(a=2, b=2)) == pytest.approx([(2 / 3 + 1) / 2, (1 / 3 + 1) / 2])
    assert pass_hat_k(Counter(), Counter()) == []


def test_sections_of_a_run_match_tau2s_metrics(mock_records):
    rewards = [record["reward_info"]["reward"] for record in mock_records]
    assert rewards == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0], "the gold trajectory solves the task, less its last action not"
    records = Once(mock_records)

    found = Tau2Orchestrator.report(records, RunMetrics())

    assert (records.read, len(records.records)) == (6, 6), "read once, to the end"
    assert [s.title for s in found] == [
        "Reward by domain",
        "pass^k",
        "Termination reasons",
        "Tool calls per task",
        "Tokens per role",
    ]
    table = block(found, "Reward by domain", Table)
    assert table.rows == [["mock", 2, 6, round(5 / 6, 3), round(5 / 6, 3)]]
    assert block(found, "Reward by domain", Bars).values == [round(5 / 6, 3)]

    tau2 = summary(to_results("mock", mock_records), mock_records)  # tau2's compute_metrics, as the sink writes it
    lines = block(found, "pass^k", Lines)
    assert lines.x == [1, 2, 3]
    assert lines.series["mock"] == pytest.approx([5 / 6, 2 / 3, 1 / 2], abs=1e-4)
    assert lines.series["mock"] == pytest.approx([tau2[f"pass_hat_{k}"] for k in (1, 2, 3)], abs=1e-4)
    assert table.rows[0][3] == round(tau2["avg_reward"], 3)

    termination = block(found, "Termination reasons", Table)
    assert termination.rows == [["user_stop", "success", 6, 1.0]]
    histogram = block(found, "Tool calls per task", Histogram)
    assert sorted(histogram.values) == [0, 1, 1, 1, 1, 1], "the unsolved trial lacks its one gold tool call"
    assert histogram.bins == [0, 1, 2]
    tokens = block(found, "Tokens per role", Table)
    assert tokens.columns == ["role", "tokens in", "tokens out", "per task"]
    assert tokens.rows == [["assistant", 600, 60, 110.0], ["user", 300, 30, 55.0]]


def test_domains_average_over_their_tasks_and_stop_at_their_fewest_trials():
    records = [
        *(literal("airline", "1", trial, reward) for trial, reward in enumerate([1.0, 0.0, 1.0])),
        *(literal("airline", "2", trial, 1.0) for trial in range(3)),
        literal("retail", "5", 0, 1.0),
        literal("retail", "5", 1, 0.5, reason="max_steps"),  # a partial reward is no success
    ]

    found = sections(iter(records))

    assert block(found, "Reward by domain", Table).rows == [
        ["airline", 2, 6, round(5 / 6, 3), round(5 / 6, 3)],
        ["retail", 1, 2, 0.75, 0.5],
    ]
    bars = block(found, "Reward by domain", Bars)
    assert (bars.labels, bars.values) == (["airline", "retail"], [round(5 / 6, 3), 0.75])
    lines = block(found, "pass^k", Lines)
    assert lines.x == [1, 2, 3]
    assert lines.series["airline"] == pytest.approx([5 / 6, 2 / 3, 1 / 2], abs=1e-4)
    assert lines.series["retail"][:2] == [0.5, 0.0]
    assert lines.series["retail"][2] is None, "retail's task has two trials: no pass^3"
    assert block(found, "pass^k", Table).rows[1] == ["retail", 0.5, 0.0, ""]
    assert block(found, "Termination reasons", Table).rows == [
        ["user_stop", "success", 7, 0.875],
        ["max_steps", "max_turns", 1, 0.125],
    ]
    assert block(found, "Termination reasons", Bars).values == [7, 1]


def test_odd_records_are_skipped_not_fatal():
    records = [
        {"id": "lost", "status": "error", "reason": "the tool step raised"},  # the engine's minimal record
        {**literal("airline", "1", 0, None, reason="agent_error"), "status": "error", "tokens": None},
        {**literal("airline", "1", 1, 1.0), "reward_info": {"reward": "high"}, "messages": None},
        {
            **literal("airline", "2", 0, 1.0),
            "messages": ["junk", {"role": "assistant", "tool_calls": None}, {"tool_calls": [{}, {}]}],
            "tokens": {"assistant_prompt": 7, "assistant_completion": "many", "total": 9},
        },
        {"domain": "airline", "termination_reason": None},
    ]

    found = sections(records)

    table = block(found, "Reward by domain", Table)
    assert table.rows == [["airline", 2, 3, round(1 / 3, 3), 0.5]], "no reward, or one not a number, counts 0"
    assert "2 records that name no domain or task are left out" in table.caption
    assert block(found, "Termination reasons", Table).rows == [
        ["user_stop", "success", 2, round(2 / 3, 3)],
        ["agent_error", "error", 1, round(1 / 3, 3)],
    ]
    assert sorted(block(found, "Tool calls per task", Histogram).values) == [0, 2]
    assert block(found, "Tokens per role", Table).rows == [["assistant", 7, 0, 7.0]]


def test_no_simulations_no_sections():
    assert sections([]) == []
    assert sections([{"id": "x", "status": "error", "reason": "boom"}]) == []
