"""run.gc_threshold: every agent and collector actor collects young objects less often and freezes its start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from matrix_core.config import ConfigProblem, RunConfig

SETTLE = (
    "import gc, json, sys; from matrix_core.engine import gc_settings; before = gc.get_threshold(); "
    "gc_settings.settle(int(sys.argv[1])); "
    "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count() > 0, gc.isenabled()]))"
)


def settled(threshold: int) -> list:
    done = subprocess.run([sys.executable, "-c", SETTLE, str(threshold)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_a_threshold_raises_the_young_generations_and_freezes_what_the_process_holds():
    before, after, frozen, enabled = settled(RunConfig().gc_threshold)
    assert after == [50_000, 20, 10] and frozen and enabled
    assert before == [700, 10, 10], "Python's own, for comparison"


def test_zero_leaves_pythons_settings():
    before, after, frozen, _ = settled(0)
    assert after == before and not frozen


def test_a_negative_threshold_is_refused():
    with pytest.raises(ConfigProblem, match="gc_threshold"):
        RunConfig(gc_threshold=-1).check()
