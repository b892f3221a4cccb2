"""tau2's result files written from the output records: Results that tau2 reads back, pass^k over trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matrix_tau2.results import Tau2Sink
from matrix_tau2.scoring import Scorer
from trajectories import gold_simulation


def record(trial: int, solved: bool) -> dict:
    simulation = gold_simulation("mock", "create_task_1", drop_last_action=not solved)
    simulation.update(id=f"mock/create_task_1/{trial}", trial=trial, agent_cost=0.0, user_cost=0.0)
    simulation["reward_info"] = Scorer().score("mock", "create_task_1", simulation)
    return {
        **simulation,
        "status": "success",
        "reason": "user_stop",
        "domain": "mock",
        "tokens": {"assistant_prompt": 10, "user_completion": 2},
        "models": {"assistant": "a-model", "user": "u-model"},
        "max_steps": 200,
        "max_errors": 10,
    }


def test_pass_hat_k_over_trials_and_results_tau2_reads(tmp_path: Path):
    from tau2.data_model.simulation import Results
    from tau2.metrics.agent_metrics import compute_metrics

    sink = Tau2Sink(tmp_path / "out.jsonl")
    for trial, solved in enumerate([True, False, True]):
        sink.write(record(trial, solved))
    sink.close()
    results = Results.model_validate_json((tmp_path / "out.mock.tau2.json").read_text())
    assert (results.info.num_trials, results.info.agent_info.llm, results.info.user_info.llm) == (
        3,
        "a-model",
        "u-model",
    )
    assert [task.id for task in results.tasks] == ["create_task_1"]
    metrics = json.loads((tmp_path / "out.tau2-metrics.json").read_text())["mock"]
    assert metrics["avg_reward"] == pytest.approx(2 / 3)
    assert metrics["pass_hat_1"] == pytest.approx(2 / 3)
    assert metrics["pass_hat_2"] == pytest.approx(1 / 3)  # C(2,2) / C(3,2)
    assert metrics["pass_hat_3"] == 0.0
    assert metrics == {**metrics, **compute_metrics(results).as_dict()}
    assert metrics["termination"] == {"user_stop": 3}
    assert metrics["tokens"] == {"assistant_prompt": 30, "user_completion": 6}
