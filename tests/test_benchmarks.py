"""The benchmarks' smoke modes, so that they do not rot (no timing is asserted: this machine is shared)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_hop_rate_smoke():
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "hop_rate.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("hop_rate ")]
    for field in ("in_flight=50", "one_call_per_task=", "coalesced_same_turn=", "coalesced_2ms=", "coalescing_gain="):
        assert field in line
