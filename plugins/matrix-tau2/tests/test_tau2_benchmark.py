"""The tau2 benchmarks' smoke modes, so that they do not rot: they run both runners, check every task is solved on
both sides, and write a well-formed result. No timing is asserted (this machine is shared)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[3] / "benchmarks"


def test_tau2_vs_runner_smoke(tmp_path):
    done = subprocess.run(
        [sys.executable, "tau2_vs_runner.py", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "tau2_vs_runner.json").read_text())
    assert document["smoke"] is True
    assert set(document["cpu_seconds_per_task"]) == {"tau2", "matrix"}
    tasks, tokens = document["results"]
    assert (tasks["name"], tasks["metric"], tasks["params"]["tasks"]) == ("tau2_vs_runner", "tasks_per_s", 3)
    assert tasks["ours"]["median"] > 0 and tasks["baselines"]["tau2_runner"]["median"] > 0
    assert tasks["baselines"]["tau2_runner_gc_tuned"]["median"] > 0 and "tau2_runner_gc_tuned" in tasks["ratios"]
    assert (
        tasks["baselines"]["cpu_ceiling_tau2"]["median"] > 0 and tasks["baselines"]["cpu_ceiling_matrix"]["median"] > 0
    )
    assert tokens["ours"]["median"] > 0 and tokens["baselines"]["tau2_runner"]["median"] > 0
    assert any(line.startswith("tau2_vs_runner ") for line in done.stdout.splitlines())


def test_tau2_profile_smoke(tmp_path):
    if shutil.which("py-spy") is None:
        pytest.skip("py-spy is not installed (the bench extra: pip install 'matrix-core[bench]')")
    done = subprocess.run(
        [sys.executable, "tau2_profile.py", "--tasks", "2", "--concurrency", "2", "--latency", "0.01"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARKS,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == {"success": 2}
    assert {"tool", "reward", "user", "assistant", "server"} <= set(summary["cpu_ms_per_task"])
    assert summary["total_cpu_ms_per_task"] >= sum(summary["cpu_ms_per_task"].values()) - 1
    assert summary["where_python_samples_were"]["reward"], "the reward actor's samples were read"
