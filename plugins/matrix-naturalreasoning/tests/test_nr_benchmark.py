"""The partitions benchmark's smoke mode, so that it does not rot (no timing is asserted: this machine is shared)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).parents[3] / "benchmarks" / "naturalreasoning_partitions.py"


def test_the_benchmark_compares_pipelining_and_partitions_on_the_same_work(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pipelining = [line for line in lines if line.startswith("naturalreasoning_pipelining ")]
    partitions = [line for line in lines if line.startswith("naturalreasoning_partitions ")]
    for found, fields in (
        (pipelining, ("documents=150", "batch_per_stage=", "ratio_vs_batch_per_stage=")),
        (partitions, ("documents=150", "partitions=2", "p1=", "ratio_vs_p1=")),
    ):
        assert [re.search(r" (\w+_per_s)=", line)[1] for line in found] == ["documents_per_s", "output_tokens_per_s"]
        for field in fields:
            assert all(field in line for line in found), field
    [document] = [json.loads((tmp_path / "naturalreasoning_partitions.json").read_text())]
    names = ["naturalreasoning_pipelining"] * 2 + ["naturalreasoning_partitions"] * 2  # documents/s, tokens/s
    assert [result["name"] for result in document["results"]] == names
    questions = document["results"][0]["params"]["questions"]
    assert 0 < questions < 150 * 0.2, "the early exits keep a few percent of the documents"
