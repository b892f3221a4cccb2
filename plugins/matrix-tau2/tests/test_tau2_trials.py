"""``tau2.num_trials`` over ``-i`` rows, end to end: a row that names no trial runs once per trial, each with its
own id and seed; a row that names its trial runs once; ``--resume`` then finds every trial done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from script import AGENT_STOP, Script
from test_tau2_run import read, run

from matrix_core.testing import FakeOpenAIServer

TRIALS = ("mock", "create_task_1")
"""Its row names no trial: it runs ``tau2.num_trials`` times."""
NAMED = ("mock", "update_task_1")
"""Its row names trial 1: it runs once."""


@pytest.fixture(scope="module")
def trials(ray_session, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """A run of two trials over both rows, then the same run with ``--resume``: the output and the second run's
    metrics."""
    tmp = tmp_path_factory.mktemp("trials")
    rows, output = tmp / "in.jsonl", tmp / "out.jsonl"
    written = [
        {"id": "a", "domain": TRIALS[0], "task_id": TRIALS[1]},
        {"id": "b", "domain": NAMED[0], "task_id": NAMED[1], "trial": 1},
    ]
    rows.write_text("".join(json.dumps(row) + "\n" for row in written))
    options = ["-i", str(rows), "-o", str(output), "tau2.num_trials=2"]
    with FakeOpenAIServer(reply=Script([TRIALS, NAMED], {NAMED[1]: AGENT_STOP})).in_thread() as server:
        run(server, *options, workflow="tau2")
        run(server, *options, "--resume", workflow="tau2")
    return output, json.loads(output.with_name("out.metrics.json").read_text())


def test_a_row_naming_no_trial_runs_num_trials_times_and_one_naming_its_trial_once(trials):
    records = read(trials[0])
    assert {id: (record["task_id"], record["trial"]) for id, record in records.items()} == {
        "a/0": (TRIALS[1], 0),
        "a/1": (TRIALS[1], 1),
        "b": (NAMED[1], 1),
    }
    assert len({record["seed"] for record in records.values()}) == 3, "each trial its own seed"


def test_resume_finds_every_trial_done(trials):
    output, metrics = trials
    assert len(output.read_text().splitlines()) == 3, "each trial once"
    assert (metrics["skipped_finished"], metrics["admitted"]) == (3, 0)
