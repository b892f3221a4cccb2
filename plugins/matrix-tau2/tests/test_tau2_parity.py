"""Reward parity: the plugin's reward agent (tau2's evaluator with the gold side cached) against tau2's
``evaluate_simulation`` called directly, on gold and perturbed trajectories of every domain."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from matrix_tau2 import catalog
from matrix_tau2.scoring import Scorer, predicted_state
from trajectories import gold_run, gold_simulation, gold_steps

SAMPLE = 3
"""Tasks per domain: the first few with expected actions (for mock, all of them: they are tiny, and two start
from a message history)."""


def sample(domain: str) -> list[str]:
    ids = [task_id for task_id in catalog._tasks(domain, None) if gold_steps(domain, task_id)]
    return ids if domain == "mock" else ids[:SAMPLE]


def tau2_reward(domain: str, task_id: str, simulation: dict) -> dict:
    from tau2.data_model.simulation import SimulationRun
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation

    run = SimulationRun.model_validate(simulation)
    task = catalog.task(domain, task_id)
    info = evaluate_simulation(
        simulation=run, task=task, evaluation_type=EvaluationType.ALL, solo_mode=False, domain=domain
    )
    return info.model_dump(mode="json")


def outcome(score: Callable[[], dict]) -> dict | str:
    """The reward info, or the error it raised (tau2's evaluator raises on some broken trajectories)."""
    try:
        return score()
    except (ValueError, AssertionError) as error:
        return f"{type(error).__name__}: {error}"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer()


@pytest.mark.parametrize("domain", ["mock", "airline", "retail", "telecom"])
def test_gold_trajectories_score_one_and_equal_tau2(domain, scorer):
    for task_id in sample(domain):
        simulation = gold_simulation(domain, task_id)
        expected = tau2_reward(domain, task_id, simulation)
        first = scorer.score(domain, task_id, simulation)  # computes and records the gold side
        again = scorer.score(domain, task_id, simulation)  # uses the recorded gold side
        assert first == expected == again, task_id
        assert expected["reward"] == 1.0, (task_id, expected)


@pytest.mark.parametrize("domain", ["mock", "airline", "retail", "telecom"])
def test_perturbed_trajectories_score_as_tau2_does(domain, scorer):
    checked = scored = 0
    for task_id in sample(domain):
        for simulation in (
            gold_simulation(domain, task_id, drop_last_action=True),
            gold_simulation(domain, task_id, reason="max_steps"),
        ):
            expected = outcome(lambda: tau2_reward(domain, task_id, simulation))  # noqa: B023 - called at once
            assert outcome(lambda: scorer.score(domain, task_id, simulation)) == expected, task_id  # noqa: B023
            if simulation["termination_reason"] == "max_steps":
                assert expected["reward"] == 0.0
            checked += isinstance(expected, str) or expected["reward"] < 1.0
            scored += not isinstance(expected, str)
    assert checked >= len(sample(domain)), "every task has a perturbation that loses its reward"
    assert scored >= len(sample(domain)), "and most are scored, not refused by tau2's evaluator"


def test_the_gold_side_is_computed_once_per_task():
    scorer = Scorer()
    task_id = sample("airline")[0]
    simulation = gold_simulation("airline", task_id)
    for _ in range(3):
        scorer.score("airline", task_id, simulation)
    assert (scorer.gold.misses, scorer.gold.hits) == (1, 2)


@pytest.mark.parametrize("domain", ["mock", "airline", "retail", "telecom"])
def test_scoring_from_the_environment_the_conversation_left_equals_tau2(domain):
    """The reward agent's usual path: the tool executor records the predicted state from the environment it held,
    so nothing is replayed; every reward, gold or perturbed, is still tau2's."""
    scorer = Scorer()
    for task_id in sample(domain):
        for options in ({}, {"drop_last_action": True}, {"reason": "max_steps"}):
            simulation, environment = gold_run(domain, task_id, **options)
            predicted = predicted_state(environment, domain, task_id)
            expected = outcome(lambda: tau2_reward(domain, task_id, simulation))  # noqa: B023 - called at once
            got = outcome(lambda: scorer.score(domain, task_id, simulation, predicted))  # noqa: B023
            assert got == expected, (task_id, options)
    assert scorer.predicted_given > 0, "scored from recorded states, not by replaying"
